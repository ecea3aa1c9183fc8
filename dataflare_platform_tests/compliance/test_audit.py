"""The audit log's hash chain and signed checkpoints catch every kind of tampering done
directly in the database (edits, deletions, reordering, a consistently rewritten chain,
forged checkpoints), and concurrent writers in several processes keep one dense chain.

Every log test runs on a SQLite file and on a real PostgreSQL server:
``DATAFLARE_TEST_POSTGRES_DSN`` or postgresql://postgres@127.0.0.1:5432/test. If the
server is unreachable the PostgreSQL cases fail (they do not skip). Each PostgreSQL case
works in its own schema, dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import multiprocessing
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from dataflare_platform.cli.audit import audit_app
from dataflare_platform.compliance.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditLog,
    AuditTamperedError,
    checkpoint_message,
    entry_hash,
)
from dataflare_platform.compliance.audit_keys import (
    AuditSettings,
    generate_key_pair,
    key_id,
    load_public_keys,
    load_signing_key,
)
from dataflare_platform.errors import ConfigError
from dataflare_platform.home import ProjectHome
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform_tests.audit_support import ENTRY_KEY


@pytest.fixture
def pg_url(dsn: str) -> Iterator[str]:
    """A SQLAlchemy URL whose search_path is a fresh schema, dropped afterwards."""
    name = f"dataflare_audit_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {quote_identifier(name)}")
    url = (
        sa.engine.make_url(dsn)
        .set(drivername="postgresql+psycopg")
        .update_query_dict({"options": f"-csearch_path={name}"})
    )
    yield url.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(name)} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    key_dir = tmp_path / "keys"
    generate_key_pair(key_dir)
    return key_dir


def _fill(url: str, n: int = 10) -> AuditLog:
    log = AuditLog(url, entry_key=ENTRY_KEY)
    actors = ["user:alice", "sensor:orders_arrived", "schedule:nightly", "client:etl", "system"]
    actions = ["run_launched", "materialization", "check_result", "config_changed"]
    for i in range(n):
        log.append(
            actors[i % len(actors)],
            actions[i % len(actions)],
            f"nexmark/q{i % 8}",
            {"run_id": f"r{i}", "rows": i * 10, "nested": {"b": 1, "a": [i]}},
        )
    return log


def _sql(url: str, *statements: str, **params: object) -> None:
    """Tamper the way an attacker with database access would: plain SQL, no API."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement), params)
    finally:
        engine.dispose()


def _rows(url: str) -> dict[int, dict]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM audit_entries ORDER BY seq")).mappings()
            return {r["seq"]: dict(r) for r in rows}
    finally:
        engine.dispose()


# -- an untouched log ---------------------------------------------------------------------
def test_an_untouched_log_verifies_with_its_checkpoints(url, keys):
    log = _fill(url, 6)
    first = log.checkpoint(load_signing_key(keys))
    log.append("user:bob", "plugin_loaded", "plugins/geo", {"sha256": "ab" * 32})
    second = log.checkpoint(load_signing_key(keys))

    report = log.verify(load_public_keys(keys))

    assert report.ok, report.summary()
    assert (report.entries, report.head_seq, report.checkpoints) == (7, 7, 2)
    assert (first.seq, second.seq) == (6, 7)
    assert report.head_hash == second.head_hash == log.tail(1)[0].hash
    assert report.first_bad_entry is None and report.bad_checkpoints == []


def test_entries_are_chained_dense_and_canonical(url):
    log = _fill(url, 4)
    entries = log.tail(10)

    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert entries[0].details == '{"nested":{"a":[0],"b":1},"rows":0,"run_id":"r0"}'
    assert entries[0].payload()["nested"] == {"a": [0], "b": 1}
    assert {e.at.utcoffset() for e in entries} == {dt.timedelta(0)}
    expected = hashlib.sha256(
        json.dumps(
            [
                1,
                entries[0].at.isoformat(timespec="microseconds"),
                "user:alice",
                "run_launched",
                "nexmark/q0",
                entries[0].details,
                GENESIS_HASH,
            ],
            separators=(",", ":"),
        ).encode()
    ).hexdigest()
    assert entries[0].hash == expected


