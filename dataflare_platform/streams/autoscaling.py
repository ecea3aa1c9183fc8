"""How many workers a partition-parallel stream pipeline needs: the decision, apart from
who measures and who launches.

The model is the Flink Kubernetes operator's autoscaler (FLIP-271), which reasons from
what the workers *could* do, not from how busy they look:

- true processing rate of one worker = records it read per second / the fraction of the
  second it was busy (a worker busy 50 % of the time at 10 k ev/s could do 20 k ev/s);
- target rate = arrival rate into the sources + the rate that clears the current lag
  within ``catch_up_s``;
- needed workers = ceil(target rate / (true rate per worker * target utilization)),
  so a steady state leaves head-room (``target_utilization`` 0.7 keeps 30 % spare);
- no change while the current utilization (target rate / capacity) stays inside
  ``target_utilization`` +- ``utilization_boundary``: small wobbles do not rescale;
- bounded by ``min_workers``, ``max_workers`` and the partition count (a worker owns at
  least one partition), and rounded up to a divisor of the partition count when one lies
  within the bounds, so partitions spread evenly (Flink's key-group alignment);
- a cool-down after each change (longer before scaling down than up), because a rescale
  stops workers, moves partitions and re-reads a little: scaling again before the
  previous change has shown its effect oscillates.

The function is pure (inputs in, decision out) so the sensor that applies it stays thin
and every decision can be recorded with the numbers that made it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Protocol

from dataflare_platform.errors import InvalidInputError
from dataflare_platform.streams.fields import ScalingPolicy

__all__ = ["ScalingPolicy", "combine", "decide", "measure", "sample", "worker_bounds"]


@dataclass(frozen=True)
class ScalingInputs:
    """What the workers did over the last measurement window, summed over workers
    (``busy_ratio`` is their mean busy fraction of a second, 0..1)."""

    workers: int
    partitions: int
    arrival_rate: float  # events/s appended to the sources
    processed_rate: float  # events/s the workers read
    busy_ratio: float
    lag_events: int


@dataclass(frozen=True)
class ScalingDecision:
    current: int
    workers: int  # the target; == current when nothing changes
    reason: str
    target_rate: float | None = None
    capacity_per_worker: float | None = None
    utilization: float | None = None

    @property
    def changes(self) -> bool:
        return self.workers != self.current

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def worker_bounds(policy: ScalingPolicy, partitions: int) -> tuple[int, int]:
    """The worker counts allowed: ``min_workers``..min(``max_workers``, partitions)."""
    if partitions < 1:
        raise InvalidInputError("a pipeline to scale needs at least one source partition")
    high = min(policy.max_workers, partitions)
    return min(policy.min_workers, high), high


def aligned(workers: int, partitions: int, high: int) -> int:
    """The smallest divisor of ``partitions`` from ``workers`` up to ``high``, so each
    worker owns the same number of partitions; ``workers`` itself if none is."""
    for n in range(workers, high + 1):
        if partitions % n == 0:
            return n
    return workers


def decide(
    inputs: ScalingInputs,
    policy: ScalingPolicy,
    *,
    seconds_since_change: float | None,
) -> ScalingDecision:
    """The worker count to run next, with the reason and the numbers behind it.
    ``seconds_since_change``: since the last rescale of this pipeline (None: never)."""
    low, high = worker_bounds(policy, inputs.partitions)
    current = inputs.workers
    if current < 1:
        return ScalingDecision(current, low, "no worker runs: start the minimum")
    if not low <= current <= high:
        target = min(max(current, low), high)
        return ScalingDecision(current, target, f"outside the bounds {low}..{high}")
    target_rate = inputs.arrival_rate + inputs.lag_events / policy.catch_up_s
    if inputs.processed_rate <= 0 or inputs.busy_ratio <= 0:
        if target_rate <= 0:
            decision = ScalingDecision(current, low, "idle: no arrivals and no lag", 0.0)
            return _cooled(decision, policy, seconds_since_change)
        return ScalingDecision(
            current, current, "no measurement of the workers' rate yet", target_rate
        )
    per_worker = inputs.processed_rate / current / min(inputs.busy_ratio, 1.0)
    utilization = target_rate / (per_worker * current)
    numbers = {
        "target_rate": round(target_rate, 3),
        "capacity_per_worker": round(per_worker, 3),
        "utilization": round(utilization, 4),
    }
    if abs(utilization - policy.target_utilization) <= policy.utilization_boundary:
        return ScalingDecision(
            current,
            current,
            f"utilization {utilization:.2f} within {policy.target_utilization:g}"
            f" +- {policy.utilization_boundary:g}",
            **numbers,
        )
    needed = max(1, math.ceil(target_rate / (per_worker * policy.target_utilization)))
    target = aligned(min(max(needed, low), high), inputs.partitions, high)
    if target == current:
        reason = (
            f"utilization {utilization:.2f} but the bounds {low}..{high} keep {current}"
            if needed != current
            else f"utilization {utilization:.2f}: {current} worker(s) still fit"
        )
        return ScalingDecision(current, current, reason, **numbers)
    verb = "up" if target > current else "down"
    decision = ScalingDecision(
        current,
        target,
        f"scale {verb}: {target_rate:.0f} ev/s needed (arrivals + lag / {policy.catch_up_s:g} s)"
        f" at {policy.target_utilization:g} of {per_worker:.0f} ev/s per worker",
        **numbers,
    )
    return _cooled(decision, policy, seconds_since_change)


def _cooled(
    decision: ScalingDecision, policy: ScalingPolicy, seconds_since_change: float | None
) -> ScalingDecision:
    """``decision`` unless the pipeline was rescaled too recently for its direction."""
    if not decision.changes or seconds_since_change is None:
        return decision
    up = decision.workers > decision.current
    wait = policy.scale_up_cooldown_s if up else policy.scale_down_cooldown_s
    if seconds_since_change >= wait:
        return decision
    return ScalingDecision(
        decision.current,
        decision.current,
        f"cool-down: would scale {'up' if up else 'down'} to {decision.workers}, "
        f"{wait - seconds_since_change:.0f} s left of {wait:g} s",
        decision.target_rate,
        decision.capacity_per_worker,
        decision.utilization,
    )


@dataclass(frozen=True)
class WorkerSample:
    """Two checkpoint reports of one worker run (``streams.continuous.CheckpointReport``
    fields, as numbers): what it did between them."""

    at_s: float  # checkpoint_at of the later report
    seconds: float  # between the two reports
    events_in: int  # read between them
    busy_s: float  # operators at work between them
    lag_events: int  # at the later report
    lag_before: int = 0  # at the earlier report


class Report(Protocol):
    """The fields of ``streams.continuous.CheckpointReport`` the autoscaler reads."""

    checkpoint_at: float
    events_in: int
    busy_s: float
    lag_events: int


def sample(earlier: Report, later: Report) -> WorkerSample | None:
    """The sample between two reports of one worker (``None`` when they are not in
    order, or come from different runs: the later one's counters went backwards)."""
    seconds = later.checkpoint_at - earlier.checkpoint_at
    events = later.events_in - earlier.events_in
    busy = later.busy_s - earlier.busy_s
    if seconds <= 0 or events < 0 or busy < 0:
        return None
    return WorkerSample(
        later.checkpoint_at, seconds, events, busy, later.lag_events, earlier.lag_events
    )


def combine(units: list[WorkerSample]) -> WorkerSample | None:
    """One worker run's sample from its units' (one per partition it runs), each over
    its own window: a unit's counters are as of its last checkpoint, so its rates come
    from its own reports' times. Summing the counters of units committed at different
    moments and dividing by one window (the time between the run's measurements)
    counted up to a checkpoint interval's events more or less than the window held:
    1.55x the capacity of a saturated worker, seen in CI. Rates are summed, busy ratios
    averaged (the units share the run's process), over the units' mean window."""
    if not units:
        return None
    seconds = sum(u.seconds for u in units) / len(units)
    rate, busy, growth, lag = _rates(units)
    return WorkerSample(
        max(u.at_s for u in units),
        seconds,
        round(rate * seconds),
        busy * seconds,
        lag,
        lag - round(growth * seconds),
    )


def _rates(samples: list[WorkerSample]) -> tuple[float, float, float, int]:
    """Over samples that each cover their own window: events/s summed, the busy fraction
    averaged (at most 1), lag growth in events/s summed, and the lag at their ends."""
    processed = sum(s.events_in / s.seconds for s in samples)
    busy = sum(min(s.busy_s / s.seconds, 1.0) for s in samples) / len(samples)
    growth = sum((s.lag_events - s.lag_before) / s.seconds for s in samples)
    return processed, busy, growth, sum(s.lag_events for s in samples)


def measure(samples: list[WorkerSample], partitions: int) -> ScalingInputs:
    """The autoscaler's inputs from one sample per worker run over the same window:
    processed rate summed, busy ratio averaged, arrivals = processed + lag growth over
    each sample's own window (the sources' append rate, which no worker sees directly)."""
    if not samples:
        return ScalingInputs(0, partitions, 0.0, 0.0, 0.0, 0)
    processed, busy, growth, lag = _rates(samples)
    return ScalingInputs(
        workers=len(samples),
        partitions=partitions,
        arrival_rate=max(processed + growth, 0.0),
        processed_rate=processed,
        busy_ratio=busy,
        lag_events=lag,
    )
