"""End to end: events in, notifications out to real receivers, state in SQLite."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

import pytest

from dataflare_platform.alerting import AlertEvent, AlertManager, RuleSet
from dataflare_platform_tests.receivers import Clock, HttpReceiver, SmtpReceiver


def _rules(http: HttpReceiver, smtp: SmtpReceiver, extra: str = "") -> RuleSet:
    text = f"""
channels:
  hook: {{type: webhook, url: "{http.url("/hook")}", timeout: 5, allow_http_loopback: true}}
  slack: {{type: slack, url: "{http.url("/slack")}", timeout: 5, allow_http_loopback: true}}
  mail:
    type: email
    host: {smtp.host}
    port: {smtp.port}
    from: alerts@dataflare.test
    to: [oncall@dataflare.test]
    timeout: 5
escalation_policies:
  oncall:
    tiers:
      - {{channels: [slack], timeout: 15m}}
      - {{channels: [mail, hook]}}
rules:
  - name: bids_checks
    kind: check_failed
    check_severity: [ERROR]
    assets: [nexmark]
    severity: critical
    escalation: oncall
    repeat_interval: 1h
  - name: job_failed
    kind: run_failed
    jobs: [nexmark_daily]
    channels: [hook, mail]
    repeat_interval: 30m
{extra}
"""
    return RuleSet.from_yaml_text(text)


@pytest.fixture
def manager(tmp_path: Path, http_receiver, smtp_receiver):
    mgr = AlertManager(_rules(http_receiver, smtp_receiver), f"sqlite:///{tmp_path / 'alerts.db'}")
    yield mgr
    mgr.close()


def _check_failed(clock: Clock, asset: str = "nexmark/bids", severity: str = "ERROR"):
    return AlertEvent(
        kind="check_failed",
        timestamp=clock.now,
        asset=asset,
        check="price_positive",
        severity=severity,
        metadata={"failed_rows": 12},
        message="12 bids with a negative price",
    )


def _run_failed(clock: Clock, job: str = "nexmark_daily"):
    return AlertEvent(
        kind="run_failed", timestamp=clock.now, job=job, run_id="r-1", message="step boom"
    )


def test_webhook_and_email_receive_the_alert(manager, http_receiver, smtp_receiver, clock):
    [alert] = manager.observe(_run_failed(clock), clock.now)

    [body] = http_receiver.bodies("/hook")
    assert body["rule"] == "job_failed"
    assert body["fingerprint"] == "job_failed[job=nexmark_daily]" == alert.fingerprint
    assert body["labels"] == {"job": "nexmark_daily"}
    assert body["message"] == "step boom"
    assert body["status"] == "firing"
    assert body["occurrences"] == 1
    assert body["details"]["run_id"] == "r-1"
    assert body["first_seen"] == clock.now.isoformat()

    [(sender, recipients, mail)] = smtp_receiver.messages
    assert sender == "alerts@dataflare.test"
    assert recipients == ["oncall@dataflare.test"]
    assert mail["Subject"] == "[WARNING] job_failed [job=nexmark_daily]"
    assert "step boom" in mail.get_payload()
    assert f"alert {alert.id}" in mail.get_payload()
    outcomes = {(n.channel, n.outcome) for n in manager.notifications(alert.id)}
    assert outcomes == {("hook", "sent"), ("mail", "sent")}


def test_slack_compatible_webhook_receives_text(manager, http_receiver, clock):
    manager.observe(_check_failed(clock), clock.now)
    [body] = http_receiver.bodies("/slack")
    assert (
        body["text"] == "[CRITICAL] bids_checks [asset=nexmark/bids]: 12 bids with a negative price"
    )
    assert body["blocks"][0]["type"] == "header"


def test_filters_select_severity_asset_prefix_and_job(manager, http_receiver, clock):
    assert manager.observe(_check_failed(clock, severity="WARN"), clock.now) == []
    assert manager.observe(_check_failed(clock, asset="nexmark_raw/bids"), clock.now) == []
    assert manager.observe(_run_failed(clock, job="other_job"), clock.now) == []
    assert http_receiver.requests == []


def test_repeated_failure_is_deduplicated(manager, http_receiver, clock):
    manager.observe(_run_failed(clock), clock.now)
    clock.advance(minutes=5)
    [alert] = manager.observe(_run_failed(clock), clock.now)

    assert alert.occurrences == 2
    assert len(http_receiver.bodies("/hook")) == 1
    assert len(manager.alerts()) == 1
    assert alert.last_seen == clock.now

    clock.advance(minutes=30)  # repeat_interval passed: a reminder goes out
    [alert] = manager.observe(_run_failed(clock), clock.now)
    assert alert.occurrences == 3
    assert [b["reason"] for b in http_receiver.bodies("/hook")] == ["firing", "repeat"]


def test_a_broken_channel_does_not_block_the_others(manager, http_receiver, smtp_receiver, clock):
    http_receiver.failing.add("/hook")
    [alert] = manager.observe(_run_failed(clock), clock.now)

    assert len(smtp_receiver.messages) == 1  # email still went out
    assert alert.last_error is not None and "hook" in alert.last_error
    by_channel = {n.channel: n for n in manager.notifications(alert.id)}
    assert by_channel["hook"].outcome == "error" and "500" in (by_channel["hook"].error or "")
    assert by_channel["mail"].outcome == "sent"


def test_unreachable_channel_is_recorded(tmp_path, http_receiver, smtp_receiver, clock):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    rules = _rules(http_receiver, smtp_receiver)
    dead = {
        "type": "webhook",
        "url": f"http://127.0.0.1:{dead_port}/x",
        "timeout": 2,
        "allow_http_loopback": True,
    }
    channels = {**rules.channels, "hook": RuleSet.load({"channels": {"d": dead}}).channels["d"]}
    mgr = AlertManager(rules, f"sqlite:///{tmp_path / 'a.db'}", channels)
    [alert] = mgr.observe(_run_failed(clock), clock.now)
    assert "hook: DeliveryError" in (alert.last_error or "") and "URLError" in alert.last_error
    assert len(smtp_receiver.messages) == 1
    mgr.close()


def test_silence_suppresses_then_expires(manager, http_receiver, clock):
    silence = manager.silence(
        "job_failed", clock.now + timedelta(hours=2), "ana", "deploy", clock.now
    )
    [alert] = manager.observe(_run_failed(clock), clock.now)
    clock.advance(minutes=10)
    manager.observe(_run_failed(clock), clock.now)

    assert http_receiver.requests == []
    notes = manager.notifications(alert.id)
    assert {n.outcome for n in notes} == {"suppressed"}
    assert {n.silence_id for n in notes} == {silence.id}
    assert len(notes) == 2  # one per channel, recorded once for this silence
    assert manager.tick(clock.now) == []  # still silenced

    clock.advance(hours=2)  # the silence is over: the held-back notification goes out
    [sent] = manager.tick(clock.now)
    assert sent.id == alert.id
    [body] = http_receiver.bodies("/hook")
    assert body["reason"] == "unsilenced" and body["occurrences"] == 2
    assert manager.tick(clock.now) == []  # once


def test_silence_by_group_key_only_covers_that_group(manager, http_receiver, clock):
    manager.silence(
        "bids_checks",
        clock.now + timedelta(hours=1),
        "ana",
        "known",
        clock.now,
        group_key="asset=nexmark/bids",
    )
    manager.observe(_check_failed(clock), clock.now)
    manager.observe(_check_failed(clock, asset="nexmark/auctions"), clock.now)
    [body] = http_receiver.bodies("/slack")
    assert "asset=nexmark/auctions" in body["text"]


def test_unacknowledged_alert_escalates_once_to_tier_two(
    manager, http_receiver, smtp_receiver, clock
):
    [alert] = manager.observe(_check_failed(clock), clock.now)
    assert alert.tier == 1
    assert len(http_receiver.bodies("/slack")) == 1

    clock.advance(minutes=14)
    assert manager.tick(clock.now) == []
    clock.advance(minutes=1)
    [escalated] = manager.tick(clock.now)
    assert escalated.tier == 2

    [body] = http_receiver.bodies("/hook")
    assert body["tier"] == 2 and body["reason"] == "escalation"
    [(_, _, mail)] = smtp_receiver.messages
    assert mail["Subject"] == "[CRITICAL] bids_checks [asset=nexmark/bids]"
    assert len(http_receiver.bodies("/slack")) == 1  # tier 1 is not re-sent

    clock.advance(hours=5)
    assert manager.tick(clock.now) == []  # no tier 3, nothing sent twice
    assert len(http_receiver.bodies("/hook")) == 1
    assert len(smtp_receiver.messages) == 1
    tiers = sorted((n.tier, n.channel) for n in manager.notifications(alert.id))
    assert tiers == [(1, "slack"), (2, "hook"), (2, "mail")]


def test_acknowledgement_stops_escalation(manager, http_receiver, smtp_receiver, clock):
    [alert] = manager.observe(_check_failed(clock), clock.now)
    clock.advance(minutes=5)
    acked = manager.acknowledge(alert.fingerprint, "ana", clock.now)
    assert acked.status == "acknowledged" and acked.acknowledged_by == "ana"

    clock.advance(hours=1)
    assert manager.tick(clock.now) == []
    manager.observe(_check_failed(clock), clock.now)  # counted, nobody re-paged
    assert http_receiver.bodies("/hook") == []
    assert smtp_receiver.messages == []
    assert len(http_receiver.bodies("/slack")) == 1
    assert manager.alert(alert.id or 0).occurrences == 2
    [ack] = manager.store.acknowledgements(alert.id)
    assert (ack.by, ack.at) == ("ana", clock.now - timedelta(hours=1))


def test_resolved_alert_reopens_as_a_new_alert(manager, http_receiver, clock):
    [first] = manager.observe(_run_failed(clock), clock.now)
    manager.resolve(first.id or 0, clock.now)
    clock.advance(minutes=1)
    [second] = manager.observe(_run_failed(clock), clock.now)
    assert second.id != first.id and second.occurrences == 1
    assert len(http_receiver.bodies("/hook")) == 2


def test_state_survives_reopening(tmp_path, http_receiver, smtp_receiver, clock):
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    rules = _rules(http_receiver, smtp_receiver)
    first = AlertManager(rules, url)
    [alert] = first.observe(_check_failed(clock), clock.now)
    first.close()

    clock.advance(minutes=10)
    second = AlertManager(rules, url)
    [again] = second.observe(_check_failed(clock), clock.now)  # de-duplicated across restarts
    assert again.id == alert.id and again.occurrences == 2
    assert len(http_receiver.bodies("/slack")) == 1
    clock.advance(minutes=5)
    [escalated] = second.tick(clock.now)  # the escalation clock survived too
    assert escalated.tier == 2
    second.close()

    third = AlertManager(rules, url)
    stored = third.alert(alert.fingerprint)
    assert (stored.tier, stored.occurrences, stored.status) == (2, 2, "firing")
    assert stored.first_seen == alert.first_seen
    assert third.tick(clock.now + timedelta(hours=1)) == []
    third.close()


def test_instigator_and_freshness_rules(tmp_path, http_receiver, smtp_receiver, clock):
    extra = """
  - name: ticks
    kind: instigator_errored
    channels: [hook]
  - name: stale
    kind: freshness_violated
    assets: [warehouse]
    channels: [hook]
