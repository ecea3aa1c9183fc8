"""Continuous mode of a declarative pipeline: a job whose one op runs the pipeline until
the run is terminated, reporting its progress as materializations of the pipeline's asset.

Progress at a sane rate: the engine commits a checkpoint every ``checkpoint_interval_s``
(seconds, for latency), but the op records a materialization at most every
``catalog.progress_interval`` (30 s by default; run config ``progress_interval_s``) and
at the end, with the current rate over the last ``rate_window_s`` (``events_per_s``; the
run's average is ``events_per_s_lifetime``), offsets and lag per partition, and the
output's column schema, like the micro-batch asset's. Checkpoints in between are logged.

Checks in continuous mode too: with each materialization the op evaluates the asset's
checks over what the interval wrote: its own ``dead_letter_rate`` (the interval's share)
and every check other definitions declare on the asset (the governance components'
``schema_contract``, PII and Great Expectations checks), invoked directly with the op's
resources and reported as AssetCheckEvaluations of that materialization. Freshness checks
stay with their sensor (these materializations are what it judges). A failing blocking
check of ERROR severity stops the pipeline (final checkpoint committed) and fails the run
with the check's description, with no automatic retry: retrying would fail the same way.

Crash restarts are Dagster's own run retries, not a sensor of ours: the job carries the
``dagster/max_retries`` tag, so with ``run_retries: enabled`` in the instance's
``dagster.yaml`` the daemon re-executes a FAILED run (a worker killed by SIGKILL or the OOM
killer is marked FAILED by the code server that spawned it) at most ``MAX_RESTARTS`` times
per run group, tagging each retry ``dagster/retry_number``. Dagster's retries have no delay
(1.13), so the op itself waits ``restart_delay_s`` before resuming on a retry: a crash loop
backs off exponentially instead of spinning. One mechanism only, so a crash is never
relaunched twice; the retry resumes from the pipeline's last checkpoint like any launch.

Graceful stop: terminating the run (the UI's Terminate button, ``dataflare pipelines
stop``, ``dataflare runs terminate``) makes Dagster 1.13 send SIGINT to the run worker,
and SIGTERM to the worker is mapped to SIGINT; in an in-process step Dagster raises
``DagsterExecutionInterruptedError`` in the op's thread. The op catches it, sets the
engine's stop event (the engine finishes the batch in flight and commits a checkpoint),
records the final progress and returns: the step succeeds and the run ends SUCCESS, with
no STEP_FAILURE. (Re-raising would end it CANCELED, but only through a failed step with
the interrupt's stack trace.) The next launch resumes from that checkpoint. The op stays a
plain function, not a generator: Dagster re-raises an interrupt that arrived between two
yields outside the generator, where the op could not catch it; ``context.log_event``
writes each event to the instance at once.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,  # not re-exported by ``dagster`` (1.13)
)
from pydantic import Field

from dataflare_platform.connectors.broker import BrokerError
from dataflare_platform.defs.metadata import column_schema
from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.pools import stream_pool
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.defs.streams.lag import LAG_CHECK, lag_check_result, lag_metadata
from dataflare_platform.engine.durations import to_ms
from dataflare_platform.engine.runner import RunnerConfig
from dataflare_platform.events.log import EventLog, TopicNotFoundError
from dataflare_platform.plugins.specs import load_plugins, plugin_steps
from dataflare_platform.streams.continuous import (
    DEFAULT_CHECKPOINT_INTERVAL_S,
    CheckpointReport,
    ContinuousRun,
)
from dataflare_platform.streams.lag import PipelineLag, has_lag, pipeline_lag
from dataflare_platform.streams.progress import DEFAULT_RATE_WINDOW_S
from dataflare_platform.streams.ranges import output_schema
from dataflare_platform.streams.spec import PipelineSpec

MAX_RESTARTS = 3
# Dagster's run-retry tags (dagster._core.storage.tags; not re-exported by ``dagster``).
MAX_RETRIES_TAG = "dagster/max_retries"
ATTEMPT_TAG = "dagster/retry_number"
WILL_RETRY_TAG = "dagster/will_retry"
DEFAULT_RESTART_BACKOFF_S = 5.0
MAX_RESTART_BACKOFF_S = 300.0
STOP_TIMEOUT_S = 120.0
DEAD_LETTER_CHECK = "dead_letter_rate"  # the stream asset's own check (factory.py)
# Metadata key of the checks build_last_update_freshness_checks makes.
FRESHNESS_PARAMS = "dagster/freshness_params"
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def single_runs_in_progress(instance: dg.DagsterInstance, spec: PipelineSpec) -> list[str]:
    """The pipeline's micro-batch and continuous runs that are queued or running."""
    jobs = [f"{spec.name}_job", continuous_job_name(spec)]
    return [
        run.run_id
        for job in jobs
        for run in instance.get_runs(dg.RunsFilter(job_name=job, statuses=IN_PROGRESS))
    ]


