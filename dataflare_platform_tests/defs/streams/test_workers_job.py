"""The ``<pipeline>_workers`` job in process: a worker run owns its share of the
partitions, checkpoints each under its own key with the output, and an interrupt (what
terminating a run sends) stops it gracefully; a pipeline whose state cannot be split is
refused without retries; a pipeline runs as workers or as one run, never both."""

import json

import dagster as dg
import psycopg
import pyarrow as pa
import pytest

from dataflare_platform.defs.streams.continuous import (
    ATTEMPT_TAG,
    MAX_RETRIES_TAG,
    continuous_in_progress,
    micro_batch_skip_reason,
    single_runs_in_progress,
)
from dataflare_platform.defs.streams.factory import stream_definitions
from dataflare_platform.events.log import EventLog
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.streams.ranges import load_specs
from dataflare_platform.streams.workers import unit_key
from dataflare_platform_tests.defs.streams.test_factory import _resources
from dataflare_platform_tests.kafka_cluster import kafka_bootstrap
from dataflare_platform_tests.waits import interrupt_when

__all__ = ["kafka_bootstrap"]  # a fixture

SCHEMA = pa.schema([("auction", pa.int64()), ("price", pa.int64()), ("date_time", pa.int64())])
PARTITIONS = 4
PIPELINE = """
type: dataflare_platform.components.StreamPipelineComponent
attributes:
  name: {name}
  catalog: {{group: streams, owners: [team:streaming]}}
  watermark: {{out_of_orderness: 0s}}
  sources:
    bids: {{kind: topic, topic: bids4, columns: [auction, price, date_time]}}
  streams:
    counts:
      from: bids
      steps:
        - key_by: [auction]
        - window: {{tumbling: 1s, agg: {{n: count}}{top}}}
  output: counts
  sink: {{kind: {sink}}}
{more}"""


@pytest.fixture
def schema(pg_schema):
    return pg_schema


@pytest.fixture
def folder(tmp_path, dsn, schema):
    """bid_counts into PostgreSQL (a sink several worker processes share), top_bids into
    DuckDB."""
    folder = tmp_path / "pipelines"
    folder.mkdir()
    postgres = f'postgres, dsn: "{dsn}", table: bid_counts, schema_name: {schema}'
    (folder / "bid_counts.yaml").write_text(
        PIPELINE.format(name="bid_counts", top="", sink=postgres, more="")
    )
    (folder / "top_bids.yaml").write_text(
        PIPELINE.format(
            name="top_bids", top=", top: {by: n}", sink="duckdb, table: top_bids", more=""
        )
    )
    return folder


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def defs(home, folder):
    return dg.Definitions.merge(
        stream_definitions(load_specs(folder), sensor_interval_s=5),
        dg.Definitions(resources=_resources(home)),
    )


def _bids(n: int) -> pa.Table:
    return pa.table(
        {
            "auction": [i % 37 for i in range(n)],
            "price": [i % 500 for i in range(n)],
            "date_time": [i * 5 + 1 for i in range(n)],  # no window end is ever hit exactly
        },
        schema=SCHEMA,
    )


def _config(workers: int, index: int) -> dict:
    fast = {"workers": workers, "index": index, "checkpoint_interval_s": 0.2, "log_interval_s": 0}
    return {"ops": {"run_bid_counts_workers": {"config": fast}}}


def _ended(instance) -> bool:
    runs = instance.get_runs(dg.RunsFilter(job_name="bid_counts_workers"), limit=1)
    return bool(runs) and runs[0].is_finished


