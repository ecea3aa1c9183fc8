"""The YAML form maps one-to-one onto the builder and refuses bad specs by field name."""

import textwrap

import duckdb
import pytest

from dataflare_platform.datagen import NexmarkConfig, write_nexmark
from dataflare_platform.engine import CollectSink, Runner, RunnerConfig
from dataflare_platform.errors import ConfigError
from dataflare_platform.queries.nexmark import BUILDERS, NexmarkSources
from dataflare_platform.streams.spec import PipelineSpec

Q5_YAML = """
name: hot-items
watermark: {out_of_orderness: 4s}
sources:
  bids: {path: data/bids, columns: [auction, date_time]}
streams:
  hot:
    from: bids
    steps:
      - key_by: [auction]
      - window: {sliding: {size: 10s, slide: 2s}, agg: {num: count}, top: {by: num}}
output: hot
sink: {duckdb: {path: out.duckdb, table: hot_items}}
"""

Q3_YAML = """
name: local-items
sources:
  persons: {path: data/persons, columns: [id, name, city, state, date_time]}
  auctions: {path: data/auctions, columns: [id, seller, category, date_time]}
streams:
  local_people:
    from: persons
    steps: [{filter: "state IN ('OR', 'ID', 'CA')"}]
  items:
    from: auctions
    steps:
      - filter: category = 10
      - join: {with: local_people, left_on: seller, right_on: id, right_unique: true}
      - select: [name, city, state, id]
output: items
sink: {discard: {}}
"""

Q1_YAML = """
name: euros
sources:
  bids: {path: data/bids, columns: [auction, bidder, price, date_time]}
streams:
  euros:
    from: bids
    steps:
      - with_columns: {price: price * CAST(0.908 AS DOUBLE)}  # SQL literals are decimal
      - select: [auction, bidder, price, date_time]
output: euros
sink: {parquet: out.parquet}
"""

# q9 and q6 in YAML: the winning bid of each closed auction (interval_join_winner), and
# the seller's average over the last 10 (reduce_last); q20 a join keeping category-10
# auctions (right_filter), and the same as a join then a filter.
WINNER_STEP = """
      - interval_join_winner:
          with: bids
          left_key: id
          right_key: auction
          end_column: expires
          left_columns: [{left}]
          order_by: [{{price: desc}}, {{date_time: asc}}, {{bidder: asc}}]
          columns: {{auction: auction, bidder: bidder, price: price, date_time: bid_date_time}}
"""
AUCTION_COLUMNS = "id, item_name, description, initial_bid, reserve, date_time, expires, seller"

Q9_YAML = f"""
name: winning-bids
watermark: {{out_of_orderness: 4s}}
sources:
  auctions: {{path: data/auctions, columns: [{AUCTION_COLUMNS}, category, extra]}}
  bids: {{path: data/bids, columns: [auction, bidder, price, date_time]}}
streams:
  winners:
    from: auctions
    steps:{WINNER_STEP.format(left=AUCTION_COLUMNS + ", category, extra")}
      - select: [{AUCTION_COLUMNS}, category, extra, auction, bidder, price, bid_date_time]
output: winners
sink: {{discard: {{}}}}
"""

Q6_YAML = f"""
name: seller-prices
watermark: {{out_of_orderness: 4s}}
sources:
  auctions: {{path: data/auctions, columns: [id, date_time, expires, seller]}}
  bids: {{path: data/bids, columns: [auction, bidder, price, date_time]}}
streams:
  prices:
    from: auctions
    steps:{WINNER_STEP.format(left="id, expires, seller")}
      - key_by: [seller]
      - reduce_last: {{n: 10, agg: {{avg_price: {{mean: price}}}}, order_by: [expires, id]}}
output: prices
sink: {{discard: {{}}}}
"""

Q20_YAML = """
name: category-bids
sources:
  bids: {path: data/bids, columns: [auction, bidder, price, channel, url, date_time, extra]}
  auctions:
    path: data/auctions
    columns: [id, item_name, description, initial_bid, reserve, date_time, expires, seller,
              category, extra]
streams:
  items:
    from: auctions
    steps:
      - with_columns: {auction_date_time: date_time, auction_extra: extra}
  joined:
    from: bids
    steps:
      - join: {with: items, left_on: auction, right_on: id, right_unique: true,
               right_filter: category = 10}
      - select: [auction, bidder, price, channel, url, date_time, extra, item_name,
                 description, initial_bid, reserve, auction_date_time, expires, seller,
                 category, auction_extra]
output: joined
sink: {discard: {}}
"""
Q20_FILTER_AFTER_YAML = Q20_YAML.replace(
    ",\n               right_filter: category = 10}", "}\n      - filter: category = 10"
)
assert Q20_FILTER_AFTER_YAML != Q20_YAML


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec")
    write_nexmark(NexmarkConfig(events=20_000, events_per_second=400.0), root / "data")
    return root


