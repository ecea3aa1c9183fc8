"""Usage statistics of plugins (issue 20 §4): install and invocation events in the event
log, and the daily roll-ups and regression check the Dagster layer materialises.

Why aggregated: a call into a plugin is one batch (tens of microseconds of overhead at
best), so an event per call would double the work of small batches. The runtime tells a
:class:`PluginUsage` of each call (a few additions under a lock and one float appended);
every ``flush_interval_s`` (checked at the next call, and on ``flush()``/``close()``) one
row per (plugin, version, pipeline, tenant) goes to the usage topic with calls, rows,
errors by kind and the window's p99 latency.

Why a tenant hash: usage leaves the tenant's deployment for publishers' dashboards; the
raw tenant never does. ``sha256(salt || 0x00 || tenant)`` with a per-deployment salt:
stable within a deployment (roll-ups per tenant work), not joinable across deployments,
and not reversible by hashing a list of customer names without the salt.

No Dagster here: ``defs.plugins.usage`` calls :func:`daily_rollup` and
:func:`error_rate_regressions`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field

from dataflare_platform.durable import write_atomic
from dataflare_platform.errors import InvalidInputError
from dataflare_platform.events.log import EventLog, Topic
from dataflare_platform.models import StrictModel
from dataflare_platform.observability import instruments
from dataflare_platform.plugins.runtime import Plugin

USAGE_TOPIC = "dataflare.plugin_usage"
"""The usage topic. (Topic names must start with a letter or digit: ``_plugin_usage``
is not a valid name in the event log.)"""

USAGE_SCHEMA = pa.schema(
    [
        ("date_time", pa.timestamp("ms")),  # end of the flush window (or the install)
        ("window_start", pa.timestamp("ms")),
        ("event", pa.string()),  # install | invocation
        ("plugin", pa.string()),
        ("publisher", pa.string()),
        ("version", pa.string()),
        ("pipeline", pa.string()),
        ("tenant_hash", pa.string()),
        ("calls", pa.int64()),
        ("rows", pa.int64()),
        ("errors", pa.int64()),
        ("errors_by_kind", pa.string()),  # JSON object kind -> count
        ("p99_ms", pa.float64()),  # of the window's calls; null for installs
    ]
)


class UsageSettings(StrictModel):
    """Where and how often usage is written. ``tenant_salt`` is a deployment secret."""

    tenant: str = Field(default="default", min_length=1, max_length=256)
    tenant_salt: str = Field(min_length=16, max_length=4096)
    flush_interval_s: float = Field(default=60.0, gt=0, le=86_400)
    topic: str = USAGE_TOPIC


def tenant_hash(tenant: str, salt: str) -> str:
    """``sha256(salt || 0x00 || tenant)`` in hex (see the module docstring)."""
    return hashlib.sha256(salt.encode() + b"\x00" + tenant.encode()).hexdigest()


def usage_topic(log: EventLog, name: str = USAGE_TOPIC) -> Topic:
    """The usage topic, created on first use."""
    return log.create_topic(name, USAGE_SCHEMA, time_column="date_time", exist_ok=True)


def _ms(t: float) -> int:
    return int(t * 1000)


@dataclass
class _Window:
    calls: int = 0
    rows: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)


class PluginUsage:
    """The usage of one loaded plugin in one pipeline, flushed as one event per window.

    ``clock`` gives Unix seconds (tests pass their own to cross a window boundary without
    waiting)."""

    def __init__(
        self,
        topic: Topic,
        plugin: str,
        version: str,
        publisher: str,
        pipeline: str,
        tenant_digest: str,
        flush_interval_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = topic
        self.key = (plugin, publisher, version, pipeline, tenant_digest)
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._window = _Window()
        self._start = clock()
        self.flushes = 0

    @classmethod
    def attach(
        cls,
        plugin: Plugin,
        log: EventLog,
        settings: UsageSettings,
        pipeline: str,
        publisher: str = "local",
        clock: Callable[[], float] = time.time,
    ) -> PluginUsage:
        """A recorder told of every call of ``plugin`` (``plugin.usage``)."""
        usage = cls(
            usage_topic(log, settings.topic),
            plugin.name,
            plugin.manifest.version,
            publisher,
            pipeline,
            tenant_hash(settings.tenant, settings.tenant_salt),
            settings.flush_interval_s,
            clock,
        )
        plugin.usage = usage
        return usage

    def record(self, seconds: float, rows: int, error_kind: str | None) -> None:
        """One call: cheap (the runtime calls it after every batch)."""
        with self._lock:
            w = self._window
            w.calls += 1
            w.rows += rows
            w.seconds.append(seconds)
            if error_kind is not None:
                w.errors[error_kind] = w.errors.get(error_kind, 0) + 1
            due = self.clock() - self._start >= self.flush_interval_s
        if due:
            self.flush()

    def flush(self) -> int:
        """Write the current window (if it saw a call) as one event; the rows written."""
        with self._lock:
            w, start, end = self._window, self._start, self.clock()
            self._window, self._start = _Window(), end
        if not w.calls:
            return 0
        p99 = float(np.percentile(np.asarray(w.seconds), 99)) * 1000.0
        plugin, publisher, version, pipeline, tenant = self.key
        row = {
            "date_time": [_ms(end)],
            "window_start": [_ms(start)],
            "event": ["invocation"],
            "plugin": [plugin],
            "publisher": [publisher],
            "version": [version],
            "pipeline": [pipeline],
            "tenant_hash": [tenant],
            "calls": [w.calls],
            "rows": [w.rows],
            "errors": [sum(w.errors.values())],
            "errors_by_kind": [json.dumps(w.errors, sort_keys=True)],
            "p99_ms": [p99],
        }
        self.topic.append(pa.table(row, schema=USAGE_SCHEMA))
        self.flushes += 1
        _export(self.key, w, p99)
        return 1

    def close(self) -> None:
        self.flush()


def _export(key: tuple[str, ...], w: _Window, p99_ms: float) -> None:
    """The flushed window as Prometheus metrics (per plugin, version, publisher: no
    pipeline or tenant label, whose cardinality is unbounded)."""
    exported = instruments()
    if exported is None:
        return
    plugin, publisher, version = key[0], key[1], key[2]
    labels = (plugin, version, publisher)
    exported["dataflare_plugin_usage_calls_total"].record(w.calls, labels)
    exported["dataflare_plugin_usage_rows_total"].record(w.rows, labels)
    for kind, n in w.errors.items():
        exported["dataflare_plugin_usage_errors_total"].record(n, (*labels, kind))
    exported["dataflare_plugin_usage_p99_seconds"].record(p99_ms / 1000.0, labels)


def record_install(
    log: EventLog,
    settings: UsageSettings,
    plugin: str,
    version: str,
    publisher: str,
    pipeline: str = "",
    now: float | None = None,
) -> None:
    """An install event (rare: written at once)."""
    t = _ms(time.time() if now is None else now)
    row = {
        "date_time": [t],
        "window_start": [t],
        "event": ["install"],
        "plugin": [plugin],
        "publisher": [publisher],
        "version": [version],
        "pipeline": [pipeline],
        "tenant_hash": [tenant_hash(settings.tenant, settings.tenant_salt)],
        "calls": [0],
        "rows": [0],
        "errors": [0],
        "errors_by_kind": ["{}"],
        "p99_ms": [None],
    }
    usage_topic(log, settings.topic).append(pa.table(row, schema=USAGE_SCHEMA))
    exported = instruments()
    if exported is not None:
        exported["dataflare_plugin_installs_total"].record(1, (plugin, version, publisher))


# -- roll-ups (called by the Dagster layer) ---------------------------------------------------
def day_events(topic: Topic, day: date, days: int = 1) -> pl.DataFrame:
    """The usage events whose time falls on ``day`` (UTC) or the ``days - 1`` days before."""
    if days < 1:
        raise InvalidInputError(f"days must be at least 1, got {days}")
    end = datetime(day.year, day.month, day.day) + timedelta(days=1)
    start = end - timedelta(days=days)
    frame = topic.scan().filter(
        (pl.col("date_time") >= pl.lit(start).cast(pl.Datetime("ms")))
        & (pl.col("date_time") < pl.lit(end).cast(pl.Datetime("ms")))
    )
    return frame.collect()


def rows_used(topic: Topic, plugin: str, tenant_digest: str, since: datetime) -> int:
    """Rows handed to ``plugin`` by the tenant since ``since``, by the usage events
    already flushed (an entitlement's row limit spans runs)."""
    since_utc = since.astimezone(UTC).replace(tzinfo=None)
    total = (
        topic.scan()
        .filter(
            (pl.col("plugin") == plugin)
            & (pl.col("tenant_hash") == tenant_digest)
            & (pl.col("event") == "invocation")
            & (pl.col("date_time") >= pl.lit(since_utc).cast(pl.Datetime("ms")))
        )
        .select(pl.col("rows").sum())
        .collect()
        .item()
    )
    return int(total or 0)


def _errors_by_kind(events: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Sum of each error kind per group, as a JSON object column ``errors_by_kind``."""
    rows: dict[tuple[str, ...], dict[str, int]] = {}
    # The same few JSON texts repeat over thousands of windows: parse each distinct text
    # of a group once and weight it by how often it occurs.
    distinct = events.group_by([*by, "errors_by_kind"]).agg(pl.len().alias("_times"))
    for rec in distinct.iter_rows():
        key, kinds, times = tuple(rec[:-2]), json.loads(rec[-2] or "{}"), rec[-1]
        acc = rows.setdefault(key, {})
        for kind, n in kinds.items():
            acc[kind] = acc.get(kind, 0) + int(n) * times
    data: dict[str, list[object]] = {c: [k[i] for k in rows] for i, c in enumerate(by)}
    data["errors_by_kind"] = [json.dumps(v, sort_keys=True) for v in rows.values()]
    schema = {c: pl.String for c in [*by, "errors_by_kind"]}
    return pl.DataFrame(data, schema=schema)


def daily_rollup(events: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """One row per group of ``by`` (e.g. plugin+version, or publisher): installs, calls,
    rows, errors, error rate, errors by kind, pipelines and tenants seen, and the worst
    window p99 (p99s of windows cannot be merged exactly; the maximum is an upper bound
    of the day's p99)."""
    if events.is_empty():
        schema = {c: pl.String for c in by} | {
            "installs": pl.Int64,
            "calls": pl.Int64,
            "rows": pl.Int64,
            "errors": pl.Int64,
            "error_rate": pl.Float64,
            "pipelines": pl.Int64,
            "tenants": pl.Int64,
            "p99_ms_max": pl.Float64,
            "errors_by_kind": pl.String,
        }
        return pl.DataFrame(schema=schema)
    calls = events.filter(pl.col("event") == "invocation")
    out = (
        events.group_by(by)
        .agg(
            (pl.col("event") == "install").sum().cast(pl.Int64).alias("installs"),
            pl.col("calls").sum().alias("calls"),
            pl.col("rows").sum().alias("rows"),
            pl.col("errors").sum().alias("errors"),
            pl.col("pipeline")
            .filter(pl.col("event") == "invocation")
            .n_unique()
            .alias("pipelines"),
            pl.col("tenant_hash").n_unique().cast(pl.Int64).alias("tenants"),
            pl.col("p99_ms").max().alias("p99_ms_max"),
        )
        .with_columns(
            pl.col("pipelines").cast(pl.Int64),
            pl.when(pl.col("calls") > 0)
            .then(pl.col("errors") / pl.col("calls"))
            .otherwise(0.0)
            .alias("error_rate"),
        )
    )
    kinds = _errors_by_kind(calls, by) if not calls.is_empty() else None
    if kinds is not None:
        out = out.join(kinds, on=by, how="left", nulls_equal=True)
    else:
        out = out.with_columns(pl.lit(None, pl.String).alias("errors_by_kind"))
    return out.with_columns(pl.col("errors_by_kind").fill_null("{}")).sort(by)


PLUGIN_KEYS = ["plugin", "publisher", "version"]
"""The grouping of ``plugins/usage_daily_by_plugin`` and of the portal's usage chart."""


def rollup_by_day(events: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """:func:`daily_rollup` per UTC day (a ``day`` column, ``YYYY-MM-DD``) and ``by``.

    Over one day's events it groups exactly as ``daily_rollup(events, by)``: adding the
    day only splits a range of days into the same per-day groups."""
    with_day = events.with_columns(pl.col("date_time").dt.strftime("%Y-%m-%d").alias("day"))
    return daily_rollup(with_day, ["day", *by])


def plugin_rollup(topic: Topic, day: date, days: int = 1) -> pl.DataFrame:
    """Usage per day and plugin version (publisher included) for ``day`` and the
    ``days - 1`` days before it, from the usage topic.

    Why one function: the ``plugins/usage_daily_by_plugin`` asset writes a partition of
    it (``days=1``) and the developer portal charts a range of it, so the numbers a
    publisher sees on the portal cannot disagree with the roll-up asset."""
    return rollup_by_day(day_events(topic, day, days), PLUGIN_KEYS)


def rollup_path(root: Path, name: str, day: str) -> Path:
    """Where the roll-up asset ``name`` (``by_plugin`` | ``by_publisher``) stores ``day``."""
    return root / "plugins" / "usage" / name / f"{day}.parquet"


def check_path(root: Path, day: str) -> Path:
    """Where the error-rate regression check's result for partition ``day`` is kept, so
    readers without Dagster (the portal) can show it."""
    return root / "plugins" / "usage" / "checks" / "error_rate_regression" / f"{day}.json"


def version_key(version: str) -> tuple[tuple[int, int, int], int, str]:
    """Semantic-version order (a pre-release sorts before its release)."""
    core, _, rest = version.partition("-") if "-" in version else version.partition("+")
    try:
        major, minor, patch = (int(x) for x in core.split("."))
    except ValueError:
        raise InvalidInputError(f"not a semantic version: {version!r}") from None
    pre = 0 if "-" in version else 1
    return (major, minor, patch), pre, rest


@dataclass(frozen=True)
class Regression:
    plugin: str
    previous: str
    current: str
    previous_rate: float
    current_rate: float
    previous_calls: int
    current_calls: int

    def __str__(self) -> str:
        return (
            f"{self.plugin}: error rate {self.current_rate:.2%} in {self.current}"
            f" ({self.current_calls} calls) vs {self.previous_rate:.2%} in {self.previous}"
            f" ({self.previous_calls} calls)"
        )


def error_rate_regressions(
    by_version: pl.DataFrame, threshold: float = 0.05, min_calls: int = 1
) -> list[Regression]:
    """Plugins whose newest version seen in ``by_version`` (a :func:`daily_rollup` by
    plugin and version over the same day(s)) errs more than ``threshold`` (absolute error
    rate) above the version before it. Versions with fewer than ``min_calls`` calls are not
    judged (too little traffic to tell)."""
    if not 0 <= threshold <= 1:
        raise InvalidInputError(f"threshold must be in [0, 1], got {threshold}")
    found: list[Regression] = []
    judged = by_version.filter(pl.col("calls") >= min_calls)
    for (plugin,), group in judged.group_by(["plugin"], maintain_order=True):
        rows = sorted(group.iter_rows(named=True), key=lambda r: version_key(r["version"]))
        if len(rows) < 2:
            continue
        prev, cur = rows[-2], rows[-1]
        if cur["error_rate"] - prev["error_rate"] > threshold:
            found.append(
                Regression(
                    str(plugin),
                    prev["version"],
                    cur["version"],
                    prev["error_rate"],
                    cur["error_rate"],
                    prev["calls"],
                    cur["calls"],
                )
            )
    return found


def judged_versions(window: pl.DataFrame, min_calls: int) -> dict[str, list[str]]:
    """Per plugin, the versions with enough calls to be judged by the regression rule."""
    out: dict[str, list[str]] = {}
    for rec in window.filter(pl.col("calls") >= min_calls).iter_rows(named=True):
        out.setdefault(str(rec["plugin"]), []).append(str(rec["version"]))
    return {k: sorted(v, key=version_key) for k, v in sorted(out.items())}


def write_check_result(
    root: Path,
    day: str,
    found: list[Regression],
    judged: dict[str, list[str]],
    threshold: float,
    days: int,
    min_calls: int,
    now: float | None = None,
) -> Path:
    """Keep the regression check's outcome for ``day`` as JSON under the home (the
    check's verdict also goes to Dagster; this copy is for readers without Dagster)."""
    record = {
        "check": "error_rate_regression",
        "day": day,
        "passed": not found,
        "threshold": threshold,
        "days": days,
        "min_calls": min_calls,
        "regressions": [asdict(r) | {"text": str(r)} for r in found],
        "judged": judged,
        "evaluated_at": datetime.fromtimestamp(time.time() if now is None else now, UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z"),
    }
    path = check_path(root, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, sort_keys=True).encode())
    return path


def latest_check_result(root: Path) -> dict[str, Any] | None:
    """The most recently evaluated regression check result kept under ``root`` (the
    latest evaluation, like Dagster's latest check result), or None when it never ran.
    ``evaluated_at`` carries microseconds: two partitions judged in the same second (a
    backfill) still have an order."""
    folder = check_path(root, "x").parent
    found: list[dict[str, Any]] = []
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("evaluated_at"), str):
            found.append(record)
    if not found:
        return None
    return max(found, key=lambda r: (r["evaluated_at"], str(r.get("day", ""))))


def utc_day(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()
