"""Alerting from a real Dagster instance to real receivers on 127.0.0.1: a failed asset
check in a run that succeeded reaches the webhook, a repeat is de-duplicated, schedule
ticks (with a controlled clock) escalate to e-mail, acknowledging through the job stops
escalation, and a silenced rule sends nothing."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg

from dataflare_platform.access.principal import PRINCIPAL_TAG
from dataflare_platform.alerting import AlertStore, default_state_url
from dataflare_platform.defs.governance.alerts import acknowledge_job, alerting_definitions
from dataflare_platform.defs.governance.resources import GovernanceResource

RULES = """
channels:
  hook: {{type: webhook, url: "{hook}", allow_http_loopback: true}}
  mail: {{type: email, host: 127.0.0.1, port: {smtp_port}, from: alerts@dataflare.local,
         to: [oncall@dataflare.local]}}
escalation_policies:
  oncall:
    tiers:
      - {{channels: [hook], timeout: 15m}}
      - {{channels: [mail]}}
rules:
  - {{name: shop_checks, kind: check_failed, assets: [shop], severity: critical,
     escalation: oncall, repeat_interval: 4h}}
  - {{name: failed_runs, kind: run_failed, severity: error, escalation: oncall}}
  - {{name: dead_letters, kind: metric_threshold, metric: dead_letter_rate, op: ">",
     threshold: 0.1, for: 1 evaluations, channels: [hook]}}
"""


@dg.asset(
    key=["shop", "orders"], check_specs=[dg.AssetCheckSpec("positive", asset=["shop", "orders"])]
)
def orders() -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"events_in": 100, "dead_lettered": 30},
        check_results=[dg.AssetCheckResult(passed=False, description="2 negative amounts")],
    )


@dg.op
def boom() -> None:
    raise RuntimeError("the warehouse is gone")


@dg.job
def nightly_job():
    boom()


def setup(home, resources, http_receiver, smtp_receiver):
    (home.root / "alerts.yaml").write_text(
        RULES.format(hook=http_receiver.url("/hook"), smtp_port=smtp_receiver.port)
    )
    return dg.Definitions.merge(
        alerting_definitions(30),
        dg.Definitions(assets=[orders], jobs=[nightly_job], resources=resources),
    )


def sensor_tick(defs, instance, cursor=None):
    sensor = defs.resolve_sensor_def("governance_alerts")
    resources = defs.resources
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as ctx:
        sensor(ctx)
        return ctx.cursor


def schedule_tick(defs, instance, at: datetime):
    schedule = defs.resolve_schedule_def("alert_escalation")
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=at, resources=defs.resources
    ) as ctx:
        return schedule.evaluate_tick(ctx)


def store(home) -> AlertStore:
    return AlertStore(default_state_url(home.root))


def test_failed_check_in_a_green_run_alerts_dedups_and_escalates(
    home, instance, resources, http_receiver, smtp_receiver
):
    defs = setup(home, resources, http_receiver, smtp_receiver)
    silence_metrics(home, resources)
    first = dg.materialize([orders], instance=instance, selection=[orders])
    assert first.success  # the run is green; its check failed
    cursor = sensor_tick(defs, instance)
    (body,) = http_receiver.bodies("/hook")
    assert body["rule"] == "shop_checks" and body["labels"]["asset"] == "shop/orders"
    assert "2 negative amounts" in body["message"]

    dg.materialize([orders], instance=instance)
    cursor = sensor_tick(defs, instance, cursor)
    assert len(http_receiver.bodies("/hook")) == 1  # de-duplicated
    with store(home) as alerts:
        (alert,) = [a for a in alerts.alerts() if a.rule == "shop_checks"]
        assert alert.occurrences == 2 and alert.tier == 1

    now = datetime.now(UTC)
    schedule_tick(defs, instance, now + timedelta(minutes=5))
    assert smtp_receiver.messages == []  # not yet
    schedule_tick(defs, instance, now + timedelta(minutes=16))
    ((_, to, mail),) = smtp_receiver.messages
    assert to == ["oncall@dataflare.local"] and "shop_checks" in mail["Subject"]
    schedule_tick(defs, instance, now + timedelta(minutes=60))
    assert len(smtp_receiver.messages) == 1  # each tier once


def test_acknowledging_through_the_job_stops_escalation(
    home, instance, resources, http_receiver, smtp_receiver
):
    defs = setup(home, resources, http_receiver, smtp_receiver)
    assert not nightly_job.execute_in_process(instance=instance, raise_on_error=False).success
    sensor_tick(defs, instance)
    (body,) = http_receiver.bodies("/hook")
    assert body["rule"] == "failed_runs" and "the warehouse is gone" in str(body)

    ack = defs.resolve_job_def(acknowledge_job.name).execute_in_process(
        instance=instance,
        run_config={
            "ops": {"acknowledge_alert": {"config": {"alert": body["fingerprint"], "by": "ann"}}}
        },
        # What the run coordinator writes for a launch through the access-control front.
        tags={PRINCIPAL_TAG: "user:ann"},
    )
    assert ack.success
    schedule_tick(defs, instance, datetime.now(UTC) + timedelta(minutes=30))
    assert smtp_receiver.messages == []
    with store(home) as alerts:
        (alert,) = alerts.alerts()
        assert alert.status == "acknowledged" and alert.acknowledged_by == "ann"
    # Stopping an escalation is audited under the run's principal, not the claimed name.
    with resources["governance"].audit_log() as log:
        (entry,) = [e for e in log.tail(100) if e.action == "alert_acknowledged"]
    assert (entry.actor, entry.subject) == ("user:ann", f"alert:{body['fingerprint']}")
    assert json.loads(entry.details)["run"] == ack.run_id


def silence_metrics(home, resources) -> None:
    """Silence the dead-letter rule: its breach (30 %) is recorded, never sent."""
    manager = resources["governance"].alert_manager()
    now = datetime.now(UTC)
    manager.silence("dead_letters", now + timedelta(hours=2), "ann", "known backlog", now)
    manager.close()


def test_a_silenced_metric_rule_sends_nothing_but_records_it(
    home, instance, resources, http_receiver, smtp_receiver
):
    defs = setup(home, resources, http_receiver, smtp_receiver)
    silence_metrics(home, resources)
    dg.materialize([orders], instance=instance)
    sensor_tick(defs, instance)
    assert [b["rule"] for b in http_receiver.bodies("/hook")] == ["shop_checks"]
    with store(home) as alerts:
        (breach,) = [a for a in alerts.alerts() if a.rule == "dead_letters"]
        outcomes = {n.outcome for n in alerts.notifications(breach.id)}
        assert outcomes == {"suppressed"}


def test_without_a_rules_file_alerting_is_off(home, instance, resources):
    defs = dg.Definitions.merge(alerting_definitions(30), dg.Definitions(resources=resources))
    sensor = defs.resolve_sensor_def("governance_alerts")
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        result = sensor(ctx)
    assert "no rules file" in result.skip_message
    assert isinstance(resources["governance"], GovernanceResource)
