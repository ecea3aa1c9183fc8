"""The audit trail cannot be silenced or broken: a moved sensor cursor is caught and the
skipped events re-read, any tag content is recorded, terminations and deleted runs are
recorded, and the actor never comes from a caller-set tag (real Dagster instance)."""

import json
import uuid

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dataflare_platform.access.principal import PRINCIPAL_TAG
from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.defs.governance.audit import audit_definitions, launch_entry
from dataflare_platform.defs.governance.event_feed import events_since, read_cursor
from dataflare_platform_tests.audit_support import ENTRY_KEY


@dg.asset(key=["shop", "orders"])
def orders() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"dagster/row_count": 3})


def tick(defs, instance, resources, cursor=None):
    sensor = defs.resolve_sensor_def("audit_trail")
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as ctx:
        sensor(ctx)
        return ctx.cursor


def entries(home):
    with AuditLog(f"sqlite:///{home.root / 'audit.db'}", entry_key=ENTRY_KEY) as log:
        return log.tail(10_000)


def _defs(resources):
    return dg.Definitions.merge(audit_definitions([], 30), dg.Definitions(resources=resources))


def test_a_cursor_moved_ahead_is_recorded_as_a_gap_and_the_skipped_runs_re_read(
    home, instance, resources
):
    defs = _defs(resources)
    dg.materialize([orders], instance=instance)
    cursor = tick(defs, instance, resources)
    skipped = dg.materialize([orders], instance=instance).run_id
    # Someone with instance access moves the sensor's cursor past the new run's events
    # (what `dagster sensor cursor --set` does), to keep it out of the trail.
    ahead = read_cursor(cursor)
    for _ in events_since(instance, ahead):
        pass
    assert ahead != read_cursor(cursor)

    tick(defs, instance, resources, json.dumps(ahead))

    got = entries(home)
    gap = [e for e in got if e.action == "audit_gap"]
    assert len(gap) == 1 and gap[0].actor == "host:out-of-band"
    assert "runs" in gap[0].payload()["moved"]
    launches = [e.subject for e in got if e.action == "run_launched"]
    assert launches.count(skipped) == 1  # re-read, recorded exactly once
    assert [e.subject for e in got if e.action == "run_succeeded"].count(skipped) == 1


@pytest.mark.parametrize("garbage", ["99999999", "[]", '"x"', "null", "{not json", "\x00" * 3])
def test_a_cursor_that_is_not_the_trails_own_is_a_gap_not_a_silenced_trail(
    home, instance, resources, garbage
):
    """Anyone who may set cursors can write anything there (the UI's setSensorCursor
    took ``99999999``): the trail records a gap naming what it found and goes on from the
    positions it recorded, re-reading what came since; it never fails tick after tick."""
    defs = _defs(resources)
    dg.materialize([orders], instance=instance)
    tick(defs, instance, resources)
    later = dg.materialize([orders], instance=instance).run_id

    cursor = tick(defs, instance, resources, garbage)
    assert read_cursor(cursor)  # the trail's own cursor again

    got = entries(home)
    (gap,) = [e for e in got if e.action == "audit_gap"]
    assert gap.actor == "host:out-of-band"
    assert gap.payload()["moved"] == ["cursor"]
    assert [e.subject for e in got if e.action == "run_launched"].count(later) == 1
    after = dg.materialize([orders], instance=instance).run_id
    tick(defs, instance, resources, cursor)
    assert any(e.subject == after for e in entries(home) if e.action == "run_launched")


def test_a_moved_cursor_alerts_through_the_alert_rules(home, instance, resources, http_receiver):
    (home.root / "alerts.yaml").write_text(
        "channels:\n"
        f"  hook: {{type: webhook, url: '{http_receiver.url('/hook')}',"
        " allow_http_loopback: true}\n"
        "rules:\n"
        "  - {name: audit, kind: instigator_errored, instigators: [audit_trail],"
        " channels: [hook]}\n"
    )
    defs = _defs(resources)
    dg.materialize([orders], instance=instance)
    tick(defs, instance, resources)

    tick(defs, instance, resources, cursor=json.dumps({"runs": {}, "assets": {}}))

    (body,) = http_receiver.bodies("/hook")
    assert body["rule"] == "audit" and "audit gap" in json.dumps(body)


def test_a_rewound_cursor_does_not_record_events_twice(home, instance, resources):
    defs = _defs(resources)
    run_id = dg.materialize([orders], instance=instance).run_id
    tick(defs, instance, resources)

    tick(defs, instance, resources, cursor=None)  # cursor reset to nothing
    tick(defs, instance, resources, cursor=json.dumps({"runs": {}}))  # rewound

    got = [e.action for e in entries(home)]
    assert [e.subject for e in entries(home) if e.action == "run_launched"] == [run_id]
    assert (got.count("audit_cursor_reset"), got.count("audit_gap")) == (1, 1)


def test_actor_from_principal_tag_else_dagster_facts_else_out_of_band(home, instance, resources):
    defs = _defs(resources)
    by_principal = dg.materialize(
        [orders], instance=instance, tags={PRINCIPAL_TAG: "user:ann", "USER": "root"}
    ).run_id
    by_sensor = dg.materialize(
        [orders], instance=instance, tags={"dagster/sensor_name": "orders_arrived"}
    ).run_id
    forged = dg.materialize(
        [orders], instance=instance, tags={PRINCIPAL_TAG: "user:ann smith\nadmin"}
    ).run_id
    tick(defs, instance, resources)

    actors = {e.subject: e for e in entries(home) if e.action == "run_launched"}
    assert actors[by_principal].actor == "user:ann"
    assert actors[by_principal].payload()["claimed_by"] == {"USER": "root"}
    assert actors[by_sensor].actor == "sensor:orders_arrived"
    assert actors[forged].actor == "host:out-of-band"
    assert actors[forged].payload()["claimed_by"][PRINCIPAL_TAG] == "user:ann smith\nadmin"


