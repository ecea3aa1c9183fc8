"""The demo: generate Nexmark data, then run the shipped pipelines in a real Dagster instance.

Runs go through the code location's own jobs against the instance in the project home,
so everything the demo did is visible afterwards in the web UI (`dataflare ui`).
"""

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from dataflare_platform.datagen import NexmarkConfig, write_nexmark
from dataflare_platform.datagen.writer import GenerationSummary, is_up_to_date
from dataflare_platform.home import ProjectHome
from dataflare_platform.warehouse.connection import connect
from dataflare_platform.warehouse.stats import event_days

# Two and a bit days of event time at 3 events/s: enough for several daily partitions.
DEMO_CONFIG = NexmarkConfig(events=600_000, events_per_second=3.0)


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
    rows: dict[str, int] = field(default_factory=dict)
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
    result: dg.ExecuteInProcessResult,
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

    def execute(job_name: str, partition: str | None = None) -> dg.ExecuteInProcessResult:
        log(f"running {job_name}" + (f" [{partition}]" if partition else ""))
        t0 = time.perf_counter()
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance,
            partition_key=partition,
            tags=tags,
            raise_on_error=False,
            run_config=_QUIET,
        )
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
        _run_streams(
            home, report, execute_with_config=_config_runner(defs, instance, tags, report, log)
        )
        _run_governance(defs, instance, execute, log)
    report.seconds = time.perf_counter() - started
    return report


def _run_governance(defs, instance, execute, log) -> None:
    """What the daemon does on its own later: the audit trail sensor records the runs
    above, then the chain is verified and signed and today's compliance report compiled."""
    from dataflare_platform.defs.governance.report import report_job

    sensor = defs.resolve_sensor_def("audit_trail")
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        result = sensor(context)
    log(f"audit trail: {getattr(result, 'skip_message', result)}")
    execute("audit_checkpoint_job")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    execute(report_job.name, today)


def _config_runner(defs, instance, tags, report: DemoReport, log):
    def execute(job_name: str, run_config: dict) -> dg.ExecuteInProcessResult:
        log(f"running {job_name}")
        t0 = time.perf_counter()
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance,
            tags=tags,
            raise_on_error=False,
            run_config={**_QUIET, **run_config},
        )
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
    for spec in load_specs():
        op = output_key(spec).to_python_identifier()
        until = source_ends(spec, log)
        execute_with_config(f"{spec.name}_job", {"ops": {op: {"config": {"until": until}}}})