class LongRunConfig(dg.Config):
    """What every long-running stream run takes: the continuous job and the workers."""

    checkpoint_interval_s: float = Field(
        default=DEFAULT_CHECKPOINT_INTERVAL_S,
        gt=0,
        description="Commit a checkpoint at least this often while events flow.",
    )
    restart_backoff_s: float = Field(
        default=DEFAULT_RESTART_BACKOFF_S,
        ge=0,
        description=(
            "An automatic retry waits this long before resuming, doubling per retry "
            f"(capped at {MAX_RESTART_BACKOFF_S:g} s), so a crash loop does not spin."
        ),
    )


class ContinuousConfig(LongRunConfig):
    progress_interval_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Record a materialization and evaluate the asset's checks at most this often "
            "(default: the pipeline's catalog.progress_interval)."
        ),
    )
    rate_window_s: float = Field(
        default=DEFAULT_RATE_WINDOW_S,
        gt=0,
        description="events_per_s is the rate over this many recent seconds.",
    )


def restart_delay_s(attempt: int, backoff_s: float) -> float:
    """Wait before retry ``attempt`` (0 = a normal launch, no wait): exponential, capped,
    so that a pipeline crashing on start does not burn its retries in seconds."""
    if attempt <= 0 or backoff_s <= 0:
        return 0.0
    return min(backoff_s * 2 ** (attempt - 1), MAX_RESTART_BACKOFF_S)


def continuous_job_name(spec: PipelineSpec) -> str:
    return f"{spec.name}_continuous"


def workers_job_name(spec: PipelineSpec) -> str:
    return f"{spec.name}_workers"


def _in_progress(instance: dg.DagsterInstance, job: str) -> list[str]:
    return [r.run_id for r in instance.get_runs(dg.RunsFilter(job_name=job, statuses=IN_PROGRESS))]


def continuous_in_progress(instance: dg.DagsterInstance, spec: PipelineSpec) -> list[str]:
    """Ids of the runs that own the pipeline continuously and are queued or running: its
    continuous run and its partition-parallel worker runs (``workers.py``)."""
    return [
        *_in_progress(instance, continuous_job_name(spec)),
        *_in_progress(instance, workers_job_name(spec)),
    ]


def micro_batch_skip_reason(instance: dg.DagsterInstance, spec: PipelineSpec) -> str | None:
    """Why the micro-batch sensor requests nothing now, naming what runs the pipeline (its
    continuous run, its partition-parallel worker runs, with their run ids: an operator
    reading the tick sees which run to look at or stop), or None when nothing does."""
    single = _in_progress(instance, continuous_job_name(spec))
    workers = _in_progress(instance, workers_job_name(spec))
    causes = []
    if single:
        causes.append(f"runs continuously in run(s) {single}")
    if workers:
        causes.append(f"runs as {len(workers)} partition-parallel worker run(s) {workers}")
    return f"{spec.name} " + " and ".join(causes) if causes else None


def continuous_refusal(instance: dg.DagsterInstance, spec: PipelineSpec, run_id: str) -> str | None:
    """Why run ``run_id`` of the continuous job may not run the pipeline (another run owns
    it continuously: a continuous run, or partition-parallel worker runs, each named with
    how to stop it), or None."""
    single = [r for r in _in_progress(instance, continuous_job_name(spec)) if r != run_id]
    workers = [r for r in _in_progress(instance, workers_job_name(spec)) if r != run_id]
    causes = []
    if single:
        causes.append(f"already runs continuously in run(s) {single}")
    if workers:
        causes.append(
            f"runs as {len(workers)} partition-parallel worker run(s) {workers}; "
            f"`dataflare scale {spec.name} --workers 0` stops them"
        )
    return f"{spec.name} " + "; and it ".join(causes) if causes else None


