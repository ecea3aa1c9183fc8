"""The interval-join aggregate's tiers under constant compaction (issue 21 §5: no batch
pays for the whole state): with chunks of a few rows, so that tiers are merged, drop
their closed prefixes and are restored in chunks all the time, the output is the same
as an independent Polars join's for every batch size; merges and prefix drops stay
bounded by the chunk, the rows held by the state by twice the open rows; savepoints
(copy on write) and checkpoints taken at any batch give the same output."""

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflare_platform.engine.operators import interval_tiers, joins
from dataflare_platform.engine.operators.interval_tiers import (
    Tier,
    best_per_group,
    merge_tiers,
)
from dataflare_platform.engine.operators.joins import IntervalJoinAggregate
from dataflare_platform_tests.engine.operators.test_keyed_store import ManualExecutor
from dataflare_platform_tests.engine.test_interval_join import (  # the same operators
    AGGS,
    WIN_OUT,
    expected,
    expected_winners,
    make_streams,
    operator,
    same,
    tied_streams,
    winner_operator,
)

CHUNK = 24  # rows: tiny, so that compaction happens at almost every batch


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of ``CHUNK`` rows, merges from three tiers on; every merge's and prefix
    drop's size recorded."""
    monkeypatch.setattr(IntervalJoinAggregate, "CHUNK_ROWS", CHUNK)
    monkeypatch.setattr(IntervalJoinAggregate, "MAX_TIERS", 3)
    sizes = {"merge": [], "drop": []}
    merge = joins.merge_tiers

    def recorded_merge(key, tiers, aggs, winner=None):
        sizes["merge"].append(sum(t.open_rows for t in tiers))
        return merge(key, tiers, aggs, winner)

    drop = Tier._drop_closed

    def recorded_drop(self):
        sizes["drop"].append(self.rows.height)
        drop(self)

    monkeypatch.setattr(joins, "merge_tiers", recorded_merge)
    monkeypatch.setattr(Tier, "_drop_closed", recorded_drop)
    return sizes


def check_bounds(op: IntervalJoinAggregate) -> None:
    """Each tier holds fewer closed rows than open ones (so the state holds less than
    twice its open rows), and a tier with no open row is gone."""
    for tier in op._tiers:
        assert tier.open_rows > 0
        assert tier.lo < tier.open_rows
    held = sum(t.rows.height for t in op._tiers)
    assert held < 2 * sum(t.open_rows for t in op._tiers) or held == 0


def drive(make, left, right, batch_rows, *, restore_at=(), retry_at=(), check=True, hook=None):
    """Both streams in event-time order, ``batch_rows`` at a time, the watermark 10 s
    behind. At the batches in ``restore_at`` the state is checkpointed into a fresh
    operator; at those in ``retry_at`` each part is processed once, rolled back to the
    savepoint taken before it, and processed again (as the runner does for a step that
    failed; a savepoint changed by the first try would count the part twice).
    ``hook(batch number)`` runs before each advance. Returns the emitted rows and the
    largest number of left rows in one batch."""
    tagged = pl.concat(
        [
            left.select("date_time").with_row_index("i").with_columns(pl.lit(0).alias("port")),
            right.select("date_time").with_row_index("i").with_columns(pl.lit(1).alias("port")),
        ]
    ).sort("date_time", "port", maintain_order=True)
    op, out, widest = make(), [], 0
    for done, chunk in enumerate(tagged.iter_slices(batch_rows), start=1):
        for (port,), part in chunk.partition_by("port", as_dict=True, maintain_order=True).items():
            rows = (left, right)[port][part["i"].to_numpy()]
            if port == 0:
                widest = max(widest, rows.height)
            if done in retry_at:
                saved = op.savepoint()
                op.process(rows, port=port)
                op.rollback(saved)
            op.process(rows, port=port)
        if hook is not None:
            hook(done)
        emitted = op.advance(int(chunk["date_time"].max().timestamp() * 1000) - 10_000)
        if emitted is not None:
            out.append(emitted)
        if check:
            check_bounds(op)
        if done in restore_at:
            state = op.snapshot()
            op = make()
            op.restore(state)
    final = op.advance(2**62)
    if final is not None:
        out.append(final)
    assert op.state_rows() == 0
    return pl.concat(out, how="vertical_relaxed"), widest


