"""A Hive-partitioned Parquet dataset (one folder per UTC date) written exactly once,
with whole-partition replacement for replays (see ``sink``).

    sink: {kind: parquet_dataset, root: out/bids_by_day, time_column: date_time}
"""

from __future__ import annotations

from dataflare_platform.connectors.parquet_dataset.sink import (
    ParquetDatasetSettings,
    ParquetDatasetSink,
)
from dataflare_platform.connectors.settings import OpenContext

__all__ = ["ParquetDatasetSettings", "ParquetDatasetSink", "open_sink"]


def open_sink(settings: ParquetDatasetSettings, context: OpenContext) -> ParquetDatasetSink:
    s = settings
    return ParquetDatasetSink(
        s.root,
        s.time_column,
        s.partition_by,
        compression=s.compression,
        fsync=s.fsync,
        lock_timeout_s=s.lock_timeout_s,
        hour_partition=s.hour_partition,
    )
