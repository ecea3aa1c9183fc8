"""The platform's Alertmanager webhook receiver over real HTTP on 127.0.0.1, into the real
alert store, a real webhook channel and the real audit log: a firing alert opens a
platform alert (notified once, de-duplicated on repeat, severity from its label), a
resolved one closes it; wrong token, oversize and malformed bodies are refused, audited
and counted; a rules file without a prometheus_alert rule refuses to start."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dataflare_platform.alerting import AlertStore, default_state_url
from dataflare_platform.compliance.alert_receiver import (
    ACTION_RECEIVED,
    ACTION_REFUSED,
    WEBHOOK_METRIC,
    receiver_for_home,
)
from dataflare_platform.compliance.override_refusals import deployment_audit_log
from dataflare_platform.errors import ConfigError
from dataflare_platform.home import write_private
from dataflare_platform.observability.prometheus import exposition
from dataflare_platform.secrets import SecretRef
from dataflare_platform_tests.observability.fixtures import metrics_dir
from dataflare_platform_tests.observability.scrape import value

__all__ = ["metrics_dir"]

RULES = """
channels:
  hook: {{type: webhook, url: "{hook}", allow_http_loopback: true}}
rules:
  - {{name: prometheus, kind: prometheus_alert, severity: warning, channels: [hook],
     repeat_interval: 4h}}
