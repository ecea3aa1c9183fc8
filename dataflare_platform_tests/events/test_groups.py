"""Consumer groups: committed offsets per group, at-least-once delivery across restarts."""

from __future__ import annotations

from pathlib import Path

from dataflare_platform.events.groups import ConsumerGroup
from dataflare_platform.events.log import EventLog


def test_consumer_group_offsets_survive_a_restart(tmp_path: Path, small_nexmark):
    bids = small_nexmark["bids"]
    log = EventLog(tmp_path / "log")
    topic = log.create_topic("bids", bids.schema, partitions=2)
    for start in range(0, bids.num_rows, 500):
        topic.append(bids.slice(start, 500))
    group = ConsumerGroup(topic, "billing")
    consumer = group.consumer()
    first = consumer.poll(max_rows=300)
    consumer.commit()
    assert group.committed() == {f.partition: f.end for f in first}
    # A new process (a fresh log object) resumes after what was committed, and an
    # uncommitted poll is delivered again (at-least-once).
    again = ConsumerGroup(EventLog(log.root).topic("bids"), "billing").consumer()
    seen = []
    while batch := again.poll(max_rows=400):
        seen.extend(batch)
    again.commit()
    rows = sum(f.table.num_rows for f in first) + sum(f.table.num_rows for f in seen)
    assert rows == bids.num_rows
    assert ConsumerGroup(EventLog(log.root).topic("bids"), "billing").lag() == {0: 0, 1: 0}
    assert ConsumerGroup(topic, "other").committed() == {0: 0, 1: 0}
