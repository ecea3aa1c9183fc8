"""Continuous mode of a declarative pipeline: a job whose one op runs the pipeline until
the run is terminated, reporting each committed checkpoint as a materialization of the
pipeline's asset, and a run-failure sensor that relaunches a crashed run a bounded number
of times.

Termination (the UI's Terminate button, ``DataflareClient.terminate``) interrupts the
op's thread with ``DagsterExecutionInterruptedError``: the op then sets the engine's stop
event, so the engine finishes the batch in flight and commits a checkpoint, reports it and
re-raises (the run ends CANCELED). The next launch resumes from that checkpoint.
"""

import dagster as dg
from pydantic import Field

from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.engine.runner import RunnerConfig
from dataflare_platform.engine.spec import PipelineSpec
from dataflare_platform.events.log import EventLog
from dataflare_platform.pipelines.continuous import (
    DEFAULT_CHECKPOINT_INTERVAL_S,
    CheckpointReport,
    ContinuousRun,
)
from dataflare_platform.plugins.specs import load_plugins, plugin_steps

MAX_RESTARTS = 3
ATTEMPT_TAG = "dataflare/attempt"
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


def continuous_definitions(
    spec: PipelineSpec, key: dg.AssetKey, sensor_interval_s: int
) -> dg.Definitions:
    name = continuous_job_name(spec)

    @dg.op(name=f"run_{name}", description=f"Runs {spec.name!r} continuously until terminated.")
    def run_continuously(
        context: dg.OpExecutionContext,
        config: ContinuousConfig,
        dataflare: ProjectHomeResource,
        plugins: PluginRuntimeResource,
    ) -> None:
        others = [r for r in continuous_in_progress(context.instance, spec) if r != context.run_id]
        if others:
            raise dg.Failure(f"{spec.name} already runs continuously in run(s) {others}")
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
        tags={"dataflare/pipeline": spec.name, "dataflare/mode": "continuous"},
        description=(
            f"{spec.name} as a long-running run: terminate it to stop (graceful); "
            "a new launch resumes from its checkpoint."
        ),
    )
    def job():
        run_continuously()

    @dg.run_failure_sensor(
        name=f"{name}_restart",
        monitored_jobs=[job],
        request_job=job,
        minimum_interval_seconds=sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Relaunches a failed {name} run, at most {MAX_RESTARTS} times in a row.",
    )
    def restart(context: dg.RunFailureSensorContext):
        failed = context.dagster_run
        attempt = int(failed.tags.get(ATTEMPT_TAG, "0"))
        if attempt >= MAX_RESTARTS:
            return dg.SkipReason(f"{failed.run_id} failed after {attempt} restarts: giving up")
        if continuous_in_progress(context.instance, spec):
            return dg.SkipReason(f"{name} already has a run in progress")
        return dg.RunRequest(
            run_key=f"restart:{failed.run_id}",
            run_config=failed.run_config,
            tags={ATTEMPT_TAG: str(attempt + 1), "dataflare/restart_of": failed.run_id},
        )

    return dg.Definitions(jobs=[job], sensors=[restart])
