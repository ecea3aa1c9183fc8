"""Micro-batch runs of declarative pipelines over offset ranges of their sources.

A run is given the end offset to reach per ``source/partition``; the engine resumes from
the checkpoint its sink committed with the last output, so a range already processed
(a repeated or overlapping request) reads nothing again. Ranges cover the sources whose
kind has readable end offsets (topic, nats, redis, file: ``connectors.registry``).
"""

from __future__ import annotations

from pathlib import Path

from dataflare_platform.component_files import STREAM_PIPELINE, find_instances
from dataflare_platform.connectors import duckdb as duckdb_connector
from dataflare_platform.connectors.broker import BrokerError
from dataflare_platform.engine.runner import Runner, RunnerConfig, RunResult
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.log import EventLog, TopicNotFoundError
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.streams import bind
from dataflare_platform.streams.python_specs import load_python_specs
from dataflare_platform.streams.spec import PipelineSpec

# The shipped Python pipelines' package (its ``builders/``); YAML ones are under ``defs/``.
PIPELINES_DIR = Path(__file__).parents[1] / "pipelines"


def _shown(path: Path) -> str:
    """A file named for a reader: from the package (``defs/streams/x/defs.yaml``) when it
    is one of ours, by its name otherwise (a folder of loose files)."""
    package = PIPELINES_DIR.parent
    return str(path.relative_to(package)) if path.is_relative_to(package) else path.name


def load_specs(directory: Path | None = None) -> list[PipelineSpec]:
    """Every pipeline of ``directory``: each ``*.yaml`` file (a bare spec or a component
    instance), each ``*/defs.yaml`` component instance, and each ``@stream_pipeline``
    function of ``builders/*.py``. Without a directory: the shipped pipelines, i.e. the
    StreamPipelineComponent instances under ``defs/`` and the builders of this folder.
    A bad file raises ConfigError naming the file and the field. Two pipelines may not
    share a name."""
    declared: list[tuple[Path, PipelineSpec]] = []
    if directory is None:
        directory, files = PIPELINES_DIR, []
        instances = find_instances(STREAM_PIPELINE)
    else:
        directory = Path(directory)
        files = sorted(directory.glob("*.yaml"))
        instances = [
            (path, attributes)
            for path, attributes in find_instances(STREAM_PIPELINE, directory)
            if path.parent.parent == directory
        ]
    for path, attributes in instances:  # a defs.yaml may hold several documents
        try:
            declared.append((path, PipelineSpec.load(attributes).relative_to(path.parent)))
        except ConfigError as err:
            raise ConfigError(f"pipeline file {path}", err.problems) from None
    for path in files:
        try:
            declared.append((path, PipelineSpec.from_yaml(path)))
        except ConfigError as err:
            raise ConfigError(f"pipeline file {path}", err.problems) from None
    declared.extend(load_python_specs(directory))
    specs: dict[str, tuple[Path, PipelineSpec]] = {}
    for path, spec in declared:
        if spec.name in specs:
            raise ConfigError(
                f"pipeline file {path}",
                [("name", f"{spec.name!r} is also declared in {_shown(specs[spec.name][0])}")],
            )
        specs[spec.name] = (path, spec)
    return [spec for _, spec in specs.values()]


def topics_of(spec: PipelineSpec) -> dict[str, str]:
    """Source name → topic, for the sources that read topics of the event log."""
    return {name: s.topic for name, s in spec.sources.items() if s.kind == "topic"}


def source_ends(spec: PipelineSpec, log: EventLog) -> dict[str, int]:
    """End offset of every ``source/partition`` the pipeline ranges over (committed
    ends for topics)."""
    return bind.source_ends(spec, bind.context(spec, log))


def pending_range(
    spec: PipelineSpec, log: EventLog, requested: dict[str, int]
) -> dict[str, int] | None:
    """The ends to request next, or None when no source moved past ``requested`` (what
    the previous request asked for) or a source does not exist yet (a topic or broker
    stream not yet created)."""
    try:
        ends = source_ends(spec, log)
    except (TopicNotFoundError, BrokerError):
        return None
    if not ends or all(end <= requested.get(key, 0) for key, end in ends.items()):
        return None
    return ends


def output_schema(spec: PipelineSpec, default_dir: Path):
    """The Arrow schema of a pipeline's DuckDB output table, once it exists (else None)."""
    sink = spec.sink
    if sink.kind != "duckdb":
        return None
    path = duckdb_connector.default_path(sink, spec.name, default_dir)
    if not path.exists():
        return None
    with duckdb_connector.reading(path) as conn:
        tables = conn.sql("SELECT table_name FROM information_schema.tables").fetchall()
        if (sink.table,) not in tables:
            return None
        return (
            conn.sql(f"SELECT * FROM {quote_identifier(sink.table)} LIMIT 0")
            .to_arrow_table()
            .schema
        )


def run_range(
    spec: PipelineSpec,
    log: EventLog,
    until: dict[str, int],
    default_dir: Path,
    plugins: dict | None = None,
    config: RunnerConfig | None = None,
) -> RunResult:
    """Process the pipeline's sources up to ``until`` and commit (bounded run).

    The spec is bound once (``bind.build``): ``until`` is checked against the partitions
    of the sources that binding opened, not by opening them again to read their ends."""
    pipeline = bind.build(spec, log=log, default_dir=default_dir, plugins=plugins)
    try:
        unknown = sorted(set(until) - pipeline.partition_keys())
        if unknown:
            if pipeline.sink is not None:
                pipeline.sink.close()
            raise ConfigError(
                f"pipeline {spec.name!r}", [("until", f"unknown source partitions {unknown}")]
            )
        return Runner(pipeline, config or RunnerConfig()).run(mode="bounded", until=until)
    finally:
        bind.close_sources(pipeline)
