"""A tamper-evident, append-only audit log: who did what to which asset, and when.

Each entry carries the SHA-256 of its own content and of the entry before it, so editing,
deleting or reordering any row breaks a hash that ``verify`` recomputes. A hash chain
alone cannot catch someone who rewrites the whole tail consistently (or truncates it),
so ``checkpoint`` signs the chain head *and the entry count* with a key kept outside the
database and the home (Ed25519 file key, or a PKCS#11 token); ``verify`` then checks each
signed head against the recomputed chain, with the deployment's pinned public keys only.
Checkpoints are also written to an anchor outside the log (``audit_anchor``), so that
emptying the log and its checkpoints together is caught too.

Between checkpoints the chain alone protects nothing against whoever can write the
database: they can rewrite the young tail and recompute every hash. So each entry also
carries an authenticator made at append, an HMAC-SHA256 of its hash with the deployment's
entry key (``audit_signing.EntryAuthenticator``, a secret kept with the signing key,
outside the home). Appending without the key is a ConfigError; ``verify`` and
``checkpoint`` check every entry's tag. Entries written before authenticators existed
carry none: ``upgrade`` checkpoints them and appends an authenticated marker
(``audit_entries_authenticated``, ``legacy_through``) below which an entry may lack one;
any other entry without one fails.

What ``verify`` counts as a failure beyond a broken chain or checkpoint:

- entries exist and no valid checkpoint covers any of them (a log nobody ever signed
  proves nothing, and a log whose checkpoints were deleted looks exactly like that);
- entries after the last valid checkpoint ("unanchored") whose oldest is older than
  ``max_unanchored_age`` (default: the hourly checkpoint interval + 15 min margin). On a
  live system entries always arrive between checkpoints, so a young tail is normal; an
  old one means checkpoints stopped or were removed. ``allow_unanchored_tail`` accepts
  any tail (still reported).

The log lives in any SQLAlchemy database: a SQLite file for a laptop, PostgreSQL in
production. Appends serialize on a database lock (SQLite ``BEGIN IMMEDIATE``, PostgreSQL
``pg_advisory_xact_lock``) held while the next seq and prev_hash are read and the row is
written, so concurrent writers in several processes never fork the chain. There is
deliberately no update or delete method.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import BaseModel
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlmodel import Field, SQLModel

from dataflare_platform.compliance.audit_keys import (
    ECDSA_P256,
    ED25519,
    AuditSettings,
    EntryAuthenticator,
    PublicKey,
    Signer,
    as_signer,
    normalize_url,
    safe_url,
)
from dataflare_platform.errors import ConfigError, DataflareError
from dataflare_platform.observability.counters import count
from dataflare_platform.times import as_utc, utc_now
from dataflare_platform.tls import check_libpq_url

__all__ = [
    "GENESIS_HASH",
    "AuditAction",
    "AuditCheckpoint",
    "AuditEntry",
    "AuditLog",
    "AuditSettings",
    "AuditTamperedError",
    "CheckpointProblem",
    "EntryProblem",
    "VerifyReport",
    "canonical_json",
    "checkpoint_message",
    "entry_hash",
]

GENESIS_HASH = "0" * 64
# One constant key: the advisory lock is per database, so it only serializes appenders of
# the same database (a few microseconds each), never unrelated work.
_PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"dataflare.audit").digest()[:8], "big", signed=True)
_ACTOR_KINDS = ("user", "service", "sensor", "schedule", "backfill", "client", "system", "host")
# Checkpoints are made every hour (audit_checkpoint_schedule); a tail of entries younger
# than that plus a margin is the normal state of a live log.
DEFAULT_MAX_UNANCHORED_AGE = timedelta(minutes=75)
CHECKPOINT_FORMAT = "dataflare.audit.checkpoint/2"
_ACTOR = re.compile(rf"^(system|({'|'.join(_ACTOR_KINDS)}):\S.{{0,199}})$")
_ACTION = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")


class AuditAction(StrEnum):
    """Actions the platform records; other lower_snake names are accepted too, so a new
    kind of event does not need a release of this module."""

    RUN_LAUNCHED = "run_launched"
    MATERIALIZATION = "materialization"
    CHECK_RESULT = "check_result"
    PLUGIN_LOADED = "plugin_loaded"
    RETENTION_DELETED = "retention_deleted"
    CONFIG_CHANGED = "config_changed"
    ENTRIES_AUTHENTICATED = "audit_entries_authenticated"
    PIPELINE_STATE_RESET = "pipeline_state_reset"
    WORKERS_RESCALED = "workers_rescaled"


class AuditTamperedError(DataflareError):
    """The chain does not verify, so nothing new (a checkpoint) may vouch for it."""


class _UTCDateTime(TypeDecorator[datetime]):
    """Timestamps always read back as aware UTC, whatever the backend: SQLite keeps no
    zone and PostgreSQL answers in the session's zone, yet the hash needs one spelling."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def _iso(value: datetime) -> str:
    return as_utc(value).isoformat(timespec="microseconds")


