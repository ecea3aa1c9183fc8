"""``--json`` on every listing command (topics, dlq, alerts, audit tail, plugins), through
the real ``dataflare`` app on one project home: each prints JSON that parses to what is
there."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
from typer.testing import CliRunner

from dataflare_platform.alerting import AlertEvent, AlertManager, RuleSet
from dataflare_platform.alerting.state import default_state_url
from dataflare_platform.cli import app
from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.events.deadletter import DeadLetters
from dataflare_platform.events.log import EventLog
from dataflare_platform.home import ProjectHome
from dataflare_platform.plugins.registry import sample_names
from dataflare_platform_tests.audit_support import ENTRY_KEY

runner = CliRunner()

RULES = """
channels:
  hook: {type: webhook, url: "HOOK", timeout: 5, allow_http_loopback: true}
rules:
  - {name: job_failed, kind: run_failed, channels: [hook]}
"""


def _json(args: list[str]):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _json_lines(args: list[str]) -> list:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_topics_list_json(home: ProjectHome):
    log = EventLog(home.event_log_dir)
    schema = pa.schema([("id", pa.int64()), ("date_time", pa.timestamp("ms"))])
    table = pa.table({"id": [1, 2, 3], "date_time": pa.array([0, 1, 2], pa.timestamp("ms"))})
    log.create_topic("orders", schema, partitions=2).append(table)
    log.create_topic("empty", schema)
    listed = _json(["topics", "list", "--json"])
    by_name = {t["topic"]: t for t in listed}
    assert set(by_name) == {"orders", "empty"}
    assert by_name["orders"]["rows"] == 3 and by_name["orders"]["partitions"] == 2
    assert by_name["empty"]["rows"] == 0
    assert _json(["topics", "list", "--json", "--log-dir", str(home.event_log_dir)]) == listed


def test_dlq_list_json(home: ProjectHome, tmp_path):
    log = EventLog(home.event_log_dir)
    log.create_topic("bids", pa.schema([("id", pa.int64()), ("date_time", pa.int64())]))
    lines = [b'{"id": 1, "date_time": 5}', b"{broken", b'{"id": 2, "date_time": 6}']
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    produced = _json(["produce", "bids", str(tmp_path / "in.ndjson")])
    assert produced["dead_lettered"] == 1
    listed = _json(["dlq", "list", "bids", "--json"])
    assert (listed["topic"], listed["pending"], listed["total"]) == ("bids", 1, 1)
    [letter] = listed["dead_letters"]
    assert letter["offset"] == 1 and letter["reason"]
    assert DeadLetters(log, "bids").count() == 1


def test_alerts_list_json(home: ProjectHome, http_receiver):
    rules = RuleSet.from_yaml_text(RULES.replace("HOOK", http_receiver.url("/hook")))
    now = datetime.now(UTC)
    manager = AlertManager(rules, default_state_url(home.root))
    manager.observe(AlertEvent("run_failed", now, job="nightly", message="boom"), now)
    manager.close()
    [alert] = _json(["alerts", "list", "--json"])
    assert alert["fingerprint"] == "job_failed[job=nightly]" and alert["status"] == "firing"
    assert _json(["alerts", "list", "--json", "--status", "resolved"]) == []


def test_audit_tail_json_lines(home: ProjectHome):
    with AuditLog(f"sqlite:///{home.root / 'audit.db'}", entry_key=ENTRY_KEY) as log:
        for n in range(3):
            log.append("user:ana", "run_launched", f"job{n}", {"n": n})
    entries = _json_lines(["audit", "tail", "--json", "-n", "2"])
    assert [(e["seq"], e["subject"]) for e in entries] == [(2, "job1"), (3, "job2")]
    assert all(e["actor"] == "user:ana" and e["hash"] for e in entries)


def test_plugin_list_json_shows_samples_before_they_are_built(tmp_path):
    listed = _json(["plugin", "list", "--dir", str(tmp_path / "plugins"), "--json"])
    assert [p["name"] for p in listed] == sample_names()
    assert all(p["sample"] and p["wasm"] is None for p in listed)
    assert all(p["kind"] in ("map", "filter", "aggregate") and p["version"] for p in listed)