# -- tampering with entries ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("column", "value"),
    [("details", '{"rows":0,"run_id":"forged"}'), ("actor", "user:mallory")],
)
def test_an_edited_row_is_named_by_its_seq(url, column, value):
    log = _fill(url)
    _sql(url, f"UPDATE audit_entries SET {column} = :value WHERE seq = 4", value=value)

    report = log.verify({})

    assert not report.ok
    assert report.first_bad_entry is not None
    assert report.first_bad_entry.seq == 4
    assert "does not match the entry's content" in report.first_bad_entry.problem
    assert report.bad_entries == 1  # the rows after it still link to its stored hash


def test_a_deleted_row_is_a_gap_named_by_the_first_missing_seq(url):
    log = _fill(url)
    _sql(url, "DELETE FROM audit_entries WHERE seq IN (5, 6)")

    report = log.verify({})

    assert not report.ok
    assert report.first_bad_entry is not None
    assert report.first_bad_entry.seq == 5
    assert "seqs 5..6 absent" in report.first_bad_entry.problem
    assert report.entries == 8


def test_swapping_two_rows_seq_values_is_detected(url):
    log = _fill(url)
    _sql(
        url,
        "UPDATE audit_entries SET seq = -1 WHERE seq = 3",
        "UPDATE audit_entries SET seq = 3 WHERE seq = 7",
        "UPDATE audit_entries SET seq = 7 WHERE seq = -1",
    )

    report = log.verify({})

    assert not report.ok
    assert report.first_bad_entry is not None
    assert report.first_bad_entry.seq == 3


def test_swapping_two_rows_contents_is_detected(url):
    log = _fill(url)
    rows = _rows(url)
    columns = [c for c in rows[3] if c != "seq"]
    assignments = ", ".join(f"{c} = :{c}" for c in columns)
    for target, source in ((3, 4), (4, 3)):
        values = {c: rows[source][c] for c in columns}
        _sql(url, f"UPDATE audit_entries SET {assignments} WHERE seq = {target}", **values)

    report = log.verify({})

    assert not report.ok
    assert report.first_bad_entry is not None
    assert report.first_bad_entry.seq == 3


def test_a_consistently_rewritten_chain_is_caught_by_the_checkpoint(url, keys):
    """Recomputing every hash after an edit fools the chain, not the signed head."""
    log = _fill(url, 8)
    log.checkpoint(load_signing_key(keys))
    rows = _rows(url)
    prev = rows[2]["hash"]
    for seq in range(3, 9):
        row = rows[seq]
        actor = "user:mallory" if seq == 3 else row["actor"]
        at = (
            row["at"]
            if isinstance(row["at"], dt.datetime)
            else dt.datetime.fromisoformat(row["at"])
        )
        digest = entry_hash(seq, at, actor, row["action"], row["subject"], row["details"], prev)
        _sql(
            url,
            "UPDATE audit_entries SET actor = :a, prev_hash = :p, hash = :h WHERE seq = :s",
            a=actor,
            p=prev,
            h=digest,
            s=seq,
        )
        prev = digest

    report = log.verify(load_public_keys(keys))

    # The chain itself is consistent again; the first rewritten entry's tag is not.
    assert report.first_bad_entry is not None and report.first_bad_entry.seq == 3
    assert "authenticator does not verify" in report.first_bad_entry.problem
    assert not report.ok
    [bad] = report.bad_checkpoints
    assert bad.seq == 8
    assert "differs from the recomputed hash" in bad.problem


def test_a_truncated_tail_is_caught_by_the_checkpoint(url, keys):
    log = _fill(url, 8)
    log.checkpoint(load_signing_key(keys))
    _sql(url, "DELETE FROM audit_entries WHERE seq > 5")

    report = log.verify(load_public_keys(keys))

    assert not report.ok
    assert [cp.seq for cp in report.bad_checkpoints] == [8]
    assert "counted 8 entries but the log holds 5" in report.bad_checkpoints[0].problem