def canonical_json(value: Any) -> str:
    """Sorted keys, compact separators, no NaN: one spelling per value, so a hash over it
    is reproducible by any verifier."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


class AuditEntry(SQLModel, table=True):
    """One audited event. ``hash`` covers every other column, ``prev_hash`` links it to
    the entry at ``seq - 1`` (``GENESIS_HASH`` for seq 1)."""

    __tablename__ = "audit_entries"

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    at: datetime = Field(sa_column=Column(_UTCDateTime, nullable=False))
    actor: str = Field(sa_column=Column(String(256), nullable=False))
    action: str = Field(sa_column=Column(String(64), nullable=False))
    subject: str = Field(sa_column=Column(Text, nullable=False))
    # Stored as the canonical JSON text itself (not a JSON column, which PostgreSQL's
    # jsonb would re-spell): the hash covers exactly these characters.
    details: str = Field(sa_column=Column(Text, nullable=False))
    prev_hash: str = Field(sa_column=Column(String(64), nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))
    # HMAC-SHA256 of ``hash`` with the entry key ``mac_key`` names (hex); None only for
    # entries written before authenticators existed (see ``AuditLog.upgrade``).
    mac: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    mac_key: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))

    def payload(self) -> dict[str, Any]:
        """``details`` parsed."""
        return json.loads(self.details)

    def compute_hash(self) -> str:
        """SHA-256 of the canonical encoding of everything but ``hash`` itself."""
        return entry_hash(
            self.seq, self.at, self.actor, self.action, self.subject, self.details, self.prev_hash
        )


class AuditCheckpoint(SQLModel, table=True):
    """A signed statement that the chain up to ``seq`` held ``entries`` entries and had
    head hash ``head_hash``. ``algorithm`` is None for checkpoints written before counts
    were signed (verified with the old message)."""

    __tablename__ = "audit_checkpoints"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    head_hash: str = Field(sa_column=Column(String(64), nullable=False))
    signed_at: datetime = Field(sa_column=Column(_UTCDateTime, nullable=False))
    key_id: str = Field(sa_column=Column(String(16), nullable=False))
    signature: str = Field(sa_column=Column(String(256), nullable=False))  # hex
    entries: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    algorithm: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))

    def message(self) -> bytes:
        """The bytes this checkpoint's signature covers."""
        return checkpoint_message(
            self.seq, self.head_hash, self.signed_at, self.entries, self.algorithm
        )


_TABLES = [AuditEntry.__table__, AuditCheckpoint.__table__]  # type: ignore[attr-defined]
_ENTRIES = AuditEntry.__table__  # type: ignore[attr-defined]
_CHECKPOINTS = AuditCheckpoint.__table__  # type: ignore[attr-defined]


def entry_hash(
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    details: str,
    prev_hash: str,
) -> str:
    """The hash an entry must carry: SHA-256 over canonical JSON of its fields in order."""
    encoded = canonical_json([seq, _iso(at), actor, action, subject, details, prev_hash])
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def checkpoint_message(
    seq: int,
    head_hash: str,
    signed_at: datetime,
    entries: int | None = None,
    algorithm: str | None = None,
) -> bytes:
    """The bytes a checkpoint's signature covers: format tag, algorithm, seq, entry count,
    head hash and time (without an algorithm: the first format, seq/head/time only)."""
    if algorithm is None:
        return canonical_json([seq, head_hash, _iso(signed_at)]).encode("utf-8")
    fields = [CHECKPOINT_FORMAT, algorithm, seq, entries, head_hash, _iso(signed_at)]
    return canonical_json(fields).encode("utf-8")


def verify_signature(public: PublicKey, algorithm: str | None, signature: bytes, message: bytes):
    """Raise InvalidSignature unless ``signature`` over ``message`` verifies."""
    if algorithm in (None, ED25519) and isinstance(public, Ed25519PublicKey):
        public.verify(signature, message)
    elif algorithm == ECDSA_P256 and isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    else:
        raise InvalidSignature(f"key type does not match algorithm {algorithm}")


