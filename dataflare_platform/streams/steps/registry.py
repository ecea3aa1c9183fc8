"""The step registry: every step a declarative pipeline may use, by the name it has in
YAML, with the pydantic model (or plain type) of its argument and the function that
applies it to a stream.

    @step("dedup", DedupSpec)
    def dedup(stream: Stream, spec: DedupSpec, context: StepContext) -> Stream:
        return stream.dedup(spec.horizon, spec.lateness)

Adding a step kind is that: one decorated function and its model. ``StepSpec`` parses a
step (``{dedup: {horizon: 10s}}``) by looking its name up here when it is validated, so a
step registered after the spec models were made (a plugin package, a test) is known at
once. Errors name the step and the field inside it (``streams.hot.steps[1]:
window.sliding.slide: ...``); an unknown name lists the known ones.

Steps get what they need besides their own stream through a :class:`StepContext`: the
streams declared so far (joins name them) and the plugins the plugins layer loaded (a
plugin step is handed its plugin; neither the engine nor this package loads plugins).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from dataflare_platform.engine.operators.plugin import BatchPlugin
from dataflare_platform.engine.pipeline import Stream
from dataflare_platform.errors import ConfigError
from dataflare_platform.streams.fields import SpecModel, refusal


@dataclass(frozen=True)
class StepContext:
    """What a step may use besides its stream and its argument: ``streams`` are the
    pipeline's sources and the streams declared before this one, by name; ``plugins``
    the plugins loaded for the plugin steps, by step key (``PluginSpec.key``)."""

    streams: Mapping[str, Stream]
    plugins: Mapping[str, BatchPlugin]


Apply = Callable[[Stream, Any, StepContext], Stream]


@dataclass(frozen=True)
class StepKind:
    """One registered step: its YAML name, the model of its argument and its function."""

    name: str
    model: Any
    apply: Apply
    adapter: TypeAdapter

    @property
    def defined_at(self) -> str:
        return f"{self.apply.__module__}:{self.apply.__qualname__}"

    def parse(self, arg: Any) -> Any:
        """``arg`` validated by the step's model; a pydantic error otherwise whose message
        names the field inside the step (``window.sliding.slide: ...``)."""
        try:
            return self.adapter.validate_python(arg)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in (self.name, *first["loc"]))
            raise refusal(
                "step", f"{where}: {first['msg'].removeprefix('Value error, ')}"
            ) from None


class StepRegistry:
    """Step name -> :class:`StepKind`. Names are unique: registering a name twice is
    refused (two modules would otherwise silently fight over what a YAML step means)."""

    def __init__(self) -> None:
        self._kinds: dict[str, StepKind] = {}

    def register(self, name: str, model: Any, apply: Apply) -> StepKind:
        if not name.isidentifier():
            raise ConfigError("step registry", [(repr(name), "a step name is an identifier")])
        if name in self._kinds:
            raise ConfigError(
                "step registry",
                [(name, f"already registered by {self._kinds[name].defined_at}")],
            )
        kind = StepKind(name, model, apply, TypeAdapter(model))
        self._kinds[name] = kind
        return kind

    def step(self, name: str, model: Any) -> Callable[[Apply], Apply]:
        """Register the decorated function as the step ``name`` taking ``model``."""

        def register(apply: Apply) -> Apply:
            self.register(name, model, apply)
            return apply

        return register

    def unregister(self, name: str) -> None:
        """Forget a step (a test's own, once it is done)."""
        self._kinds.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def get(self, name: str) -> StepKind | None:
        return self._kinds.get(name)

    def __getitem__(self, name: str) -> StepKind:
        return self._kinds[name]


STEPS = StepRegistry()
step = STEPS.step


class StepSpec(SpecModel):
    """One step of a stream: ``{<name>: <argument>}`` in YAML, parsed by the registered
    step of that name."""

    op: str
    arg: Any = None

    @model_validator(mode="before")
    @classmethod
    def _one_key(cls, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"op", "arg"}:
            return value
        if not isinstance(value, dict) or len(value) != 1:
            raise refusal("step", f"a step is a mapping with one key, one of {STEPS.names()}")
        ((op, arg),) = value.items()
        kind = STEPS.get(op)
        if kind is None:
            raise refusal("step", f"unknown step {op!r}; steps are {STEPS.names()}")
        return {"op": op, "arg": kind.parse(arg)}

    def apply(self, stream: Stream, context: StepContext) -> Stream:
        return STEPS[self.op].apply(stream, self.arg, context)


class StreamSpec(SpecModel):
    from_: str = Field(alias="from")
    steps: list[StepSpec] = Field(default_factory=list)


def wire(
    streams: dict[str, Stream],
    stream_specs: dict[str, StreamSpec],
    output: str,
    plugins: Mapping[str, BatchPlugin] | None = None,
) -> Stream:
    """The ``output`` stream, from one stream per source and the declared streams in
    order (each may read a source or an earlier stream)."""
    streams = dict(streams)
    context = StepContext(streams, plugins or {})  # sees each stream once it is declared
    for name, stream_spec in stream_specs.items():
        stream = streams[stream_spec.from_]
        for step_spec in stream_spec.steps:
            stream = step_spec.apply(stream, context)
        streams[name] = stream
    return streams[output]