def test_a_worker_owns_its_partitions_and_stops_gracefully_with_their_checkpoints(
    defs, home, instance, dsn, schema
):
    topic = EventLog(home.event_log_dir).create_topic(
        "bids4", SCHEMA, partitions=PARTITIONS, key="auction"
    )
    topic.append(_bids(4_000))
    ends = topic.committed_ends()
    owned = [1, 3]  # worker 1 of 2: every second partition from 1

    def caught_up():
        runs = instance.get_runs(dg.RunsFilter(job_name="bid_counts_workers"), limit=1)
        if not runs:
            return False
        text = " ".join(e.user_message or "" for e in instance.all_logs(runs[0].run_id))
        return all(f"'bids/{p}': {ends[p]}" in text for p in owned)

    watcher = interrupt_when(caught_up, lambda: _ended(instance))
    job = defs.resolve_job_def("bid_counts_workers")
    result = job.execute_in_process(
        run_config=_config(2, 1), instance=instance, raise_on_error=False
    )
    watcher.join()
    assert watcher.matched.is_set()
    assert result.success
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("worker 2 of 2 owns partitions [1, 3] of [0, 1, 2, 3]" in m for m in messages)
    assert any("stopped; partitions [1, 3] checkpointed" in m for m in messages)
    quoted = quote_identifier(schema)
    with psycopg.connect(dsn) as db:
        keys = {r[0] for r in db.execute(f"SELECT pipeline FROM {quoted}.dataflare_checkpoints")}
        counted = db.execute(f"SELECT sum(n) FROM {quoted}.bid_counts").fetchall()[0][0]
    # The units' checkpoints, and the pipeline's own key retired (``streams.split``): a
    # single run would otherwise start over.
    assert keys == {"bid_counts", *(unit_key("bid_counts", p) for p in owned)}
    # Each owned partition's closed windows, once: its bids before the window holding its
    # newest event (the watermark, out_of_orderness 0 s); nothing of partitions 0 and 2.
    want = 0
    for p in owned:
        times = topic.read(str(p), 0, ends[p]).column("date_time").to_pylist()
        open_from = max(times) // 1000 * 1000
        want += sum(1 for t in times if t < open_from)
    assert counted == want > 0


def test_a_pipeline_whose_state_cannot_be_split_is_refused_without_retries(defs, home, instance):
    EventLog(home.event_log_dir).create_topic("bids4", SCHEMA, partitions=PARTITIONS, key="auction")
    job = defs.resolve_job_def("top_bids_workers")
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "ranks the rows of all keys in each window" in str(failure.step_failure_data.error)
    assert instance.get_run_by_id(result.run_id).tags[MAX_RETRIES_TAG] == "0"


