"""metric_threshold rules: fire only while the window condition holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataflare_platform.alerting import AlertEvent, AlertManager, RuleSet
from dataflare_platform_tests.receivers import Clock, HttpReceiver


def _manager(tmp_path: Path, http: HttpReceiver, rule: str) -> AlertManager:
    text = f"""
channels:
  hook: {{type: webhook, url: "{http.url("/hook")}", timeout: 5, allow_http_loopback: true}}
rules:
{rule}
"""
    return AlertManager(RuleSet.from_yaml_text(text), f"sqlite:///{tmp_path / 'alerts.db'}")


EVALUATIONS = """
  - name: dlq_rate
    kind: metric_threshold
    metric: dead_letter_rate
    op: ">"
    threshold: 0.05
    for: 3 evaluations
    aggregate: avg
    assets: [streams]
    channels: [hook]
"""

DURATION = """
  - name: slow_batches
    kind: metric_threshold
    metric: p99_batch_ms
    op: ">="
    threshold: 500
    for: 10m
    aggregate: min
    channels: [hook]
"""


@pytest.fixture
def evaluations(tmp_path, http_receiver):
    mgr = _manager(tmp_path, http_receiver, EVALUATIONS)
    yield mgr
    mgr.close()


def test_fires_only_once_the_window_is_full_and_holds(evaluations, http_receiver, clock: Clock):
    asset = "streams/bids"
    # Two high values are not a window of three yet.
    assert evaluations.observe_metric(asset, {"dead_letter_rate": 0.2}, clock.now) == []
    clock.advance(minutes=1)
    assert evaluations.observe_metric(asset, {"dead_letter_rate": 0.2}, clock.now) == []
    clock.advance(minutes=1)
    # Window [0.2, 0.2, 0.0]: avg 0.133 > 0.05 -> fires.
    [alert] = evaluations.observe_metric(asset, {"dead_letter_rate": 0.0}, clock.now)
    assert alert.fingerprint == "dlq_rate[asset=streams/bids]"
    [body] = http_receiver.bodies("/hook")
    assert body["message"] == (
        "dead_letter_rate on streams/bids: avg over 3 evaluations = 0.133333 > 0.05"
    )


def test_a_window_below_the_threshold_does_not_fire(evaluations, http_receiver, clock: Clock):
    for value in (0.1, 0.0, 0.0, 0.03, 0.1):  # single values exceed, no 3-avg does
        evaluations.observe_metric("streams/bids", {"dead_letter_rate": value}, clock.now)
        clock.advance(minutes=1)
    assert http_receiver.requests == []
    assert evaluations.alerts() == []


def test_other_assets_and_metrics_are_ignored(evaluations, http_receiver, clock: Clock):
    for _ in range(3):
        evaluations.observe_metric("warehouse/bids", {"dead_letter_rate": 1.0}, clock.now)
        evaluations.observe_metric("streams/bids", {"lag_events": 1e9}, clock.now)
        clock.advance(minutes=1)
    assert http_receiver.requests == []


def test_resolves_when_the_condition_stops_holding(evaluations, clock: Clock):
    asset = "streams/bids"
    for _ in range(3):
        evaluations.observe_metric(asset, {"dead_letter_rate": 0.3}, clock.now)
        clock.advance(minutes=1)
    [alert] = evaluations.alerts("firing")
    assert alert.occurrences == 1
    for _ in range(3):
        evaluations.observe_metric(asset, {"dead_letter_rate": 0.0}, clock.now)
        clock.advance(minutes=1)
    assert evaluations.alert(alert.id or 0).status == "resolved"


def test_metric_events_go_through_observe(evaluations, http_receiver, clock: Clock):
    for _ in range(3):
        event = AlertEvent(
            kind="metric",
            timestamp=clock.now,
            asset="streams/bids",
            metadata={"dead_letter_rate": 0.5, "note": "text is ignored"},
        )
        touched = evaluations.observe(event, clock.now)
        clock.advance(minutes=1)
    assert len(touched) == 1
    assert len(http_receiver.bodies("/hook")) == 1


def test_duration_window_needs_history_covering_it(tmp_path, http_receiver, clock: Clock):
    mgr = _manager(tmp_path, http_receiver, DURATION)
    asset = "nexmark/q5"
    # High from the start, but 10 minutes have not been observed yet.
    for _ in range(5):
        assert mgr.observe_metric(asset, {"p99_batch_ms": 900}, clock.now) == []
        clock.advance(minutes=2)
    # t = 10m: the history now covers the window and every value in it is >= 500.
    [alert] = mgr.observe_metric(asset, {"p99_batch_ms": 800}, clock.now)
    assert alert.status == "firing"
    assert len(http_receiver.bodies("/hook")) == 1
    mgr.close()


def test_duration_window_with_a_dip_does_not_fire(tmp_path, http_receiver, clock: Clock):
    mgr = _manager(tmp_path, http_receiver, DURATION)
    values = [900, 900, 100, 900, 900, 900, 900]  # the dip at 4m spoils windows until 14m+
    for value in values:
        mgr.observe_metric("nexmark/q5", {"p99_batch_ms": value}, clock.now)
        clock.advance(minutes=2)
    assert http_receiver.requests == []
    mgr.observe_metric("nexmark/q5", {"p99_batch_ms": 900}, clock.now)  # t = 14m: dip left
    assert len(http_receiver.bodies("/hook")) == 1
    mgr.close()


def test_metric_window_survives_reopening(tmp_path, http_receiver, clock: Clock):
    for _ in range(2):
        mgr = _manager(tmp_path, http_receiver, EVALUATIONS)
        mgr.observe_metric("streams/bids", {"dead_letter_rate": 0.9}, clock.now)
        mgr.close()
        clock.advance(minutes=1)
    mgr = _manager(tmp_path, http_receiver, EVALUATIONS)
    assert len(mgr.observe_metric("streams/bids", {"dead_letter_rate": 0.9}, clock.now)) == 1
    mgr.close()
