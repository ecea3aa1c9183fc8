"""The demo: generate Nexmark data, then run the shipped pipelines in a real Dagster instance.

Runs go through the code location's own jobs against the instance in the project home,
so everything the demo did is visible afterwards in the web UI (`dataflare ui`). Each
run is executed in this process (in-process executor, as ``execute_in_process``: ten
runs in about a minute instead of a run worker and step processes each) but is created
the way the web server creates a launched one: with the remote origin of the job in the
workspace's code location (``LOCATION_NAME``), so the runs appear in the Overview
timeline and on the job pages, and can be re-executed from there.
"""

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.execution.execute_in_process import merge_run_tags
from dagster._core.execution.job_execution_result import JobExecutionResult
from dagster._core.origin import JobPythonOrigin
from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.workspace.load import location_origins_from_config

from dataflare_platform.datagen import NexmarkConfig, write_nexmark
from dataflare_platform.datagen.writer import GenerationSummary, is_up_to_date, read_manifest
from dataflare_platform.home import DEFINITIONS_MODULE, LOCATION_NAME, WORKSPACE_YAML, ProjectHome
from dataflare_platform.warehouse.connection import connect
from dataflare_platform.warehouse.stats import event_days

# Two and a bit days of event time at 3 events/s: enough for several daily partitions.
DEMO_CONFIG = NexmarkConfig(events=600_000, events_per_second=3.0)


def landed_config(out_dir: Path) -> NexmarkConfig | None:
    """The config of the Nexmark data already in ``out_dir``, if complete and readable."""
    manifest = read_manifest(out_dir)
    try:
        return NexmarkConfig.model_validate(manifest["config"]) if manifest else None
    except (KeyError, TypeError, ValueError):
        return None


def ending_now(
    config: NexmarkConfig, now: datetime | None = None, landed: NexmarkConfig | None = None
) -> NexmarkConfig:
    """``config`` with its event time moved so the last events fall in the hour before
    ``now``: the daily partitions are then filled up to yesterday (today's events wait
    for today's partition) and stream watermarks are recent, instead of a few days pinned
    to 2026-01-01. ``landed`` (the config of the data already generated) is kept when it
    differs only in its start and ends less than a day before ``now``, so a rerun reuses
    its data (and its topics and tables stay consistent) rather than regenerating."""
    now = now or datetime.now(UTC)
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    span = timedelta(seconds=config.events / config.events_per_second)
    shifted = config.model_copy(update={"first_event_time": end - span})
    if landed is not None:
        same_but_start = landed.model_copy(update={"first_event_time": shifted.first_event_time})
        if same_but_start == shifted and end - (landed.first_event_time + span) < timedelta(days=1):
            return landed
    return shifted


# Keep the terminal for the summary; full event logs stay in the instance and the UI.
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class RunSummary:
    job: str
    partition: str | None
    run_id: str
    success: bool
    seconds: float


@dataclass
class CheckSummary:
    asset: str
    check: str
    partition: str | None
    passed: bool
    description: str


@dataclass
class DemoReport:
    home: ProjectHome
    generation: GenerationSummary | None
    runs: list[RunSummary] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # added by this demo run
    totals: dict[str, int] = field(default_factory=dict)  # held after it (all runs so far)
    checks: list[CheckSummary] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            bool(self.runs)
            and all(r.success for r in self.runs)
            and all(c.passed for c in self.checks)
        )


def _collect(
    report: DemoReport,
    job: str,
    partition: str | None,
    result: dg.ExecuteInProcessResult | JobExecutionResult,
    seconds: float,
) -> None:
    report.runs.append(RunSummary(job, partition, result.run_id, result.success, seconds))
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        rows = mat.metadata.get("dagster/row_count") or mat.metadata.get("events_out")
        if rows is not None:
            key = mat.asset_key.to_user_string()
            report.rows[key] = report.rows.get(key, 0) + int(rows.value)
    for evaluation in result.get_asset_check_evaluations():
        summary = evaluation.metadata.get("summary")
        report.checks.append(
            CheckSummary(
                asset=evaluation.asset_key.to_user_string(),
                check=evaluation.check_name,
                partition=partition,
                passed=evaluation.passed,
                description=str(summary.value) if summary else "",
            )
        )