def test_odd_tags_on_a_real_run_are_recorded_and_the_sensor_goes_on(home, instance, resources):
    defs = _defs(resources)
    tags = {"note": "line one\nline two", "big": "x" * 5000, "USER": "", "emoji": "\u2603"}
    run_id = dg.materialize([orders], instance=instance, tags=tags).run_id
    tick(defs, instance, resources)
    later = dg.materialize([orders], instance=instance).run_id
    tick(defs, instance, resources, cursor=_cursor_of(home))

    launches = {e.subject: e for e in entries(home) if e.action == "run_launched"}
    recorded = launches[run_id].payload()["tags"]
    assert recorded["note"] == "line one\nline two"
    assert recorded["big"].startswith("x" * 1000) and "[5000 chars, sha256" in recorded["big"]
    assert later in launches


def _cursor_of(home) -> str:
    """The positions the trail recorded last (what a correctly kept Dagster cursor holds)."""
    with AuditLog(f"sqlite:///{home.root / 'audit.db'}", entry_key=ENTRY_KEY) as log:
        last = log.last("audit_cursor")
    assert last is not None
    return json.dumps(last.payload(), sort_keys=True)


def test_cancellations_and_deleted_runs_are_recorded(home, instance, resources):
    defs = _defs(resources)
    kept = dg.materialize([orders], instance=instance).run_id
    doomed = dg.materialize([orders], instance=instance).run_id
    queued = instance.add_run(
        DagsterRun(
            job_name="nightly", run_id=str(uuid.uuid4()), status=DagsterRunStatus.NOT_STARTED
        )
    )
    instance.report_run_canceling(queued, message="stopped by operator")
    instance.report_run_canceled(queued)
    cursor = tick(defs, instance, resources)
    instance.delete_run(doomed)

    tick(defs, instance, resources, cursor)

    got = entries(home)
    assert [e.subject for e in got if e.action == "run_canceling"] == [queued.run_id]
    assert [e.subject for e in got if e.action == "run_canceled"] == [queued.run_id]
    assert [e.subject for e in got if e.action == "run_deleted"] == [doomed]
    assert kept not in {e.subject for e in got if e.action == "run_deleted"}


_ANY_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
    max_size=300,
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(tags=st.dictionaries(_ANY_TEXT, _ANY_TEXT, max_size=8))
@example(tags={"": "", "\n": "\x00", PRINCIPAL_TAG: "\ud800", "USER": "y" * 100_000})
@example(tags={PRINCIPAL_TAG: "", "dagster/sensor_name": "a\nb", "dagster/backfill": "\udfff"})
def test_fuzz_any_tags_are_recorded_without_raising(tmp_path_factory, tags):
    log = AuditLog(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'audit.db'}", entry_key=ENTRY_KEY)
    run = DagsterRun(job_name="job", run_id=str(uuid.uuid4()), tags=tags)

    actor, details = launch_entry(run)
    entry = log.append(actor, "run_launched", run.run_id, details)

    assert entry.compute_hash() == entry.hash
    assert log.verify({}, allow_unanchored_tail=True).ok
    assert len(entry.details) < 200_000
    log.close()


def test_sensor_switched_off_and_a_cursor_set_outside_ticks_are_recorded(home, instance, resources):
    from dagster._core.remote_origin import (
        InProcessCodeLocationOrigin,
        RemoteInstigatorOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        InstigatorType,
        SensorInstigatorData,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    location = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(python_file=__file__), location_name="shop"
    )
    origin = RemoteInstigatorOrigin(RemoteRepositoryOrigin(location, "repo"), "orders_arrived")
    state = InstigatorState(
        origin, InstigatorType.SENSOR, InstigatorStatus.RUNNING, SensorInstigatorData(cursor="7")
    )
    instance.add_instigator_state(state)
    defs = _defs(resources)
    cursor = tick(defs, instance, resources)  # the baseline

    # What `dagster sensor stop` and `dagster sensor cursor --set` do to the instance.
    instance.update_instigator_state(
        state.with_status(InstigatorStatus.STOPPED).with_data(SensorInstigatorData(cursor="99"))
    )
    tick(defs, instance, resources, cursor)

    got = {e.action: e for e in entries(home)}
    changed = got["instigator_changed"]
    assert changed.subject == "sensor:orders_arrived"
    assert changed.payload() == {"from": "RUNNING", "to": "STOPPED"}
    assert got["sensor_cursor_set"].subject == "sensor:orders_arrived"
    assert got["sensor_cursor_set"].actor == "host:out-of-band"


@dg.asset(key=["shop", "cleanup"])
def malformed_cleanup() -> dg.MaterializeResult:
    # A retention list whose items are not objects: the recorder cannot read them.
    return dg.MaterializeResult(
        metadata={"retention_actions": dg.MetadataValue.json(["not an object", 3])}
    )


def test_an_event_that_cannot_be_recorded_is_named_and_the_trail_goes_on(home, instance, resources):
    defs = _defs(resources)
    bad_run = dg.materialize([malformed_cleanup], instance=instance).run_id
    good_run = dg.materialize([orders], instance=instance).run_id

    cursor = tick(defs, instance, resources)
    tick(defs, instance, resources, cursor)  # the next tick does not stick on it

    got = entries(home)
    (failed,) = [e for e in got if e.action == "audit_record_failed"]
    assert failed.subject == bad_run
    assert failed.payload()["event"] == "ASSET_MATERIALIZATION"
    assert failed.payload()["error"] == "AttributeError"
    assert good_run in {e.subject for e in got if e.action == "run_launched"}
