"""The autoscaling decision (Flink autoscaler model): capacity from busy time, target rate
from arrivals plus lag, a utilization band, bounds, partition alignment and cool-downs."""

import pytest
from pydantic import ValidationError

from dataflare_platform.engine import RunnerConfig
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams.autoscaling import (
    ScalingInputs,
    ScalingPolicy,
    aligned,
    decide,
    measure,
    sample,
)
from dataflare_platform.streams.continuous import CheckpointReport, ContinuousRun
from dataflare_platform.streams.ranges import load_specs
from dataflare_platform_tests.streams.test_continuous import _wait_for

POLICY = ScalingPolicy(max_workers=8, scale_up_cooldown_s=60, scale_down_cooldown_s=300)


def inputs(**kw) -> ScalingInputs:
    values = dict(
        workers=1,
        partitions=4,
        arrival_rate=10_000.0,
        processed_rate=10_000.0,
        busy_ratio=0.7,
        lag_events=0,
    )
    return ScalingInputs(**{**values, **kw})


def test_a_worker_at_the_target_utilization_stays():
    d = decide(inputs(), POLICY, seconds_since_change=None)
    assert (d.workers, d.changes) == (1, False)
    # capacity = 10 k / 0.7 busy; utilization = 10 k / capacity = 0.7
    assert d.capacity_per_worker == pytest.approx(10_000 / 0.7, rel=1e-3)
    assert d.utilization == pytest.approx(0.7, abs=1e-3)
    assert "within" in d.reason


def test_a_saturated_worker_with_growing_lag_scales_up_by_capacity_not_by_steps():
    # Busy all the time at 10 k ev/s while 25 k ev/s arrive: capacity 10 k per worker,
    # needed 25 k / (10 k * 0.7) = 3.57 -> 4 (a divisor of 4 partitions).
    d = decide(
        inputs(arrival_rate=25_000, busy_ratio=1.0, lag_events=0),
        POLICY,
        seconds_since_change=None,
    )
    assert d.workers == 4 and d.changes and d.reason.startswith("scale up")
    assert d.target_rate == 25_000


def test_lag_adds_its_catch_up_rate():
    policy = POLICY.model_copy(update={"catch_up_s": 100.0})
    # 7 k arrivals + 700 k lag / 100 s = 14 k ev/s; capacity 10 k -> 14 / 7 = 2 workers.
    d = decide(
        inputs(arrival_rate=7_000, busy_ratio=1.0, lag_events=700_000),
        policy,
        seconds_since_change=None,
    )
    assert d.target_rate == pytest.approx(14_000)
    assert d.workers == 2


def test_the_target_is_rounded_up_to_a_divisor_of_the_partitions():
    assert aligned(3, 4, 4) == 4
    assert aligned(3, 6, 6) == 3
    assert aligned(4, 6, 5) == 4  # no divisor within the bound: keep the count
    d = decide(
        inputs(partitions=6, arrival_rate=27_000, busy_ratio=1.0),
        ScalingPolicy(max_workers=6),
        seconds_since_change=None,
    )
    assert d.workers == 6  # 27 / 7 = 3.86 -> 4 -> 6, the next divisor of 6


def test_never_more_workers_than_partitions_or_the_maximum():
    flood = inputs(arrival_rate=1_000_000, busy_ratio=1.0)
    assert decide(flood, POLICY, seconds_since_change=None).workers == 4  # partitions
    capped = ScalingPolicy(max_workers=2)
    d = decide(flood, capped, seconds_since_change=None)
    assert d.workers == 2


def test_an_underused_pool_scales_down_after_its_longer_cool_down():
    quiet = inputs(workers=4, arrival_rate=2_000, processed_rate=2_000, busy_ratio=0.1)
    # capacity 2 k / 4 / 0.1 = 5 k per worker; needed 2 k / 3.5 k = 1 worker.
    held = decide(quiet, POLICY, seconds_since_change=120)
    assert held.workers == 4 and not held.changes
    assert held.reason.startswith("cool-down: would scale down to 1")
    later = decide(quiet, POLICY, seconds_since_change=301)
    assert later.workers == 1 and later.reason.startswith("scale down")


def test_scale_up_waits_only_its_own_cool_down():
    busy = inputs(arrival_rate=25_000, busy_ratio=1.0)
    assert not decide(busy, POLICY, seconds_since_change=30).changes
    assert decide(busy, POLICY, seconds_since_change=61).workers == 4