def _metadata(report: CheckpointReport) -> dict[str, object]:
    values = report.metadata()
    values["offsets"] = dg.MetadataValue.json(values["offsets"])
    values["lag_by_partition"] = dg.MetadataValue.json(values["lag_by_partition"])
    sources = values.pop("sources")
    if sources:  # landing sources: files, dead letters, quarantined names
        values["sources"] = dg.MetadataValue.json(sources)
    values["checkpoint_at"] = dg.MetadataValue.timestamp(report.checkpoint_at)
    return values


def dead_letter_check(
    spec: PipelineSpec, report: CheckpointReport, previous: CheckpointReport | None
) -> dg.AssetCheckResult:
    """The asset's ``dead_letter_rate`` over the interval since the previous recorded
    report (the whole run for the first), as the micro-batch asset has it per run."""
    events = report.events_in - (previous.events_in if previous else 0)
    dead = report.dead_lettered - (previous.dead_lettered if previous else 0)
    rate = dead / events if events else 0.0
    limit = spec.catalog.max_dead_letter_rate
    return dg.AssetCheckResult(
        check_name=DEAD_LETTER_CHECK,
        passed=rate <= limit,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "dead_letter_rate": rate,
            "dead_lettered": dead,
            "events_in": events,
            "max_dead_letter_rate": limit,
        },
    )


@dataclass(frozen=True)
class AssetCheck:
    """One check of the asset that a continuous run evaluates itself."""

    name: str
    blocking: bool
    evaluate: Callable[[], dg.AssetCheckResult]


def asset_checks(
    context: dg.OpExecutionContext, key: dg.AssetKey, resources: dict[str, object]
) -> list[AssetCheck]:
    """The checks other definitions declare on ``key`` (governance components and the
    like), as direct invocations with ``resources``. Left out, with a log line: freshness
    checks (their sensor evaluates them, from these materializations), checks that need
    a context or a resource the op does not have."""
    try:
        repository = context.repository_def
    except Exception:  # dagster's CheckError: a job executed outside any repository
        context.log.warning(
            f"no repository (the job runs outside a code location): only the asset's "
            f"{DEAD_LETTER_CHECK} check is evaluated"
        )
        return []
    found: list[AssetCheck] = []
    for check_key in sorted(
        repository.asset_graph.get_check_keys_for_assets({key}), key=lambda k: k.name
    ):
        definition = repository.asset_checks_defs_by_key.get(check_key)
        if definition is None:  # the asset's own (dead_letter_rate): evaluated above
            continue
        spec = definition.get_spec_for_check_key(check_key)
        needed = set(definition.required_resource_keys) - {"io_manager"}
        if FRESHNESS_PARAMS in spec.metadata:
            continue
        compute = definition.op.compute_fn
        if needed - resources.keys() or getattr(compute, "has_context_arg", lambda: True)():
            context.log.info(
                f"check {check_key.name} is not evaluated in continuous mode "
                f"(needs {sorted(needed - resources.keys()) or 'a context'})"
            )
            continue
        kwargs = {name: resources[name] for name in needed}
        found.append(
            AssetCheck(check_key.name, spec.blocking, partial(_invoke, definition, kwargs))
        )
    return found


def _invoke(definition: dg.AssetChecksDefinition, kwargs: dict) -> dg.AssetCheckResult:
    return definition(**kwargs)


def _evaluation(
    key: dg.AssetKey,
    name: str,
    result: dg.AssetCheckResult,
    blocking: bool,
    target: AssetCheckEvaluationTargetMaterializationData | None,
) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=name,
        passed=result.passed,
        metadata=dict(result.metadata),
        target_materialization_data=target,
        severity=result.severity,
        description=result.description,
        blocking=blocking,
    )


def _target(instance: dg.DagsterInstance, key: dg.AssetKey, run_id: str):
    """The materialization the run recorded last, to tie check evaluations to."""
    records = instance.fetch_materializations(key, limit=1).records
    if not records or records[0].run_id != run_id:
        return None
    record = records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
    )


