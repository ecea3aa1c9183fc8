"""The embedded event log's metrics: appended and read records per partition, and a
consumer group's lag as of its commits."""

from __future__ import annotations

from dataflare_platform.events.groups import ConsumerGroup
from dataflare_platform.events.log import EventLog
from dataflare_platform.observability.prometheus import exposition
from dataflare_platform_tests.observability.fixtures import metrics_dir
from dataflare_platform_tests.observability.scrape import value

__all__ = ["metrics_dir"]


def test_appends_reads_and_group_lag_are_exported(metrics_dir, tmp_path, small_nexmark):
    bids = small_nexmark["bids"]
    topic = EventLog(tmp_path / "log").create_topic("bids", bids.schema)
    topic.append(bids.slice(0, 1_000))
    topic.append(bids.slice(1_000, 500))
    group = ConsumerGroup(topic, "billing")
    consumer = group.consumer()
    consumer.poll(max_rows=600)
    consumer.commit()
    text = exposition(metrics_dir)
    assert value(text, "dataflare_log_records_appended_total", topic="bids", partition="0") == (
        1_500
    )
    assert value(text, "dataflare_log_records_read_total", topic="bids", partition="0") == 600
    lag = {"topic": "bids", "group": "billing", "partition": "0"}
    assert value(text, "dataflare_log_consumer_lag", **lag) == 900
    while consumer.poll(max_rows=600):
        pass
    consumer.commit()
    text = exposition(metrics_dir)
    assert value(text, "dataflare_log_consumer_lag", **lag) == 0
    assert value(text, "dataflare_log_records_read_total", topic="bids", partition="0") == 1_500