@pytest.mark.parametrize("key_kind", ["dense", "sparse", "string"])
@pytest.mark.parametrize("batch_rows", [7, 37, 400])
def test_aggregates_stay_exact_under_constant_compaction(small_chunks, key_kind, batch_rows):
    left, right = make_streams(key_kind, seed=7, auctions=600, bids=8_000)
    got, widest = drive(operator, left, right, batch_rows)
    same(got, expected(left, right))
    # Compaction happened throughout, and no step handled more than a chunk (or, for a
    # tier that is one left batch, that batch).
    assert len(small_chunks["merge"]) >= 5
    assert len(small_chunks["drop"]) >= 5
    assert max(small_chunks["merge"]) <= CHUNK
    assert max(small_chunks["drop"]) <= max(CHUNK, widest)


@pytest.mark.parametrize("key_kind", ["dense", "sparse", "string"])
@pytest.mark.parametrize("batch_rows", [7, 90])
def test_winners_stay_exact_under_constant_compaction(small_chunks, key_kind, batch_rows):
    left, right = tied_streams(key_kind, seed=8)
    got, _ = drive(winner_operator, left, right, batch_rows)
    got = got.select(WIN_OUT).sort("id")
    assert got.equals(expected_winners(left, right).select(WIN_OUT).sort("id").cast(got.schema))
    assert len(small_chunks["merge"]) >= 5


def test_tier_count_follows_the_open_rows(small_chunks):
    """Many small left batches do not pile up tiers: beyond ``MAX_TIERS`` they are
    merged, up to about two tiers per chunk of open rows."""
    left, right = make_streams("dense", seed=9, auctions=600, bids=8_000)
    op, most = operator(), 0
    for part in left.iter_slices(3):
        op.process(part, port=0)
        most = max(most, len(op._tiers))
    open_rows = sum(t.open_rows for t in op._tiers)
    assert open_rows == left.height
    assert most <= 2 * open_rows // CHUNK + 2
    op.process(right, port=1)
    assert op.advance(2**62).height == expected(left, right).height


@pytest.mark.parametrize("key_kind", ["dense", "sparse", "string"])
def test_checkpoints_and_retries_at_any_batch_give_the_same_output(small_chunks, key_kind):
    left, right = make_streams(key_kind, seed=10, auctions=600, bids=8_000)
    want = expected(left, right)
    every = set(range(1, 200, 3))
    got, _ = drive(operator, left, right, 60, restore_at=every, retry_at=every)
    same(got, want)
    left, right = tied_streams(key_kind, seed=11)
    got, _ = drive(winner_operator, left, right, 60, restore_at=every, retry_at=every)
    got = got.select(WIN_OUT).sort("id")
    assert got.equals(expected_winners(left, right).select(WIN_OUT).sort("id").cast(got.schema))


def test_a_savepoint_is_not_changed_by_later_batches():
    """Copy on write: the savepoint shares the tiers' arrays until a batch folds into
    them; the fold copies first, so the savepoint's state is the state before it."""
    left, right = make_streams("dense", seed=12)
    op = operator()
    op.process(left, port=0)
    half = right.height // 2
    op.process(right.head(half), port=1)
    before = op.snapshot()["open"]
    saved = op.savepoint()
    op.process(right.tail(-half), port=1)
    after = op.snapshot()["open"]
    assert not after.equals(before)
    op.rollback(saved)
    assert op.snapshot()["open"].equals(before)
    # The rolled-back operator goes on as if the second half had never come.
    op.process(right.tail(-half), port=1)
    assert op.snapshot()["open"].equals(after)