def continuous_definitions(spec: PipelineSpec, key: dg.AssetKey) -> dg.Definitions:
    """The ``<name>_continuous`` job (restarts: Dagster's run retries, see the op)."""
    name = continuous_job_name(spec)

    @dg.op(
        name=f"run_{name}",
        description=f"Runs {spec.name!r} continuously until terminated.",
        pool=stream_pool(spec.name),
    )
    def run_continuously(
        context: dg.OpExecutionContext,
        config: ContinuousConfig,
        dataflare: ProjectHomeResource,
        plugins: PluginRuntimeResource,
    ) -> None:
        refusal = continuous_refusal(context.instance, spec, context.run_id)
        if refusal:
            # A duplicate launch: retrying it would only fail again, so opt this run out.
            context.instance.add_run_tags(context.run_id, {MAX_RETRIES_TAG: "0"})
            raise dg.Failure(refusal)
        if not context.instance.run_retries_enabled:
            context.log.warning(
                f"{spec.name}: run_retries is off in this instance's dagster.yaml; "
                "a crashed continuous run will not be restarted"
            )
        progress = _Progress(context, spec, key, config, dataflare, plugins)
        run: ContinuousRun | None = None
        try:
            attempt = int(context.run.tags.get(ATTEMPT_TAG, "0"))
            delay = restart_delay_s(attempt, config.restart_backoff_s)
            if attempt:
                limit = context.run.tags.get(MAX_RETRIES_TAG, "?")
                context.log.info(
                    f"{spec.name}: automatic restart {attempt} of {limit} "
                    f"(after run {context.run.parent_run_id}); resuming in {delay:g} s"
                )
                time.sleep(delay)  # a termination interrupts the wait
            home = dataflare.home
            loaded = load_plugins(spec, plugins.registry()) if plugin_steps(spec) else None
            run = ContinuousRun(
                spec,
                EventLog(home.event_log_dir),
                home.root / "streams",
                plugins=loaded,
                config=RunnerConfig(checkpoint_interval_s=config.checkpoint_interval_s),
                rate_window_s=config.rate_window_s,
            ).start()
            for checkpoint in run.reports_or_idle():
                failed = progress.checkpoint(checkpoint)
                if failed is not None:
                    _stop(context, spec, run, progress)
                    # Retrying would fail the same check again.
                    context.instance.add_run_tags(context.run_id, {MAX_RETRIES_TAG: "0"})
                    context.log.error(failed)
                    raise dg.Failure(description=failed, allow_retries=False) from None
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
            context.log.info(f"{spec.name}: stop requested; finishing the batch and checkpointing")
            if run is not None:
                _stop(context, spec, run, progress)
            return

    @dg.job(
        name=name,
        executor_def=dg.in_process_executor,
        tags={
            "dataflare/pipeline": spec.name,
            "dataflare/mode": "continuous",
            MAX_RETRIES_TAG: str(MAX_RESTARTS),
        },
        description=(
            f"{spec.name} as a long-running run: terminate it to stop (graceful; the run "
            "ends SUCCESS); a new launch resumes from its checkpoint. A crashed run is "
            f"retried by Dagster (run_retries) up to {MAX_RESTARTS} times, with a growing "
            "delay; a failing blocking check stops it for good."
        ),
    )
    def job():
        run_continuously()

    return dg.Definitions(jobs=[job])


def _stop(
    context: dg.OpExecutionContext, spec: PipelineSpec, run: ContinuousRun, progress: "_Progress"
) -> None:
    """Stop the engine (batch in flight finished, checkpoint committed) and record the
    final progress; what the run reports stays consistent with the checkpoint."""
    if not run.stop(STOP_TIMEOUT_S):
        raise dg.Failure(f"{spec.name}: still running {STOP_TIMEOUT_S:g} s after stop")
    for checkpoint in run.reports():
        progress.checkpoint(checkpoint)
    progress.flush()
    offsets = run.result.checkpoint.offsets if run.result else {}
    context.log.info(f"{spec.name}: stopped; final checkpoint committed at {offsets}")


