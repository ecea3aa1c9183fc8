"""A topic's durable settings (``topic.json``) and the rule for topic names."""

from __future__ import annotations

import base64

import pyarrow as pa
from pydantic import Field, field_validator

from dataflare_platform.models import StrictModel

TOPIC_FILE = "topic.json"
TOPIC_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$"


class TopicConfig(StrictModel):
    """A topic's durable settings (``topic.json``)."""

    name: str = Field(pattern=TOPIC_NAME)
    partitions: int = Field(default=1, ge=1, le=1024)
    time_column: str
    key: str | None = None  # rows are hash-partitioned by this column when set
    schema_ipc: str  # base64 of the Arrow schema's IPC serialisation
    retention_ms: int | None = Field(default=None, gt=0)
    retention_bytes: int | None = Field(default=None, gt=0)  # per partition
    segment_rows: int = Field(default=65_536, ge=1)  # compaction merges up to this size
    fsync: bool = False  # fsync each segment (power-loss durability) or trust the OS cache
    transactional: bool = False  # readers see only what a LogSink committed
    commit_topic: str | None = None  # a side topic committed with its parent's record

    @field_validator("schema_ipc")
    @classmethod
    def _schema_decodes(cls, value: str) -> str:
        try:
            pa.ipc.read_schema(pa.py_buffer(base64.b64decode(value)))
        except Exception as err:
            raise ValueError(f"not a serialised Arrow schema: {err}") from err
        return value

    @property
    def schema(self) -> pa.Schema:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.schema_ipc)))

    @staticmethod
    def encode_schema(schema: pa.Schema) -> str:
        return base64.b64encode(schema.serialize().to_pybytes()).decode()