def test_a_pipeline_runs_as_workers_or_as_one_run_never_both(defs, folder, instance):
    spec = next(s for s in load_specs(folder) if s.name == "bid_counts")
    worker = instance.create_run_for_job(
        defs.resolve_job_def("bid_counts_workers"),
        run_config=_config(1, 0),
        status=dg.DagsterRunStatus.STARTED,
    )
    # The continuous job and the micro-batch sensor stand aside while workers run ...
    assert continuous_in_progress(instance, spec) == [worker.run_id]
    assert micro_batch_skip_reason(instance, spec) == (
        f"bid_counts runs as 1 partition-parallel worker run(s) ['{worker.run_id}']"
    )
    assert single_runs_in_progress(instance, spec) == []
    # ... and a worker refuses to start while the pipeline runs as one run.
    single = instance.create_run_for_job(
        defs.resolve_job_def("bid_counts_continuous"), status=dg.DagsterRunStatus.STARTED
    )
    result = defs.resolve_job_def("bid_counts_workers").execute_in_process(
        run_config=_config(1, 0), instance=instance, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"runs as one run in ['{single.run_id}']" in str(failure.step_failure_data.error)


def test_the_shipped_instance_bounds_worker_runs_per_pipeline(home):
    """The home's instance queues worker runs of one pipeline beyond its tag limit."""
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as inst:
        limits = inst.run_coordinator.get_run_queue_config().tag_concurrency_limits
    (limit,) = [x for x in limits if x["key"] == "dataflare/workers_of"]
    assert limit["value"] == {"applyLimitPerUniqueValue": True} and limit["limit"] == 8


def _autoscaled(tmp_path, home, dsn, schema):
    """scaled_counts (bid counts into PostgreSQL, ``autoscaling:`` 2..4 workers), its
    definitions with the governance resource the autoscaler audits through."""
    from dataflare_platform.compliance.audit_keys import provision
    from dataflare_platform.defs.governance.resources import GovernanceResource
    from dataflare_platform.defs.resources import ProjectHomeResource

    folder = tmp_path / "scaled"
    folder.mkdir()
    sink = f'postgres, dsn: "{dsn}", table: scaled_counts, schema_name: {schema}'
    more = "  autoscaling: {min_workers: 2, max_workers: 4, scale_up_cooldown_s: 0}\n"
    text = PIPELINE.format(name="scaled_counts", top="", sink=sink, more=more)
    (folder / "scaled_counts.yaml").write_text(text)
    provision(home.root)
    governance = GovernanceResource(dataflare=ProjectHomeResource(path=str(home.root)))
    defs = dg.Definitions.merge(
        stream_definitions(load_specs(folder), sensor_interval_s=5),
        dg.Definitions(resources={**_resources(home), "governance": governance}),
    )
    return defs, governance


def test_the_autoscaler_measures_running_workers_decides_and_records_the_change(
    tmp_path, home, instance, dsn, schema
):
    """A worker run logs its measurements as observations of the pipeline's asset; the
    ``<pipeline>_autoscaler`` sensor, evaluated while it runs, reads two of them, decides
    (here: 1 worker is below ``min_workers`` 2), terminates the running worker and asks
    for 2 new ones, and records the decision as an observation and an audit entry."""
    from dataflare_platform.defs.streams.autoscaler import DECISION_KEY, MEASURE_KEY

    defs, governance = _autoscaled(tmp_path, home, dsn, schema)
    topic = EventLog(home.event_log_dir).create_topic(
        "bids4", SCHEMA, partitions=PARTITIONS, key="auction"
    )
    topic.append(_bids(4_000))
    key = dg.AssetKey(["streams", "scaled_counts"])
    sensor = defs.resolve_sensor_def("scaled_counts_autoscaler")
    outcome: dict = {}

    def measured_twice() -> bool:
        try:
            return _measured_twice()
        except Exception as err:
            outcome["error"] = repr(err)
            return True

    def _measured_twice() -> bool:
        runs = instance.get_runs(dg.RunsFilter(job_name="scaled_counts_workers"), limit=1)
        if not runs or runs[0].is_finished:
            return False
        logs = instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION)
        outcome["observations"] = len(logs)
        if len(logs) < 2:
            topic.append(_bids(400))  # keep the partitions committing: more reports
            return False
        with dg.build_sensor_context(
            instance=instance, resources={"governance": governance}
        ) as context:
            outcome["result"] = sensor(context)
            outcome["run"] = runs[0].run_id
        # Until the run has two measurements over all its partitions the sensor waits.
        return bool(outcome["result"].run_requests)

    watcher = interrupt_when(measured_twice, lambda: _ended(instance))
    job = defs.resolve_job_def("scaled_counts_workers")
    config = {"workers": 1, "index": 0, "checkpoint_interval_s": 0.2, "log_interval_s": 0}
    ran = job.execute_in_process(
        run_config={"ops": {"run_scaled_counts_workers": {"config": config}}},
        instance=instance,
        raise_on_error=False,
    )
    watcher.join()
    failures = [str(e.step_failure_data.error) for e in ran.all_events if e.is_step_failure]
    assert not failures, failures
    assert watcher.matched.is_set(), {k: getattr(v, "skip_reason", v) for k, v in outcome.items()}
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert [
        r.run_config["ops"]["run_scaled_counts_workers"]["config"] for r in result.run_requests
    ] == [
        {"workers": 2, "index": 0},
        {"workers": 2, "index": 1},
    ]
    (decision,) = [e.metadata[DECISION_KEY].value for e in result.asset_events]
    assert decision["current"] == 1 and decision["workers"] == 2
    assert "outside the bounds" in decision["reason"]
    # The worker's measurements: observations of the pipeline's asset, with its numbers.
    observed = [
        e.dagster_event.asset_observation_data.asset_observation
        for e in instance.all_logs(outcome["run"], of_type=dg.DagsterEventType.ASSET_OBSERVATION)
    ]
    assert all(o.asset_key == key for o in observed)
    assert observed[-1].metadata[MEASURE_KEY].value["partitions"] == PARTITIONS
    assert observed[-1].metadata[MEASURE_KEY].value["events_in"] > 0
    # Terminated the way `dataflare scale` stops a worker; audited by the sensor.
    assert instance.get_run_by_id(outcome["run"]).status in (
        dg.DagsterRunStatus.CANCELING,
        dg.DagsterRunStatus.CANCELED,
        dg.DagsterRunStatus.SUCCESS,
    )
    with governance.audit_log() as audit:
        entry = audit.last("workers_rescaled")
    assert entry is not None
    assert entry.actor == "sensor:scaled_counts_autoscaler"
    assert entry.subject == "pipeline:scaled_counts"
    assert json.loads(entry.details)["to"] == 2