def _spec(root, text: str) -> PipelineSpec:
    path = root / "pipeline.yaml"
    path.write_text(textwrap.dedent(text))
    return PipelineSpec.from_yaml(path)


def _builder_output(query, root):
    sink = CollectSink()
    data = root / "data"
    sources = NexmarkSources.from_paths(query, data / "bids", data / "persons", data / "auctions")
    Runner(BUILDERS[query](sources, sink)).run()
    out = sink.result()
    return out.sort(out.columns)


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("q5", Q5_YAML),
        ("q3", Q3_YAML),
        ("q1", Q1_YAML),
        ("q9", Q9_YAML),
        ("q6", Q6_YAML),
        ("q20", Q20_YAML),
        ("q20", Q20_FILTER_AFTER_YAML),
    ],
)
def test_yaml_pipeline_gives_the_builder_pipelines_output(data_dir, query, text):
    spec = _spec(data_dir, text)
    sink = CollectSink()
    result = Runner(spec.build(sink=sink), RunnerConfig(batch_rows=3_000)).run()
    assert result.finished
    got = sink.result()
    expected = _builder_output(query, data_dir)
    assert got.height == expected.height > 0
    assert got.sort(got.columns).equals(expected.select(got.columns))


def test_yaml_sink_is_built_from_the_spec(data_dir):
    spec = _spec(data_dir, Q5_YAML)
    Runner(spec.build()).run()
    with duckdb.connect(str(data_dir / "out.duckdb")) as conn:
        rows = conn.sql("SELECT count(*) FROM hot_items").fetchall()[0][0]
    assert rows == _builder_output("q5", data_dir).height


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda d: d["streams"]["hot"]["steps"][1]["window"]["sliding"].update(slide="3s"),
            "slide must",
        ),
        (lambda d: d["streams"]["hot"]["steps"].append({"filtr": "x > 1"}), "unknown step"),
        (
            lambda d: d["streams"]["hot"]["steps"].append({"filter": "auction >>> 1"}),
            "not a valid expression",
        ),
        (lambda d: d["streams"]["hot"].update({"from": "nope"}), "streams.hot.from"),
        (lambda d: d.update(output="missing"), "output"),
        (lambda d: d["watermark"].update(out_of_orderness="soon"), "out_of_orderness"),
        (lambda d: d.update(extra_field=1), "extra_field"),
        (
            lambda d: d["streams"]["hot"]["steps"][1]["window"].update(agg={"s": {"sum": None}}),
            "sum needs a column",
        ),
    ],
)
def test_bad_specs_are_refused_naming_the_field(change, field):
    import yaml

    data = yaml.safe_load(Q5_YAML)
    change(data)
    with pytest.raises(ConfigError) as err:
        PipelineSpec.load(data)
    assert field in str(err.value)


def test_unknown_plugin_is_refused_at_build(data_dir):
    import yaml

    data = yaml.safe_load(Q5_YAML)
    data["streams"]["hot"]["steps"].insert(0, {"plugin": {"name": "pii_mask"}})
    spec = PipelineSpec.load(data).relative_to(data_dir)
    with pytest.raises(ConfigError, match="pii_mask"):
        spec.build()


def test_a_bad_join_right_filter_is_refused_naming_the_field():
    import yaml

    data = yaml.safe_load(Q20_YAML)
    data["streams"]["joined"]["steps"][0]["join"]["right_filter"] = "category >>> 1"
    with pytest.raises(ConfigError) as err:
        PipelineSpec.load(data)
    assert "streams.joined.steps.0: join.right_filter" in str(err.value)
    assert "not a valid expression" in str(err.value)


# -- sources and sinks by kind ------------------------------------------------------------
KIND_YAML = """
name: kinds
sources:
  bids:
    kind: nats
    stream: bids
    schema: {auction: int64, price: int64, date_time: "timestamp[ms]"}
streams:
  big:
    from: bids
    steps: [{filter: price > 100}]
output: big
sink: {kind: postgres, dsn: "postgresql://u@127.0.0.1/db", table: big_bids}
"""