# -- forged checkpoints -------------------------------------------------------------------
def test_a_checkpoint_signed_with_another_key_fails(url, keys):
    log = _fill(url, 5)
    trusted = load_signing_key(keys)
    good = log.checkpoint(trusted)
    head = log.tail(1)[0]
    other = Ed25519PrivateKey.generate()
    forged = other.sign(checkpoint_message(head.seq, head.hash, good.signed_at)).hex()
    _sql(
        url,
        "INSERT INTO audit_checkpoints (seq, head_hash, signed_at, key_id, signature)"
        " SELECT seq, head_hash, signed_at, key_id, :sig FROM audit_checkpoints WHERE id = :id",
        sig=forged,
        id=good.id,
    )

    report = log.verify(load_public_keys(keys))

    assert report.first_bad_entry is None
    assert not report.ok
    [bad] = report.bad_checkpoints
    assert bad.key_id == key_id(trusted.public_key()) and bad.id != good.id
    assert "signature does not verify" in bad.problem


def test_a_checkpoint_with_an_altered_head_hash_fails(url, keys):
    log = _fill(url, 5)
    cp = log.checkpoint(load_signing_key(keys))
    _sql(url, "UPDATE audit_checkpoints SET head_hash = :h WHERE id = :id", h="f" * 64, id=cp.id)

    report = log.verify(load_public_keys(keys))

    assert not report.ok
    assert [(b.id, b.seq) for b in report.bad_checkpoints] == [(cp.id, 5)]
    assert "signature does not verify" in report.bad_checkpoints[0].problem


def test_a_checkpoint_by_an_unknown_key_fails(url, keys):
    log = _fill(url, 3)
    stranger = Ed25519PrivateKey.generate()
    log.checkpoint(stranger)

    report = log.verify(load_public_keys(keys))

    assert not report.ok
    assert (
        report.bad_checkpoints[0].problem
        == f"signed by unknown key {key_id(stranger.public_key())} (not pinned)"
    )


@pytest.mark.parametrize(
    ("tamper", "match"),
    [
        ("UPDATE audit_entries SET subject = 'auctions' WHERE seq = 7", "seq 7"),
        ("DELETE FROM audit_entries WHERE seq = 2", "1 of the entries up to seq 6"),
        ("UPDATE audit_entries SET hash = prev_hash WHERE seq = 6", "seq 6 no longer"),
    ],
)
def test_checkpoint_refuses_to_sign_a_tampered_chain(url, keys, tamper, match):
    log = _fill(url, 6)
    log.checkpoint(load_signing_key(keys))
    log.append("system", "retention_deleted", "bids", {"rows": 3})
    _sql(url, tamper)

    with pytest.raises(AuditTamperedError, match=match):
        log.checkpoint(load_signing_key(keys))
    assert len(log.checkpoints()) == 1


# -- concurrency --------------------------------------------------------------------------
def _append_many(url: str, worker: int, count: int, start: multiprocessing.synchronize.Event):
    log = AuditLog(url, entry_key=ENTRY_KEY)
    start.wait(30)
    for i in range(count):
        log.append(f"client:worker{worker}", "materialization", f"w{worker}/{i}", {"i": i})
    log.close()


def test_concurrent_appends_from_four_processes_keep_one_dense_chain(url, keys):
    AuditLog(
        url, entry_key=ENTRY_KEY
    ).close()  # tables exist before the race (creation is locked anyway)
    # Workers fork from a clean server process that imported this module once: none of
    # pytest's threads or engines are inherited, and the import is paid once, not 4 times.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    start = ctx.Event()
    workers = [ctx.Process(target=_append_many, args=(url, w, 25, start)) for w in range(4)]
    for p in workers:
        p.start()
    start.set()
    for p in workers:
        p.join(120)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]

    log = AuditLog(url, entry_key=ENTRY_KEY)
    log.checkpoint(load_signing_key(keys))
    report = log.verify(load_public_keys(keys))
    entries = log.tail(1000)

    assert report.ok, report.summary()
    assert [e.seq for e in entries] == list(range(1, 101))
    subjects = {e.subject for e in entries}
    assert subjects == {f"w{w}/{i}" for w in range(4) for i in range(25)}
    assert all(a.at <= b.at for a, b in itertools.pairwise(entries))


