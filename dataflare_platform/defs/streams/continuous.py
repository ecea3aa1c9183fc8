"""Continuous mode of a declarative pipeline: a job whose one op runs the pipeline until
the run is terminated, reporting each committed checkpoint as a materialization of the
pipeline's asset.

Crash restarts are Dagster's own run retries, not a sensor of ours: the job carries the
``dagster/max_retries`` tag, so with ``run_retries: enabled`` in the instance's
``dagster.yaml`` the daemon re-executes a FAILED run (a worker killed by SIGKILL or the OOM
killer is marked FAILED by the code server that spawned it) at most ``MAX_RESTARTS`` times
per run group, tagging each retry ``dagster/retry_number``. Dagster's retries have no delay
(1.13), so the op itself waits ``restart_delay_s`` before resuming on a retry: a crash loop
backs off exponentially instead of spinning. One mechanism only, so a crash is never
relaunched twice; the retry resumes from the pipeline's last checkpoint like any launch.

Termination (the UI's Terminate button, ``DataflareClient.terminate``) interrupts the
op's thread with ``DagsterExecutionInterruptedError``: the op then sets the engine's stop
event, so the engine finishes the batch in flight and commits a checkpoint, reports it and
re-raises (the run ends CANCELED). The next launch resumes from that checkpoint.
"""

import time

import dagster as dg
from pydantic import Field

from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.pools import stream_pool
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.engine.runner import RunnerConfig
from dataflare_platform.events.log import EventLog
from dataflare_platform.plugins.specs import load_plugins, plugin_steps
from dataflare_platform.streams.continuous import (
    DEFAULT_CHECKPOINT_INTERVAL_S,
    CheckpointReport,
    ContinuousRun,
)
from dataflare_platform.streams.spec import PipelineSpec

MAX_RESTARTS = 3
# Dagster's run-retry tags (dagster._core.storage.tags; not re-exported by ``dagster``).
MAX_RETRIES_TAG = "dagster/max_retries"
ATTEMPT_TAG = "dagster/retry_number"
WILL_RETRY_TAG = "dagster/will_retry"
DEFAULT_RESTART_BACKOFF_S = 5.0
MAX_RESTART_BACKOFF_S = 300.0
STOP_TIMEOUT_S = 120.0
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


class ContinuousConfig(dg.Config):
    checkpoint_interval_s: float = Field(
        default=DEFAULT_CHECKPOINT_INTERVAL_S,
        gt=0,
        description="Commit a checkpoint (and report it) at least this often while events flow.",
    )
    restart_backoff_s: float = Field(
        default=DEFAULT_RESTART_BACKOFF_S,
        ge=0,
        description=(
            "An automatic retry waits this long before resuming, doubling per retry "
            f"(capped at {MAX_RESTART_BACKOFF_S:g} s), so a crash loop does not spin."
        ),
    )


def restart_delay_s(attempt: int, backoff_s: float) -> float:
    """Wait before retry ``attempt`` (0 = a normal launch, no wait): exponential, capped,
    so that a pipeline crashing on start does not burn its retries in seconds."""
    if attempt <= 0 or backoff_s <= 0:
        return 0.0
    return min(backoff_s * 2 ** (attempt - 1), MAX_RESTART_BACKOFF_S)


def continuous_job_name(spec: PipelineSpec) -> str:
    return f"{spec.name}_continuous"


def continuous_in_progress(instance: dg.DagsterInstance, spec: PipelineSpec) -> list[str]:
    """Ids of the pipeline's continuous runs that are queued or running."""
    runs = instance.get_runs(
        dg.RunsFilter(job_name=continuous_job_name(spec), statuses=IN_PROGRESS)
    )
    return [run.run_id for run in runs]


def _metadata(report: CheckpointReport) -> dict[str, object]:
    values = report.metadata()
    values["offsets"] = dg.MetadataValue.json(values["offsets"])
    return values


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
        others = [r for r in continuous_in_progress(context.instance, spec) if r != context.run_id]
        if others:
            # A duplicate launch: retrying it would only fail again, so opt this run out.
            context.instance.add_run_tags(context.run_id, {MAX_RETRIES_TAG: "0"})
            raise dg.Failure(f"{spec.name} already runs continuously in run(s) {others}")
        if not context.instance.run_retries_enabled:
            context.log.warning(
                f"{spec.name}: run_retries is off in this instance's dagster.yaml; "
                "a crashed continuous run will not be restarted"
            )
        attempt = int(context.run.tags.get(ATTEMPT_TAG, "0"))
        delay = restart_delay_s(attempt, config.restart_backoff_s)
        if attempt:
            limit = context.run.tags.get(MAX_RETRIES_TAG, "?")
            context.log.info(
                f"{spec.name}: automatic restart {attempt} of {limit} "
                f"(after run {context.run.parent_run_id}); resuming in {delay:g} s"
            )
            time.sleep(delay)  # a termination interrupts the wait (run ends CANCELED)
        home = dataflare.home
        loaded = load_plugins(spec, plugins.registry()) if plugin_steps(spec) else None
        run = ContinuousRun(
            spec,
            EventLog(home.event_log_dir),
            home.root / "streams",
            plugins=loaded,
            config=RunnerConfig(checkpoint_interval_s=config.checkpoint_interval_s),
        ).start()

        def report(checkpoint: CheckpointReport) -> None:
            context.log_event(
                dg.AssetMaterialization(
                    key, description="continuous checkpoint", metadata=_metadata(checkpoint)
                )
            )

        try:
            for checkpoint in run.reports():
                report(checkpoint)
        except dg.DagsterExecutionInterruptedError:
            context.log.info(f"{spec.name}: terminated; finishing the batch and checkpointing")
            if not run.stop(STOP_TIMEOUT_S):
                context.log.error(f"{spec.name}: still running {STOP_TIMEOUT_S:g} s after stop")
                raise
            for checkpoint in run.reports():
                report(checkpoint)
            context.log.info(f"{spec.name}: stopped at {run.result.checkpoint.offsets}")
            raise

    @dg.job(
        name=name,
        executor_def=dg.in_process_executor,
        tags={
            "dataflare/pipeline": spec.name,
            "dataflare/mode": "continuous",
            MAX_RETRIES_TAG: str(MAX_RESTARTS),
        },
        description=(
            f"{spec.name} as a long-running run: terminate it to stop (graceful); "
            "a new launch resumes from its checkpoint. A crashed run is retried by Dagster "
            f"(run_retries) up to {MAX_RESTARTS} times, with a growing delay."
        ),
    )
    def job():
        run_continuously()

    return dg.Definitions(jobs=[job])