def _kind_spec(**changes) -> dict:
    import yaml

    data = yaml.safe_load(KIND_YAML)
    for where, value in changes.items():
        *path, last = where.split("__")
        target = data
        for part in path:
            target = target[part]
        target[last] = value
    return data


def test_each_kind_is_validated_by_its_own_model():
    spec = PipelineSpec.load(_kind_spec())
    assert spec.sources["bids"].kind == "nats" and spec.sources["bids"].stream == "bids"
    assert spec.sink.kind == "postgres" and spec.sink.table == "big_bids"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"sources__bids__stream": "no spaces"}, "sources.bids.nats.stream"),
        ({"sources__bids__url": "http://x"}, "sources.bids.nats.url"),
        ({"sources__bids__schema": {"date_time": "timestamp[x]"}}, "sources.bids.nats.schema"),
        ({"sources__bids__time_column": "nope"}, "sources.bids.nats"),
        ({"sources__bids__kind": "carrier_pigeon"}, "sources.bids"),
        ({"sink__table": "Robert'); DROP TABLE x;--"}, "sink.postgres.table"),
        ({"sink__dsn": "host=localhost port"}, "sink.postgres.dsn"),
        ({"sink__tabel": "typo"}, "sink.postgres.tabel"),
        ({"sink": {"kind": "duckdb"}}, "sink.duckdb.table"),
    ],
)
def test_a_bad_kind_setting_is_refused_naming_the_field(changes, field):
    with pytest.raises(ConfigError) as err:
        PipelineSpec.load(_kind_spec(**changes))
    assert any(f.startswith(field) for f in err.value.fields), err.value.fields


def test_a_password_in_a_bad_dsn_is_not_repeated_in_the_error():
    with pytest.raises(ConfigError) as err:
        PipelineSpec.load(_kind_spec(sink__dsn="password=hunter2 host=localhost port"))
    assert "hunter2" not in str(err.value)


def test_the_shape_before_kinds_reads_as_the_same_kinds():
    import yaml

    old = PipelineSpec.load(yaml.safe_load(Q5_YAML))
    new = yaml.safe_load(Q5_YAML)
    new["sources"]["bids"] = {
        "kind": "file",
        "path": "data/bids",
        "columns": ["auction", "date_time"],
    }
    new["sink"] = {"kind": "duckdb", "path": "out.duckdb", "table": "hot_items"}
    assert PipelineSpec.load(new) == old
    legacy = {"discard": {}, "parquet": "o.parquet", "topic": "out"}
    kinds = {"discard": "discard", "parquet": "file", "topic": "topic"}
    for key, value in legacy.items():
        data = yaml.safe_load(Q5_YAML)
        data["sink"] = {key: value}
        assert PipelineSpec.load(data).sink.kind == kinds[key]
    data = yaml.safe_load(Q5_YAML)
    data["sources"]["bids"] = {"topic": "bids", "path": "x"}
    with pytest.raises(ConfigError, match="exactly one of path, topic"):
        PipelineSpec.load(data)


LANDING = {
    "kind": "landing",
    "directory": ".",
    "schema": {"price": "int64", "date_time": "timestamp[ms]"},
}


def test_sensor_ranges_over_a_source_without_end_offsets_are_refused():
    data = _kind_spec(sources__bids=LANDING)
    with pytest.raises(ConfigError) as err:
        PipelineSpec.load(data)
    assert "sources.bids.kind: landing sources run continuously only" in str(err.value)
    data["catalog"] = {"micro_batch": False}
    spec = PipelineSpec.load(data)
    assert spec.sources["bids"].kind == "landing" and not spec.catalog.micro_batch


def test_relative_paths_of_any_kind_are_resolved_against_the_spec_file(tmp_path):
    data = _kind_spec(sources__bids={**LANDING, "directory": "in"}, catalog={"micro_batch": False})
    data["sink"] = {"kind": "parquet_dataset", "root": "out"}
    spec = PipelineSpec.load(data).relative_to(tmp_path)
    assert spec.sources["bids"].directory == tmp_path / "in"
    assert spec.sink.root == tmp_path / "out"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sensor_interval", 0, "duration must be positive"),
        ("progress_interval", "0s", "duration must be positive"),
        ("sensor_interval", "400d", "over the limit of 366d"),
    ],
)
def test_catalog_intervals_are_positive_and_bounded(field, value, message):
    data = _kind_spec(catalog={field: value})
    with pytest.raises(ConfigError) as err:
        PipelineSpec.load(data)
    assert err.value.fields == [f"catalog.{field}"] and message in str(err.value)