def test_idle_pipelines_go_to_the_minimum_and_unmeasured_ones_hold():
    idle = inputs(workers=3, arrival_rate=0, processed_rate=0, busy_ratio=0)
    d = decide(idle, POLICY, seconds_since_change=None)
    assert d.workers == 1 and d.reason.startswith("idle")
    unmeasured = inputs(workers=2, arrival_rate=5_000, processed_rate=0, busy_ratio=0)
    d = decide(unmeasured, POLICY, seconds_since_change=None)
    assert d.workers == 2 and "no measurement" in d.reason


def test_counts_outside_the_bounds_are_brought_back_and_none_running_starts_the_minimum():
    policy = ScalingPolicy(min_workers=2, max_workers=3)
    assert decide(inputs(workers=4), policy, seconds_since_change=0).workers == 3
    assert decide(inputs(workers=1), policy, seconds_since_change=0).workers == 2
    assert decide(inputs(workers=0), policy, seconds_since_change=0).workers == 2


def test_a_bad_policy_is_refused_naming_the_field():
    with pytest.raises(ValidationError, match="min_workers"):
        ScalingPolicy(min_workers=5, max_workers=2)
    with pytest.raises(ValidationError, match="target_utilization"):
        ScalingPolicy(max_workers=2, target_utilization=1.5)
    with pytest.raises(ValidationError, match="max_workers"):
        ScalingPolicy()
    with pytest.raises(ValidationError, match="surprise"):
        ScalingPolicy(max_workers=2, surprise=1)


def _report(at, events_in, busy_s, lag):
    return CheckpointReport(
        events_in=events_in,
        events_out=0,
        dead_lettered=0,
        late_events=0,
        events_in_total=events_in,
        events_per_s=0.0,
        events_per_s_lifetime=0.0,
        p99_batch_ms=0.0,
        watermark_ms=0,
        lag_events=lag,
        checkpoints=1,
        checkpoint_at=at,
        offsets={},
        busy_s=busy_s,
    )


def test_two_reports_per_worker_give_the_rates_busy_ratio_and_arrivals():
    # Worker A: 2 000 events in 10 s, busy 5 s; worker B: 1 000 events, busy 2 s; the
    # lag grew from 1 000 to 3 000 events over the window: 200 ev/s more arrive than
    # the workers read.
    a = sample(_report(100.0, 1_000, 1.0, 400), _report(110.0, 3_000, 6.0, 2_000))
    b = sample(_report(100.5, 0, 0.0, 600), _report(110.5, 1_000, 2.0, 1_000))
    assert a is not None and b is not None
    got = measure([a, b], partitions=4)
    assert got.workers == 2 and got.partitions == 4
    assert got.processed_rate == pytest.approx(300.0)
    assert got.busy_ratio == pytest.approx((0.5 + 0.2) / 2)
    assert got.lag_events == 3_000
    assert got.arrival_rate == pytest.approx(300.0 + 200.0)


def test_reports_out_of_order_or_from_a_restarted_run_give_no_sample():
    assert sample(_report(110.0, 3_000, 6.0, 0), _report(100.0, 1_000, 1.0, 0)) is None
    # A restarted run counts from zero again: its first report is not a continuation.
    assert sample(_report(100.0, 3_000, 6.0, 0), _report(110.0, 200, 0.5, 0)) is None
    assert measure([], partitions=2).workers == 0


def test_a_real_continuous_run_reports_cumulative_busy_and_idle_seconds(home, small_nexmark):
    (spec,) = [s for s in load_specs() if s.name == "hot_items"]
    bids = small_nexmark["bids"]
    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    topic.append(bids.slice(0, 1_500))
    config = RunnerConfig(batch_rows=300, checkpoint_interval_s=0.2)
    run = ContinuousRun(spec, EventLog(home.event_log_dir), home.root / "streams", config=config)
    reports = run.start().reports()
    first = _wait_for(reports, lambda r: r.events_in_total == 1_500)[-1]
    topic.append(bids.slice(1_500))
    later = _wait_for(reports, lambda r: r.events_in_total == bids.num_rows)[-1]
    assert run.stop(30)
    list(reports)
    assert first.busy_s > 0 and later.busy_s >= first.busy_s
    assert later.idle_s >= first.idle_s >= 0 and later.backpressured_s >= 0
    s = sample(first, later)
    assert s is not None and s.events_in == bids.num_rows - 1_500
    inputs = measure([s], partitions=1)
    assert inputs.processed_rate > 0 and 0 < inputs.busy_ratio <= 1
    assert inputs.lag_events == later.lag_events == 0
