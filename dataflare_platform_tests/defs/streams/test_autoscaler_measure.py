"""What the autoscaler sensor reads from a worker run's observations: a saturated worker
measured at its true capacity whatever the phase of its units' checkpoints against the
measurements (the CI failure: 15.6 k ev/s measured for a 10 k ev/s worker, from counters
committed up to a checkpoint interval apart from the time they were stamped with), an
idle one as idle, and no sample from a restarted or newly started unit."""

import dagster as dg
import pytest

from dataflare_platform.defs.streams.autoscaler import (
    MEASURE_KEY,
    MEASUREMENTS_READ,
    _Report,
    observation,
    run_sample,
)
from dataflare_platform.engine.metrics import EngineMetrics
from dataflare_platform.streams.autoscaling import measure, sample
from dataflare_platform.streams.continuous import CheckpointReport

KEY = dg.AssetKey("bids")
UNIT_RATE = 2_500.0  # events/s each of four units reads, busy all the time: 10 k/s per run
ARRIVALS = 3_000.0  # events/s appended to each unit's partition: lag grows 500/s per unit
MEASURE_EVERY_S = 2.5  # the worker logs twice per autoscaler interval of 5 s


def report(at: float, live: EngineMetrics | None = None) -> CheckpointReport:
    """A unit's checkpoint committed at ``at`` (its counters are as of then)."""
    return CheckpointReport(
        events_in=round(UNIT_RATE * at),
        events_out=0,
        dead_lettered=0,
        late_events=0,
        events_in_total=round(UNIT_RATE * at),
        events_per_s=0.0,
        events_per_s_lifetime=0.0,
        p99_batch_ms=0.0,
        watermark_ms=0,
        lag_events=round((ARRIVALS - UNIT_RATE) * at),
        checkpoints=1,
        checkpoint_at=at,
        offsets={},
        busy_s=at,
        live=live,
    )


def values(obs: dg.AssetObservation) -> dict:
    return obs.metadata[MEASURE_KEY].value


def measurements(interval_s: float, phases: list[float], ticks: int) -> list[list[dict]]:
    """The run's observations as the sensor reads them at each tick (the last
    ``MEASUREMENTS_READ``), each unit reporting its latest checkpoint (one every
    ``interval_s``, starting at its phase) and having read since (no live counters)."""
    logged, seen = [], []
    for k in range(1, ticks + 1):
        now = 10.0 + k * MEASURE_EVERY_S
        units = {
            p: report(phase + interval_s * ((now - phase) // interval_s))
            for p, phase in enumerate(phases)
        }
        logged.append(values(observation(KEY, 0, 1, len(phases), units, now=now)))
        seen.append(logged[-MEASUREMENTS_READ:])
    return seen


# Units committing evenly staggered, all at once, unevenly.
PHASES = [[0.0, 0.5, 1.0, 1.5], [0.0, 0.0, 0.0, 0.0], [0.1, 1.9, 0.4, 1.3]]


@pytest.mark.parametrize("interval_s", [0.7, 2.0, 2.3, 3.1, 6.0])
@pytest.mark.parametrize("phases", PHASES)
def test_a_saturated_worker_is_measured_at_its_capacity_whatever_its_checkpoints_phase(
    interval_s, phases
):
    naive = []
    for seen in measurements(interval_s, phases, ticks=24)[4:]:
        got = run_sample(seen)
        assert got is not None  # every unit committed twice within the measurements read
        inputs = measure([got], partitions=4)
        assert inputs.processed_rate == pytest.approx(4 * UNIT_RATE, rel=1e-3)
        assert inputs.busy_ratio == pytest.approx(1.0)
        assert inputs.arrival_rate == pytest.approx(4 * ARRIVALS, rel=1e-3)
        old = sample(_Report(seen[-2]), _Report(seen[-1]))  # the run's sums, stamped now
        naive.append(old.events_in / old.seconds if old is not None else 0.0)
    if interval_s == 2.0 and phases != PHASES[0]:
        # At the default interval, the run's sums stamped with the measurement's time were
        # off (1.2x-1.6x here; 1.55x in CI) unless the units' commits are evenly
        # staggered: the check above is not vacuous.
        assert max(abs(r / (4 * UNIT_RATE) - 1) for r in naive) > 0.15, naive


def test_a_unit_that_read_nothing_since_its_checkpoint_is_idle_up_to_now():
    """A quiet stream commits no checkpoint: counters standing still over the measurement
    window, stamped with its time, are what shows the worker idle."""
    live = EngineMetrics(events_in=round(UNIT_RATE * 4.0))  # nothing read since at=4.0
    units = {0: report(4.0, live)}
    first = values(observation(KEY, 0, 1, 1, units, now=20.0))
    later = values(observation(KEY, 0, 1, 1, units, now=22.5))
    assert first["units"]["0"]["at"] == 20.0
    got = run_sample([first, later])
    assert got is not None and got.seconds == pytest.approx(2.5) and got.events_in == 0
    assert measure([got], partitions=1).processed_rate == 0.0
    # It has read since: its numbers are as of its checkpoint, and only a later
    # checkpoint gives it a sample.
    live.events_in += 10
    busy = values(observation(KEY, 0, 1, 1, units, now=25.0))
    assert busy["units"]["0"]["at"] == 4.0
    assert run_sample([busy, values(observation(KEY, 0, 1, 1, units, now=27.5))]) is None


def test_a_restarted_or_newly_started_unit_gives_no_sample_yet():
    old = values(observation(KEY, 0, 1, 4, {0: report(4.0)}, now=5.0))
    both = values(observation(KEY, 0, 1, 4, {0: report(6.0), 1: report(6.0)}, now=7.5))
    assert run_sample([old, both]) is None  # unit 1 was not measured before
    restarted = values(observation(KEY, 0, 1, 4, {0: report(0.5)}, now=10.0))
    assert run_sample([both, restarted]) is None  # its counters went backwards
    assert run_sample([both]) is None


def test_measurements_of_a_worker_before_per_unit_times_are_diffed_as_sums():
    first = {"at": 10.0, "events_in": 1_000, "busy_s": 1.0, "lag_events": 0}
    later = {"at": 12.0, "events_in": 3_000, "busy_s": 2.0, "lag_events": 0}
    got = run_sample([first, later])
    assert got is not None and got.events_in == 2_000 and got.seconds == 2.0