# -- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("alice", "run_launched", "x", {}), "actor"),
        (("user:", "run_launched", "x", {}), "actor"),
        (("user:alice", "Run Launched", "x", {}), "action"),
        (("user:alice", "run_launched", "x", {"v": float("nan")}), "details"),
        (("user:alice", "run_launched", "x", {"v": object()}), "details"),
        (("user:alice", "run_launched", "x", ["not", "a", "mapping"]), "details"),
    ],
)
def test_bad_entries_are_refused_naming_the_field(tmp_path, args, field):
    log = AuditLog(f"sqlite:///{tmp_path / 'a.db'}", entry_key=ENTRY_KEY)
    with pytest.raises(ConfigError) as err:
        log.append(*args)
    assert err.value.fields == [field]
    assert log.count() == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "in-memory"),
        ("mysql://u@h/db", "not supported"),
        ("postgresql+psycopg2://u:s3cret@h/db", "not supported"),
        ("not a url", "not a database URL"),
    ],
)
def test_bad_urls_are_refused_naming_the_field(tmp_path, url, message):
    with pytest.raises(ConfigError) as err:
        AuditSettings.resolve(url=url, home=tmp_path)
    assert err.value.fields == ["url"]
    assert message in str(err.value) and "s3cret" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        AuditLog(url, entry_key=ENTRY_KEY)
    assert err.value.fields == ["url"]


def test_settings_default_to_the_project_home_and_keys_outside_it(home: ProjectHome):
    settings = AuditSettings.resolve()
    assert settings.url == f"sqlite:///{home.root / 'audit.db'}"
    assert (settings.signing_key, settings.trusted_keys, settings.anchor_url) == (None,) * 3
    pg = AuditSettings.resolve(url="postgresql://u@h/db")
    assert pg.url == "postgresql+psycopg://u@h/db"


# -- keys ---------------------------------------------------------------------------------
def test_a_generated_key_pair_is_private_and_named_by_its_public_key(tmp_path):
    kid = generate_key_pair(tmp_path / "keys")
    private_path = tmp_path / "keys" / f"{kid}.key"

    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    private = load_signing_key(tmp_path / "keys")
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert kid == hashlib.sha256(raw).hexdigest()[:16] == key_id(private.public_key())
    assert list(load_public_keys(tmp_path / "keys")) == [kid]


