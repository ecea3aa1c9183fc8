"""The audit trail written by the ``audit_trail`` sensor from a real instance's events,
and the scheduled checkpoint asset whose check verifies the chain."""

import json
import sqlite3

import dagster as dg

from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.defs.governance.audit import audit_definitions
from dataflare_platform.defs.resources import ProjectHomeResource


@dg.asset(
    key=["shop", "orders"], check_specs=[dg.AssetCheckSpec("positive", asset=["shop", "orders"])]
)
def orders() -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"dagster/row_count": 3, "plugins": dg.MetadataValue.json({"pii_mask": "ab12"})},
        check_results=[dg.AssetCheckResult(passed=False, description="2 negative amounts")],
    )


def tick(defs, name, instance, resources, cursor=None):
    sensor = defs.resolve_sensor_def(name)
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as ctx:
        result = sensor(ctx)
        return result, ctx.cursor


def entries(home):
    with AuditLog(f"sqlite:///{home.root / 'audit.db'}") as log:
        return log.tail(1000)


def test_runs_materializations_checks_plugins_and_config_changes_are_recorded(
    home, instance, resources, tmp_path
):
    config = tmp_path / "pipeline.yaml"
    config.write_text("name: a\n")
    defs = dg.Definitions.merge(
        audit_definitions([config], 30), dg.Definitions(resources=resources)
    )
    dg.materialize([orders], instance=instance, tags={"dataflare/client": "ann"})

    _, cursor = tick(defs, "audit_trail", instance, resources)
    got = [(e.action, e.actor, e.subject) for e in entries(home)]
    run_id = instance.get_runs()[0].run_id
    assert ("config_changed", "system", "configuration") in got
    # A caller-set tag is only a claim: the actor is the out-of-band marker.
    assert ("run_launched", "host:out-of-band", run_id) in got
    assert ("materialization", "host:out-of-band", "shop/orders") in got
    launch = next(e for e in entries(home) if e.action == "run_launched")
    assert launch.payload()["claimed_by"] == {"dataflare/client": "ann"}
    assert ("check_result", "system", "shop/orders:positive") in got
    assert ("plugin_loaded", "system", "pii_mask") in got
    assert ("run_succeeded", "system", run_id) in got
    check = next(e for e in entries(home) if e.action == "check_result")
    assert json.loads(check.details)["passed"] is False

    # Nothing new: nothing appended. A changed file: one config_changed entry.
    count = len(entries(home))
    _, cursor = tick(defs, "audit_trail", instance, resources, cursor)
    assert len(entries(home)) == count
    config.write_text("name: b\n")
    tick(defs, "audit_trail", instance, resources, cursor)
    assert [e.action for e in entries(home)][count:] == ["config_changed", "audit_cursor"]


def test_checkpoint_asset_signs_the_head_and_its_check_catches_tampering(home, instance, resources):
    defs = dg.Definitions.merge(
        audit_definitions([], 30), dg.Definitions(assets=[orders], resources=resources)
    )
    dg.materialize([orders], instance=instance)
    tick(defs, "audit_trail", instance, resources)
    audit_asset = defs.resolve_assets_def(dg.AssetKey(["governance", "audit_log"]))

    result = dg.materialize([audit_asset], instance=instance)  # bound to the defs' resources
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    (mat,) = result.get_asset_materialization_events()
    meta = mat.materialization.metadata
    assert meta["signed_seq"].value == meta["head_seq"].value == len(entries(home))

    with sqlite3.connect(home.root / "audit.db") as conn:
        conn.execute("UPDATE audit_entries SET actor = 'user:mallory' WHERE seq = 2")
    result = dg.materialize([audit_asset], instance=instance, raise_on_error=False)
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    assert check.metadata["first_bad_entry"].value.startswith("seq 2:")
    assert "signed_seq" not in result.get_asset_materialization_events()[0].materialization.metadata


def test_home_resource_is_the_one_the_audit_log_lives_under(home, resources):
    assert resources["governance"].audit_settings().url.endswith(str(home.root / "audit.db"))
    assert isinstance(resources["dataflare"], ProjectHomeResource)


def test_checkpoints_are_also_sent_to_the_alert_channel_as_a_witness_verify_can_use(
    home, instance, resources, http_receiver, monkeypatch
):
    from dataflare_platform.compliance.audit_channel_anchor import (
        ENV_ANCHOR_CHANNEL,
        checkpoint_from_witness,
    )

    rules = {
        "channels": {
            "audit-witness": {
                "type": "webhook",
                "url": http_receiver.url("/w"),
                "allow_http_loopback": True,
            }
        }
    }
    (home.root / "alerts.yaml").write_text(json.dumps(rules))
    monkeypatch.setenv(ENV_ANCHOR_CHANNEL, "audit-witness")
    defs = dg.Definitions.merge(
        audit_definitions([], 30), dg.Definitions(assets=[orders], resources=resources)
    )
    dg.materialize([orders], instance=instance)
    tick(defs, "audit_trail", instance, resources)
    audit_asset = defs.resolve_assets_def(dg.AssetKey(["governance", "audit_log"]))

    result = dg.materialize([audit_asset], instance=instance)
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["witness_channel"].value == "audit-witness"
    (body,) = http_receiver.bodies("/w")
    assert body["rule"] == "audit_checkpoint" and body["severity"] == "info"
    witnessed = checkpoint_from_witness(body["details"])
    assert witnessed.seq == meta["signed_seq"].value

    # The log emptied with its checkpoints: what the channel received still catches it.
    with sqlite3.connect(home.root / "audit.db") as conn:
        conn.execute("DELETE FROM audit_entries")
        conn.execute("DELETE FROM audit_checkpoints")
    pinned = resources["governance"].public_keys()
    with resources["governance"].audit_log() as log:
        assert log.verify(pinned).ok  # on its own, an empty log verifies
        report = log.verify(pinned, anchored=[witnessed])
    assert not report.ok
    assert "but the log holds 0 (truncated or emptied)" in report.bad_checkpoints[0].problem


def test_a_witness_channel_the_rules_do_not_define_fails_the_checkpoint_run(
    home, instance, resources, monkeypatch
):
    (home.root / "alerts.yaml").write_text(json.dumps({"channels": {}}))
    monkeypatch.setenv("DATAFLARE_AUDIT_ANCHOR_CHANNEL", "nowhere")
    defs = dg.Definitions.merge(
        audit_definitions([], 30), dg.Definitions(assets=[orders], resources=resources)
    )
    dg.materialize([orders], instance=instance)
    audit_asset = defs.resolve_assets_def(dg.AssetKey(["governance", "audit_log"]))
    result = dg.materialize([audit_asset], instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "'nowhere' is not a channel" in str(failure.event_specific_data.error.to_string())
