"""Topics of the embedded event log as a source and an exactly-once sink, opened through
the registry, under the source and transactional-sink contracts."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.connectors import topic as topic_connector
from dataflare_platform.connectors.settings import OpenContext
from dataflare_platform.events.log import EventLog
from dataflare_platform_tests.connectors.contract import (
    SinkCase,
    SourceCase,
    SourceContract,
    TransactionalSinkContract,
)


class TestTopicSourceContract(SourceContract):
    KIND = "topic"

    @pytest.fixture
    def source_case(self, tmp_path) -> SourceCase:
        log = EventLog(tmp_path / "log")

        def store(table: pa.Table):
            topic = log.create_topic("bids", table.schema)
            for start in range(0, table.num_rows, 230):
                topic.append(table.slice(start, 230))
            settings = topic_connector.TopicSourceSettings(topic="bids")
            context = OpenContext("contract", "bids", bounded=True, log=log)
            return lambda: topic_connector.open_source(settings, context)

        return SourceCase(store)


class TestTopicSinkContract(TransactionalSinkContract):
    KIND = "topic"

    @pytest.fixture
    def sink_case(self, tmp_path) -> SinkCase:
        root = tmp_path / "log"
        log = EventLog(root)
        settings = topic_connector.TopicSinkSettings(topic="out", time_column="date_time")

        def read() -> pl.DataFrame:
            return pl.from_arrow(EventLog(root).topic("out").read_all())

        return SinkCase(
            open=lambda: topic_connector.open_sink(settings, OpenContext("contract", log=log)),
            read=read,
            settings=settings.model_dump(),
            log=root,
        )