class EntryProblem(BaseModel):
    """What is wrong at one seq."""

    seq: int
    problem: str


class CheckpointProblem(BaseModel):
    """What is wrong with one checkpoint."""

    id: int | None
    seq: int
    key_id: str
    problem: str


class VerifyReport(BaseModel):
    """The outcome of ``AuditLog.verify``: the first bad entry (later ones are usually
    consequences of it), every bad checkpoint (of the log and of the anchor), and the
    entries no valid checkpoint covers."""

    url: str
    entries: int
    head_seq: int
    head_hash: str
    checkpoints: int
    anchored_checkpoints: int = 0
    entry_key_id: str | None = None
    authenticated: int = 0
    legacy_through: int = 0
    first_bad_entry: EntryProblem | None = None
    bad_entries: int = 0
    bad_checkpoints: list[CheckpointProblem] = []
    anchored_seq: int = 0
    unanchored: int = 0
    unanchored_since: datetime | None = None
    unanchored_problem: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.first_bad_entry is None
            and not self.bad_checkpoints
            and self.unanchored_problem is None
        )

    def summary(self) -> str:
        """One line per finding, for a terminal."""
        if self.ok:
            tail = f", {self.unanchored} entries after seq {self.anchored_seq} not yet signed"
            legacy = (
                f", seq 1..{self.legacy_through} from before entry authentication"
                if self.legacy_through
                else ""
            )
            return (
                f"ok: {self.entries} entries, head seq {self.head_seq}"
                f" ({self.head_hash[:16]}), {self.checkpoints} checkpoints"
                f" (+{self.anchored_checkpoints} anchored) verified,"
                f" {self.authenticated} entries authenticated with entry key"
                f" {self.entry_key_id}{legacy}" + (tail if self.unanchored else "")
            )
        lines = []
        if self.unanchored_problem is not None:
            lines.append(f"unanchored: {self.unanchored_problem}")
        if self.first_bad_entry is not None:
            bad = self.first_bad_entry
            lines.append(
                f"tampered: first bad entry seq {bad.seq}: {bad.problem}"
                f" ({self.bad_entries} bad entries in all)"
            )
        for cp in self.bad_checkpoints:
            lines.append(f"bad checkpoint at seq {cp.seq} (key {cp.key_id}): {cp.problem}")
        return "\n".join(lines)


