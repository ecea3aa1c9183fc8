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
        rows = mat.metadata.get("dagster/row_count")
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
    report.seconds = time.perf_counter() - started
    return report
