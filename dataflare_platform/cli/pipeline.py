"""``dataflare pipeline``: check and run declarative (YAML) pipelines with the engine
alone; ``dataflare pipelines``: the pipelines of a Dagster web server (status, start and
stop their continuous runs), through the GraphQL client."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dataflare_platform.cli._common import (
    HomeOption,
    JsonOption,
    WebserverHost,
    WebserverPort,
    client,
    command_group,
    err_console,
    print_json,
    table,
)

if TYPE_CHECKING:
    from dataflare_platform.streams.spec import PipelineSpec

pipeline_app = command_group(help="Declarative (YAML) pipelines.")


@pipeline_app.command("validate")
def pipeline_validate(spec: Annotated[Path, typer.Argument(help="Pipeline YAML file.")]) -> None:
    """Check a pipeline file; errors name the field."""
    from dataflare_platform.streams.spec import PipelineSpec

    loaded = PipelineSpec.from_yaml(spec)
    err_console().print(
        f"{spec}: pipeline {loaded.name!r} is valid ({len(loaded.streams)} streams)"
    )


@pipeline_app.command("run")
def pipeline_run(
    spec: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    batch_rows: Annotated[int, typer.Option(help="Rows per micro-batch.")] = 10_000,
    checkpoint_every: Annotated[int, typer.Option(help="Batches per checkpoint.")] = 10,
) -> None:
    """Run a pipeline file over its bounded input (resuming from its last checkpoint)."""
    from dataflare_platform.engine import Runner, RunnerConfig
    from dataflare_platform.streams.spec import PipelineSpec

    loaded = PipelineSpec.from_yaml(spec)
    pipeline = loaded.build(bounded=True, plugins=_plugins(loaded))
    config = RunnerConfig(batch_rows=batch_rows, checkpoint_every=checkpoint_every)
    result = Runner(pipeline, config).run()
    print_json({"pipeline": pipeline.name, **result.as_dict()})


@pipeline_app.command("reset-state")
def pipeline_reset_state(
    spec: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    step: Annotated[
        str,
        typer.Option(
            "--step",
            help="The step whose state to drop: its id as a restore refusal names it"
            " (e.g. 2:plugin:hll_distinct), or the part after the number if only one fits.",
        ),
    ],
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: the step forgets what it had counted.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Drop one step's state from the pipeline's last checkpoint, keeping the offsets and
    the other steps' state: the way out when the step refuses its checkpointed state
    (another plugin version, a damaged state). Audited; JSON says what was dropped."""
    import getpass

    from dataflare_platform.cli._common import UsageError
    from dataflare_platform.streams.spec import PipelineSpec
    from dataflare_platform.streams.state_reset import reset_step_state

    loaded = PipelineSpec.from_yaml(spec)
    if not yes:
        reset = reset_step_state(loaded, step, apply=False)
        plugin = _plugin_identity(reset.state)
        what = f"plugin {plugin['plugin']} {plugin['version']}, " if plugin else ""
        raise UsageError(
            f"this drops step {reset.step}'s state ({what}{sum(reset.tables.values())} rows,"
            f" sha256 {reset.state_sha256[:16]}) from pipeline {reset.pipeline!r}'s last"
            " checkpoint: the step starts empty (an aggregate forgets what it counted) while"
            " the offsets and the other steps' state are kept; add --yes to do it"
        )
    from dataflare_platform.compliance.audit import AuditAction, AuditLog
    from dataflare_platform.compliance.audit_keys import AuditSettings

    # The log is opened first: a reset it cannot record is not made.
    with AuditLog.open(AuditSettings.resolve(home=home)) as log:
        reset = reset_step_state(loaded, step, apply=True)
        plugin = _plugin_identity(reset.state)
        details = {
            **reset.as_dict(),
            "os_user": getpass.getuser(),
            **({"plugin": plugin} if plugin else {}),
        }
        details.pop("applied")
        log.append(
            "system:cli",
            AuditAction.PIPELINE_STATE_RESET,
            f"pipeline:{reset.pipeline}",
            details,
        )
    print_json({**reset.as_dict(), **({"plugin": plugin} if plugin else {})})


def _plugin_identity(state: dict[str, Any]) -> dict[str, object] | None:
    """The identity header of a plugin step's checkpointed state, if it is one."""
    table = state.get("plugin")
    if table is None or "state" not in table.column_names or table.num_rows != 1:
        return None
    from dataflare_platform.plugins.runtime import state_identity

    return state_identity(table.column("state")[0].as_py() or b"")