def test_an_autoscaled_pipeline_runs_as_workers_and_refused_workers_are_not_relaunched(
    tmp_path, home, instance, dsn, schema
):
    """``autoscaling:`` turns the autoscaler on and the micro-batch sensor off by
    default (a micro-batch run beside workers makes them refuse). A worker run refused
    for a reason relaunching does not change is not relaunched every tick: the sensor
    skips, naming the run and how to start again."""
    defs, governance = _autoscaled(tmp_path, home, dsn, schema)
    EventLog(home.event_log_dir).create_topic("bids4", SCHEMA, partitions=PARTITIONS, key="auction")
    sensor = defs.resolve_sensor_def("scaled_counts_autoscaler")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    micro = defs.resolve_sensor_def("scaled_counts_sensor")
    assert micro.default_status == dg.DefaultSensorStatus.STOPPED
    ran = defs.resolve_job_def("scaled_counts_workers").execute_in_process(
        run_config={"ops": {"run_scaled_counts_workers": {"config": {"workers": 1, "index": 1}}}},
        instance=instance,
        raise_on_error=False,
    )
    assert not ran.success
    with dg.build_sensor_context(instance=instance, resources={"governance": governance}) as ctx:
        result = sensor(ctx)
    assert not result.run_requests
    assert f"last worker run {ran.run_id} was refused" in result.skip_reason.skip_message
    assert "dataflare scale scaled_counts N" in result.skip_reason.skip_message


def test_a_worker_run_carries_on_from_the_pipelines_progress_as_one_run(
    defs, home, folder, instance, dsn, schema
):
    """The worker run splits the single run's checkpoint (``streams.split``), says so in
    its log, and its partitions resume from there: every closed window counted once."""
    from dataflare_platform_tests.streams.test_split import run_single

    log = EventLog(home.event_log_dir)
    topic = log.create_topic("bids4", SCHEMA, partitions=PARTITIONS, key="auction")
    topic.append(_bids(2_000))
    spec = next(s for s in load_specs(folder) if s.name == "bid_counts")
    split_at = topic.committed_ends()
    run_single(spec, log, home.root / "streams", split_at)
    later = _bids(2_000)
    times = [t + 10_000 for t in later.column("date_time").to_pylist()]
    topic.append(later.set_column(2, "date_time", pa.array(times, pa.int64())))
    ends = topic.committed_ends()

    def caught_up():
        runs = instance.get_runs(dg.RunsFilter(job_name="bid_counts_workers"), limit=1)
        if not runs:
            return False
        text = " ".join(e.user_message or "" for e in instance.all_logs(runs[0].run_id))
        return all(f"'bids/{p}': {ends[p]}" in text for p in range(PARTITIONS))

    watcher = interrupt_when(caught_up, lambda: _ended(instance))
    result = defs.resolve_job_def("bid_counts_workers").execute_in_process(
        run_config=_config(1, 0), instance=instance, raise_on_error=False
    )
    watcher.join()
    assert watcher.matched.is_set() and result.success
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    split = [m for m in messages if "was split into per-partition checkpoints" in m]
    assert len(split) == 1
    assert str({f"bids/{p}": split_at[p] for p in range(PARTITIONS)}) in split[0]
    with psycopg.connect(dsn) as db:
        counted = db.execute(
            f"SELECT sum(n) FROM {quote_identifier(schema)}.bid_counts"
        ).fetchall()[0][0]
    # Each partition's bids before the window holding its newest event, once.
    want = 0
    for p in range(PARTITIONS):
        times = topic.read(str(p), 0, ends[p]).column("date_time").to_pylist()
        open_from = max(times) // 1000 * 1000
        want += sum(1 for t in times if t < open_from)
    assert counted == want > 2_000


