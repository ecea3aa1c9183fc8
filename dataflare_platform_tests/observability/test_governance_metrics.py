"""Governance metrics on the real events: audit entries appended to a real keyed log,
GX expectations evaluated by Great Expectations, alerts fired, escalated, acknowledged
and resolved by the alert manager delivering to real receivers."""

from __future__ import annotations

import polars as pl

from dataflare_platform.alerting import AlertManager
from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.compliance.expectations import SuiteSpec, run_suite
from dataflare_platform.observability.prometheus import exposition
from dataflare_platform_tests.alerting.test_engine import _check_failed, _rules
from dataflare_platform_tests.audit_support import ENTRY_KEY
from dataflare_platform_tests.observability.fixtures import metrics_dir
from dataflare_platform_tests.observability.scrape import value
from dataflare_platform_tests.receivers import clock, http_receiver, smtp_receiver

__all__ = ["clock", "http_receiver", "metrics_dir", "smtp_receiver"]


def test_audit_appends_are_counted_by_action(metrics_dir, audited_home, entry_key_file, tmp_path):
    log = AuditLog(f"sqlite:///{tmp_path / 'audit.db'}", entry_key=ENTRY_KEY)
    for i in range(3):
        log.append("user:alice", "config_changed", f"pipeline/p{i}", {"n": i})
    log.append("system", "run_launched", "job/nightly")
    text = exposition(metrics_dir)
    name = "dataflare_audit_entries_appended_total"
    assert value(text, name, action="config_changed") == 3
    assert value(text, name, action="run_launched") == 1
    assert log.count() == 4


def test_expectation_outcomes_are_counted(metrics_dir):
    suite = SuiteSpec.load(
        {
            "name": "bids_rules",
            "expectations": [
                {"expect_column_values_to_be_between": {"column": "price", "min_value": 1}},
                {"expect_column_values_to_not_be_null": {"column": "bidder"}},
            ],
        }
    )
    run_suite(pl.DataFrame({"price": [5, 0], "bidder": ["a", "b"]}), suite)
    run_suite(pl.DataFrame({"price": [5, 7], "bidder": ["a", "b"]}), suite)
    text = exposition(metrics_dir)
    name = "dataflare_quality_expectations_total"
    between = {"suite": "bids_rules", "expectation": "expect_column_values_to_be_between"}
    assert value(text, name, **between, outcome="failed") == 1
    assert value(text, name, **between, outcome="passed") == 1
    not_null = {"suite": "bids_rules", "expectation": "expect_column_values_to_not_be_null"}
    assert value(text, name, **not_null, outcome="passed") == 2


def test_alerts_fired_escalated_acknowledged_resolved(
    metrics_dir, tmp_path, http_receiver, smtp_receiver, clock
):
    manager = AlertManager(
        _rules(http_receiver, smtp_receiver), f"sqlite:///{tmp_path / 'alerts.db'}"
    )
    try:
        [alert] = manager.observe(_check_failed(clock), clock.now)
        assert len(http_receiver.bodies("/slack")) == 1  # really delivered
        clock.advance(minutes=15)
        [escalated] = manager.tick(clock.now)
        assert escalated.tier == 2
        manager.acknowledge(alert.fingerprint, "ana", clock.now)
        manager.resolve(alert.id or 0, clock.now)
    finally:
        manager.close()
    text = exposition(metrics_dir)
    name = "dataflare_alerts_total"
    for event in ("fired", "escalated", "acknowledged", "resolved"):
        assert value(text, name, rule="bids_checks", event=event) == 1, event
    assert value(text, name, rule="bids_checks", event="repeated") is None
