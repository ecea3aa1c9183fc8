import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from dataflare_platform.datagen import SCHEMAS, NexmarkConfig, NexmarkGenerator, write_nexmark
from dataflare_platform.datagen.nexmark import FIRST_AUCTION_ID, FIRST_PERSON_ID
from dataflare_platform.datagen.writer import is_up_to_date, read_manifest


def _all(config: NexmarkConfig) -> dict[str, pa.Table]:
    gen = NexmarkGenerator(config)
    parts = [gen.chunk(i).tables(decode=True) for i in gen.chunks()]
    return {kind: pa.concat_tables([p[kind] for p in parts]) for kind in SCHEMAS}


def test_same_seed_same_data_other_seed_other_data():
    cfg = NexmarkConfig(events=20_000, chunk_events=7_000)
    first, again = _all(cfg), _all(cfg)
    other = _all(cfg.model_copy(update={"seed": cfg.seed + 1}))
    for kind in SCHEMAS:
        assert first[kind].equals(again[kind])
        assert not first[kind].equals(other[kind])


@pytest.mark.parametrize("events", [50, 1234, 100_000])
def test_event_mix_is_1_3_46(events):
    tables = _all(NexmarkConfig(events=events, chunk_events=777))
    epochs, rest = divmod(events, 50)
    assert tables["persons"].num_rows == epochs + min(rest, 1)
    assert tables["auctions"].num_rows == epochs * 3 + min(max(rest - 1, 0), 3)
    assert tables["bids"].num_rows == epochs * 46 + max(rest - 4, 0)
    assert sum(t.num_rows for t in tables.values()) == events


def test_ids_are_dense_and_bids_point_at_recent_auctions_and_people():
    cfg = NexmarkConfig(events=100_000)
    t = {k: pl.from_arrow(v) for k, v in _all(cfg).items()}
    persons, auctions, bids = t["persons"], t["auctions"], t["bids"]
    assert persons["id"].to_list() == list(range(FIRST_PERSON_ID, FIRST_PERSON_ID + len(persons)))
    assert auctions["id"].to_list() == list(
        range(FIRST_AUCTION_ID, FIRST_AUCTION_ID + len(auctions))
    )
    # Nexmark lets a bid name an auction/person up to 10 ids ahead of the newest one.
    assert bids["auction"].max() <= auctions["id"].max() + 10
    assert bids["bidder"].max() <= persons["id"].max() + 100
    assert auctions["seller"].min() >= FIRST_PERSON_ID
    assert (auctions["reserve"] >= auctions["initial_bid"]).all()
    assert (auctions["expires"] > auctions["date_time"]).all()
    assert set(auctions["category"].unique()) == set(range(10, 15))
    assert bids["price"].min() >= 100  # 10^0 * 100 cents


def test_hot_auctions_and_bidders_are_skewed():
    bids = pl.from_arrow(_all(NexmarkConfig(events=200_000))["bids"])
    top_auction_share = bids["auction"].value_counts(sort=True)["count"][0] / len(bids)
    distinct = bids["auction"].n_unique()
    # Uniform bidding would give each auction about 1/distinct of the bids.
    assert top_auction_share > 10 / distinct
    hot_bidders = bids.filter(((pl.col("bidder") - FIRST_PERSON_ID) % 100) == 1)
    assert len(hot_bidders) / len(bids) > 0.5  # hot_bidder_ratio 4 → ~75 %


def test_event_time_jitter_is_bounded_and_really_out_of_order():
    cfg = NexmarkConfig(events=50_000, events_per_second=1000.0, max_out_of_order_ms=500)
    bids = _all(cfg)["bids"]
    ts = bids.column("date_time").cast(pa.int64()).to_numpy()
    gen_numbers = np.array([n for n in range(cfg.events) if n % 50 >= 4])
    ideal = cfg.first_event_ms + gen_numbers  # 1 event per ms
    lag = ideal - ts
    assert lag.min() >= 0 and lag.max() <= 500
    assert ts.min() >= cfg.first_event_ms
    assert (np.diff(ts) < 0).sum() > 0  # some events arrive after later ones


def test_no_jitter_means_ordered_time():
    cfg = NexmarkConfig(events=5_000, max_out_of_order_ms=0)
    ts = _all(cfg)["bids"].column("date_time").cast(pa.int64()).to_numpy()
    assert (np.diff(ts) >= 0).all()