def test_a_group_owned_kafka_pipeline_runs_as_worker_runs_given_every_partition(
    tmp_path, home, instance, dsn, schema, kafka_bootstrap
):
    """``membership:``: the worker job gives each run every partition and the source's
    consumer group assigns them; a run alone in its group runs all four, commits each
    one's checkpoint and logs its measurements for the autoscaler."""
    from dataflare_platform.connectors import kafka
    from dataflare_platform.defs.streams.autoscaler import MEASURE_KEY
    from dataflare_platform_tests.kafka_cluster import create_topic, unique_topic
    from dataflare_platform_tests.streams.test_workers import events
    from dataflare_platform_tests.streams.test_workers_kafka import (
        MEMBERSHIP,
        ends,
        send,
        spec_text,
    )

    topic = unique_topic("bids")
    assert create_topic(kafka_bootstrap, topic) == PARTITIONS
    settings = kafka.KafkaSettings(bootstrap_servers=kafka_bootstrap, topic=topic)
    send(settings, events(0, 4_000, 1))
    end = ends(settings)
    folder = tmp_path / "grouped"
    folder.mkdir()
    (folder / "bid_counts.yaml").write_text(
        spec_text(kafka_bootstrap, topic, dsn, schema, membership=MEMBERSHIP)
    )
    defs = dg.Definitions.merge(
        stream_definitions(load_specs(folder), sensor_interval_s=5),
        dg.Definitions(resources=_resources(home)),
    )

    def caught_up() -> bool:
        runs = instance.get_runs(dg.RunsFilter(job_name="bid_counts_workers"), limit=1)
        if not runs:
            return False
        logs = instance.all_logs(runs[0].run_id)
        text = " ".join(e.user_message or "" for e in logs)
        measured = any(
            e.dagster_event is not None and e.dagster_event.event_type_value == "ASSET_OBSERVATION"
            for e in logs
        )
        return measured and all(f"'bids/{p}': {end[p]}" in text for p in range(PARTITIONS))

    watcher = interrupt_when(caught_up, lambda: _ended(instance))
    config = {"workers": 2, "index": 1, "checkpoint_interval_s": 0.2, "log_interval_s": 0}
    result = defs.resolve_job_def("bid_counts_workers").execute_in_process(
        run_config={"ops": {"run_bid_counts_workers": {"config": config}}},
        instance=instance,
        raise_on_error=False,
    )
    watcher.join()
    failures = [str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure]
    assert not failures, failures
    assert watcher.matched.is_set() and result.success
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any(
        "worker 2 of 2 runs the partitions of [0, 1, 2, 3] its consumer group assigns it"
        " (sources.bids.membership)" in m
        for m in messages
    )
    observed = [
        e.dagster_event.asset_observation_data.asset_observation.metadata[MEASURE_KEY].value
        for e in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION)
    ]
    assert observed and observed[-1]["events_in"] > 0
    quoted = quote_identifier(schema)
    with psycopg.connect(dsn) as db:
        keys = {r[0] for r in db.execute(f"SELECT pipeline FROM {quoted}.dataflare_checkpoints")}
    assert {unit_key("bid_counts", p) for p in range(PARTITIONS)} <= keys


def test_a_worker_terminated_in_its_restart_wait_ends_success_having_started_nothing(
    defs, home, instance
):
    """A retried worker waits before resuming; terminating it then (``dataflare scale``
    right after a crash) is the graceful stop like any other: the run ends SUCCESS, not
    CANCELED through an interrupt escaping the op (seen in CI with consumer groups)."""
    EventLog(home.event_log_dir).create_topic("bids4", SCHEMA, partitions=PARTITIONS, key="auction")

    def waiting() -> bool:
        runs = instance.get_runs(dg.RunsFilter(job_name="bid_counts_workers"), limit=1)
        return bool(runs) and any(
            "; resuming in " in (e.user_message or "") for e in instance.all_logs(runs[0].run_id)
        )

    watcher = interrupt_when(waiting, lambda: _ended(instance))
    config = _config(2, 0)
    config["ops"]["run_bid_counts_workers"]["config"]["restart_backoff_s"] = 600
    result = defs.resolve_job_def("bid_counts_workers").execute_in_process(
        run_config=config,
        instance=instance,
        raise_on_error=False,
        tags={ATTEMPT_TAG: "1"},
    )
    watcher.join()
    assert watcher.matched.is_set()
    assert result.success
    messages = [e.user_message or "" for e in instance.all_logs(result.run_id)]
    assert any("worker 0 stopped; it had started no partition" in m for m in messages)
    assert not any("owns partitions" in m for m in messages)  # stopped before its start
