"""Which pipelines may run as partition-parallel workers: keyed state split by source
partition only when the partition column is part of every stateful step's key, joins
only between co-partitioned inputs; and the partitions each worker owns."""

import pyarrow as pa
import pytest

from dataflare_platform.engine import CollectSink, Stream, count, tumbling
from dataflare_platform.events.engine_io import LogSource
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams import bind
from dataflare_platform.streams.parallel import (
    ParallelismError,
    assign,
    refusals,
    require_parallel,
)
from dataflare_platform.streams.ranges import load_specs

BIDS = pa.schema([("auction", pa.int64()), ("bidder", pa.int64()), ("date_time", pa.int64())])
AUCTIONS = pa.schema([("id", pa.int64()), ("seller", pa.int64()), ("date_time", pa.int64())])
NARROW = pa.schema([("id", pa.int32()), ("date_time", pa.int64())])


@pytest.fixture
def log(tmp_path):
    log = EventLog(tmp_path / "log")
    log.create_topic("bids", BIDS, partitions=4, key="auction")
    log.create_topic("bids_in_turn", BIDS, partitions=4)
    log.create_topic("auctions", AUCTIONS, partitions=4, key="id")
    log.create_topic("auctions_by_seller", AUCTIONS, partitions=4, key="seller")
    log.create_topic("auctions_two", AUCTIONS, partitions=2, key="id")
    log.create_topic("auctions_int32", NARROW, partitions=4, key="id")
    return log


def source(log, topic):
    return Stream.source(LogSource(log.topic(topic)))


def test_keyed_state_on_the_partition_column_may_run_in_parallel(log):
    by_auction = source(log, "bids").key_by("auction").window(tumbling(1000)).agg(count())
    pipeline = by_auction.sink(CollectSink())
    assert refusals(pipeline) == []
    require_parallel(pipeline, 4)
    # A compound key containing the partition column is as good.
    both = source(log, "bids").key_by("bidder", "auction").dedup("10s").sink(CollectSink())
    assert refusals(both) == []
    # Stateless pipelines always may.
    assert refusals(source(log, "bids_in_turn").filter(True).sink(CollectSink())) == []


def test_state_keyed_by_another_column_is_refused_naming_step_and_columns(log):
    by_bidder = source(log, "bids").key_by("bidder").window(tumbling(1000)).agg(count())
    pipeline = by_bidder.sink(CollectSink())
    (reason,) = refusals(pipeline)
    assert "['bidder']" in reason and "partitioned by 'auction'" in reason
    with pytest.raises(ParallelismError, match="cannot run as 2 parallel workers"):
        require_parallel(pipeline, 2)
    require_parallel(pipeline, 1)  # one worker is always fine


def test_unkeyed_state_and_unkeyed_topics_are_refused(log):
    (reason,) = refusals(
        source(log, "bids").window(tumbling(1000)).agg(count()).sink(CollectSink())
    )
    assert "no key" in reason
    in_turn = source(log, "bids_in_turn").key_by("auction").reduce(count()).sink(CollectSink())
    (reason,) = refusals(in_turn)
    assert "not partitioned by a column" in reason and "'bids_in_turn'" in reason


def test_joins_need_co_partitioned_inputs_matched_on_their_partition_columns(log):
    def join(right_topic, right_on="id", left_on="auction"):
        bids = source(log, "bids")
        right = bids.pipeline.source(LogSource(log.topic(right_topic)))
        return bids.join(right, left_on, right_on).sink(CollectSink())

    assert refusals(join("auctions")) == []
    (reason,) = refusals(join("auctions_by_seller"))
    assert "partitioned by 'seller'" in reason
    reasons = refusals(join("auctions_two"))
    assert any("different partition counts" in r for r in reasons)
    # Both sides hashed on the columns matched with each other: co-partitioned.
    assert refusals(join("auctions_by_seller", right_on="seller")) == []
    (reason,) = refusals(join("auctions_int32"))
    assert "different types" in reason
    # Each side partitioned by one of its keys, but not by a matched pair.
    crossed = join("auctions_by_seller", ["id", "seller"], ["auction", "bidder"])
    (reason,) = refusals(crossed)
    assert "must be partitioned by columns the join matches" in reason


def test_more_workers_than_partitions_is_refused(log):
    pipeline = source(log, "bids").filter(True).sink(CollectSink())
    with pytest.raises(ParallelismError, match="5 workers for 4 partition"):
        require_parallel(pipeline, 5)
    with pytest.raises(ParallelismError, match="at least 1"):
        require_parallel(pipeline, 0)


def test_every_partition_has_exactly_one_owner_for_every_worker_count():
    partitions = [str(p) for p in range(12)]
    for workers in range(1, 13):
        owned = [assign(partitions, workers, i) for i in range(workers)]
        flat = [p for part in owned for p in part]
        assert sorted(flat, key=int) == partitions
        assert max(map(len, owned)) - min(map(len, owned)) <= 1
    assert assign(partitions, 4, 1) == ["1", "5", "9"]
    with pytest.raises(ValueError, match="outside"):
        assign(partitions, 4, 4)


def test_a_window_ranking_all_keys_is_refused_though_keyed_by_the_partition_column(log):
    """Nexmark q5 (the shipped hot_items): counts per auction, then the top auction of
    each window across all auctions: per-partition workers would each pick their own."""
    (spec,) = [s for s in load_specs() if s.name == "hot_items"]
    log.create_topic("nexmark.bids", BIDS, partitions=4, key="auction")
    pipeline = bind.build(spec, log=log, sink=CollectSink())
    (reason,) = refusals(pipeline)
    assert "ranks the rows of all keys in each window" in reason
    keyed_only = source(log, "bids").key_by("auction").window(tumbling(1000)).agg(count())
    assert refusals(keyed_only.sink(CollectSink())) == []