def _plugins(spec: PipelineSpec) -> dict[str, Any] | None:
    """The plugins of ``spec``'s plugin steps, loaded as a Dagster run of the deployment
    loads them: the same resource (``PluginRuntimeResource``, its settings from the
    deployment's environment: plugin folder, sandbox limits, capabilities), the same pin
    checks (the pipeline's own ``plugins.lock``, then the deployment's; unpinned plugins
    refused unless the deployment allows them; refusals audited) and the same
    ``plugins.specs.load_plugins``. None without plugin steps (nothing to import)."""
    from dataflare_platform.plugins.specs import load_plugins, plugin_steps

    if not plugin_steps(spec):
        return None
    from dataflare_platform.defs.plugins.resources import PluginRuntimeResource

    return dict(load_plugins(spec, PluginRuntimeResource.resolved_from_environment().registry()))


pipelines_app = command_group(
    help="Stream pipelines on the Dagster web server: status, start and stop continuous runs."
)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return ""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _per_partition(values: dict[str, int] | None) -> str:
    if values is None:
        return "?"
    return " ".join(f"{k}={v}" for k, v in sorted(values.items()))


@pipelines_app.command("status")
def pipelines_status(
    as_json: JsonOption = False,
    home: HomeOption = None,
    host: WebserverHost = "127.0.0.1",
    port: WebserverPort = 3000,
) -> None:
    """Every pipeline: mode (continuous, micro-batch, idle), current run, offsets and lag
    per partition, current rate, watermark, last checkpoint and dead letters."""
    from dataflare_platform.client.pipelines import pipeline_status
    from dataflare_platform.errors import ConfigError
    from dataflare_platform.events.log import EventLog
    from dataflare_platform.home import ProjectHome
    from dataflare_platform.streams.ranges import load_specs

    try:  # the lag reads topic ends where the shipped pipelines' topics are
        specs = {s.name: s for s in load_specs()}
    except ConfigError:
        specs = {}
    log = EventLog(ProjectHome.resolve(home).event_log_dir)
    statuses = pipeline_status(client(host, port), specs, log)
    if as_json:
        print_json([s.as_dict() for s in statuses])
        return
    table(
        f"{len(statuses)} pipeline(s)",
        (
            "pipeline",
            "mode",
            "run",
            "status",
            "offsets",
            "lag",
            "events/s",
            "watermark",
            "last checkpoint",
            "dead letters",
        ),
        [
            (
                s.name,
                s.mode,
                s.run_id,
                s.run_status,
                _per_partition(s.offsets),
                _per_partition(s.lag),
                s.events_per_s,
                _when(s.watermark_ms / 1000) if s.watermark_ms else "",
                _when(s.last_checkpoint),
                s.dead_lettered,
            )
            for s in statuses
        ],
    )


@pipelines_app.command("start")
def pipelines_start(
    name: Annotated[str, typer.Argument(help="Pipeline name (see `pipelines status`).")],
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Run config of the continuous job as a YAML file."),
    ] = None,
    host: WebserverHost = "127.0.0.1",
    port: WebserverPort = 3000,
) -> None:
    """Launch NAME's continuous job (`<name>_continuous`); it resumes from the last
    checkpoint. Prints the run id."""
    from dataflare_platform.cli.launch import _run_config
    from dataflare_platform.client.pipelines import start_pipeline

    dagster = client(host, port)
    run_id = start_pipeline(dagster, name, _run_config(config))
    print_json({"pipeline": name, "run_id": run_id, "status": dagster.status(run_id)})


@pipelines_app.command("stop")
def pipelines_stop(
    name: Annotated[str, typer.Argument(help="Pipeline name (see `pipelines status`).")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the run to end.")] = True,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait.")] = 300.0,
    host: WebserverHost = "127.0.0.1",
    port: WebserverPort = 3000,
) -> None:
    """Stop NAME's continuous run gracefully (batch finished, checkpoint committed).
    Prints each run's status (final with --wait)."""
    from dataflare_platform.client.pipelines import stop_pipeline

    dagster = client(host, port)
    stopped = stop_pipeline(dagster, name)
    print_json(
        {
            "pipeline": name,
            "runs": {
                run_id: dagster.wait(run_id, timeout_s=timeout) if wait else dagster.status(run_id)
                for run_id in stopped
            },
        }
    )