class AuditLog:
    """An append-only audit log in the database at ``url`` (tables created if missing)."""

    def __init__(self, url: str, entry_key: EntryAuthenticator | None = None) -> None:
        """``entry_key``: the deployment's entry key (``AuditLog.open`` passes
        it). Without one the log can be read but not appended to, checkpointed or
        verified."""
        self._entry_key = entry_key
        try:
            self.url = normalize_url(url)
        except ValueError as err:
            raise ConfigError("audit log", [("url", str(err))]) from None
        self._sqlite = self.url.startswith("sqlite")
        if self._sqlite:
            # Writers wait for the lock (up to 60 s) instead of failing at once.
            self._engine: Engine = create_engine(self.url, connect_args={"timeout": 60})
            event.listen(self._engine, "connect", _sqlite_connect)
            event.listen(self._engine, "begin", _sqlite_begin)
        else:
            check_libpq_url(self.url, "audit log", "url")
            self._engine = create_engine(self.url, pool_pre_ping=True)
        with self._transaction(lock=True) as conn:
            SQLModel.metadata.create_all(conn, tables=_TABLES)
            # The trail sensor looks up its last recorded position by action every tick.
            conn.execute(
                text(
                    "CREATE INDEX IF NOT EXISTS ix_audit_entries_action"
                    " ON audit_entries (action, seq)"
                )
            )
            entry_columns = {c["name"] for c in inspect(conn).get_columns("audit_entries")}
            # A log created before entries were authenticated gains the two columns (its
            # entries keep NULL: `upgrade` vouches for them with a checkpoint).
            if "mac" not in entry_columns:
                conn.execute(text("ALTER TABLE audit_entries ADD COLUMN mac VARCHAR(64)"))
            if "mac_key" not in entry_columns:
                conn.execute(text("ALTER TABLE audit_entries ADD COLUMN mac_key VARCHAR(16)"))
            columns = {c["name"] for c in inspect(conn).get_columns("audit_checkpoints")}
            # A log created before counts were signed gains the two columns (old
            # checkpoints keep NULL and verify with their original message).
            if "entries" not in columns:
                conn.execute(text("ALTER TABLE audit_checkpoints ADD COLUMN entries BIGINT"))
            if "algorithm" not in columns:
                conn.execute(text("ALTER TABLE audit_checkpoints ADD COLUMN algorithm VARCHAR(32)"))
            signature = next(
                c
                for c in inspect(conn).get_columns("audit_checkpoints")
                if c["name"] == "signature"
            )
            if not self._sqlite and (getattr(signature["type"], "length", None) or 256) < 256:
                # An ECDSA signature in DER hex (~144 characters) outgrows the old 128.
                conn.execute(
                    text("ALTER TABLE audit_checkpoints ALTER COLUMN signature TYPE VARCHAR(256)")
                )

    @classmethod
    def open(cls, settings: AuditSettings) -> AuditLog:
        """The log at ``settings.url`` with the configured entry key, so appends are
        authenticated and ``verify`` checks every entry's tag; a missing entry key is a
        ConfigError (never generated here)."""
        return cls(settings.url, entry_key=settings.authenticator())

    def __repr__(self) -> str:
        return f"AuditLog({safe_url(self.url)!r})"

    def _authenticator(self, what: str) -> EntryAuthenticator:
        if self._entry_key is None:
            raise ConfigError(
                "audit log",
                [
                    (
                        "entry_key",
                        f"{what} needs the deployment's audit entry key: set"
                        " DATAFLARE_AUDIT_ENTRY_KEY or run `dataflare audit init`",
                    )
                ],
            )
        return self._entry_key

    def close(self) -> None:
        """Release pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, lock: bool = False, snapshot: bool = False) -> Iterator[Connection]:
        """A transaction; with ``lock`` it holds the append lock, with ``snapshot`` all its
        reads see one state of the database."""
        with self._engine.connect() as conn:
            if self._sqlite:
                # A deferred SQLite transaction already reads one snapshot (WAL mode).
                conn = conn.execution_options(sqlite_begin="IMMEDIATE" if lock else "DEFERRED")
            elif snapshot:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                if lock and not self._sqlite:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
                yield conn

    # -- writing ------------------------------------------------------------------------
    def append(
        self,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Record one event and return it with its seq and hashes.

        ``actor`` is ``system`` or ``<kind>:<name>`` with kind one of user, service,
        sensor, schedule, backfill, client, system (``Principal.id``); ``action`` a
        lower_snake name (see ``AuditAction``). The entry is tagged with the log's entry
        key; a log opened without one refuses to append (ConfigError).
        """
        return self._append(actor, action, subject, details, self._authenticator("appending"))

    def _append(
        self,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, Any] | None,
        authenticator: EntryAuthenticator | None,
    ) -> AuditEntry:
        """``append`` with an explicit key; ``None`` writes an untagged entry, which only
        the benchmark's baseline (``audit_bench.py``) and tests of older logs do."""
        problems = []
        if not isinstance(actor, str) or not _ACTOR.match(actor):
            kinds = ", ".join(_ACTOR_KINDS)
            problems.append(("actor", f"{actor!r} is not 'system' or '<kind>:<name>' ({kinds})"))
        if not isinstance(action, str) or not _ACTION.match(action):
            problems.append(("action", f"{action!r} is not a lower_snake action name"))
        if not isinstance(subject, str):
            problems.append(("subject", f"{subject!r} is not a string"))
        if details is not None and not isinstance(details, Mapping):
            problems.append(("details", "must be a mapping (a JSON object)"))
        body = ""
        if not problems:
            try:
                body = canonical_json(dict(details or {}))
                (subject + body).encode("utf-8")  # a lone surrogate cannot be hashed
            except (TypeError, ValueError) as err:
                problems.append(("details", f"not JSON-serializable: {err}"))
        if problems:
            raise ConfigError("audit entry", problems)
        with self._transaction(lock=True) as conn:
            head = conn.execute(
                select(_ENTRIES.c.seq, _ENTRIES.c.at, _ENTRIES.c.hash)
                .order_by(_ENTRIES.c.seq.desc())
                .limit(1)
            ).first()
            now = utc_now()
            if head is None:
                seq, prev_hash, at = 1, GENESIS_HASH, now
            else:
                # Never earlier than the head: time order then equals seq order, which
                # verify checks, even if this host's clock is behind another's.
                seq, prev_hash, at = head.seq + 1, head.hash, max(now, head.at)
            entry = AuditEntry(
                seq=seq,
                at=at,
                actor=actor,
                action=str(action),
                subject=subject,
                details=body,
                prev_hash=prev_hash,
                hash="",
            )
            entry.hash = entry.compute_hash()
            if authenticator is not None:
                entry.mac = authenticator.tag(entry.hash)
                entry.mac_key = authenticator.key_id
            conn.execute(insert(_ENTRIES).values(**entry.model_dump()))
        count("dataflare_audit_entries_appended_total", (entry.action,))
        return entry

    def checkpoint(
        self, signing_key: Signer | Ed25519PrivateKey, anchor: Any = None, legacy: bool = False
    ) -> AuditCheckpoint:
        """Sign the current chain head and entry count with ``signing_key``, store the
        checkpoint and, with ``anchor`` (an ``audit_anchor.Anchor``), write it there too
        (inside the same lock, so anchored checkpoints are in seq order).

        The entries written since the previous checkpoint are verified first, and the
        earlier ones counted (a checkpoint must never vouch for a tampered chain);
        AuditTamperedError if not. Edits before the previous checkpoint are left to
        ``verify``: re-reading the whole log at every checkpoint would not scale.

        Every entry checked must carry a valid tag of the log's entry key; ``legacy``
        (``upgrade`` only) lets entries without one through.
        """
        authenticator = self._authenticator("a checkpoint")
        with self._transaction(lock=True) as conn:
            last = conn.execute(
                select(_CHECKPOINTS).order_by(_CHECKPOINTS.c.id.desc()).limit(1)
            ).first()
            start, expected_prev = 0, GENESIS_HASH
            if last is not None and last.seq > 0:
                stored = conn.execute(
                    select(_ENTRIES.c.hash).where(_ENTRIES.c.seq == last.seq)
                ).scalar()
                if stored != last.head_hash:
                    raise AuditTamperedError(
                        f"entry seq {last.seq} no longer has the hash its checkpoint signed"
                    )
                present = conn.execute(
                    select(func.count()).select_from(_ENTRIES).where(_ENTRIES.c.seq <= last.seq)
                ).scalar_one()
                if present != last.seq:
                    raise AuditTamperedError(
                        f"{last.seq - present} of the entries up to seq {last.seq} were deleted"
                    )
                start, expected_prev = last.seq, last.head_hash
            seq, head_hash, prev_at = start, expected_prev, None
            rows = conn.execute(
                select(_ENTRIES).where(_ENTRIES.c.seq > start).order_by(_ENTRIES.c.seq)
            )
            for row in rows:
                entry = AuditEntry.model_validate(row._mapping)
                problem = _entry_problem(entry, seq + 1, head_hash, prev_at) or _mac_problem(
                    entry, authenticator, entry.seq if legacy else 0
                )
                if problem is not None:
                    raise AuditTamperedError(f"seq {problem.seq}: {problem.problem}")
                seq, head_hash, prev_at = entry.seq, entry.hash, entry.at
            entries = conn.execute(select(func.count()).select_from(_ENTRIES)).scalar_one()
            if entries != seq:
                raise AuditTamperedError(f"{entries} entries stored but the head is seq {seq}")
            signer = as_signer(signing_key)
            signed_at = utc_now()
            message = checkpoint_message(seq, head_hash, signed_at, entries, signer.algorithm)
            cp = AuditCheckpoint(
                seq=seq,
                head_hash=head_hash,
                signed_at=signed_at,
                key_id=signer.key_id,
                signature=signer.sign(message).hex(),
                entries=entries,
                algorithm=signer.algorithm,
            )
            values = cp.model_dump(exclude={"id"})
            cp.id = conn.execute(insert(_CHECKPOINTS).values(**values)).inserted_primary_key[0]
            if anchor is not None:
                anchor.record(cp)
        return cp

    # -- reading ------------------------------------------------------------------------
    def tail(self, n: int = 10) -> list[AuditEntry]:
        """The last ``n`` entries, oldest first."""
        with self._transaction() as conn:
            rows = conn.execute(select(_ENTRIES).order_by(_ENTRIES.c.seq.desc()).limit(n)).all()
        return [AuditEntry.model_validate(r._mapping) for r in reversed(rows)]

    def last(self, action: str) -> AuditEntry | None:
        """The newest entry of ``action``, if any."""
        with self._transaction() as conn:
            row = conn.execute(
                select(_ENTRIES)
                .where(_ENTRIES.c.action == action)
                .order_by(_ENTRIES.c.seq.desc())
                .limit(1)
            ).first()
        return None if row is None else AuditEntry.model_validate(row._mapping)

    def subjects(self, action: str) -> set[str]:
        """The distinct subjects of the entries of ``action``."""
        with self._transaction() as conn:
            rows = conn.execute(
                select(_ENTRIES.c.subject).where(_ENTRIES.c.action == action).distinct()
            )
            return {r[0] for r in rows}

    def checkpoints(self) -> list[AuditCheckpoint]:
        """Every checkpoint, oldest first."""
        with self._transaction() as conn:
            rows = conn.execute(select(_CHECKPOINTS).order_by(_CHECKPOINTS.c.id)).all()
        return [AuditCheckpoint.model_validate(r._mapping) for r in rows]

    def count(self) -> int:
        """Number of stored entries."""
        with self._transaction() as conn:
            return int(conn.execute(select(func.count()).select_from(_ENTRIES)).scalar_one())

    def verify(
        self,
        public_keys: Mapping[str, PublicKey],
        anchored: Sequence[AuditCheckpoint] = (),
        allow_unanchored_tail: bool = False,
        max_unanchored_age: timedelta = DEFAULT_MAX_UNANCHORED_AGE,
        now: datetime | None = None,
        legacy_through: int | None = None,
    ) -> VerifyReport:
        """Recompute the whole chain in seq order and check every checkpoint against it.

        Reported: the first entry whose hash does not match its content, whose prev_hash
        is not the previous entry's hash, whose seq leaves a gap (a deleted row), or whose
        time runs backwards (reordered rows); each checkpoint, of the log or ``anchored``
        (read from the anchor), whose signature does not verify with ``public_keys`` (by
        key id), whose head hash differs from the recomputed hash at its seq (a rewritten
        chain) or whose count exceeds the entries present (truncated or emptied); and
        entries no valid checkpoint covers (see the module docstring).

        Every entry must also carry a valid tag of the log's entry key (an edited,
        inserted, reordered or re-chained entry of the unsigned tail is caught here),
        except entries up to the ``legacy_through`` of an authenticated
        ``audit_entries_authenticated`` marker (``upgrade``), which a valid checkpoint
        must then cover. ``legacy_through`` overrides the marker (``upgrade`` itself).
        """
        authenticator = self._authenticator("verifying")
        with self._transaction(snapshot=True) as conn:
            if legacy_through is None:
                legacy_through = _legacy_through(conn, authenticator)
            cps = [
                AuditCheckpoint.model_validate(r._mapping)
                for r in conn.execute(select(_CHECKPOINTS).order_by(_CHECKPOINTS.c.id))
            ]
            wanted = {cp.seq for cp in [*cps, *anchored]}
            after = {seq + 1 for seq in wanted} | {1}
            first_at: dict[int, datetime] = {}
            recomputed: dict[int, str] = {0: GENESIS_HASH}
            first_bad: EntryProblem | None = None
            bad = count = authenticated = 0
            seq, prev_hash, prev_at = 0, GENESIS_HASH, None
            rows = conn.execution_options(yield_per=1000).execute(
                select(_ENTRIES).order_by(_ENTRIES.c.seq)
            )
            for entry in _read_entries(rows):
                if isinstance(entry, EntryProblem):  # a column no longer parses
                    bad += 1
                    first_bad = first_bad or EntryProblem(
                        seq=seq + 1, problem=f"unreadable row after seq {seq}: {entry.problem}"
                    )
                    break
                count += 1
                problem = _entry_problem(entry, seq + 1, prev_hash, prev_at) or _mac_problem(
                    entry, authenticator, legacy_through
                )
                if problem is not None:
                    bad += 1
                    first_bad = first_bad or problem
                elif entry.mac is not None:
                    authenticated += 1
                if entry.seq in wanted:
                    recomputed[entry.seq] = entry.compute_hash()
                if entry.seq in after:
                    first_at[entry.seq] = entry.at
                seq, prev_hash, prev_at = entry.seq, entry.hash, entry.at
        bad_cps = []
        good_seq = 0  # seq of the latest checkpoint that held, to say where a rewrite began
        tagged = [(cp, "") for cp in cps] + [(cp, "anchor: ") for cp in anchored]
        for cp, source in sorted(tagged, key=lambda t: (t[0].seq, t[1], t[0].id or 0)):
            problem = _checkpoint_problem(cp, public_keys, recomputed, seq, count, good_seq)
            if problem is None:
                good_seq = max(good_seq, cp.seq)
            else:
                bad_cps.append(
                    CheckpointProblem(
                        id=cp.id, seq=cp.seq, key_id=cp.key_id, problem=source + problem
                    )
                )
        report = VerifyReport(
            url=safe_url(self.url),
            entries=count,
            head_seq=seq,
            head_hash=prev_hash,
            checkpoints=len(cps),
            anchored_checkpoints=len(anchored),
            entry_key_id=authenticator.key_id,
            authenticated=authenticated,
            legacy_through=min(legacy_through, seq),
            first_bad_entry=first_bad,
            bad_entries=bad,
            bad_checkpoints=bad_cps,
            anchored_seq=good_seq,
            unanchored=max(0, seq - good_seq),
            unanchored_since=first_at.get(good_seq + 1) if seq > good_seq else None,
        )
        if report.unanchored and not allow_unanchored_tail:
            report.unanchored_problem = _unanchored_problem(
                report, max_unanchored_age, now or utc_now()
            )
            if report.legacy_through > good_seq and report.unanchored_problem is None:
                report.unanchored_problem = (
                    f"entries up to seq {report.legacy_through} carry no authenticator and no"
                    f" valid checkpoint covers them (the last valid one is at seq {good_seq})"
                )
        return report

    def upgrade(
        self,
        signing_key: Signer | Ed25519PrivateKey,
        public_keys: Mapping[str, PublicKey],
        anchor: Any = None,
    ) -> int:
        """Adopt a log written before entries were authenticated: verify it (its chain,
        every checkpoint, and the tags entries already carry), sign a checkpoint over it
        all, then append an authenticated ``audit_entries_authenticated`` marker whose
        ``legacy_through`` is that checkpoint's seq. From then on entries up to that seq
        may lack a tag (a valid checkpoint vouches for them) and no later one may.
        Returns ``legacy_through``; 0 when every entry already has a tag (nothing done).
        AuditTamperedError when the log does not verify: an upgrade never vouches for a
        tampered log.
        """
        authenticator = self._authenticator("an upgrade")
        signer = as_signer(signing_key)
        with self._transaction() as conn:
            untagged = conn.execute(
                select(func.max(_ENTRIES.c.seq)).where(_ENTRIES.c.mac.is_(None))
            ).scalar()
            if untagged is None or untagged <= _legacy_through(conn, authenticator):
                return 0
        anchored = anchor.checkpoints() if anchor is not None else []
        report = self.verify(
            public_keys, anchored=anchored, allow_unanchored_tail=True, legacy_through=untagged
        )
        if not report.ok:
            raise AuditTamperedError(report.summary())
        cp = self.checkpoint(signer, anchor=anchor, legacy=True)
        self.append(
            "system",
            AuditAction.ENTRIES_AUTHENTICATED,
            f"audit:{safe_url(self.url)}",
            {"legacy_through": cp.seq, "entry_key": authenticator.key_id},
        )
        return cp.seq


