"""Declarative routing on the event log: first-match and fan-out counts against Polars
filters computed independently, the default route, dead-lettered unroutable records and
failing predicates, resuming from a consumer group, refused rule files, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from dataflare_platform.cli import app as dataflare_app
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.codec import JsonDecoder
from dataflare_platform.events.deadletter import DeadLetters
from dataflare_platform.events.groups import ConsumerGroup
from dataflare_platform.events.log import EventLog
from dataflare_platform.events.router import NO_ROUTE, Router, RouteRules, load_routes

RULES = {
    "source": "bids",
    "routes": [
        {"name": "big", "when": "price > 10000000", "to": "bids.big"},
        {"name": "google", "when": "channel = 'Google'", "to": "bids.search"},
        {"name": "baidu", "when": "channel = 'Baidu'", "to": "bids.search"},
        {"name": "cheap", "when": "price < 1000", "to": "bids.cheap"},
    ],
}


@pytest.fixture
def bids(small_nexmark) -> pa.Table:
    return small_nexmark["bids"]


@pytest.fixture
def log(tmp_path: Path, bids: pa.Table) -> EventLog:
    log = EventLog(tmp_path / "log")
    topic = log.create_topic("bids", bids.schema, partitions=2)
    for start in range(0, bids.num_rows, 500):
        topic.append(bids.slice(start, 500))
    return log


def _rows(log: EventLog, topic: str) -> pl.DataFrame:
    df = pl.from_arrow(log.topic(topic).read_all())
    assert isinstance(df, pl.DataFrame)
    return df.sort(pl.all())


def _truth(bids: pa.Table) -> tuple[pl.DataFrame, dict[str, pl.Expr]]:
    df = pl.from_arrow(bids)
    assert isinstance(df, pl.DataFrame)
    big = pl.col("price") > 10_000_000
    search = pl.col("channel").is_in(["Google", "Baidu"])
    cheap = pl.col("price") < 1000
    return df, {"big": big, "search": search, "cheap": cheap}


def test_first_match_sends_each_row_to_the_first_route_that_holds(log, bids):
    result = Router(log, RouteRules.load({**RULES, "mode": "first_match"})).run(max_rows=300)
    df, p = _truth(bids)
    expected = {
        "bids.big": df.filter(p["big"]),
        "bids.search": df.filter(~p["big"] & p["search"]),
        "bids.cheap": df.filter(~p["big"] & ~p["search"] & p["cheap"]),
    }
    unmatched = df.filter(~(p["big"] | p["search"] | p["cheap"]))
    assert all(frame.height > 0 for frame in expected.values())  # the data exercises them
    for topic, frame in expected.items():
        assert result.routed[topic] == frame.height
        assert _rows(log, topic).equals(frame.sort(pl.all()))
    assert result.dead_lettered == unmatched.height > 0
    assert result.rows_in == bids.num_rows == sum(result.routed.values()) + result.dead_lettered
    _assert_dead_letters_are(log, unmatched, NO_ROUTE)


def test_fan_out_sends_each_row_to_every_route_that_holds(log, bids):
    result = Router(log, RouteRules.load({**RULES, "mode": "fan_out"})).run(max_rows=300)
    df, p = _truth(bids)
    for topic, name in [("bids.big", "big"), ("bids.search", "search"), ("bids.cheap", "cheap")]:
        assert result.routed[topic] == df.filter(p[name]).height
        assert _rows(log, topic).equals(df.filter(p[name]).sort(pl.all()))
    # Rows matching two routes are copied, so the targets hold more than came in...
    assert sum(result.routed.values()) > result.delivered
    # ...but every row is delivered somewhere or dead-lettered, once.
    unmatched = df.filter(~(p["big"] | p["search"] | p["cheap"]))
    assert result.delivered == df.height - unmatched.height
    assert result.rows_in == result.delivered + result.dead_lettered == bids.num_rows
    _assert_dead_letters_are(log, unmatched, NO_ROUTE)


def test_default_takes_what_no_route_does(log, bids):
    rules = RouteRules.load({**RULES, "default": "bids.other"})
    result = Router(log, rules).run()
    df, p = _truth(bids)
    other = df.filter(~(p["big"] | p["search"] | p["cheap"]))
    assert result.routed["bids.other"] == other.height
    assert _rows(log, "bids.other").equals(other.sort(pl.all()))
    assert result.dead_lettered == 0 and not DeadLetters(log, "bids").exists()
    assert sum(result.routed.values()) == bids.num_rows


def _assert_dead_letters_are(log: EventLog, expected: pl.DataFrame, reason: str) -> None:
    """The DLQ holds exactly ``expected``, each with ``reason`` and a payload that
    decodes back to the row (so that a re-drive can put it back in the source)."""
    dlq = pl.from_arrow(log.topic("bids.dlq").read_all())
    assert isinstance(dlq, pl.DataFrame)
    assert dlq.height == expected.height
    assert set(dlq["reason"]) == {reason}
    assert set(dlq["source"]) == {"bids"}
    decoded = JsonDecoder(log.topic("bids").schema).decode(
        dlq["payload"].to_list(), list(range(dlq.height)), "check"
    )
    assert decoded.dead.num_rows == 0
    got = pl.from_arrow(decoded.table)
    assert isinstance(got, pl.DataFrame)
    assert got.sort(pl.all()).equals(expected.sort(pl.all()))
    # Source partition and offset point back at the very row.
    source = log.topic("bids")
    for row in dlq.head(5).iter_rows(named=True):
        original = source.read(int(row["partition"]), row["offset"], 1).to_pylist()[0]
        assert json.loads(row["payload"])["auction"] == original["auction"]


def test_a_predicate_failing_on_a_batch_dead_letters_that_batch_only(tmp_path, bids):
    # The first 500 rows have numeric `extra`, the rest do not: CAST fails on those.
    extra = [str(i) for i in range(500)] + bids.column("extra").to_pylist()[500:]
    data = bids.set_column(bids.schema.get_field_index("extra"), "extra", pa.array(extra))
    log = EventLog(tmp_path / "log")
    log.create_topic("bids", bids.schema).append(data)
    rules = RouteRules.load(
        {
            "source": "bids",
            "routes": [
                {"name": "google", "when": "channel = 'Google'", "to": "google"},
                {"name": "numeric", "when": "CAST(extra AS BIGINT) > 100", "to": "numeric"},
            ],
            "default": "rest",
        }
    )
    result = Router(log, rules).run(max_rows=250)
    assert result.failed_batches == -(-(bids.num_rows - 500) // 250)
    assert result.dead_lettered == bids.num_rows - 500
    assert result.rows_in == bids.num_rows == result.delivered + result.dead_lettered
    df = pl.from_arrow(data.slice(0, 500))
    assert isinstance(df, pl.DataFrame)
    google = df.filter(pl.col("channel") == "Google")
    numeric = df.filter((pl.col("channel") != "Google") & (pl.col("extra").cast(pl.Int64) > 100))
    assert result.routed == {
        "google": google.height,
        "numeric": numeric.height,
        "rest": 500 - google.height - numeric.height,
    }
    reasons = DeadLetters(log, "bids").list(limit=10_000)["reason"]
    assert reasons.len() == bids.num_rows - 500
    assert reasons.str.starts_with("route 'numeric' failed (CAST(extra AS BIGINT) > 100)").all()
    offsets = pl.from_arrow(log.topic("bids.dlq").read_all())["offset"]
    assert offsets.to_list() == list(range(500, bids.num_rows))


def test_run_resumes_from_the_group_and_targets_are_made_like_the_source(log, bids):
    rules = RouteRules.load({**RULES, "default": "bids.other"})
    first = Router(log, rules).run(group="g")
    assert first.rows_in == bids.num_rows
    for name in ("bids.big", "bids.search", "bids.cheap", "bids.other"):
        target = log.topic(name)
        assert target.schema.equals(log.topic("bids").schema)
        assert target.time_column == "date_time" and len(target.parts) == 2
    # A second bounded run finds nothing new; new rows are routed once.
    again = Router(EventLog(log.root), rules).run(group="g")
    assert again.rows_in == 0 and again.routed == {}
    log.topic("bids").append(bids.slice(0, 100))
    more = Router(EventLog(log.root), rules).run(group="g")
    assert more.rows_in == 100 and sum(more.routed.values()) == 100
    # Another group starts from the beginning.
    assert Router(log, rules).run(group="h").rows_in == bids.num_rows + 100


def test_a_constant_predicate_routes_everything(log, bids):
    rules = RouteRules.load(
        {"source": "bids", "routes": [{"name": "all", "when": "true", "to": "copy"}]}
    )
    assert Router(log, rules).run().routed == {"copy": bids.num_rows}


def test_a_target_with_another_schema_is_refused(log):
    log.create_topic("bids.big", pa.schema([("date_time", pa.timestamp("ms"))]))
    with pytest.raises(ConfigError) as err:
        Router(log, RouteRules.load(RULES))
    assert err.value.fields == ["routes.0.to"]
    assert "exists with a schema unlike 'bids'" in str(err.value)


def test_a_missing_source_is_refused(tmp_path):
    with pytest.raises(ConfigError) as err:
        Router(EventLog(tmp_path / "log"), RouteRules.load(RULES))
    assert err.value.fields == ["source"] and "no topic 'bids'" in str(err.value)


_BAD_RULES = [
    # (what is wrong, file text, field named, words in the message)
    (
        "unknown key",
        "source: bids\nroutes:\n  - {name: a, wen: 'price > 1', to: x}\n",
        "routes.0.wen",
        "Extra inputs are not permitted",
    ),
    ("unknown top-level key", "source: bids\nroute: []\n", "route", "Extra inputs"),
    (
        "bad expression",
        "source: bids\nroutes:\n  - {name: a, when: 'price >', to: x}\n",
        "routes.0.when",
        "not a valid expression",
    ),
    (
        "huge expression (overflowed Polars' parser: SIGSEGV)",
        "source: bids\nroutes:\n  - {name: a, when: '"
        + " OR ".join(f"price = {i}" for i in range(10_000))
        + "', to: x}\n",
        "routes.0.when",
        "over the limit of 4096",
    ),
    (
        "long operator chain",
        "source: bids\nroutes:\n  - {name: a, when: '" + "+".join(["p"] * 1500) + " > 1', to: x}\n",
        "routes.0.when",
        "terms and operators is over the limit of 1024",
    ),
    (
        "unknown column",
        "source: bids\nroutes:\n  - {name: a, when: 'prize > 1', to: x}\n",
        "routes.0.when",
        "unknown column 'prize'",
    ),
    (
        "type mismatch",
        "source: bids\nroutes:\n  - {name: a, when: 'channel > 5', to: x}\n",
        "routes.0.when",
        "cannot compare string with numeric",
    ),
    (
        "not a predicate",
        "source: bids\nroutes:\n  - {name: a, when: 'price + 1', to: x}\n",
        "routes.0.when",
        "not a predicate",
    ),
    (
        "duplicate names",
        "source: bids\nroutes:\n  - {name: a, when: 'price > 1', to: x}\n"
        "  - {name: a, when: 'price > 2', to: y}\n",
        "routes.1.name",
        "duplicate route name 'a'",
    ),
    ("empty routes", "source: bids\nroutes: []\n", "routes", "at least 1 item"),
    (
        "bad mode",
        "source: bids\nmode: round_robin\nroutes:\n  - {name: a, when: 'true', to: x}\n",
        "mode",
        "'first_match' or 'fan_out'",
    ),
    (
        "loop",
        "source: bids\nroutes:\n  - {name: a, when: 'true', to: bids}\n",
        "routes.0.to",
        "cannot write back to its source",
    ),
    (
        "bad topic name",
        "source: bids\nroutes:\n  - {name: a, when: 'true', to: 'x y'}\n",
        "routes.0.to",
        "should match pattern",
    ),
    ("no source", "routes:\n  - {name: a, when: 'true', to: x}\n", "source", "Field required"),
    ("not a mapping", "- a\n- b\n", "<root>", "must be a mapping"),
    ("not YAML", "source: [bids\n", "<file>", "expected"),
]


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [case[1:] for case in _BAD_RULES],
    ids=[case[0] for case in _BAD_RULES],
)
def test_invalid_rule_files_are_refused_naming_file_and_field(tmp_path, bids, text, field, words):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_routes(path, schema=bids.schema)
    assert field in err.value.fields  # a typo also reports the key it replaced as missing
    message = str(err.value)
    assert str(path) in message and field in message and words in message


def test_columns_are_checked_when_the_router_is_made_too(log, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("source: bids\nroutes:\n  - {name: a, when: 'prize > 1', to: x}\n")
    load_routes(path)  # without the source's schema only the shape is checked
    with pytest.raises(ConfigError) as err:
        Router.from_file(log, path)
    assert err.value.fields == ["routes.0.when"] and str(path) in str(err.value)
    assert not log.exists("x")  # nothing was created for refused rules


def _cli() -> typer.Typer:
    return dataflare_app  # the real `dataflare` app, with its error boundary


def test_route_command_runs_a_rule_file_once(log, bids, tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text(
        "source: bids\nmode: fan_out\nroutes:\n"
        "  - name: google\n    when: \"channel = 'Google'\"\n    to: bids.google\n"
        "default: bids.other\n"
    )
    args = ["route", str(path), "--log-dir", str(log.root)]
    got = CliRunner().invoke(_cli(), args)
    assert got.exit_code == 0, got.output
    summary = json.loads(got.stdout)
    df, _ = _truth(bids)
    google = df.filter(pl.col("channel") == "Google").height
    assert summary["group"] == "route.search" and summary["rows_in"] == bids.num_rows
    assert summary["routed"] == {"bids.google": google, "bids.other": bids.num_rows - google}
    again = json.loads(CliRunner().invoke(_cli(), args).stdout)
    assert again["rows_in"] == 0  # bounded runs resume from the group
    path.write_text("source: bids\nroutes:\n  - {name: a, when: 'prize > 1', to: x}\n")
    bad = CliRunner().invoke(_cli(), args)
    assert bad.exit_code == 2
    assert "routes.0.when" in bad.output and "unknown column 'prize'" in bad.output
    missing = CliRunner().invoke(_cli(), ["route", str(path), "--log-dir", str(tmp_path / "no")])
    assert missing.exit_code == 2 and "no event log at" in missing.output


def test_route_command_defaults_to_the_homes_log(home, bids, tmp_path):
    log = EventLog(home.event_log_dir)
    log.create_topic("bids", bids.schema).append(bids)
    path = tmp_path / "r.yaml"
    path.write_text("source: bids\nroutes:\n  - {name: all, when: 'true', to: copy}\n")
    got = CliRunner().invoke(_cli(), ["route", str(path)])  # $DATAFLARE_HOME from the fixture
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["routed"] == {"copy": bids.num_rows}


def test_unroutable_rows_redriven_after_the_rules_are_fixed_are_routed(log, bids):
    """Router dead letters carry the row as JSON: a re-drive puts them back in the
    source, where the router's group finds them as new rows."""
    first = Router(log, RouteRules.load(RULES)).run(group="g")
    dead = DeadLetters(log, "bids")
    assert dead.count() == first.dead_lettered > 0
    redrive = dead.redrive()
    assert redrive.redriven == first.dead_lettered and redrive.still_dead == 0
    fixed = Router(log, RouteRules.load({**RULES, "default": "bids.other"})).run(group="g")
    assert fixed.rows_in == first.dead_lettered == fixed.routed["bids.other"]
    df, p = _truth(bids)
    other = df.filter(~(p["big"] | p["search"] | p["cheap"]))
    assert _rows(log, "bids.other").equals(other.sort(pl.all()))
    assert dead.count() == 0 and dead.count(include_redriven=True) == first.dead_lettered


def test_follow_keeps_routing_new_rows_until_stopped(log, bids):
    router = Router(log, RouteRules.load({**RULES, "default": "bids.other"}))
    source = log.topic("bids")
    appended = []

    def stop() -> bool:
        """Append once more after the backlog is drained, then stop when that is too."""
        if sum(ConsumerGroup(source, "f").lag().values()):
            return False
        if not appended:
            appended.append(source.append(bids.slice(0, 50)))
            return False
        return True

    result = router.run(group="f", follow=True, poll_interval_s=0.01, stop=stop)
    assert result.rows_in == bids.num_rows + 50
    assert sum(result.routed.values()) == bids.num_rows + 50
