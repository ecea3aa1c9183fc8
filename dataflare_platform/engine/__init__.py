"""The micro-batch streaming engine (data plane: no Dagster imports).

Build a pipeline with :class:`Pipeline` / :class:`Stream`, run it with :class:`Runner`.
Sources and sinks follow the contracts in ``engine.io``; those of files and external
systems are connectors (``dataflare_platform.connectors``).
"""

from dataflare_platform.engine.aggregations import Agg, count, max_, mean, min_, sum_
from dataflare_platform.engine.io import Sink, Source, TransactionalSink
from dataflare_platform.engine.operators.windows import TopN
from dataflare_platform.engine.pipeline import (
    Pipeline,
    Stream,
    processing_tumbling,
    session,
    sliding,
    tumbling,
)
from dataflare_platform.engine.runner import Runner, RunnerConfig, RunResult
from dataflare_platform.engine.sinks import CollectSink, NullSink
from dataflare_platform.engine.sources import TableSource

__all__ = [
    "Agg",
    "CollectSink",
    "NullSink",
    "Pipeline",
    "RunResult",
    "Runner",
    "RunnerConfig",
    "Sink",
    "Source",
    "Stream",
    "TableSource",
    "TopN",
    "TransactionalSink",
    "count",
    "max_",
    "mean",
    "min_",
    "processing_tumbling",
    "session",
    "sliding",
    "sum_",
    "tumbling",
]