def test_several_keys_without_an_id_are_refused_not_guessed(tmp_path):
    first = generate_key_pair(tmp_path)
    second = generate_key_pair(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_signing_key(tmp_path)
    assert err.value.fields == ["key_id"]
    assert key_id(load_signing_key(tmp_path, second).public_key()) == second
    assert set(load_public_keys(tmp_path)) == {first, second}


def test_a_renamed_public_key_keeps_its_true_id(tmp_path):
    kid = generate_key_pair(tmp_path)
    (tmp_path / f"{kid}.pub").rename(tmp_path / "0000000000000000.pub")
    assert list(load_public_keys(tmp_path)) == [kid]


# -- CLI ----------------------------------------------------------------------------------
def test_cli_verify_exits_0_on_a_good_log_and_1_naming_the_tampered_seq(
    tmp_path, home, entry_key_file
):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    key_dir = tmp_path / "keys"
    runner = CliRunner()
    made = runner.invoke(audit_app, ["keygen", "--keys", str(key_dir)])
    assert made.exit_code == 0, made.output
    kid = json.loads(made.stdout)["key_id"]
    key = ["--key", str(key_dir / f"{kid}.key")]
    trusted = ["--trusted", str(key_dir / f"{kid}.pub")]
    _fill(url, 5).close()
    signed = runner.invoke(audit_app, ["checkpoint", "--url", url, *key])
    assert signed.exit_code == 0, signed.output
    assert json.loads(signed.stdout)["seq"] == 5
    assert json.loads(signed.stdout)["entries"] == 5

    good = runner.invoke(audit_app, ["verify", "--url", url, *trusted])
    assert good.exit_code == 0, good.output
    assert "ok: 5 entries" in good.stdout and "1 checkpoints (+0 anchored) verified" in good.stdout

    _sql(url, "UPDATE audit_entries SET details = '{}' WHERE seq = 2")
    bad = runner.invoke(audit_app, ["verify", "--url", url, *trusted])
    assert bad.exit_code == 1
    assert "first bad entry seq 2" in bad.output

    as_json = runner.invoke(audit_app, ["verify", "--url", url, *trusted, "--json"])
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False and report["first_bad_entry"]["seq"] == 2


def test_cli_tail_a_missing_log_and_an_unsigned_log(tmp_path, home: ProjectHome, entry_key_file):
    runner = CliRunner()
    missing = runner.invoke(audit_app, ["verify"])
    assert missing.exit_code == 2
    assert "no audit log at" in missing.output and "audit.db" in missing.output

    _fill(f"sqlite:///{home.root / 'audit.db'}", 6).close()
    tail = runner.invoke(audit_app, ["tail", "-n", "2", "--json"])
    assert tail.exit_code == 0, tail.output
    assert [json.loads(line)["seq"] for line in tail.stdout.splitlines()] == [5, 6]
    # No pinned keys: a configuration error, not a pass.
    unpinned = runner.invoke(audit_app, ["verify"])
    assert unpinned.exit_code == 2 and "no pinned audit public keys" in unpinned.output
    # Provisioned but never signed: six entries no checkpoint covers fail.
    assert runner.invoke(audit_app, ["init"]).exit_code == 0
    unsigned = runner.invoke(audit_app, ["verify"])
    assert unsigned.exit_code == 1
    assert "6 entries and no valid checkpoint" in unsigned.output
    assert runner.invoke(audit_app, ["checkpoint"]).exit_code == 0
    assert runner.invoke(audit_app, ["verify"]).exit_code == 0


def test_entry_model_round_trips_through_the_log(tmp_path):
    log = AuditLog(f"sqlite:///{tmp_path / 'a.db'}", entry_key=ENTRY_KEY)
    appended = log.append("system", "config_changed", "audit", {"k": "v"})
    [stored] = log.tail(1)
    assert isinstance(stored, AuditEntry)
    assert stored == appended
    assert stored.compute_hash() == stored.hash


def test_a_timestamp_edited_into_garbage_is_reported_not_a_crash(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    log = _fill(url, 5)
    _sql(url, "UPDATE audit_entries SET at = 'yesterday' WHERE seq = 3")

    report = log.verify({})

    assert not report.ok
    assert report.first_bad_entry is not None
    assert report.first_bad_entry.seq == 3
    assert "unreadable row after seq 2" in report.first_bad_entry.problem


def test_cli_names_an_unreachable_database_without_a_traceback():
    got = CliRunner().invoke(
        audit_app, ["tail", "--url", "postgresql+psycopg://u:s3cret@127.0.0.1:1/x"]
    )
    assert got.exit_code == 2
    assert "audit database:" in got.output and "Traceback" not in got.output
    assert "s3cret" not in got.output


def test_cli_checkpoint_exits_1_on_a_tampered_chain(tmp_path, home, entry_key_file):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    kid = generate_key_pair(tmp_path / "keys")
    _fill(url, 3).close()
    _sql(url, "UPDATE audit_entries SET actor = 'system' WHERE seq = 3")
    got = CliRunner().invoke(
        audit_app, ["checkpoint", "--url", url, "--key", str(tmp_path / "keys" / f"{kid}.key")]
    )
    assert got.exit_code == 1
    assert "seq 3" in got.output
    assert AuditLog(url, entry_key=ENTRY_KEY).checkpoints() == []