def _read_entries(rows: Iterable[Any]) -> Iterator[AuditEntry | EntryProblem]:
    """Entries in order; a row whose columns no longer parse (a timestamp edited into
    garbage) ends the stream with a problem instead of crashing the verifier."""
    iterator = iter(rows)
    while True:
        try:
            row = next(iterator)
            yield AuditEntry.model_validate(row._mapping)
        except StopIteration:
            return
        except (ValueError, TypeError) as err:
            yield EntryProblem(seq=0, problem=str(err).splitlines()[0])
            return


def _entry_problem(
    entry: AuditEntry, expected_seq: int, prev_hash: str, prev_at: datetime | None
) -> EntryProblem | None:
    """The first thing wrong with ``entry`` given the entry stored before it, if any."""
    if entry.seq > expected_seq:
        missing = (
            f"seq {expected_seq}"
            if entry.seq == expected_seq + 1
            else f"seqs {expected_seq}..{entry.seq - 1}"
        )
        return EntryProblem(seq=expected_seq, problem=f"missing: {missing} absent (deleted rows)")
    if entry.seq < expected_seq:
        return EntryProblem(seq=entry.seq, problem=f"unexpected seq (expected {expected_seq})")
    if entry.compute_hash() != entry.hash:
        return EntryProblem(seq=entry.seq, problem="hash does not match the entry's content")
    if entry.prev_hash != prev_hash:
        return EntryProblem(
            seq=entry.seq,
            problem=f"prev_hash is not the hash of seq {entry.seq - 1} (reordered or replaced)",
        )
    if prev_at is not None and entry.at < prev_at:
        return EntryProblem(
            seq=entry.seq, problem=f"time runs backwards from seq {entry.seq - 1} (reordered)"
        )
    return None


