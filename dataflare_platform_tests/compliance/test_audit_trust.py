"""What makes the audit log's verification mean something: signed entry counts, keys
outside the home and pinned, no silent key generation, and an anchor outside the log that
still holds the checkpoints after the log *and* its checkpoints were emptied.

The PostgreSQL anchor runs in a dedicated database owned by a dedicated role, written by a
role that may only INSERT and SELECT (real server, as in test_audit.py)."""

from __future__ import annotations

import datetime as dt
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dataflare_platform.compliance.audit import AuditLog, checkpoint_message
from dataflare_platform.compliance.audit_anchor import (
    AnchorError,
    FileAnchor,
    PostgresAnchor,
    open_anchor,
    setup_postgres_anchor,
)
from dataflare_platform.compliance.audit_keys import (
    ENV_ANCHOR_URL,
    ENV_SIGNING_KEY,
    ENV_TRUSTED_KEYS,
    AuditSettings,
    FileSigner,
    key_id,
    provision,
    public_pem,
    user_config_dir,
)
from dataflare_platform.defs.governance.resources import GovernanceResource
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.errors import ConfigError
from dataflare_platform.home import ProjectHome
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform_tests.audit_support import ENTRY_KEY


def _fill(url: str, n: int) -> AuditLog:
    log = AuditLog(url, entry_key=ENTRY_KEY)
    for i in range(n):
        log.append("user:alice", "materialization", f"shop/orders{i}", {"i": i})
    return log


def _sql(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def signer() -> FileSigner:
    return FileSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def pinned(signer: FileSigner) -> dict:
    return {signer.key_id: signer.public_key}


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


# -- counts and unanchored entries --------------------------------------------------------
def test_a_checkpoint_signs_the_entry_count_and_algorithm(url, signer, pinned):
    log = _fill(url, 4)
    cp = log.checkpoint(signer)
    assert (cp.seq, cp.entries, cp.algorithm) == (4, 4, "ed25519")
    assert log.verify(pinned).ok
    _sql(url, "UPDATE audit_checkpoints SET entries = 9")  # the count is signed
    report = log.verify(pinned)
    assert not report.ok and "signature does not verify" in report.bad_checkpoints[0].problem


def test_an_emptied_log_with_its_checkpoints_left_fails(url, signer, pinned):
    log = _fill(url, 5)
    log.checkpoint(signer)
    _sql(url, "DELETE FROM audit_entries")

    report = log.verify(pinned)

    assert not report.ok
    assert "counted 5 entries but the log holds 0" in report.bad_checkpoints[0].problem


def test_entries_no_checkpoint_covers_fail_however_young(url, pinned):
    log = _fill(url, 3)
    report = log.verify(pinned)
    assert not report.ok
    assert report.unanchored == 3
    assert "3 entries and no valid checkpoint" in (report.unanchored_problem or "")
    assert log.verify(pinned, allow_unanchored_tail=True).ok


def test_a_young_tail_passes_and_an_old_one_fails(url, signer, pinned):
    log = _fill(url, 3)
    log.checkpoint(signer)
    log.append("system", "config_changed", "configuration", {})
    tail_at = log.tail(1)[0].at

    young = log.verify(pinned, now=tail_at + dt.timedelta(minutes=10))
    old = log.verify(pinned, now=tail_at + dt.timedelta(hours=2))

    assert young.ok and young.unanchored == 1 and young.anchored_seq == 3
    assert not old.ok and "older than the allowed 1:15:00" in (old.unanchored_problem or "")
    assert log.verify(pinned, now=tail_at + dt.timedelta(hours=2), allow_unanchored_tail=True).ok


def test_deleted_checkpoints_leave_the_log_unsigned_which_fails(url, signer, pinned):
    log = _fill(url, 4)
    log.checkpoint(signer)
    _sql(url, "DELETE FROM audit_checkpoints")
    assert not log.verify(pinned).ok


def test_a_rewritten_log_resigned_with_a_key_not_pinned_fails(url, signer, pinned):
    log = _fill(url, 4)
    log.checkpoint(signer)
    _sql(url, "DELETE FROM audit_entries WHERE seq > 2", "DELETE FROM audit_checkpoints")
    log.checkpoint(Ed25519PrivateKey.generate())  # the attacker's own key

    report = log.verify(pinned)

    assert not report.ok
    assert "not pinned" in report.bad_checkpoints[0].problem
    assert report.unanchored_problem is not None  # and nothing valid covers the entries


def test_a_checkpoint_of_the_first_format_still_verifies(url, signer, pinned):
    log = _fill(url, 2)
    head = log.tail(1)[0]
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    sig = signer.sign(checkpoint_message(head.seq, head.hash, at)).hex()
    _sql(
        url,
        "INSERT INTO audit_checkpoints (seq, head_hash, signed_at, key_id, signature)"
        f" VALUES (2, '{head.hash}', '2026-01-01 00:00:00.000000+00:00', '{signer.key_id}',"
        f" '{sig}')",
    )
    assert log.verify(pinned).ok, log.verify(pinned).summary()


# -- anchors ------------------------------------------------------------------------------
def test_the_file_anchor_catches_emptying_the_log_checkpoints_included(tmp_path, url, signer):
    pinned = {signer.key_id: signer.public_key}
    anchor = open_anchor(f"file://{tmp_path / 'outside' / 'anchor.jsonl'}")
    assert isinstance(anchor, FileAnchor)
    with pytest.raises(AnchorError, match="missing"):  # not created: not an empty anchor
        anchor.checkpoints()
    anchor.create()
    assert anchor.checkpoints() == []
    log = _fill(url, 6)
    log.checkpoint(signer, anchor=anchor)
    assert log.verify(pinned, anchored=anchor.checkpoints()).ok
    assert stat.S_IMODE(anchor.path.stat().st_mode) == 0o600

    _sql(url, "DELETE FROM audit_entries", "DELETE FROM audit_checkpoints")

    assert log.verify(pinned).ok  # the log alone cannot tell: it looks brand new
    report = log.verify(pinned, anchored=anchor.checkpoints())
    assert not report.ok
    assert report.bad_checkpoints[0].problem.startswith("anchor: counted 6 entries")


@pytest.fixture
def anchor_db(dsn: str) -> Iterator[tuple[str, str]]:
    """A dedicated database owned by its own role, with a writer role: (owner, writer)
    DSNs; everything dropped afterwards."""
    tag = uuid.uuid4().hex[:10]
    db, owner, writer = f"df_anchor_{tag}", f"df_anchor_owner_{tag}", f"df_anchor_writer_{tag}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {quote_identifier(owner)} LOGIN")
        conn.execute(f"CREATE ROLE {quote_identifier(writer)} LOGIN")
        conn.execute(f"CREATE DATABASE {quote_identifier(db)} OWNER {quote_identifier(owner)}")
    base = sa.engine.make_url(dsn)

    def as_role(role: str) -> str:
        return base.set(username=role, password=None, database=db).render_as_string(False)

    try:
        yield as_role(owner), as_role(writer)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {quote_identifier(db)} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {quote_identifier(writer)}")
            conn.execute(f"DROP ROLE IF EXISTS {quote_identifier(owner)}")


