"""The ``<pipeline>_workers`` job: one long-running Dagster run per partition-parallel
worker (``streams.workers``), launched like any run (run launcher, queue, retries).

Worker ``index`` of ``workers`` owns every ``workers``-th source partition; each of its
partitions runs in its own engine under its own checkpoint, and a lease per partition
keeps two workers off one partition. Stopping a worker is terminating its run: each of
its partitions finishes its batch, commits a last checkpoint and releases its lease (the
run ends SUCCESS). A crashed worker (SIGKILL, OOM) is retried by Dagster's run retries
like the continuous job, after a growing delay; its leases died with it, so the retry,
or any worker now owning those partitions, resumes them from their last commits.

A pipeline runs either as one run (its micro-batch job or its continuous job) or as
workers, never both: a worker refuses to start while one of the others is queued or
running, and the continuous job and the micro-batch sensor stand aside while workers run
(``continuous.continuous_in_progress`` counts worker runs). ``DataflareClient.scale``
and ``dataflare scale`` change the number of workers.
"""

import threading
import time
from typing import Any

import dagster as dg
from pydantic import Field

from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.defs.streams.autoscaler import autoscaler_definitions, observation
from dataflare_platform.defs.streams.continuous import (
    ATTEMPT_TAG,
    MAX_RESTARTS,
    MAX_RETRIES_TAG,
    LongRunConfig,
    restart_delay_s,
    single_runs_in_progress,
    workers_job_name,
)
from dataflare_platform.engine.runner import RunnerConfig
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.log import EventLog
from dataflare_platform.plugins.specs import load_plugins, plugin_steps
from dataflare_platform.streams.parallel import ParallelismError, assign
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.streams.workers import (
    PartitionWorker,
    UnitReport,
    check_splittable,
    group_membership,
)

WORKERS_TAG = "dataflare/workers_of"  # the pipeline, on every worker run
LOG_EVERY_S = 30.0


class WorkerConfig(LongRunConfig):
    workers: int = Field(default=1, ge=1, description="How many workers share the partitions.")
    index: int = Field(default=0, ge=0, description="Which of them this run is (0-based).")
    log_interval_s: float = Field(
        default=LOG_EVERY_S,
        ge=0,
        description="Log the partitions' committed offsets at most this often.",
    )


def _refuse(context: dg.OpExecutionContext, message: str) -> dg.Failure:
    """A failure retrying would only repeat: this run opts out of its retries; the reason
    is also a log line of the run (what `dataflare runs show` and the client's logs read)."""
    context.instance.add_run_tags(context.run_id, {MAX_RETRIES_TAG: "0"})
    context.log.error(message)
    return dg.Failure(description=message, allow_retries=False)