def test_a_checkpoint_restores_into_any_chunk_size(monkeypatch):
    """A state written as one table (as every earlier version wrote it) comes back in
    chunks of the restoring operator's size, and the output is the same."""
    left, right = make_streams("dense", seed=13, auctions=600, bids=8_000)
    cut = left["date_time"][400]
    op = operator()
    op.process(left.filter(pl.col("date_time") < cut), port=0)
    op.process(right.filter(pl.col("date_time") < cut), port=1)
    state = op.snapshot()
    rest_left, rest_right = (f.filter(pl.col("date_time") >= cut) for f in (left, right))
    outputs = []
    for chunk in (IntervalJoinAggregate.CHUNK_ROWS, 50):
        monkeypatch.setattr(IntervalJoinAggregate, "CHUNK_ROWS", chunk)
        fresh = operator()
        fresh.restore(state)
        assert len(fresh._tiers) == -(-state["open"].num_rows // chunk)
        fresh.process(rest_left, port=0)
        fresh.process(rest_right, port=1)
        outputs.append(fresh.advance(2**62).sort("id"))
    assert outputs[0].equals(outputs[1])
    same(outputs[1], expected(left, right))


def test_merging_fills_partials_a_tier_has_not_created():
    """A tier where nothing matched yet has no partial arrays; merged with one that has,
    its rows get the starting values (0, no minimum/maximum seen), as a fold would."""
    left, right = make_streams("sparse", seed=14)
    op = operator()
    first, second = left.head(100), left.slice(100, 100)
    op.process(first, port=0)
    op.process(right.filter(pl.col("auction").is_in(first["id"].implode())), port=1)
    op.process(second, port=0)
    matched, fresh = op._tiers
    assert matched.partials and not fresh.partials
    merged = merge_tiers("id", [matched, fresh], AGGS)
    ends = merged.rows["__end"].to_numpy()
    assert (np.diff(ends) >= 0).all()
    want = pl.concat([matched.frame(), fresh.frame()], how="diagonal_relaxed")
    got = merged.frame()
    assert got.sort("id").equals(want.sort("id").select(got.columns))
    # Later matches fold into the merged tier's filled partials.
    later = right.filter(pl.col("auction").is_in(second["id"].implode()))
    op._tiers = [merged]
    op.process(later, port=1)
    out = op.advance(2**62)
    same(
        out,
        expected(
            pl.concat([first, second]),
            pl.concat([right.filter(pl.col("auction").is_in(first["id"].implode())), later]),
        ),
    )


def test_merge_keeps_the_end_order_stable():
    """Rows with equal ends keep their tiers' order (a stable sort), so the output order
    does not depend on how the sort breaks ties."""
    frame = pl.DataFrame({"id": [1, 2, 3, 4], "__start": [0, 0, 0, 0], "__end": [5, 9, 5, 9]})
    a = Tier("id", frame.head(2).sort("__end"), [])
    b = Tier("id", frame.tail(2).sort("__end"), [])
    merged = interval_tiers.merge_tiers("id", [a, b], [])
    assert merged.rows["id"].to_list() == [1, 3, 2, 4]


_order_key = st.one_of(
    st.lists(st.integers(-2, 2), min_size=40, max_size=40).map(lambda v: np.array(v, np.int64)),
    st.lists(st.integers(0, 3), min_size=40, max_size=40).map(lambda v: np.array(v, np.uint8)),
    st.lists(
        st.sampled_from([np.nan, -0.0, 0.0, 1.5, -np.inf, np.inf]), min_size=40, max_size=40
    ).map(lambda v: np.array(v, np.float64)),
)


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(_order_key, min_size=1, max_size=3),
    groups=st.lists(st.integers(0, 5), min_size=1, max_size=40),
)
def test_best_per_group_is_the_first_of_a_lexsort(keys, groups):
    """The winner's fold (a minimum per group, one key at a time) picks the row a sort
    by (group, keys...) puts first in each group: ties to the lowest index, NaN last."""
    group = np.array(groups, np.int64)
    keys = [k[: group.size] for k in keys]
    ranked = np.lexsort((*reversed(keys), group))
    in_order = group[ranked]
    first = np.ones(ranked.size, bool)
    first[1:] = in_order[1:] != in_order[:-1]
    expected_rows = np.sort(ranked[first])
    assert np.array_equal(best_per_group(keys, group, 6), expected_rows)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 1_000),
    batch_rows=st.sampled_from([7, 37, 90]),
    inline=st.sampled_from([0, 8]),
    merges_at=st.sets(st.integers(1, 150), max_size=60),
    restore_at=st.sets(st.integers(1, 150), max_size=5),
    retry_at=st.sets(st.integers(1, 150), max_size=10),
    winners=st.booleans(),
)
def test_background_merges_finishing_at_any_batch_give_the_same_output(
    seed, batch_rows, inline, merges_at, restore_at, retry_at, winners
):
    """Merges above ``INLINE_ROWS`` build their rows on the merge thread (here a manual
    executor that runs them only at the batches in ``merges_at``, or never) while batches
    fold into, close and roll back the tiers they merge, and checkpoints restore into
    fresh operators: the output is the one-shot join's."""
    executor = ManualExecutor()

    def make():
        op = winner_operator() if winners else operator()
        op.executor = executor
        return op

    def hook(done):
        if done in merges_at:
            executor.run_all()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(IntervalJoinAggregate, "CHUNK_ROWS", CHUNK)
        patch.setattr(IntervalJoinAggregate, "MAX_TIERS", 3)
        patch.setattr(IntervalJoinAggregate, "INLINE_ROWS", inline)
        if winners:
            left, right = tied_streams("dense", seed=seed)
        else:
            left, right = make_streams("dense", seed=seed, auctions=200, bids=2_000)
        got, _ = drive(
            make,
            left,
            right,
            batch_rows,
            restore_at=restore_at,
            retry_at=retry_at,
            check=False,
            hook=hook,
        )
    if winners:
        got = got.select(WIN_OUT).sort("id")
        want = expected_winners(left, right).select(WIN_OUT).sort("id").cast(got.schema)
        assert got.equals(want)
    else:
        same(got, expected(left, right))


