"""Ingest with dead letters, and the dead-letter topic's list / show / re-drive: fuzzed
bad payloads never crash ingestion and are all accounted for with their exact bytes; a
re-drive appends what now decodes, once."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dataflare_platform.cli.dlq import dlq_app
from dataflare_platform.events.codec import JsonDecoder, encode_json
from dataflare_platform.events.deadletter import DeadLetters, NoSuchDeadLetterError
from dataflare_platform.events.ingest import ingest_payloads
from dataflare_platform.events.log import EventLog

REQUIRED = ("auction", "bidder", "price", "date_time")
LIMIT = 2048  # max payload bytes in the fuzz test


def _strict(schema: pa.Schema) -> pa.Schema:
    """Bids with the fields a bid cannot do without made non-nullable."""
    return pa.schema([f.with_nullable(f.name not in REQUIRED) for f in schema])


@pytest.fixture
def bids(small_nexmark) -> pa.Table:
    return small_nexmark["bids"]


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    return EventLog(tmp_path / "log")


def _frame(table: pa.Table) -> pl.DataFrame:
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    return df


# -- fuzzing ingestion -------------------------------------------------------------------
def _mutate(payload: bytes, change) -> bytes:
    obj = json.loads(payload)
    change(obj)
    return json.dumps(obj).encode()


def _cases(valid: list[bytes]) -> st.SearchStrategy[tuple[str, bytes]]:
    """(kind, payload): ``valid`` must be accepted, ``bytes`` may go either way (it is
    arbitrary), every other kind must be dead-lettered."""
    bid = st.sampled_from(valid)
    field = st.sampled_from(REQUIRED)
    wrong = st.sampled_from(['"x"', "[1]", '{"a": 1}', "true", "1.5", '""'])
    return st.one_of(
        bid.map(lambda p: ("valid", p)),
        bid.map(lambda p: ("valid", _mutate(p, lambda o: o.update(unknown=[1, {"x": 2}]))))
        | bid.map(lambda p: ("valid", json.dumps(json.loads(p), indent=2).encode())),
        st.binary(max_size=300).map(lambda p: ("bytes", p)),
        st.tuples(bid, st.floats(0, 1, exclude_max=True)).map(
            lambda t: ("truncated", t[0][: int(t[1] * len(t[0]))])
        ),
        st.tuples(bid, field, wrong).map(
            lambda t: (
                "wrong type",
                _mutate(t[0], lambda o: o.update({t[1]: json.loads(t[2])})),
            )
        ),
        st.tuples(bid, field).map(lambda t: ("missing", _mutate(t[0], lambda o: o.pop(t[1])))),
        st.tuples(bid, field).map(
            lambda t: ("null", _mutate(t[0], lambda o: o.update({t[1]: None})))
        ),
        bid.map(lambda p: ("oversized", _mutate(p, lambda o: o.update(extra="x" * LIMIT)))),
        st.tuples(bid, bid).map(lambda t: ("two objects", t[0] + t[1])),
        st.tuples(bid, st.binary(min_size=1, max_size=4)).map(
            lambda t: ("not utf-8", t[0].replace(b'"channel":"', b'"channel":"\xff' + t[1], 1))
        ),
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_payloads_never_crash_and_are_all_accounted_for(bids, data):
    valid = encode_json(bids.slice(0, 50))
    cases = data.draw(st.lists(_cases(valid), min_size=1, max_size=40))
    payloads = [p for _, p in cases]
    base = data.draw(st.integers(0, 10**12))
    offsets = list(range(base, base + len(payloads)))
    schema = _strict(bids.schema)
    with tempfile.TemporaryDirectory() as root:
        log = EventLog(root)
        topic = log.create_topic("bids", schema)
        result = ingest_payloads(
            log,
            "bids",
            payloads,
            source="fuzz",
            partition="7",
            offsets=offsets,
            max_payload_bytes=LIMIT,
            on_schema_mismatch="allow_extra",  # the "unknown" field of valid cases
        )
        assert result.accepted + result.dead_lettered == result.produced == len(payloads)
        rows = topic.read_all()
        assert rows.num_rows == result.accepted
        dead = DeadLetters(log, "bids")
        dlq = _frame(log.topic("bids.dlq").read_all()) if dead.exists() else None
        assert dead.count() == result.dead_lettered == (0 if dlq is None else dlq.height)
    dead_at = {} if dlq is None else dict(zip(dlq["offset"], dlq["payload"], strict=True))
    for offset, payload in dead_at.items():
        assert payload == payloads[offset - base]  # the exact raw bytes
    if dlq is not None:
        assert set(dlq["source"]) == {"fuzz"} and set(dlq["partition"]) == {"7"}
        assert dlq["reason"].str.len_chars().min() > 0
    for i, (kind, _) in enumerate(cases):
        if kind == "valid":
            assert base + i not in dead_at, (kind, payloads[i])
        elif kind != "bytes":
            assert base + i in dead_at, (kind, payloads[i])
    # The accepted rows are the valid bids, in order, exactly.
    kept = [i for i in range(len(payloads)) if base + i not in dead_at]
    expected = [json.loads(payloads[i]) for i in kept if cases[i][0] == "valid"]
    got = _frame(rows)
    if all(cases[i][0] == "valid" for i in kept):
        assert got.height == len(expected)
        assert got["auction"].to_list() == [e["auction"] for e in expected]
        assert got["price"].to_list() == [e["price"] for e in expected]
        assert got["channel"].to_list() == [e["channel"] for e in expected]


def test_decoder_ties_every_record_to_its_own_payload(bids):
    """Regression (codec fix): an unterminated object swallowing the next line while
    another payload holds two objects kept the record count, so records were attributed
    to the wrong payloads and malformed ones accepted."""
    schema = pa.schema([("a", pa.int64()), ("c", pa.string())])
    payloads = [b'{"a":1,"x":', b'{"b":1}}', b'{"a":7}{"a":8}', b'{"a":2}']
    decoded = JsonDecoder(schema).decode(payloads, [10, 11, 12, 13], "t")
    assert decoded.offsets == [13] and decoded.table.to_pylist() == [{"a": 2, "c": None}]
    assert decoded.dead.column("offset").to_pylist() == [10, 11, 12]
    assert decoded.dead.column("payload").to_pylist() == payloads[:3]


def test_decoder_refuses_strings_that_are_not_utf8():
    """Regression (codec fix): Arrow's JSON reader let invalid UTF-8 into string columns,
    which broke every later reader of the topic."""
    schema = pa.schema([("a", pa.int64()), ("c", pa.string())])
    payloads = [b'{"a":1,"c":"\xff\xfe"}', b'{"a":2,"c":"\xc3\xa9"}', b'{"a":3,"z":"\xff"}']
    decoded = JsonDecoder(schema).decode(payloads, [0, 1, 2], "t")
    assert decoded.table.to_pylist() == [{"a": 2, "c": "é"}, {"a": 3, "c": None}]
    assert decoded.dead.to_pylist()[0]["reason"] == "field 'c' is not valid UTF-8"


def test_rows_without_event_time_are_dead_lettered_not_refused(log, bids):
    # Plain bids: every field nullable, so only the topic knows a bid needs its time.
    log.create_topic("bids", bids.schema)
    good = encode_json(bids.slice(0, 10))
    # Present with null (a field left out entirely is a schema mismatch, dead-lettered
    # by on_schema_mismatch before the topic looks at event time).
    no_time = _mutate(good[0], lambda o: o.update(date_time=None))
    no_price = _mutate(good[1], lambda o: o.update(price=None))
    payloads = [*good[:5], no_time, no_price, *good[5:]]
    offsets = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]  # duplicates: two files' line numbers
    result = ingest_payloads(log, "bids", payloads, source="two-files", offsets=offsets)
    assert (result.accepted, result.dead_lettered) == (11, 1)
    letter = DeadLetters(log, "bids").show(0)
    assert letter.payload == no_time and letter.offset == 3
    assert letter.reason == "missing or null event time 'date_time'"
    assert _frame(log.topic("bids").read_all())["price"].null_count() == 1


def test_ingest_refuses_a_transactional_topic_and_a_missing_one(log, bids):
    log.create_topic("out", bids.schema, transactional=True)
    with pytest.raises(ValueError, match="transactional"):
        ingest_payloads(log, "out", encode_json(bids.slice(0, 1)))
    with pytest.raises(KeyError, match="no topic 'nope'"):
        ingest_payloads(log, "nope", [b"{}"])


# -- list / show / re-drive --------------------------------------------------------------
def _broken_batch(bids: pa.Table) -> tuple[list[bytes], dict[int, bytes]]:
    """120 bids of which positions 10..29 have the price as a string (fixable) and
    40..44 are cut short (not fixable)."""
    payloads = encode_json(bids.slice(0, 120))
    broken = {}
    for i in range(10, 30):
        broken[i] = _mutate(payloads[i], lambda o: o.update(price=str(o["price"])))
    for i in range(40, 45):
        broken[i] = payloads[i][:30]
    return [broken.get(i, p) for i, p in enumerate(payloads)], broken


def _fix_price(payload: bytes) -> bytes:
    obj = json.loads(payload)  # raises on the truncated ones: they stay dead
    obj["price"] = int(obj["price"])
    return json.dumps(obj).encode()


def test_list_show_and_redrive_round_trip(log, bids):
    topic = log.create_topic("bids", bids.schema, partitions=2, key="auction")
    payloads, broken = _broken_batch(bids)
    result = ingest_payloads(log, "bids", payloads, source="kafka:bids", partition="3")
    assert (result.accepted, result.dead_lettered) == (95, 25)
    dead = DeadLetters(log, "bids")
    assert dead.count() == dead.count(include_redriven=True) == 25

    listing = dead.list(limit=100)
    assert listing["dlq_offset"].to_list() == list(range(25))
    assert listing["offset"].to_list() == sorted(broken)
    assert set(listing["source"]) == {"kafka:bids"} and set(listing["partition"]) == {"3"}
    assert listing["size"].to_list() == [len(broken[i]) for i in sorted(broken)]
    assert listing["preview"][0].startswith('{"auction": ') and listing["preview"][0].endswith("…")
    assert dead.list(limit=3)["dlq_offset"].to_list() == [0, 1, 2]
    assert dead.list(limit=3, start=22)["dlq_offset"].to_list() == [22, 23, 24]
    typed = dead.list(limit=100, reason_like="changed from number to STRING")  # substring
    assert typed.height == 20
    assert dead.list(limit=100, reason_like="%number_to%").height == 20  # LIKE
    assert dead.list(limit=100, reason_like="malformed%").height == 25
    assert dead.list(limit=100, reason_like="nothing like this").height == 0

    letter = dead.show(20)
    assert letter.payload == broken[40] and letter.offset == 40 and not letter.redriven
    with pytest.raises(NoSuchDeadLetterError, match="holds offsets 0 to 24"):
        dead.show(25)

    # Without a fix nothing decodes; nothing is appended, nothing is marked.
    unfixed = dead.redrive()
    assert (unfixed.considered, unfixed.redriven, unfixed.still_dead) == (25, 0, 25)
    assert dead.count() == 25

    # Part of the range first, then everything: each dead letter re-driven once.
    part = dead.redrive(offsets=range(0, 5), fix=_fix_price)
    assert (part.redriven, part.still_dead, part.skipped) == (5, 0, 0)
    rest = dead.redrive(fix=_fix_price)
    assert (rest.considered, rest.redriven, rest.still_dead, rest.skipped) == (20, 15, 5, 5)
    assert all(why.startswith("fix failed: JSONDecodeError") for why in rest.failures.values())
    assert sorted(rest.failures) == list(range(20, 25))
    assert dead.count() == 5 and dead.count(include_redriven=True) == 25
    assert topic.read_all().num_rows + dead.count() == len(payloads)  # in = out + dead
    got = _frame(topic.read_all()).sort(pl.all())
    assert got.equals(
        _frame(bids.slice(0, 120))
        .filter(~pl.int_range(120).is_in(list(range(40, 45))))
        .sort(pl.all())
    )

    # The ledger is durable: another process re-driving again appends nothing.
    again = DeadLetters(EventLog(log.root), "bids").redrive(fix=_fix_price)
    assert (again.redriven, again.skipped, again.considered) == (0, 20, 5)
    assert EventLog(log.root).topic("bids").read_all().num_rows == 115
    pending = dead.list(limit=100, include_redriven=False)
    assert pending["dlq_offset"].to_list() == list(range(20, 25))
    assert dead.list(limit=100)["redriven"].sum() == 20 and dead.show(3).redriven


def test_a_fix_that_fails_or_returns_junk_leaves_the_letter_dead(log, bids):
    log.create_topic("bids", bids.schema)
    payloads, _ = _broken_batch(bids)
    ingest_payloads(log, "bids", payloads[10:12])

    def boom(_: bytes) -> bytes:
        raise RuntimeError("no")

    dead = DeadLetters(log, "bids")
    assert dead.redrive(fix=boom).failures == dict.fromkeys([0, 1], "fix failed: RuntimeError: no")
    junk = dead.redrive(fix=lambda _: None)  # type: ignore[arg-type,return-value]
    assert set(junk.failures.values()) == {"fix returned NoneType, not bytes"}
    assert dead.count() == 2 and log.topic("bids").read_all().num_rows == 0


def test_an_absent_dlq_reads_as_empty(log, bids):
    log.create_topic("bids", bids.schema)
    dead = DeadLetters(log, "bids")
    assert dead.count() == 0 and dead.list().height == 0
    assert dead.redrive().considered == 0
    assert not dead.exists()  # reading does not create it
    with pytest.raises(NoSuchDeadLetterError, match="is empty"):
        dead.show(0)


# -- the CLI -----------------------------------------------------------------------------
def _cli(args: list[str]) -> Result:
    return CliRunner().invoke(dlq_app, args)


def test_dlq_commands_list_show_and_redrive(log, bids, tmp_path):
    log.create_topic("bids", bids.schema)
    payloads, broken = _broken_batch(bids)
    ingest_payloads(log, "bids", payloads)
    where = ["--log-dir", str(log.root)]

    listed = _cli(["list", "bids", *where, "--json", "--limit", "3", "--reason", "number"])
    assert listed.exit_code == 0, listed.output
    out = json.loads(listed.stdout)
    assert (out["pending"], out["total"], out["dlq"]) == (25, 25, "bids.dlq")
    assert [r["offset"] for r in out["dead_letters"]] == [10, 11, 12]
    table = _cli(["list", "bids", *where])
    assert table.exit_code == 0 and "bids.dlq: 25 pending of 25" in table.stdout

    shown = json.loads(_cli(["show", "bids", "0", *where]).stdout)
    assert shown["payload"].encode() == broken[10] and shown["offset"] == 10
    raw = _cli(["show", "bids", "20", *where, "--raw"])
    assert raw.stdout_bytes == broken[40]
    missing = _cli(["show", "bids", "99", *where])
    assert missing.exit_code == 2 and "no dead letter at offset 99" in missing.output

    fixer = tmp_path / "fixes.py"
    fixer.write_text(
        "import json\n\n"
        "def price(payload):\n"
        "    obj = json.loads(payload)\n"
        "    obj['price'] = int(obj['price'])\n"
        "    return json.dumps(obj).encode()\n"
    )
    fix = ["--fix", f"{fixer}:price"]
    first = _cli(["redrive", "bids", *where, *fix, "--start", "0", "--end", "10"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["redriven"] == 10
    second = json.loads(_cli(["redrive", "bids", *where, *fix]).stdout)
    assert (second["redriven"], second["skipped"], second["still_dead"]) == (10, 10, 5)
    assert sum(second["still_dead_reasons"].values()) == 5
    third = json.loads(_cli(["redrive", "bids", *where, *fix]).stdout)
    assert third["redriven"] == 0
    assert log.topic("bids").read_all().num_rows == 115

    bad_fix = _cli(["redrive", "bids", *where, "--fix", f"{fixer}:nope"])
    assert bad_fix.exit_code == 2 and "--fix" in bad_fix.output
    no_topic = _cli(["list", "nope", *where])
    assert no_topic.exit_code == 2 and "no topic 'nope'" in no_topic.output
    no_log = _cli(["list", "bids", "--log-dir", str(tmp_path / "nowhere")])
    assert no_log.exit_code == 2 and "no event log at" in no_log.output


def test_dlq_commands_default_to_the_homes_log(home, bids):
    log = EventLog(home.event_log_dir)
    log.create_topic("bids", bids.schema)
    ingest_payloads(log, "bids", [b"junk"])
    got = _cli(["list", "bids", "--json"])  # $DATAFLARE_HOME from the fixture
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["dead_letters"][0]["preview"] == "junk"
    explicit = _cli(["list", "bids", "--json", "--home", str(home.root)])
    assert json.loads(explicit.stdout)["total"] == 1
