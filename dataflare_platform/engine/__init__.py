"""The micro-batch streaming engine (data plane: no Dagster imports).

Build a pipeline with :class:`Pipeline` / :class:`Stream`, run it with :class:`Runner`.
"""

from dataflare_platform.engine.aggregations import Agg, count, max_, mean, min_, sum_
from dataflare_platform.engine.pipeline import Pipeline, Stream, session, sliding, tumbling
from dataflare_platform.engine.runner import Runner, RunnerConfig, RunResult
from dataflare_platform.engine.sinks import CollectSink, DuckDBSink, NullSink, ParquetSink, Sink
from dataflare_platform.engine.sources import FileSource, Source, TableSource
from dataflare_platform.engine.windows import TopN

__all__ = [
    "Agg",
    "CollectSink",
    "DuckDBSink",
    "FileSource",
    "NullSink",
    "ParquetSink",
    "Pipeline",
    "RunResult",
    "Runner",
    "RunnerConfig",
    "Sink",
    "Source",
    "Stream",
    "TableSource",
    "TopN",
    "count",
    "max_",
    "mean",
    "min_",
    "session",
    "sliding",
    "sum_",
    "tumbling",
]