"""
TOKEN = "s3cret-token-for-tests"


def payload(status: str, alerts: list[dict]) -> dict:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="DagsterDaemonHeartbeatStale"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "dataflare",
        "groupLabels": {"alertname": "DagsterDaemonHeartbeatStale"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": alerts,
    }


def alert(status: str, daemon: str = "SCHEDULER") -> dict:
    return {
        "status": status,
        "labels": {
            "alertname": "DagsterDaemonHeartbeatStale",
            "daemon": daemon,
            "severity": "critical",
        },
        "annotations": {
            "summary": f"Dagster daemon {daemon} has not sent a heartbeat for 2 minutes",
            "runbook_url": "docs/observability.md#dagsterdaemonheartbeatstale",
        },
        "startsAt": "2026-12-05T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": "abc",
    }


def post(url: str, body: bytes | dict, token: str | None = TOKEN, **headers: str):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST")
    req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    for name, given in headers.items():
        req.add_header(name, given)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "receiver.token"
    write_private(path, TOKEN + "\n")
    return path


@pytest.fixture
def receiver(audited_home, http_receiver, token_file):
    (audited_home.root / "alerts.yaml").write_text(RULES.format(hook=http_receiver.url("/hook")))
    server = receiver_for_home(
        audited_home.root, SecretRef(file=token_file), max_bytes=64 * 1024
    ).start()
    try:
        yield server
    finally:
        server.stop()


def _entries(home, action: str) -> list:
    with deployment_audit_log(home.root) as log:
        return [e for e in log.tail(1000) if e.action == action]


def test_firing_then_resolved_goes_through_the_platforms_alerting_and_audit(
    audited_home, receiver, http_receiver
):
    status, body = post(receiver.url, payload("firing", [alert("firing")]))
    assert status == 200, body
    store = AlertStore(default_state_url(audited_home.root))
    (opened,) = store.alerts("firing")
    assert opened.fingerprint == (
        "prometheus[alertname=DagsterDaemonHeartbeatStale,daemon=SCHEDULER]"
    )
    assert opened.severity == "critical"  # the alert's label, not the rule's default
    assert "has not sent a heartbeat" in opened.message
    assert len(http_receiver.bodies("/hook")) == 1

    # Alertmanager re-sends the group: de-duplicated, no second notification.
    assert post(receiver.url, payload("firing", [alert("firing")]))[0] == 200
    (again,) = store.alerts("firing")
    assert (again.id, again.occurrences) == (opened.id, 2)
    assert len(http_receiver.bodies("/hook")) == 1

    # An operator acknowledges it through the platform, as any alert.
    store.acknowledge(opened.id, "oncall", datetime.now(UTC))
    assert post(receiver.url, payload("resolved", [alert("resolved")]))[0] == 200
    (closed,) = store.alerts("resolved")
    assert closed.id == opened.id and closed.resolved_at is not None
    store.close()

    received = _entries(audited_home, ACTION_RECEIVED)
    assert [json.loads(e.details)["status"] for e in received] == ["firing", "firing", "resolved"]
    assert all(e.actor == "service:alertmanager" for e in received)
    assert json.loads(received[0].details)["alerts"][0]["fingerprint"] == opened.fingerprint
    assert receiver.accepted == 3 and not receiver.refused


def test_refused_requests_are_audited_and_counted_never_with_the_token(
    audited_home, receiver, metrics_dir
):
    good = payload("firing", [alert("firing")])
    assert post(receiver.url, good)[0] == 200
    assert post(receiver.url, good, token="wrong")[0] == 401
    assert post(receiver.url, good, token=None)[0] == 401
    assert post(receiver.url.replace("/alerts", "/other"), good)[0] == 404
    assert post(receiver.url, b"x" * (65 * 1024))[0] == 413
    assert post(receiver.url, b"{not json")[0] == 400
    assert post(receiver.url, {**good, "version": "3"})[0] == 400
    bad_alert = {**alert("firing"), "labels": {"daemon": "X"}}
    assert post(receiver.url, payload("firing", [bad_alert]))[0] == 400
    assert receiver.refused == {"token": 2, "path": 1, "size": 1, "schema": 3}
    exported = {
        outcome: value(exposition(metrics_dir), WEBHOOK_METRIC, outcome=outcome)
        for outcome in ("accepted", "token", "path", "size", "schema", "audit_failed")
    }
    assert exported == {
        "accepted": 1,
        "token": 2,
        "path": 1,
        "size": 1,
        "schema": 3,
        "audit_failed": None,
    }
    refused = _entries(audited_home, ACTION_REFUSED)
    assert [json.loads(e.details)["reason"] for e in refused] == [
        "token",
        "token",
        "path",
        "size",
        "schema",
        "schema",
        "schema",
    ]
    schema = json.loads(refused[-1].details)
    assert any("alertname" in p for p in schema["problems"])
    text = json.dumps([e.details for e in refused])
    assert TOKEN not in text and "wrong" not in text
    store = AlertStore(default_state_url(audited_home.root))
    assert [a.occurrences for a in store.alerts()] == [1]  # only the accepted one
    store.close()


def test_a_refusal_whose_audit_entry_fails_still_refuses_and_is_counted(
    receiver, metrics_dir, caplog
):
    """The audit store failing (disk full, locked) does not turn a refusal into an
    acceptance; it is logged (the reason, never the token) and counted."""

    def broken_audit():
        raise OSError("disk full")

    receiver._audit_factory = broken_audit
    with caplog.at_level("WARNING"):
        assert post(receiver.url, payload("firing", [alert("firing")]), token="wrong")[0] == 401
    text = exposition(metrics_dir)
    assert value(text, WEBHOOK_METRIC, outcome="token") == 1
    assert value(text, WEBHOOK_METRIC, outcome="audit_failed") == 1
    assert "the refusal (token) could not be audited (OSError)" in caplog.text
    assert TOKEN not in caplog.text and "wrong" not in caplog.text


def test_a_rules_file_without_a_prometheus_alert_rule_refuses_to_start(
    audited_home, http_receiver, token_file
):
    (audited_home.root / "alerts.yaml").write_text(
        f'channels:\n  hook: {{type: webhook, url: "{http_receiver.url("/h")}",'
        " allow_http_loopback: true}\n"
        "rules:\n  - {name: runs, kind: run_failed, channels: [hook]}\n"
    )
    with pytest.raises(ConfigError, match="prometheus_alert"):
        receiver_for_home(audited_home.root, SecretRef(file=token_file))


def test_an_unreadable_token_refuses_to_start(audited_home, http_receiver, tmp_path):
    (audited_home.root / "alerts.yaml").write_text(RULES.format(hook=http_receiver.url("/h")))
    loose = tmp_path / "loose.token"
    loose.write_text(TOKEN)
    loose.chmod(0o644)
    with pytest.raises(Exception, match="chmod 600"):
        receiver_for_home(audited_home.root, SecretRef(file=loose))


def test_the_receiver_binds_loopback_only(receiver):
    assert receiver.server.server_address[0] == "127.0.0.1"


def test_prometheus_alert_rules_validate_their_label_names():
    from dataflare_platform.alerting import RuleSet

    rule = {"name": "p", "kind": "prometheus_alert", "escalation": "x"}
    policies = {"x": {"tiers": [{"channels": ["hook"]}]}}
    ok = RuleSet.load(
        {"rules": [{**rule, "group_by": ["alertname", "daemon"]}], "escalation_policies": policies}
    )
    assert ok.rules[0].group_by == ["alertname", "daemon"]
    with pytest.raises(ConfigError, match=r"rules\.0\.group_by.*not a Prometheus label name"):
        RuleSet.load(
            {"rules": [{**rule, "group_by": ["bad-name"]}], "escalation_policies": policies}
        )


def test_without_the_audit_entry_key_it_refuses_to_start(home, http_receiver, token_file):
    (home.root / "alerts.yaml").write_text(RULES.format(hook=http_receiver.url("/h")))
    with pytest.raises(ConfigError, match="entry key"):
        receiver_for_home(home.root, SecretRef(file=token_file))
