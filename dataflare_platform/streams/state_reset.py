"""Drop one step's state from a pipeline's last checkpoint (``dataflare pipeline
reset-state``): the deliberate way out when a step refuses its checkpointed state at
restore (a plugin's state written by another plugin, version or module, or damaged).

Only that step's state goes: the offsets, the watermark, the counters and every other
step's state stay, so the next run resumes where the last one committed and that step
alone starts empty. Sinks keep one checkpoint per pipeline (the latest, replaced by each
commit), so "the latest" is every retained checkpoint there is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from dataflare_platform.engine.checkpoint import state_digest, without_step
from dataflare_platform.errors import InvalidInputError
from dataflare_platform.streams import bind
from dataflare_platform.streams.spec import PipelineSpec


@dataclass
class StateReset:
    """What a reset drops (or, not applied, would drop)."""

    pipeline: str
    step: str
    state_sha256: str  # of the dropped state (a fingerprint, not the state)
    tables: dict[str, int]  # state table -> rows
    offsets: dict[str, int]  # kept: where the next run resumes
    kept_steps: list[str]  # steps whose state stays
    applied: bool
    state: dict[str, pa.Table] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "pipeline": self.pipeline,
            "step": self.step,
            "state_sha256": self.state_sha256,
            "tables": self.tables,
            "offsets": self.offsets,
            "kept_steps": self.kept_steps,
            "applied": self.applied,
        }


def resolve_step(states: dict[str, dict[str, pa.Table]], step: str) -> str:
    """The checkpoint's step id for ``step``: the id itself (``2:plugin:hll_distinct``,
    as a restore refusal names it) or, when only one step fits, what follows the number
    (``plugin:hll_distinct``, ``hll_distinct``, ``Reduce``; a window computed by a plugin
    is ``window_plugin:hll_distinct``)."""
    held = sorted(k for k, tables in states.items() if tables)
    if step in held:
        return step
    names = (step, f"plugin:{step}", f"window_plugin:{step}")  # a plugin step or window
    fits = [k for k in held if k.split(":", 1)[-1] in names]
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise InvalidInputError(
            f"--step {step!r}: no step of that name has state in the last checkpoint;"
            f" steps with state: {held or 'none'}"
        )
    raise InvalidInputError(f"--step {step!r} fits several steps {fits}: give the full id")


def reset_step_state(spec: PipelineSpec, step: str, *, apply: bool) -> StateReset:
    """Drop ``step``'s state from ``spec``'s last checkpoint (``apply``), or only say
    what would be dropped. The sink is opened as a bounded run opens it and the new
    checkpoint committed through it like any other (no output, same offsets)."""
    sink = bind.open_sink(spec, bind.context(spec, bounded=True))
    try:
        if not sink.transactional:
            raise InvalidInputError(
                f"pipeline {spec.name!r}: its sink keeps no checkpoints, so there is no"
                " state to reset"
            )
        checkpoint = sink.open(spec.name)
        if checkpoint is None:
            raise InvalidInputError(
                f"pipeline {spec.name!r} has no checkpoint yet: there is no state to reset"
            )
        node = resolve_step(checkpoint.states, step)
        tables = checkpoint.states[node]
        result = StateReset(
            pipeline=spec.name,
            step=node,
            state_sha256=state_digest(tables),
            tables={name: t.num_rows for name, t in tables.items()},
            offsets=dict(checkpoint.offsets),
            kept_steps=sorted(k for k, v in checkpoint.states.items() if v and k != node),
            applied=apply,
            state=tables,
        )
        if apply:
            sink.commit_batch(None, None, without_step(checkpoint, node))  # type: ignore[attr-defined]
        return result
    finally:
        sink.close()