"""
    mgr = AlertManager(
        _rules(http_receiver, smtp_receiver, extra), f"sqlite:///{tmp_path / 'a.db'}"
    )
    mgr.observe(AlertEvent("instigator_errored", clock.now, instigator="stream_sensor"), clock.now)
    mgr.observe(AlertEvent("freshness_violated", clock.now, asset="warehouse/bids"), clock.now)
    mgr.observe(AlertEvent("freshness_violated", clock.now, asset="raw/bids"), clock.now)
    fingerprints = [b["fingerprint"] for b in http_receiver.bodies("/hook")]
    assert fingerprints == ["ticks[instigator=stream_sensor]", "stale[asset=warehouse/bids]"]
    mgr.close()


def test_an_ack_during_delivery_is_kept(manager, http_receiver, clock):
    """The operator acknowledges while the channel is still being called."""
    http_receiver.on_request.append(
        lambda path, body: manager.acknowledge(body["alert_id"], "ana", clock.now)
    )
    [alert] = manager.observe(_run_failed(clock), clock.now)
    assert alert.status == "acknowledged"
    assert alert.last_notified_at == clock.now
    clock.advance(hours=1)
    assert manager.tick(clock.now) == []


def test_unknown_event_kind_is_refused(manager, clock):
    with pytest.raises(ValueError, match="unknown event kind"):
        manager.observe(AlertEvent("disk_full", clock.now), clock.now)