def worker_definitions(spec: PipelineSpec, key: dg.AssetKey) -> dg.Definitions:
    name = workers_job_name(spec)

    @dg.op(name=f"run_{name}", description=f"One partition-parallel worker of {spec.name!r}.")
    def run_worker(
        context: dg.OpExecutionContext,
        config: WorkerConfig,
        dataflare: ProjectHomeResource,
        plugins: PluginRuntimeResource,
    ) -> None:
        if config.index >= config.workers:
            raise _refuse(context, f"index {config.index} is outside 0..{config.workers - 1}")
        single = single_runs_in_progress(context.instance, spec)
        if single:
            raise _refuse(
                context,
                f"{spec.name} runs as one run in {single}: stop it before starting workers",
            )
        home = dataflare.home
        log = EventLog(home.event_log_dir)
        loaded = load_plugins(spec, plugins.registry()) if plugin_steps(spec) else None
        streams_dir = home.root / "streams"
        try:
            numbers = check_splittable(
                spec,
                log,
                streams_dir,
                loaded,
                on_split=lambda split: context.log.info(
                    f"{spec.name}: its progress as one run (at {split.offsets}) was split"
                    f" into per-partition checkpoints {sorted(split.units)}; the units carry"
                    " on from there"
                ),
            )
        except ParallelismError as err:
            raise _refuse(context, str(err)) from None
        if config.workers > 1 and getattr(spec.sink, "kind", None) == "duckdb":
            raise _refuse(
                context,
                f"{spec.name} writes a DuckDB file, which takes one writer process: run one "
                "worker (its partitions still run side by side), or use a sink that takes "
                "several (PostgreSQL)",
            )
        if config.workers > len(numbers):
            raise _refuse(
                context,
                f"{config.workers} workers for {len(numbers)} partition(s): at most one "
                "worker per partition",
            )
        try:
            grouped = group_membership(spec)
        except ConfigError as err:
            raise _refuse(context, str(err)) from None
        if grouped is not None:
            # The source's consumer group hands the partitions out among the worker runs
            # (and moves them on a join, a stop or a death): each run is given them all.
            owned = list(numbers)
        else:
            owned = [
                int(p) for p in assign([str(n) for n in numbers], config.workers, config.index)
            ]
        worker = PartitionWorker(
            spec,
            log,
            streams_dir,
            owned,
            config=RunnerConfig(checkpoint_interval_s=config.checkpoint_interval_s),
            plugins=loaded,
            checked_partitions=numbers,  # checked above: not built and probed again
        )
        latest: dict[int, dict[str, int]] = {}
        reports: dict[int, Any] = {}
        logged = [time.monotonic()]
        measured = [time.monotonic()]
        measure_every_s = measure_interval_s(spec, config.log_interval_s)

        def on_report(unit: UnitReport) -> None:
            first = unit.partition not in latest
            latest[unit.partition] = unit.report.offsets
            reports[unit.partition] = unit.report
            if first:  # once per partition and run: it is running here, from where
                context.log.info(
                    f"{spec.name}: partition {unit.partition} first commit at {unit.report.offsets}"
                )
            if time.monotonic() - logged[0] >= config.log_interval_s:
                logged[0] = time.monotonic()
                context.log.info(f"{spec.name}: committed {dict(sorted(latest.items()))}")

        def on_poll() -> None:
            # What the autoscaler sensor measures (defs/streams/autoscaler.py), on time
            # whether or not checkpoints come (an idle worker commits none), over the
            # units running here once each has reported, and, with leases, only once
            # every owned partition runs here: a worker still waiting for a lease its
            # predecessor holds would read as idle. (A unit restarted by a rebalance
            # counts from zero again: the sensor drops that sample, autoscaling.sample.)
            running = sorted(worker.units)
            if time.monotonic() - measured[0] < measure_every_s or not running:
                return
            if (grouped is None and len(running) < len(owned)) or any(
                p not in reports for p in running
            ):
                return
            measured[0] = time.monotonic()
            units = {p: reports[p] for p in running}
            context.log_event(observation(key, config.index, config.workers, len(numbers), units))

        attempt = int(context.run.tags.get(ATTEMPT_TAG, "0"))
        # A termination may come at any moment, during the restart wait or while the
        # consumer group is joined too: each is the graceful stop, the run ends SUCCESS
        # (an interrupt escaping the op would end it CANCELED through a failed step).
        try:
            if attempt:
                delay = restart_delay_s(attempt, config.restart_backoff_s)
                context.log.info(
                    f"{spec.name}: automatic restart {attempt} of worker {config.index}; "
                    f"resuming in {delay:g} s"
                )
                time.sleep(delay)  # a termination interrupts the wait
            if grouped is not None:
                context.log.info(
                    f"{spec.name}: worker {config.index + 1} of {config.workers} runs the "
                    f"partitions of {numbers} its consumer group assigns it "
                    f"(sources.{grouped[0]}.membership)"
                )
            else:
                context.log.info(
                    f"{spec.name}: worker {config.index + 1} of {config.workers} owns "
                    f"partitions {owned} of {numbers}"
                )
            worker.run(threading.Event(), on_report, on_poll=on_poll)
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
            # PartitionWorker.run has stopped every unit it started (last batch,
            # checkpoint) and released the leases before the interrupt reached here.
            started = dict(sorted(latest.items()))
            context.log.info(
                f"{spec.name}: worker {config.index} stopped; "
                + (
                    f"partitions {sorted(started)} checkpointed at {started} and released"
                    if started
                    else "it had started no partition"
                )
            )

    @dg.job(
        name=name,
        executor_def=dg.in_process_executor,
        tags={
            WORKERS_TAG: spec.name,
            "dataflare/mode": "workers",
            MAX_RETRIES_TAG: str(MAX_RESTARTS),
        },
        description=(
            f"{spec.name} as partition-parallel workers, one run per worker (config: "
            "workers, index). Terminate a run to stop its worker gracefully; `dataflare "
            "scale` sets the number. A crashed worker is retried by Dagster (run_retries)."
        ),
    )
    def job():
        run_worker()

    jobs = dg.Definitions(jobs=[job])
    if spec.autoscaling is None:
        return jobs
    return dg.Definitions.merge(jobs, autoscaler_definitions(spec, key, name, spec.autoscaling))


def measure_interval_s(spec: PipelineSpec, log_interval_s: float) -> float:
    """How often a worker run logs its measurements: with the committed offsets, and
    twice per autoscaler interval when the pipeline autoscales."""
    if spec.autoscaling is None:
        return log_interval_s
    return min(log_interval_s, spec.autoscaling.interval_s / 2)


def partitioned_sources(spec: PipelineSpec) -> bool:
    """Whether every source of ``spec`` has partitions a worker can own: embedded-log
    and Kafka topics, NATS and Redis sources declared with ``partitions`` of 2 or more."""
    return bool(spec.sources) and all(_splittable(s) for s in spec.sources.values())


def _splittable(source: object) -> bool:
    kind = getattr(source, "kind", None)
    if kind in ("topic", "kafka"):
        return True
    return kind in ("nats", "redis") and getattr(source, "partitions", 1) > 1
