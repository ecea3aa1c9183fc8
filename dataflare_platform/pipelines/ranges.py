"""Micro-batch runs of declarative pipelines over offset ranges of their topics.

A run is given the end offset to reach per ``source/partition``; the engine resumes from
the checkpoint its sink committed with the last output, so a range already processed
(a repeated or overlapping request) reads nothing again.
"""

from __future__ import annotations

from pathlib import Path

from dataflare_platform.engine.runner import Runner, RunnerConfig, RunResult
from dataflare_platform.engine.sinks import DuckDBSink, Sink
from dataflare_platform.engine.spec import PipelineSpec
from dataflare_platform.errors import ConfigError
from dataflare_platform.events import specs as event_specs
from dataflare_platform.events.log import EventLog, TopicNotFoundError
from dataflare_platform.pipelines.python_specs import load_python_specs

PIPELINES_DIR = Path(__file__).parent


def load_specs(directory: Path = PIPELINES_DIR) -> list[PipelineSpec]:
    """Every pipeline of ``directory``: each ``*.yaml`` file, and each ``@stream_pipeline``
    function of ``builders/*.py``. A bad file raises ConfigError naming the file and the
    field. Two pipelines may not share a name."""
    declared: list[tuple[Path, PipelineSpec]] = []
    for path in sorted(Path(directory).glob("*.yaml")):
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
                [("name", f"{spec.name!r} is also declared in {specs[spec.name][0].name}")],
            )
        specs[spec.name] = (path, spec)
    return [spec for _, spec in specs.values()]


def topics_of(spec: PipelineSpec) -> dict[str, str]:
    """Source name → topic, for the sources that read topics."""
    return {name: s.topic for name, s in spec.sources.items() if s.topic is not None}


def source_ends(spec: PipelineSpec, log: EventLog) -> dict[str, int]:
    """Committed end offset of every ``source/partition`` the pipeline reads."""
    ends: dict[str, int] = {}
    for name, topic_name in topics_of(spec).items():
        topic = log.topic(topic_name)
        for partition, end in topic.committed_ends().items():
            ends[f"{name}/{partition}"] = end
    return ends


def pending_range(
    spec: PipelineSpec, log: EventLog, requested: dict[str, int]
) -> dict[str, int] | None:
    """The ends to request next, or None when no source moved past ``requested`` (what
    the previous request asked for) or a topic does not exist yet."""
    try:
        ends = source_ends(spec, log)
    except TopicNotFoundError:
        return None
    if not ends or all(end <= requested.get(key, 0) for key, end in ends.items()):
        return None
    return ends


def output_sink(spec: PipelineSpec, default_dir: Path) -> Sink | None:
    """A DuckDB sink declared without a path writes ``<default_dir>/<pipeline>.duckdb``
    (one file per pipeline: DuckDB has one writer per file); other sinks are the spec's."""
    duck = spec.sink.duckdb
    if duck is not None and "path" not in duck:
        default_dir.mkdir(parents=True, exist_ok=True)
        return DuckDBSink(
            default_dir / f"{spec.name}.duckdb", duck["table"], duck.get("upsert_keys")
        )
    return None


def output_schema(spec: PipelineSpec, default_dir: Path):
    """The Arrow schema of a pipeline's DuckDB output table, once it exists (else None)."""
    import duckdb

    duck = spec.sink.duckdb
    if duck is None:
        return None
    path = Path(duck["path"]) if "path" in duck else default_dir / f"{spec.name}.duckdb"
    if not path.exists():
        return None
    with duckdb.connect(str(path), read_only=True) as conn:
        tables = conn.sql("SELECT table_name FROM information_schema.tables").fetchall()
        if (duck["table"],) not in tables:
            return None
        return conn.sql(f'SELECT * FROM "{duck["table"]}" LIMIT 0').to_arrow_table().schema


def run_range(
    spec: PipelineSpec,
    log: EventLog,
    until: dict[str, int],
    default_dir: Path,
    plugins: dict | None = None,
    config: RunnerConfig | None = None,
) -> RunResult:
    """Process the pipeline's topics up to ``until`` and commit (bounded run)."""
    pipeline = event_specs.build(
        spec, log, sink=output_sink(spec, default_dir), bounded=False, plugins=plugins
    )
    known = set(source_ends(spec, log))
    unknown = sorted(set(until) - known)
    if unknown:
        raise ConfigError(
            f"pipeline {spec.name!r}", [("until", f"unknown source partitions {unknown}")]
        )
    return Runner(pipeline, config or RunnerConfig()).run(mode="bounded", until=until)