def test_the_postgres_anchor_is_append_only_for_its_writer_and_catches_emptying(
    anchor_db, url, signer, pinned
):
    from typer.testing import CliRunner

    from dataflare_platform.cli.audit import audit_app

    owner_dsn, writer_dsn = anchor_db
    writer_role = sa.engine.make_url(writer_dsn).username
    made = CliRunner().invoke(
        audit_app, ["anchor-setup", "--owner-url", owner_dsn, "--writer", writer_role]
    )
    assert made.exit_code == 0, made.output
    setup_postgres_anchor(owner_dsn, writer_role)  # idempotent
    anchor = open_anchor(writer_dsn)
    assert isinstance(anchor, PostgresAnchor)
    log = _fill(url, 5)
    log.checkpoint(signer, anchor=anchor)
    log.append("system", "config_changed", "configuration", {})
    log.checkpoint(signer, anchor=anchor)
    assert [(c.seq, c.entries) for c in anchor.checkpoints()] == [(5, 5), (6, 6)]

    with psycopg.connect(writer_dsn, autocommit=True) as conn:
        for statement in (
            "UPDATE dataflare_audit_anchor SET entries = 0",
            "DELETE FROM dataflare_audit_anchor",
            "TRUNCATE dataflare_audit_anchor",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    with psycopg.connect(owner_dsn, autocommit=True) as conn:  # even its owner: trigger
        for statement in ("DELETE FROM dataflare_audit_anchor", "TRUNCATE dataflare_audit_anchor"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)

    _sql(url, "DELETE FROM audit_entries", "DELETE FROM audit_checkpoints")
    report = log.verify(pinned, anchored=anchor.checkpoints())
    assert not report.ok
    assert {p.seq for p in report.bad_checkpoints} == {5, 6}


# -- keys: configured, outside the home, never generated silently --------------------------
def test_no_configured_key_is_an_error_and_nothing_is_generated(home: ProjectHome, tmp_path):
    governance = GovernanceResource(dataflare=ProjectHomeResource(path=str(home.root)))
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    with pytest.raises(ConfigError, match="no audit signing key configured"):
        governance.signing_key()
    with pytest.raises(ConfigError, match="no pinned audit public keys"):
        governance.public_keys()
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == before


def test_a_configured_key_file_that_is_missing_is_an_error(home, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_SIGNING_KEY, str(tmp_path / "keys" / "gone.key"))
    with pytest.raises(ConfigError, match=r"gone\.key"):
        AuditSettings.resolve().signer()
    assert not (tmp_path / "keys").exists()


def test_keys_inside_the_home_are_refused(home: ProjectHome, monkeypatch):
    monkeypatch.setenv(ENV_SIGNING_KEY, str(home.root / "audit_keys" / "k.key"))
    with pytest.raises(ConfigError, match="inside the project home") as err:
        AuditSettings.resolve()
    assert "signing_key" in str(err.value)


def test_init_provisions_outside_the_home_pins_the_key_and_never_regenerates(home):
    config = provision(home.root)
    directory = user_config_dir(home.root)
    key = Path(config["signing_key"])
    assert key.parent == directory and not key.is_relative_to(home.root)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("signing.key", "trusted.pem", "audit.json"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    settings = AuditSettings.resolve()
    signer = settings.signer()
    assert list(settings.trusted()) == [signer.key_id] == [config["key_id"]]
    assert settings.anchor_url == f"file://{directory / 'anchor.jsonl'}"
    assert provision(home.root) == config  # idempotent

    key.unlink()
    with pytest.raises(ConfigError, match="is missing: restore it"):
        provision(home.root)
    with pytest.raises(ConfigError):
        AuditSettings.resolve().signer()
    assert not key.exists()


def test_a_key_dropped_next_to_the_pinned_one_is_not_trusted(home, url):
    provision(home.root)
    settings = AuditSettings.resolve()
    stranger = FileSigner(Ed25519PrivateKey.generate())
    (user_config_dir(home.root) / "stranger.pub").write_bytes(public_pem(stranger.public_key))
    log = _fill(url, 2)
    log.checkpoint(stranger)
    report = log.verify(settings.trusted())
    assert not report.ok and "not pinned" in report.bad_checkpoints[0].problem


def test_the_environment_configures_key_trust_and_anchor(home, tmp_path, monkeypatch, url):
    outside = tmp_path / "deploy"
    provision_dir = provision(home.root)  # the environment wins over it, field by field
    other = FileSigner(Ed25519PrivateKey.generate())
    outside.mkdir()
    (outside / "trusted.pem").write_bytes(
        public_pem(other.public_key) + Path(provision_dir["trusted_keys"]).read_bytes()
    )
    monkeypatch.setenv(ENV_TRUSTED_KEYS, str(outside / "trusted.pem"))
    monkeypatch.setenv(ENV_ANCHOR_URL, f"file://{outside / 'anchor.jsonl'}")

    settings = AuditSettings.resolve()

    assert set(settings.trusted()) == {other.key_id, provision_dir["key_id"]}
    assert key_id(other.public_key) == other.key_id
    assert settings.anchor_url == f"file://{outside / 'anchor.jsonl'}"
    assert str(settings.signing_key) == provision_dir["signing_key"]


def test_cli_public_key_prints_the_pem_to_pin(home):
    from typer.testing import CliRunner

    from dataflare_platform.cli.audit import audit_app

    config = provision(home.root)
    got = CliRunner().invoke(audit_app, ["public-key"])
    assert got.exit_code == 0, got.output
    assert got.stdout.encode() == Path(config["trusted_keys"]).read_bytes()


_OLD_SCHEMA = (
    "CREATE TABLE audit_entries (seq BIGINT PRIMARY KEY, at TIMESTAMP WITH TIME ZONE NOT NULL,"
    " actor VARCHAR(256) NOT NULL, action VARCHAR(64) NOT NULL, subject TEXT NOT NULL,"
    " details TEXT NOT NULL, prev_hash VARCHAR(64) NOT NULL, hash VARCHAR(64) NOT NULL)",
    "CREATE TABLE audit_checkpoints (id {id} PRIMARY KEY, seq BIGINT NOT NULL,"
    " head_hash VARCHAR(64) NOT NULL, signed_at TIMESTAMP WITH TIME ZONE NOT NULL,"
    " key_id VARCHAR(16) NOT NULL, signature VARCHAR(128) NOT NULL)",
)


@pytest.fixture(params=["sqlite", "postgresql"])
def old_log_url(request, tmp_path, dsn) -> Iterator[str]:
    """A log created with the schema before counts were signed."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        _sql(url, *(q.format(id="INTEGER") for q in _OLD_SCHEMA))
        yield url
        return
    schema = f"old_audit_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {quote_identifier(schema)}")
    url = (
        sa.engine.make_url(dsn)
        .set(drivername="postgresql+psycopg")
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    _sql(url, *(q.format(id="SERIAL") for q in _OLD_SCHEMA))
    yield url
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {quote_identifier(schema)} CASCADE")


def test_a_log_of_the_old_schema_is_upgraded_and_takes_p256_checkpoints(old_log_url):
    from cryptography.hazmat.primitives.asymmetric import ec

    class P256Signer:  # the shape of a token's P-256 key, in process
        algorithm = "ecdsa-p256-sha256"

        def __init__(self) -> None:
            self._key = ec.generate_private_key(ec.SECP256R1())
            self.public_key = self._key.public_key()
            self.key_id = key_id(self.public_key)

        def sign(self, message: bytes) -> bytes:
            from cryptography.hazmat.primitives import hashes

            return self._key.sign(message, ec.ECDSA(hashes.SHA256()))

    log = _fill(old_log_url, 3)
    signer = P256Signer()
    cp = log.checkpoint(signer)
    assert (cp.entries, cp.algorithm) == (3, "ecdsa-p256-sha256") and len(cp.signature) > 128
    assert log.verify({signer.key_id: signer.public_key}).ok
    log.close()


def test_cli_verify_tail_options(tmp_path, home, url, entry_key_file, monkeypatch):
    from typer.testing import CliRunner

    from dataflare_platform.cli.audit import audit_app
    from dataflare_platform.compliance import audit

    provision(home.root)
    log = _fill(url, 2)
    runner = CliRunner()
    assert runner.invoke(audit_app, ["verify", "--url", url]).exit_code == 1
    allowed = runner.invoke(audit_app, ["verify", "--url", url, "--allow-unanchored-tail"])
    assert allowed.exit_code == 0, allowed.output
    assert "2 entries after seq 0 not yet signed" in allowed.stdout
    assert runner.invoke(audit_app, ["checkpoint", "--url", url]).exit_code == 0
    # The log's clock is the test's: the entry's age is set, not however long the machine
    # took between the append and the verify.
    appended = audit.utc_now() + dt.timedelta(days=1)  # after every entry so far
    clock = [appended]
    monkeypatch.setattr(audit, "utc_now", lambda: clock[0])
    log.append("system", "config_changed", "configuration", {})
    bounded = ["verify", "--url", url, "--max-unanchored-minutes", "5"]
    clock[0] = appended + dt.timedelta(minutes=4)
    young = runner.invoke(audit_app, bounded)
    assert young.exit_code == 0, young.output  # one entry, 4 minutes old
    clock[0] = appended + dt.timedelta(minutes=6)
    old = runner.invoke(audit_app, bounded)
    assert old.exit_code == 1, old.output  # the same entry, past the 5 minutes allowed
    assert "older than the allowed 0:05:00" in old.output


def test_cli_verify_fails_when_the_file_anchor_was_deleted_with_the_log(home, entry_key_file):
    from typer.testing import CliRunner

    from dataflare_platform.cli.audit import audit_app

    config = provision(home.root)
    anchor_file = Path(config["anchor_url"].removeprefix("file://"))
    assert anchor_file.exists() and stat.S_IMODE(anchor_file.stat().st_mode) == 0o600
    log = _fill(f"sqlite:///{home.root / 'audit.db'}", 3)
    runner = CliRunner()
    assert runner.invoke(audit_app, ["checkpoint"]).exit_code == 0
    assert runner.invoke(audit_app, ["verify"]).exit_code == 0

    _sql(log.url, "DELETE FROM audit_entries", "DELETE FROM audit_checkpoints")
    anchor_file.unlink()

    got = runner.invoke(audit_app, ["verify"])
    assert got.exit_code == 1 and "is missing" in got.output


def test_cli_init_creates_a_given_file_anchor(home, tmp_path):
    from typer.testing import CliRunner

    from dataflare_platform.cli.audit import audit_app

    target = tmp_path / "ops" / "anchor.jsonl"
    got = CliRunner().invoke(audit_app, ["init", "--anchor", f"file://{target}"])
    assert got.exit_code == 0, got.output
    assert target.exists() and FileAnchor(target).checkpoints() == []