def _mac_problem(
    entry: AuditEntry, authenticator: EntryAuthenticator, legacy_through: int
) -> EntryProblem | None:
    """What is wrong with ``entry``'s authenticator, if anything (its hash and place in
    the chain are already checked)."""
    if entry.mac is None:
        if entry.seq <= legacy_through:
            return None
        return EntryProblem(
            seq=entry.seq,
            problem="no authenticator: not written with the deployment's entry key (forged),"
            " or a log from before entry authentication (run `dataflare audit upgrade`)",
        )
    if entry.mac_key != authenticator.key_id:
        return EntryProblem(
            seq=entry.seq,
            problem=f"authenticated with entry key {entry.mac_key}, not the deployment's"
            f" {authenticator.key_id} (forged)",
        )
    if not authenticator.check(entry.hash, entry.mac):
        return EntryProblem(
            seq=entry.seq,
            problem="authenticator does not verify with the entry key"
            " (forged, altered, reordered or re-chained entry)",
        )
    return None


def _legacy_through(conn: Connection, authenticator: EntryAuthenticator) -> int:
    """The ``legacy_through`` of the first ``audit_entries_authenticated`` marker whose own
    tag verifies (a marker without a valid tag, or naming a seq not below its own, is
    ignored: it is itself reported as a bad entry), else 0."""
    rows = conn.execute(
        select(_ENTRIES)
        .where(_ENTRIES.c.action == AuditAction.ENTRIES_AUTHENTICATED.value)
        .order_by(_ENTRIES.c.seq)
    )
    for row in _read_entries(rows):
        if isinstance(row, EntryProblem) or row.mac is None:
            continue
        if row.mac_key != authenticator.key_id or not authenticator.check(row.hash, row.mac):
            continue
        if row.compute_hash() != row.hash:
            continue
        through = row.payload().get("legacy_through")
        if isinstance(through, int) and 0 <= through < row.seq:
            return through
    return 0


