"""Durable alert state (SQLModel): alerts, notifications, silences, acknowledgements.

State outlives the process on purpose: a restarted sensor must not page everyone again
for an alert it already sent, and an acknowledgement typed in the CLI must stop the
escalation that the daemon drives. SQLite under the project home by default; any
SQLAlchemy URL works. The tables live in their own metadata so that other SQLModel users
in the process (the audit log) never create their tables in this database, or ours in
theirs. Times are stored as UTC and read back timezone-aware.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import JSON, DateTime, TypeDecorator, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, create_engine, select

from dataflare_platform.errors import InvalidInputError, NotFoundError, UserPathError, user_path
from dataflare_platform.observability.counters import count
from dataflare_platform.times import as_utc

AlertStatus = Literal["firing", "acknowledged", "resolved"]
Outcome = Literal["sent", "error", "suppressed"]


class UTCDateTime(TypeDecorator[datetime]):
    """SQLite drops time zones: store naive UTC, hand back aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class AlertingTable(SQLModel, registry=registry()):
    """Base of the alerting tables: a metadata of their own (see the module docstring)."""


class Alert(AlertingTable, table=True):
    __tablename__ = "alert"

    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(index=True)
    rule: str = Field(index=True)
    group_key: str = ""
    labels: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    severity: str
    status: str = Field(default="firing", index=True)
    message: str = ""
    first_seen: datetime = Field(sa_type=UTCDateTime)
    last_seen: datetime = Field(sa_type=UTCDateTime)
    occurrences: int = 1
    tier: int = 1
    tier_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_notified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # A notification was suppressed by a silence: send it once the silence is over.
    notify_pending: bool = False
    last_error: str | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Notification(AlertingTable, table=True):
    __tablename__ = "alert_notification"

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(foreign_key="alert.id", index=True)
    channel: str
    tier: int
    reason: str
    at: datetime = Field(sa_type=UTCDateTime)
    outcome: str  # sent, error, suppressed
    error: str | None = None
    silence_id: int | None = None


class Silence(AlertingTable, table=True):
    __tablename__ = "alert_silence"

    id: int | None = Field(default=None, primary_key=True)
    rule: str = Field(index=True)
    group_key: str | None = None  # None: every group of the rule
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    created_by: str
    reason: str

    def matches(self, rule: str, group_key: str, now: datetime) -> bool:
        return (
            self.rule == rule
            and (self.group_key is None or self.group_key == group_key)
            and as_utc(now) < self.expires_at
        )


class Acknowledgement(AlertingTable, table=True):
    __tablename__ = "alert_acknowledgement"

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(foreign_key="alert.id", index=True)
    by: str
    at: datetime = Field(sa_type=UTCDateTime)
    note: str = ""


class MetricSample(AlertingTable, table=True):
    """One observed metric value; metric windows outlive restarts like everything else."""

    __tablename__ = "alert_metric_sample"

    id: int | None = Field(default=None, primary_key=True)
    asset: str = Field(index=True)
    metric: str = Field(index=True)
    at: datetime = Field(sa_type=UTCDateTime)
    value: float


def default_state_url(home: Path) -> str:
    return f"sqlite:///{Path(home) / 'alerts.db'}"


