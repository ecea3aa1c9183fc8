"""Each audit entry is authenticated at append (HMAC-SHA256 with the deployment's entry
key, outside the home), so the young tail after the last checkpoint cannot be forged by
whoever can write the home either.

Every forgery here is done the way an attacker with write access to the log would: plain
SQL on the database, the hash chain recomputed with the module's own public hash function
(which needs no secret), and then judged by the real ``dataflare audit verify`` of a home
provisioned by ``dataflare audit init``."""

from __future__ import annotations

import datetime as dt
import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from dataflare_platform.cli.audit import audit_app
from dataflare_platform.compliance.audit import (
    GENESIS_HASH,
    AuditAction,
    AuditLog,
    entry_hash,
)
from dataflare_platform.compliance.audit_keys import (
    ENV_ENTRY_KEY,
    AuditSettings,
    EntryAuthenticator,
    provision,
    user_config_dir,
)
from dataflare_platform.errors import ConfigError
from dataflare_platform.home import ProjectHome

SIGNED, TAIL = 5, 4  # entries under the checkpoint, entries of the unsigned tail after it


def _url(home: ProjectHome) -> str:
    return f"sqlite:///{home.root / 'audit.db'}"


def _live_log(home: ProjectHome) -> None:
    """A provisioned home's log: SIGNED entries under a checkpoint, then a young tail."""
    provision(home.root)
    settings = AuditSettings.resolve(home=home.root)
    with AuditLog.open(settings) as log:
        for i in range(SIGNED):
            log.append("user:alice", "run_launched", f"run:r{i}", {"i": i})
        log.checkpoint(settings.signer())
        for i in range(SIGNED, SIGNED + TAIL):
            log.append("user:alice", "run_launched", f"run:r{i}", {"i": i})


def _rows(url: str) -> list[dict]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM audit_entries ORDER BY seq")).mappings()
            return [dict(r) for r in rows]
    finally:
        engine.dispose()


def _at(row: dict) -> dt.datetime:
    value = row["at"]
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


def _rewrite(url: str, rows: list[dict], tagger: EntryAuthenticator | None = None) -> None:
    """Replace the log's entries by ``rows`` renumbered 1..n with the hash chain
    recomputed; tags are kept as they were (the attacker has no entry key) unless
    ``tagger`` (an attacker's own key) re-tags the rows it rewrote."""
    prev = GENESIS_HASH
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM audit_entries"))
            for seq, row in enumerate(rows, start=1):
                at = _at(row)
                digest = entry_hash(
                    seq, at, row["actor"], row["action"], row["subject"], row["details"], prev
                )
                mac, mac_key = row.get("mac"), row.get("mac_key")
                if tagger is not None and digest != row["hash"]:
                    mac, mac_key = tagger.tag(digest), tagger.key_id
                conn.execute(
                    sa.text(
                        "INSERT INTO audit_entries (seq, at, actor, action, subject, details,"
                        " prev_hash, hash, mac, mac_key) VALUES (:seq, :at, :actor, :action,"
                        " :subject, :details, :prev_hash, :hash, :mac, :mac_key)"
                    ),
                    {
                        **row,
                        "seq": seq,
                        "at": row["at"],
                        "prev_hash": prev,
                        "hash": digest,
                        "mac": mac,
                        "mac_key": mac_key,
                    },
                )
                prev = digest
    finally:
        engine.dispose()


def _edit_field(rows: list[dict]) -> list[dict]:
    rows[6] = {**rows[6], "actor": "user:mallory"}  # seq 7
    return rows


def _insert(rows: list[dict]) -> list[dict]:
    forged = {**rows[5], "subject": "run:never-launched", "mac": None, "mac_key": None}
    return [*rows[:6], forged, *rows[6:]]  # a new seq 7


def _insert_copying_a_tag(rows: list[dict]) -> list[dict]:
    forged = {**rows[5], "subject": "run:never-launched"}  # seq 6's tag kept
    return [*rows[:6], forged, *rows[6:]]


def _delete(rows: list[dict]) -> list[dict]:
    return [*rows[:6], *rows[7:]]  # seq 7 gone, 8 and 9 renumbered


def _swap(rows: list[dict]) -> list[dict]:
    rows[6], rows[7] = {**rows[7], "at": rows[6]["at"]}, {**rows[6], "at": rows[7]["at"]}
    return rows  # seq 7 and 8 swapped (times kept in order)