@pytest.mark.parametrize("fmt", ["parquet", "ipc"])
def test_files_have_the_nexmark_schemas(tmp_path, fmt):
    cfg = NexmarkConfig(events=30_000, chunk_events=10_000, format=fmt)
    calls: list[tuple[int, int]] = []
    summary = write_nexmark(cfg, tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(10_000, 30_000), (20_000, 30_000), (30_000, 30_000)]
    assert summary.events == 30_000 and summary.files == 9
    expected = _all(cfg)
    for kind, schema in SCHEMAS.items():
        data = ds.dataset(tmp_path / kind, format="parquet" if fmt == "parquet" else "arrow")
        assert data.schema.equals(schema)
        assert data.to_table().equals(expected[kind])
    assert read_manifest(tmp_path)["rows"] == summary.rows
    assert is_up_to_date(tmp_path, cfg)
    assert not is_up_to_date(tmp_path, cfg.model_copy(update={"seed": 1}))


def test_regenerating_replaces_earlier_files(tmp_path):
    write_nexmark(NexmarkConfig(events=30_000, chunk_events=5_000), tmp_path)
    write_nexmark(NexmarkConfig(events=10_000, chunk_events=5_000), tmp_path)
    assert len(list((tmp_path / "bids").iterdir())) == 2
    assert ds.dataset(tmp_path / "bids").count_rows() == 200 * 46


SKEWED = NexmarkConfig(
    events=100_000, chunk_events=30_000, shape="skewed", late_fraction=0.2, seed=9
)


def test_skewed_shape_has_sparse_unique_ids_that_bids_and_auctions_refer_to():
    t = {k: pl.from_arrow(v) for k, v in _all(SKEWED).items()}
    persons, auctions, bids = t["persons"], t["auctions"], t["bids"]
    for ids in (persons["id"], auctions["id"]):
        assert ids.n_unique() == len(ids)
        # Neither sequential nor small: consecutive ids are far apart, out of order.
        assert (ids.diff().drop_nulls().abs() > 1_000).all()
        assert not ids.is_sorted() and ids.max() > 2**32
    # Every reference names an id already generated (no lead into the future here).
    assert bids["auction"].is_in(auctions["id"].implode()).all()
    assert bids["bidder"].is_in(persons["id"].implode()).all()
    assert auctions["seller"].is_in(persons["id"].implode()).all()
    assert (auctions["expires"] > auctions["date_time"]).all()


def test_skewed_shape_is_zipf_skewed_with_long_lived_hot_keys():
    bids = pl.from_arrow(_all(SKEWED)["bids"])
    counts = bids["auction"].value_counts(sort=True)["count"]
    # Zipf: the hottest auction takes several percent of all bids, and the top 1 % of
    # auctions more than half of them, while most auctions get a handful.
    assert counts[0] / len(bids) > 0.05
    assert counts.head(max(len(counts) // 100, 1)).sum() / len(bids) > 0.3
    assert counts.median() < 10
    # The all-time hottest auction is the first one, bid on for the whole run.
    first = bids.filter(pl.col("auction") == FIRST_AUCTION_ID)["date_time"]
    whole = bids["date_time"]
    assert (first.max() - first.min()) > 0.9 * (whole.max() - whole.min())


def test_skewed_shape_spells_channels_in_mixed_case_and_varies_urls():
    bids = pl.from_arrow(_all(SKEWED)["bids"])
    channels = set(bids["channel"].unique())
    assert {"Google", "google", "GOOGLE", "apple", "BAIDU"} <= channels
    urls = bids["url"]
    assert (~urls.str.contains("channel_id=")).any()  # some urls have no channel id
    assert urls.str.contains(r"\?channel_id=").any()  # some have it first
    assert urls.str.contains("channel_id=&").any()  # some have it empty
    assert (urls.str.split("/").list.len() < 6).any()  # fewer directories than q22 splits


@pytest.mark.parametrize("fraction", [0.0, 0.2, 1.0])
def test_late_fraction_pulls_back_that_share_of_events_within_the_bound(fraction):
    cfg = NexmarkConfig(
        events=50_000, events_per_second=1000.0, max_out_of_order_ms=500, late_fraction=fraction
    )
    ts = _all(cfg)["bids"].column("date_time").cast(pa.int64()).to_numpy()
    gen_numbers = np.array([n for n in range(cfg.events) if n % 50 >= 4])
    lag = cfg.first_event_ms + gen_numbers - ts
    assert lag.min() >= 0 and lag.max() <= 500
    # A pulled-back event lands on its ideal time with chance 1/501 only.
    assert (lag > 0).mean() == pytest.approx(fraction * 500 / 501, abs=0.01)


def test_late_fraction_one_and_nexmark_shape_are_the_default_stream():
    cfg = NexmarkConfig(events=20_000)
    explicit = cfg.model_copy(update={"late_fraction": 1.0, "shape": "nexmark"})
    same = _all(cfg), _all(explicit)
    assert all(same[0][k].equals(same[1][k]) for k in SCHEMAS)
    skewed = _all(cfg.model_copy(update={"shape": "skewed"}))
    assert not skewed["bids"].equals(same[0]["bids"])
