"""``dataflare alerts``: list, ack and silence against the state a manager wrote."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

from dataflare_platform.alerting import AlertEvent, AlertManager, AlertStore, RuleSet
from dataflare_platform.alerting.state import default_state_url
from dataflare_platform.cli.alerts import alerts_app
from dataflare_platform.compliance.override_refusals import deployment_audit_log
from dataflare_platform.home import ProjectHome

RULES = """
channels:
  hook: {type: webhook, url: "HOOK", timeout: 5, allow_http_loopback: true}
escalation_policies:
  p:
    tiers: [{channels: [hook], timeout: 15m}, {channels: [hook]}]
rules:
  - {name: job_failed, kind: run_failed, escalation: p}
"""


def _fire(home: ProjectHome, http_receiver) -> AlertManager:
    rules = RuleSet.from_yaml_text(RULES.replace("HOOK", http_receiver.url("/hook")))
    manager = AlertManager(rules, default_state_url(home.root))
    now = datetime.now(UTC)  # the CLI reads the real clock, so the state must match it
    manager.observe(AlertEvent("run_failed", now, job="daily", message="boom"), now)
    return manager


def test_list_ack_and_silence(audited_home: ProjectHome, http_receiver):
    home = audited_home
    manager = _fire(home, http_receiver)
    runner = CliRunner()

    listed = runner.invoke(alerts_app, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.stdout)
    assert (row["fingerprint"], row["status"], row["tier"]) == (
        "job_failed[job=daily]",
        "firing",
        1,
    )

    table = runner.invoke(alerts_app, ["list"])
    assert table.exit_code == 0 and "job_failed" in table.stdout

    acked = runner.invoke(alerts_app, ["ack", str(row["id"]), "--by", "ana", "--note", "on it"])
    assert acked.exit_code == 0, acked.output
    assert json.loads(acked.stdout)["status"] == "acknowledged"
    alert = manager.alert(row["id"])
    assert (alert.status, alert.acknowledged_by) == ("acknowledged", "ana")

    silenced = runner.invoke(
        alerts_app,
        [
            *("silence", "--rule", "job_failed", "--group", "job=daily", "--for", "2h"),
            *("--by", "ana", "--reason", "maintenance"),
        ],
    )
    assert silenced.exit_code == 0, silenced.output
    [silence] = AlertStore(default_state_url(home.root)).silences()
    assert (silence.rule, silence.group_key, silence.created_by, silence.reason) == (
        "job_failed",
        "job=daily",
        "ana",
        "maintenance",
    )
    assert silence.expires_at - silence.created_at == timedelta(hours=2)
    manager.close()
    with deployment_audit_log(home.root) as log:
        entries = {e.action: e for e in log.tail(100)}
    acked_entry, silenced_entry = entries["alert_acknowledged"], entries["alert_silenced"]
    assert (acked_entry.actor, acked_entry.subject) == ("system:cli", "alert:job_failed[job=daily]")
    assert json.loads(acked_entry.details)["by"] == "ana"
    assert json.loads(acked_entry.details)["os_user"]
    assert json.loads(silenced_entry.details)["reason"] == "maintenance"
    assert silenced_entry.subject == "rule:job_failed"


def test_without_audit_keys_nothing_is_acknowledged(home: ProjectHome, http_receiver):
    """An acknowledgement stops escalation: one that cannot be audited is not made."""
    manager = _fire(home, http_receiver)
    [alert] = AlertStore(default_state_url(home.root)).alerts()
    result = CliRunner().invoke(alerts_app, ["ack", str(alert.id), "--by", "ana"])
    assert result.exit_code == 2, result.output
    assert "audit" in result.output
    assert manager.alert(alert.id).status == "firing"
    manager.close()


def test_errors_are_reported(audited_home: ProjectHome, http_receiver):
    _fire(audited_home, http_receiver).close()
    runner = CliRunner()
    missing = runner.invoke(alerts_app, ["ack", "nope", "--by", "ana"])
    assert missing.exit_code == 2 and "no alert 'nope'" in missing.output
    bad = runner.invoke(
        alerts_app, ["silence", "--rule", "r", "--for", "soon", "--by", "a", "--reason", "x"]
    )
    assert bad.exit_code == 2 and "--for" in bad.output


def test_registered_on_the_main_cli():
    from dataflare_platform.cli import app

    result = CliRunner().invoke(app, ["alerts", "--help"])
    assert result.exit_code == 0
    assert "silence" in result.stdout