FORGERIES: dict[str, tuple[Callable[[list[dict]], list[dict]], int]] = {
    # name: (what the attacker does to the rows, the seq verify must name)
    "edit a field": (_edit_field, 7),
    "insert an entry": (_insert, 7),
    "insert an entry with a copied tag": (_insert_copying_a_tag, 7),
    "delete an entry": (_delete, 7),
    "swap two entries": (_swap, 7),
}


def _verify(*args: str) -> tuple[int, str]:
    got = CliRunner().invoke(audit_app, ["verify", *args])
    return got.exit_code, got.output


@pytest.mark.parametrize("name", list(FORGERIES))
def test_a_forged_tail_with_the_chain_recomputed_fails_verify_naming_the_entry(
    home: ProjectHome, name: str
):
    _live_log(home)
    code, output = _verify()
    assert code == 0 and "9 entries authenticated" in output, output
    change, seq = FORGERIES[name]

    _rewrite(_url(home), change(_rows(_url(home))))

    code, output = _verify()
    assert code == 1, output
    assert f"first bad entry seq {seq}" in output
    assert "authenticator" in output  # the chain itself is consistent again


def test_a_tail_tagged_with_an_attackers_entry_key_fails(home: ProjectHome):
    _live_log(home)
    attacker = EntryAuthenticator.generate()

    _rewrite(_url(home), _edit_field(_rows(_url(home))), tagger=attacker)

    code, output = _verify()
    assert code == 1
    assert f"first bad entry seq 7: authenticated with entry key {attacker.key_id}" in output
    assert "not the deployment's" in output


def test_the_attackers_entry_key_given_to_verify_fails_the_genuine_entries(home, tmp_path):
    """Pointing verify at another key (the attacker's file) does not make a log pass: the
    genuine entries then carry a key id it does not have."""
    _live_log(home)
    other = tmp_path / "attacker.key"
    other.write_text(EntryAuthenticator.generate().encoded())
    other.chmod(0o600)

    code, output = _verify("--entry-key", str(other))

    assert code == 1 and "first bad entry seq 1: authenticated with entry key" in output


def test_an_edit_without_recomputing_is_still_named_by_the_chain(home: ProjectHome):
    _live_log(home)
    engine = sa.create_engine(_url(home))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_entries SET subject = 'run:x' WHERE seq = 8"))
    engine.dispose()

    code, output = _verify()
    assert code == 1 and "first bad entry seq 8: hash does not match" in output


def test_checkpoint_refuses_to_sign_a_forged_tail(home: ProjectHome):
    _live_log(home)
    _rewrite(_url(home), _insert(_rows(_url(home))))

    got = CliRunner().invoke(audit_app, ["checkpoint"])

    assert got.exit_code == 1 and "seq 7: no authenticator" in got.output


def test_the_entry_key_is_provisioned_outside_the_home_private_and_never_regenerated(
    home: ProjectHome,
):
    config = provision(home.root)
    key = Path(config["entry_key"])
    assert key.parent == user_config_dir(home.root)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_text().strip()) == 64
    assert provision(home.root) == config  # idempotent

    key.unlink()
    with pytest.raises(ConfigError, match=r"entry_key: the provisioned audit key .* restore"):
        provision(home.root)
    with pytest.raises(ConfigError, match=r"entry_key: .*restore the entry key"):
        AuditLog.open(AuditSettings.resolve(home=home.root))
    assert not key.exists()  # nothing generated a new one


def test_no_entry_key_means_no_append_and_no_verify(home: ProjectHome, tmp_path):
    settings = AuditSettings.resolve(home=home.root)  # nothing provisioned
    with pytest.raises(ConfigError, match="entry_key: no audit entry key configured"):
        AuditLog.open(settings)
    log = AuditLog(settings.url)  # readable without a key, nothing more
    with pytest.raises(ConfigError, match="entry_key: appending needs"):
        log.append("system", "config_changed", "x", {})
    with pytest.raises(ConfigError, match="entry_key: verifying needs"):
        log.verify({})
    log.close()