class _Progress:
    """What the op records of the checkpoints it is handed: a materialization (with the
    asset's checks) at most every progress interval, a log line for the others."""

    def __init__(
        self,
        context: dg.OpExecutionContext,
        spec: PipelineSpec,
        key: dg.AssetKey,
        config: ContinuousConfig,
        dataflare: ProjectHomeResource,
        plugins: PluginRuntimeResource,
    ) -> None:
        self.context, self.spec, self.key = context, spec, key
        self.interval_s = config.progress_interval_s or to_ms(spec.catalog.progress_interval) / 1000
        self.streams_dir = dataflare.home.root / "streams"
        self.log = EventLog(dataflare.home.event_log_dir) if has_lag(spec) else None
        self.checks = asset_checks(context, key, {"dataflare": dataflare, "plugins": plugins})
        self.recorded: CheckpointReport | None = None  # the last one materialized
        self.pending: CheckpointReport | None = None  # newer, not yet materialized
        self.recorded_at: float | None = None
        self.reported_at: float | None = None  # when the newest checkpoint came
        self.idle_after_s = max(self.interval_s, config.rate_window_s)
        self.schema = None

    def _gone_idle(self, now: float) -> bool:
        """Whether the last recorded rate is non-zero but no checkpoint came since it
        for a whole progress interval and rate window."""
        return (
            self.pending is not None
            and self.pending is self.recorded
            and self.recorded.events_per_s > 0
            and self.reported_at is not None
            and now - self.reported_at >= self.idle_after_s
        )

    def checkpoint(self, report: CheckpointReport | None) -> str | None:
        """Take a committed checkpoint's report (None: time passed without one); record
        the newest one not yet recorded when due. Returns why the pipeline must stop (a
        failing blocking check), else None."""
        now = time.monotonic()
        if report is not None:
            self.pending, self.reported_at = report, now
            self.context.log.debug(
                f"{self.spec.name}: checkpoint at {report.offsets}, "
                f"{report.events_per_s:g} events/s"
            )
        elif self._gone_idle(now):
            # No checkpoint for a whole rate window: the stream is idle, and the asset's
            # current rate must say so rather than keep the last busy figure.
            self.pending = replace(self.pending, events_per_s=0.0)  # type: ignore[arg-type]
        if self.pending is None or self.pending is self.recorded:
            return None
        due = self.recorded_at is None or time.monotonic() - self.recorded_at >= self.interval_s
        return self.record() if due else None

    def flush(self) -> str | None:
        """Record the newest report if it was not yet (the end of the run)."""
        if self.pending is None or self.pending is self.recorded:
            return None
        return self.record()

    def lag(self, report: CheckpointReport) -> PipelineLag | None:
        """The lag at this checkpoint, in events and seconds behind the sources' committed
        ends now (None: no source with ends, or a source not there yet)."""
        if self.log is None:
            return None
        try:
            lag = pipeline_lag(self.spec, self.log, report.checkpoint)
        except (TopicNotFoundError, BrokerError) as err:
            self.context.log.info(f"{self.spec.name}: lag not evaluated ({err})")
            return None
        return lag

    def record(self) -> str | None:
        report = self.pending
        assert report is not None
        metadata = _metadata(report)
        if self.schema is None:
            self.schema = output_schema(self.spec, self.streams_dir)
        if self.schema is not None:
            metadata["dagster/column_schema"] = column_schema(self.schema)
        lag = self.lag(report)
        if lag is not None:
            metadata.update(lag_metadata(lag))
        self.context.log_event(
            dg.AssetMaterialization(
                self.key,
                description=f"continuous run: {report.events_in} events in so far",
                metadata=metadata,
            )
        )
        previous, self.recorded, self.recorded_at = self.recorded, report, time.monotonic()
        target = _target(self.context.instance, self.key, self.context.run_id)
        results = [(dead_letter_check(self.spec, report, previous), False)]
        names = [DEAD_LETTER_CHECK]
        if lag is not None:  # never blocking: a lagging pipeline must keep running
            results.append((lag_check_result(self.spec, lag), False))
            names.append(LAG_CHECK)
        for check in self.checks:
            try:
                results.append((check.evaluate(), check.blocking))
            except Exception as err:  # a broken check fails, like a failed step would
                failed = dg.AssetCheckResult(
                    passed=False,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=f"the check raised {type(err).__name__}: {err}",
                )
                results.append((failed, check.blocking))
        names += [c.name for c in self.checks]
        reasons = []
        for name, (result, blocking) in zip(names, results, strict=True):
            self.context.log_event(_evaluation(self.key, name, result, blocking, target))
            if blocking and not result.passed and result.severity == dg.AssetCheckSeverity.ERROR:
                reasons.append(f"{name}: {result.description or 'failed'}")
        if reasons:
            return (
                f"{self.spec.name} stopped: blocking check failed on "
                f"{self.key.to_user_string()}: " + "; ".join(reasons)
            )
        return None