def _unanchored_problem(report: VerifyReport, max_age: timedelta, now: datetime) -> str | None:
    """Why the entries after the last valid checkpoint fail verification, if they do."""
    if report.anchored_seq == 0:
        return (
            f"{report.unanchored} entries and no valid checkpoint covers any of them"
            " (never signed, or its checkpoints were removed)"
        )
    since = report.unanchored_since
    if since is not None and now - since > max_age:
        return (
            f"{report.unanchored} entries after the last checkpoint (seq {report.anchored_seq}),"
            f" the oldest from {_iso(since)}, older than the allowed {max_age}"
            " (checkpoints stopped or were removed)"
        )
    return None


def _checkpoint_problem(
    cp: AuditCheckpoint,
    public_keys: Mapping[str, PublicKey],
    recomputed: Mapping[int, str],
    head_seq: int,
    present: int,
    good_seq: int,
) -> str | None:
    """What is wrong with ``cp``, if anything."""
    public = public_keys.get(cp.key_id)
    if public is None:
        return f"signed by unknown key {cp.key_id} (not pinned)"
    try:
        verify_signature(public, cp.algorithm, bytes.fromhex(cp.signature), cp.message())
    except (InvalidSignature, ValueError):
        return "signature does not verify (forged or altered checkpoint)"
    if cp.entries is not None and cp.entries > present:
        return f"counted {cp.entries} entries but the log holds {present} (truncated or emptied)"
    if cp.seq > head_seq:
        return f"covers seq {cp.seq} but the log ends at seq {head_seq} (tail deleted)"
    actual = recomputed.get(cp.seq)
    if actual is None:
        return f"entry seq {cp.seq} is missing"
    if actual != cp.head_hash:
        return (
            f"signed head hash differs from the recomputed hash at seq {cp.seq}:"
            f" entries after seq {good_seq} were rewritten"
        )
    return None


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """Hand transaction control to the begin hook, and use WAL so readers (verify, tail)
    never block the single writer."""
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA journal_mode=WAL")


def _sqlite_begin(conn: Connection) -> None:
    """BEGIN IMMEDIATE takes the write lock up front for appends: two processes can then
    never both read the same head and write the same seq."""
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")