def test_an_entry_key_readable_by_others_or_malformed_is_refused(home, tmp_path, monkeypatch):
    path = tmp_path / "entry.key"
    path.write_text(EntryAuthenticator.generate().encoded())
    path.chmod(0o640)
    monkeypatch.setenv(ENV_ENTRY_KEY, str(path))
    with pytest.raises(ConfigError, match="mode 640, must be 0600"):
        AuditSettings.resolve().authenticator()
    path.chmod(0o600)
    path.write_text("not hex")
    with pytest.raises(ConfigError, match="not 64 hex digits"):
        AuditSettings.resolve().authenticator()
    inside = home.root / "entry.key"
    monkeypatch.setenv(ENV_ENTRY_KEY, str(inside))
    with pytest.raises(ConfigError, match=r"entry_key .* is inside the project home"):
        AuditSettings.resolve()


def _legacy_log(home: ProjectHome, n: int = 6) -> None:
    """A log written before entries carried tags (the old append path, no key)."""
    with AuditLog(_url(home)) as log:
        for i in range(n):
            log._append("user:alice", "run_launched", f"run:r{i}", {"i": i}, None)


def test_a_log_from_before_authenticators_is_refused_until_upgraded(home: ProjectHome):
    _legacy_log(home)
    provision(home.root)  # `dataflare audit init` on the upgraded install
    runner = CliRunner()
    assert runner.invoke(audit_app, ["checkpoint"]).exit_code == 1  # never vouches for it

    code, output = _verify()
    assert code == 1 and "first bad entry seq 1: no authenticator" in output
    assert "dataflare audit upgrade" in output

    upgraded = runner.invoke(audit_app, ["upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert json.loads(upgraded.stdout) == {"legacy_through": 6, "upgraded": True}
    settings = AuditSettings.resolve(home=home.root)
    with AuditLog.open(settings) as log:
        log.append("user:bob", "run_launched", "run:new", {})
        [marker, _] = log.tail(2)
    assert marker.action == AuditAction.ENTRIES_AUTHENTICATED
    code, output = _verify()
    assert code == 0, output
    assert "seq 1..6 from before entry authentication" in output
    again = runner.invoke(audit_app, ["upgrade"])
    assert json.loads(again.stdout) == {"legacy_through": 0, "upgraded": False}

    # An untagged entry after the marker is a forgery, not a legacy entry.
    rows = _rows(_url(home))
    _rewrite(_url(home), [*rows, {**rows[-1], "subject": "run:forged", "mac": None}])
    code, output = _verify()
    assert code == 1 and "first bad entry seq 9: no authenticator" in output


def test_upgrade_refuses_a_tampered_legacy_log_and_writes_nothing(home: ProjectHome):
    _legacy_log(home)
    provision(home.root)
    engine = sa.create_engine(_url(home))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_entries SET actor = 'user:mallory' WHERE seq = 2"))
    engine.dispose()

    got = CliRunner().invoke(audit_app, ["upgrade"])

    assert got.exit_code == 1 and "first bad entry seq 2" in got.output
    assert AuditLog(_url(home)).checkpoints() == []
    assert len(_rows(_url(home))) == 6


def test_a_forged_upgrade_marker_does_not_excuse_untagged_entries(home: ProjectHome):
    _live_log(home)
    rows = _rows(_url(home))
    marker = {
        **rows[-1],
        "actor": "system",
        "action": AuditAction.ENTRIES_AUTHENTICATED.value,
        "details": json.dumps({"legacy_through": 10}),
        "mac": None,
        "mac_key": None,
    }
    forged = {**rows[-1], "subject": "run:forged", "mac": None, "mac_key": None}
    _rewrite(_url(home), [*rows, forged, marker])

    code, output = _verify()
    assert code == 1 and "first bad entry seq 10: no authenticator" in output


def test_init_adds_the_entry_key_to_a_provisioning_from_before_it(home: ProjectHome):
    """`dataflare audit init` on a home provisioned before entry keys existed adds one
    (an explicit step), keeping the signing key; audit.json stays 0600."""
    config = provision(home.root)
    directory = user_config_dir(home.root)
    old = {k: v for k, v in config.items() if k != "entry_key"}
    (directory / "audit.json").write_text(json.dumps(old))
    Path(config["entry_key"]).unlink()
    with pytest.raises(ConfigError, match="no audit entry key configured"):
        AuditSettings.resolve(home=home.root).authenticator()

    upgraded = provision(home.root)

    assert upgraded == {**old, "entry_key": config["entry_key"]}
    assert stat.S_IMODE((directory / "audit.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(upgraded["entry_key"]).stat().st_mode) == 0o600
    AuditSettings.resolve(home=home.root).authenticator()  # now configured
