"""``dataflare pipeline``: check and run declarative (YAML) pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dataflare_platform.cli._common import command_group, err_console, print_json

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

    pipeline = PipelineSpec.from_yaml(spec).build(bounded=True)
    config = RunnerConfig(batch_rows=batch_rows, checkpoint_every=checkpoint_every)
    result = Runner(pipeline, config).run()
    print_json({"pipeline": pipeline.name, **result.as_dict()})
