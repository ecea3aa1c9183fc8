"""The embedded event log as a storage library: named topics of N partitions, each an
append-only sequence of Arrow segments with dense offsets. No server: processes share a
directory.

Storage only, in one direction: ``segments`` (files) and ``commits`` (the commit record of
a transactional topic) under ``partition``, under ``topic``, under ``store`` (the
directory of topics, :class:`EventLog`). Consumer groups (``events.groups``) and the
transactional writer (``events.engine_io.LogSink``) build on it; nothing here imports
them.
"""

from dataflare_platform.events.log.config import TOPIC_NAME, TopicConfig
from dataflare_platform.events.log.partition import (
    OffsetGapError,
    OffsetOutOfRangeError,
    Partition,
)
from dataflare_platform.events.log.segments import SegmentDamagedError
from dataflare_platform.events.log.store import EventLog
from dataflare_platform.events.log.topic import Topic, TopicNotFoundError

__all__ = [
    "TOPIC_NAME",
    "EventLog",
    "OffsetGapError",
    "OffsetOutOfRangeError",
    "Partition",
    "SegmentDamagedError",
    "Topic",
    "TopicConfig",
    "TopicNotFoundError",
]