def test_a_background_merge_is_installed_with_the_partials_of_its_inputs_then():
    """Rows folded into and closed in the two tiers while their merge runs are in the
    merged tier; a merge whose inputs were rolled back to before it started is dropped."""
    executor = ManualExecutor()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(IntervalJoinAggregate, "MAX_TIERS", 1)
        patch.setattr(IntervalJoinAggregate, "INLINE_ROWS", 0)
        left, right = make_streams("dense", seed=13, auctions=200, bids=2_000)
        left = left.sort("date_time")
        right = right.sort("date_time")
        want = expected(left, right)
        half = right.height // 2
        mid = int(right["date_time"][half].timestamp() * 1000) - 10_000

        op = operator()
        op.executor = executor
        op.process(left.head(100), port=0)
        op.process(left.tail(-100), port=0)  # two tiers: their merge is queued
        assert len(op._tiers) == 2 and len(executor.queue) == 1
        op.process(right.head(half), port=1)
        closed = op.advance(mid)
        executor.run_all()
        op.process(right.tail(-half), port=1)  # installs the merge first
        assert len(op._tiers) == 1
        rest = op.advance(2**62)
        got = pl.concat([f for f in (closed, rest) if f is not None], how="vertical_relaxed")
        same(got, want)

        # Rolled back to before the merge started: the finished merge is not installed.
        op = operator()
        op.executor = executor
        op.process(left.head(100), port=0)
        saved = op.savepoint()
        op.process(left.tail(-100), port=0)
        assert len(executor.queue) == 1
        op.rollback(saved)
        executor.run_all()
        op.process(right.head(half), port=1)
        assert len(op._tiers) == 1 and not op._merging