# Definitions() put their jobs in Dagster's singleton repository of the location.
REPOSITORY_NAME = "__repository__"


class OriginRunner:
    """Executes a job of the root definitions in this process as a run that carries the
    code location's origins (private Dagster APIs, pinned by the demo's e2e test)."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.defs = defs
        self.instance = instance
        workspace = yaml.safe_load(WORKSPACE_YAML)
        origins = location_origins_from_config(workspace, str(Path("workspace.yaml").resolve()))
        self.repository_origin = RemoteRepositoryOrigin(origins[LOCATION_NAME], REPOSITORY_NAME)
        self.python_origin = ReconstructableRepository.for_module(
            DEFINITIONS_MODULE, "defs", str(Path.cwd())
        ).get_python_origin()

    def execute(
        self,
        job_name: str,
        run_config: dict,
        tags: dict[str, str],
        partition: str | None = None,
    ) -> JobExecutionResult:
        job_def = self.defs.resolve_job_def(job_name)
        # The same job execute_in_process runs: in-process executor, in-memory IO default.
        ephemeral = job_def.as_ephemeral_job(resource_defs={}, input_values={})
        job = InMemoryJob(ephemeral)
        run_tags = merge_run_tags(
            job_def=job_def,
            partition_key=partition,
            tags=tags,
            asset_selection=None,
            instance=self.instance,
            run_config=run_config,
        )
        plan = create_execution_plan(
            job, run_config=run_config, instance_ref=self.instance.get_ref(), tags=run_tags
        )
        run = self.instance.create_run_for_job(
            job_def=ephemeral,
            execution_plan=plan,
            run_config=run_config,
            tags=run_tags,
            remote_job_origin=RemoteJobOrigin(self.repository_origin, job_name),
            job_code_origin=JobPythonOrigin(job_name, self.python_origin),
        )
        return execute_run(job, run, self.instance, raise_on_error=False)


def run_demo(
    home: ProjectHome,
    config: NexmarkConfig = DEMO_CONFIG,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> DemoReport:
    started = time.perf_counter()
    home.ensure()
    # The code location reads DATAFLARE_HOME through dg.EnvVar and the instance config
    # reads DAGSTER_HOME: point both at this home for the runs made here.
    os.environ.update(home.environ())
    generation = None
    if is_up_to_date(home.nexmark_dir, config):
        log(f"Nexmark data for this config already in {home.nexmark_dir}")
    else:
        log(f"generating {config.events:,} Nexmark events into {home.nexmark_dir}")
        generation = write_nexmark(config, home.nexmark_dir, progress=progress)
    report = DemoReport(home=home, generation=generation)

    from dataflare_platform.definitions import defs
    from dataflare_platform.defs.nexmark.assets import daily_partitions
    from dataflare_platform.defs.nexmark.jobs import daily_stats_job, ingest_job

    instance = dg.DagsterInstance.get()
    tags = {"dataflare/launched_by": "demo"}

    runner = OriginRunner(defs, instance)

    def execute(job_name: str, partition: str | None = None) -> JobExecutionResult:
        log(f"running {job_name}" + (f" [{partition}]" if partition else ""))
        t0 = time.perf_counter()
        result = runner.execute(job_name, _QUIET, tags, partition)
        _collect(report, job_name, partition, result, time.perf_counter() - t0)
        return result

    if execute(ingest_job.name).success:
        with connect(home.warehouse_path) as conn:
            days = [d.isoformat() for d in event_days(conn)]
        known = set(daily_partitions.get_partition_keys())
        for day in days:
            if day in known:
                execute(daily_stats_job.name, day)
            else:
                log(f"skipping {day}: outside the daily partitions")
    if report.runs and report.runs[0].success:
        _run_streams(home, report, execute_with_config=_config_runner(runner, tags, report, log))
        _run_governance(defs, instance, execute, log, home.root)
    for key in report.rows:
        if key not in report.totals:
            report.totals[key] = asset_total_rows(instance, dg.AssetKey.from_user_string(key))
    report.seconds = time.perf_counter() - started
    return report


def asset_total_rows(instance: dg.DagsterInstance, key: dg.AssetKey) -> int:
    """The rows an asset holds after every run so far, from its materializations in the
    instance: the latest ``dagster/row_count`` of each partition (a table rewritten per
    run or partition), or the sum of every run's ``events_out`` (a stream appending to its
    sink). A second demo thus shows the 100 k rows of a stream table it added 0 to."""
    latest: dict[str | None, int] = {}
    appended = 0
    cursor = None
    while True:
        page = instance.fetch_materializations(key, limit=1000, cursor=cursor)
        for record in page.records:  # newest first
            mat = record.asset_materialization
            if mat is None:
                continue
            if "dagster/row_count" in mat.metadata:
                latest.setdefault(mat.partition, int(mat.metadata["dagster/row_count"].value))
            elif "events_out" in mat.metadata:
                appended += int(mat.metadata["events_out"].value)
        if not page.has_more:
            return sum(latest.values()) + appended
        cursor = page.cursor


def _run_governance(defs, instance, execute, log, home_root) -> None:
    """What the daemon does on its own later: the audit trail sensor records the runs
    above, then the chain is verified and signed and today's compliance report compiled."""
    from dataflare_platform.compliance.audit_keys import provision
    from dataflare_platform.defs.governance.report import report_job

    # `dataflare audit init`: the explicit provisioning of the embedded default's signing
    # key and anchor, outside the home (idempotent; a lost key is an error, not replaced).
    provision(home_root)
    sensor = defs.resolve_sensor_def("audit_trail")
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        result = sensor(context)
    log(f"audit trail: {getattr(result, 'skip_message', result)}")
    execute("audit_checkpoint_job")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    execute(report_job.name, today)