class AlertStore:
    """The database behind alerting; usable without rules (the CLI acks and silences)."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            with user_path("alert state directory"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
        try:
            self.engine: Engine = create_engine(url, connect_args=connect_args)
        except (ArgumentError, NoSuchModuleError) as err:
            # The message names the dialect, never the URL (it may hold a password).
            raise InvalidInputError(f"not a usable alert state URL: {err}") from None
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            AlertingTable.metadata.create_all(self.engine)
        except OperationalError as err:
            raise UserPathError(f"cannot open the alert state database: {err.orig}") from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> AlertStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queries -------------------------------------------------------------------------

    def alerts(self, status: str | None = None) -> list[Alert]:
        with self.session() as s:
            query = select(Alert).order_by(Alert.id)
            if status is not None:
                query = query.where(Alert.status == status)
            return list(s.exec(query))

    def alert(self, ref: int | str) -> Alert:
        """By id, or by fingerprint (its newest alert, preferring one still open)."""
        with self.session() as s:
            return _find(s, ref)

    def notifications(self, alert_id: int | None = None) -> list[Notification]:
        with self.session() as s:
            query = select(Notification).order_by(Notification.id)
            if alert_id is not None:
                query = query.where(Notification.alert_id == alert_id)
            return list(s.exec(query))

    def acknowledgements(self, alert_id: int | None = None) -> list[Acknowledgement]:
        with self.session() as s:
            query = select(Acknowledgement).order_by(Acknowledgement.id)
            if alert_id is not None:
                query = query.where(Acknowledgement.alert_id == alert_id)
            return list(s.exec(query))

    def silences(self, now: datetime | None = None) -> list[Silence]:
        """All silences, or only those active at ``now``."""
        with self.session() as s:
            query = select(Silence).order_by(Silence.id)
            if now is not None:
                query = query.where(Silence.expires_at > as_utc(now))
            return list(s.exec(query))

    def active_silence(self, rule: str, group_key: str, now: datetime) -> Silence | None:
        for silence in self.silences(now):
            if silence.matches(rule, group_key, now):
                return silence
        return None

    # -- operator actions ----------------------------------------------------------------

    def acknowledge(self, ref: int | str, who: str, now: datetime, note: str = "") -> Alert:
        """Someone owns it: escalation stops (repeats too) until it resolves."""
        with self.session() as s:
            alert = _find(s, ref)
            if alert.status == "resolved":
                raise InvalidInputError(f"alert {alert.id} is resolved")
            alert.status = "acknowledged"
            alert.acknowledged_by = who
            alert.acknowledged_at = as_utc(now)
            s.add(alert)
            s.add(Acknowledgement(alert_id=alert.id, by=who, at=as_utc(now), note=note))
            s.commit()
            count("dataflare_alerts_total", (alert.rule, "acknowledged"))
            return alert

    def resolve(self, ref: int | str, now: datetime) -> Alert:
        with self.session() as s:
            alert = _find(s, ref)
            alert.status = "resolved"
            alert.resolved_at = as_utc(now)
            alert.notify_pending = False
            s.add(alert)
            s.commit()
            count("dataflare_alerts_total", (alert.rule, "resolved"))
            return alert

    def silence(
        self,
        rule: str,
        until: datetime,
        by: str,
        reason: str,
        now: datetime,
        group_key: str | None = None,
    ) -> Silence:
        if as_utc(until) <= as_utc(now):
            raise InvalidInputError("a silence must end in the future")
        with self.session() as s:
            silence = Silence(
                rule=rule,
                group_key=group_key,
                created_at=as_utc(now),
                expires_at=as_utc(until),
                created_by=by,
                reason=reason,
            )
            s.add(silence)
            s.commit()
            return silence

    def expire_silence(self, silence_id: int, now: datetime) -> Silence:
        with self.session() as s:
            silence = s.get(Silence, silence_id)
            if silence is None:
                raise NotFoundError(f"no silence {silence_id}")
            silence.expires_at = min(silence.expires_at, as_utc(now))
            s.add(silence)
            s.commit()
            return silence


def _find(session: Session, ref: int | str) -> Alert:
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        alert = session.get(Alert, int(ref))
        if alert is not None:
            return alert
    alerts = list(
        session.exec(select(Alert).where(Alert.fingerprint == str(ref)).order_by(Alert.id))
    )
    if not alerts:
        raise NotFoundError(f"no alert {ref!r}")
    open_ = [a for a in alerts if a.status != "resolved"]
    return (open_ or alerts)[-1]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: the CLI can read and ack while a sensor process writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