def _config_runner(runner: OriginRunner, tags, report: DemoReport, log):
    def execute(job_name: str, run_config: dict) -> JobExecutionResult:
        log(f"running {job_name}")
        t0 = time.perf_counter()
        result = runner.execute(job_name, {**_QUIET, **run_config}, tags)
        _collect(report, job_name, None, result, time.perf_counter() - t0)
        return result

    return execute


def _run_streams(home: ProjectHome, report: DemoReport, execute_with_config) -> None:
    """Publish the landed bids and persons to the ``nexmark.*`` topics (once), then run
    every stream pipeline over what is there, as its sensor would request it."""
    from dataflare_platform.datagen import SCHEMAS
    from dataflare_platform.defs.streams.factory import output_key
    from dataflare_platform.events.log import EventLog
    from dataflare_platform.events.producer import produce_tables, tables_from_files
    from dataflare_platform.streams.ranges import load_specs, source_ends

    log = EventLog(home.event_log_dir)
    # Keyed so both partitions carry events: the watermark is their minimum.
    for kind, key in (("bids", "auction"), ("persons", "id")):
        topic = log.create_topic(
            f"nexmark.{kind}", SCHEMAS[kind], partitions=2, key=key, exist_ok=True
        )
        if sum(topic.end_offsets().values()) == 0:
            files = sorted((home.nexmark_dir / kind).glob("*.parquet"))
            produced = produce_tables(log, topic, tables_from_files(files, topic), 50_000)
            report.rows[f"topics/nexmark.{kind}"] = int(produced["appended"])  # type: ignore[arg-type]
        else:
            report.rows[f"topics/nexmark.{kind}"] = 0
        report.totals[f"topics/nexmark.{kind}"] = sum(topic.end_offsets().values())
    for spec in load_specs():
        op = output_key(spec).to_python_identifier()
        until = source_ends(spec, log)
        execute_with_config(f"{spec.name}_job", {"ops": {op: {"config": {"until": until}}}})
