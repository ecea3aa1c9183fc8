"""What the portal shows, built from verified registry metadata (``source.py``).

Fields that other parts of issue 20 add to a target's ``custom.dataflare`` (attestations,
the admission scan, a quality score) and usage roll-ups are read defensively: a field
that is absent or not of the expected shape is shown as "not yet scanned" / "no usage
data", never guessed, and never breaks the build of the other pages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dataflare_platform.portal.source import VerifiedPublisher, VerifiedRegistry, VerifiedVersion

CHART_WIDTH, CHART_HEIGHT = 600, 180
PLOT_TOP = 16  # room for the axis labels above the plot


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool | None
    detail: str


@dataclass(frozen=True)
class Scan:
    admitted: bool | None
    checks: list[Check]
    # The report's DSSE signature as the portal found it (portal.source._scan_report):
    # "verified", "not checked (...)", "refused: ..."; "" when the field carried none.
    signature: str = ""


@dataclass(frozen=True)
class Attestation:
    kind: str
    fields: list[tuple[str, str]]


@dataclass(frozen=True)
class Version:
    version: str
    status: str
    reason: str
    target: str
    sha256: str
    length: int
    capabilities: list[str]
    license: str
    platform: str
    attestations: list[Attestation]
    scan: Scan | None
    quality: float | None
    signed_by: list[str]
    manifest: dict[str, Any]


@dataclass(frozen=True)
class Bar:
    """One version's calls on one day: a segment of that day's stacked bar."""

    day: str
    version: str
    calls: int
    errors: int
    x: float
    y: float
    height: float
    width: float
    series: int


@dataclass(frozen=True)
class RatePoint:
    day: str
    version: str
    error_rate: float
    x: float
    y: float


@dataclass(frozen=True)
class VersionUsage:
    """One version's usage over the charted days (its line on the error-rate chart)."""

    version: str
    series: int
    calls: int
    rows: int
    errors: int
    p99_ms: float | None  # the worst day's p99 upper bound (see docs/marketplace.md)
    points: list[RatePoint]

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x},{p.y}" for p in self.points)


@dataclass(frozen=True)
class RegressionCheck:
    """The error-rate regression check's latest result, as it concerns one plugin."""

    day: str
    evaluated_at: str
    passed: bool
    regressions: list[str]
    judged: list[str]
    threshold: float | None
    min_calls: int | None


@dataclass(frozen=True)
class Usage:
    days: list[dict[str, Any]]  # per day, all versions: day, calls, rows, errors
    rows: list[dict[str, Any]]  # per day and version: + error_rate, p99_ms
    versions: list[VersionUsage]
    total_calls: int
    total_rows: int
    total_errors: int
    installs: int | None
    bars: list[Bar]
    max_calls: int
    max_rate: float
    check: RegressionCheck | None

    @property
    def error_rate(self) -> float:
        return self.total_errors / self.total_calls if self.total_calls else 0.0


@dataclass(frozen=True)
class Plugin:
    namespace: str
    name: str
    versions: list[Version]
    usage: Usage | None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def page(self) -> str:
        """Relative to the site root; both parts are checked spellings (source.py)."""
        return f"plugins/{self.namespace}/{self.name}.html"

    @property
    def latest(self) -> Version:
        """The newest release still offered for install (a pre-release only when no
        release is offered; a deprecated version, still installable, only when no
        published one is), else the newest version of all."""
        offered = [v for v in self.versions if v.status == "published"] or [
            v for v in self.versions if v.status == "deprecated"
        ]
        releases = [v for v in offered if version_key(v.version)[3] == 1]
        return (releases or offered or self.versions)[0]

    @property
    def description(self) -> str:
        return _text(self.latest.manifest.get("description"))

    @property
    def kind(self) -> str:
        return _text(self.latest.manifest.get("kind"))


@dataclass(frozen=True)
class Publisher:
    namespace: str
    key_ids: list[str]
    threshold: int
    signed_by: list[str]
    plugins: int


@dataclass(frozen=True)
class Catalogue:
    source: str
    generated_at: datetime
    plugins: list[Plugin]
    publishers: list[Publisher]
    skipped: list[str] = field(default_factory=list)

    @property
    def capabilities(self) -> list[str]:
        return sorted({c for p in self.plugins for c in p.latest.capabilities})

    @property
    def licenses(self) -> list[str]:
        return sorted({p.latest.license for p in self.plugins if p.latest.license})


def version_key(version: str) -> tuple[int, int, int, int, str]:
    """SemVer order: a pre-release sorts before its release; build metadata is ignored."""
    match = re.match(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?", version)
    if match is None:
        return (0, 0, 0, 0, version)
    major, minor, patch, pre = match.groups()
    return (int(major), int(minor), int(patch), 0 if pre else 1, pre or "")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else json.dumps(value))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _quality(custom: Mapping[str, Any]) -> float | None:
    value = custom.get("quality", custom.get("quality_score"))
    if isinstance(value, Mapping):
        value = value.get("score")
    return _number(value)


def _scan(custom: Mapping[str, Any]) -> Scan | None:
    value = custom.get("scan", custom.get("scan_report"))
    if isinstance(value, list):
        value = {"checks": value}
    if not isinstance(value, Mapping):
        return None
    checks = []
    for item in value.get("checks") or []:
        if isinstance(item, Mapping):
            passed = item.get("passed")
            skipped = item.get("skipped") is True  # did not apply: neither passed nor failed
            checks.append(
                Check(
                    _text(item.get("check", item.get("name", "?"))),
                    passed if isinstance(passed, bool) and not skipped else None,
                    ("skipped: " if skipped else "") + _text(item.get("detail", "")),
                )
            )
    admitted = value.get("admitted")
    signature = _text(value.get("signature") or "")
    if not checks and not isinstance(admitted, bool) and not signature:
        return None
    return Scan(admitted if isinstance(admitted, bool) else None, checks, signature)


def _attestations(custom: Mapping[str, Any]) -> list[Attestation]:
    out = []
    raw = custom.get("attestations")
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, Mapping):
            kind = _text(item.get("predicateType", item.get("type", item.get("kind", ""))))
            fields = [(str(k), _text(v)) for k, v in sorted(item.items(), key=lambda kv: kv[0])]
            out.append(Attestation(kind or "attestation", fields))
        elif isinstance(item, str):
            out.append(Attestation("link", [("ref", item)]))
    return out


def _manifest(custom: Mapping[str, Any]) -> dict[str, Any]:
    text = custom.get("manifest")
    try:
        parsed = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return {}
    return dict(parsed) if isinstance(parsed, Mapping) else {}


def _version(v: VerifiedVersion, publisher: VerifiedPublisher | None) -> Version:
    c = v.custom
    caps = c.get("capabilities")
    return Version(
        version=v.version,
        status=_text(c.get("status") or "published"),
        reason=_text(c.get("reason") or ""),
        target=v.path,
        sha256=v.sha256,
        length=v.length,
        capabilities=sorted(str(x) for x in caps) if isinstance(caps, list) else [],
        license=_text(c.get("license") or ""),
        platform=_text(c.get("platform") or ""),
        attestations=_attestations(c),
        scan=_scan(c),
        quality=_quality(c),
        signed_by=list(publisher.signed_by) if publisher else [],
        manifest=_manifest(c),
    )


def _check(raw: Any) -> RegressionCheck | None:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("passed"), bool):
        return None
    texts = raw.get("regressions")
    judged = raw.get("judged")
    threshold = _number(raw.get("threshold"))
    min_calls = _number(raw.get("min_calls"))
    return RegressionCheck(
        day=_text(raw.get("day") or ""),
        evaluated_at=_text(raw.get("evaluated_at") or ""),
        passed=raw["passed"],
        regressions=[_text(t) for t in texts] if isinstance(texts, list) else [],
        judged=[_text(v) for v in judged] if isinstance(judged, list) else [],
        threshold=threshold,
        min_calls=int(min_calls) if min_calls is not None else None,
    )


def _usage(raw: Any) -> Usage | None:
    """Usage of one plugin: ``{"installs": N, "days": [{"day", "version", "calls", "rows",
    "errors", "p99_ms"}, ...], "check": {...}}`` (``portal.usage`` writes this shape from
    the home; a hand-made file may leave out ``version``, ``p99_ms`` and ``check``);
    anything else is "no usage data"."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("days"), list):
        return None
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for d in raw["days"]:
        if not (isinstance(d, Mapping) and isinstance(d.get("day"), str)):
            continue
        version = d.get("version") if isinstance(d.get("version"), str) else ""
        row = merged.setdefault(
            (d["day"], version),
            {"day": d["day"], "version": version, "calls": 0, "rows": 0, "errors": 0},
        )
        for key in ("calls", "rows", "errors"):
            row[key] += int(_number(d.get(key)) or 0)
        p99 = _number(d.get("p99_ms"))
        if p99 is not None:
            row["p99_ms"] = max(p99, row.get("p99_ms") or 0.0)
    if not merged:
        return None
    rows = sorted(merged.values(), key=lambda r: (r["day"], version_key(r["version"])))
    for r in rows:
        r["error_rate"] = r["errors"] / r["calls"] if r["calls"] else 0.0
        r.setdefault("p99_ms", None)
    day_names = sorted({r["day"] for r in rows})
    days = []
    for day in day_names:
        of_day = [r for r in rows if r["day"] == day]
        days.append({k: sum(r[k] for r in of_day) for k in ("calls", "rows", "errors")})
        days[-1]["day"] = day
    version_names = sorted({r["version"] for r in rows}, key=version_key)
    series = {v: i for i, v in enumerate(version_names)}
    top = max(d["calls"] for d in days) or 1
    max_rate = max(r["error_rate"] for r in rows) or 1.0
    plot = CHART_HEIGHT - 20 - PLOT_TOP  # bars and rates share the plot's height
    base = CHART_HEIGHT - 20
    slot = CHART_WIDTH / len(days)
    bars: list[Bar] = []
    points: dict[str, list[RatePoint]] = {v: [] for v in version_names}
    for i, day in enumerate(day_names):
        stacked = 0.0
        centre = round(i * slot + slot / 2, 2)
        for r in (r for r in rows if r["day"] == day):
            height = plot * r["calls"] / top
            bars.append(
                Bar(
                    day,
                    r["version"],
                    r["calls"],
                    r["errors"],
                    x=round(i * slot + slot * 0.1, 2),
                    y=round(base - stacked - height, 2),
                    height=round(height, 2),
                    width=round(slot * 0.8, 2),
                    series=series[r["version"]],
                )
            )
            stacked += height
            if r["calls"]:
                y = round(base - plot * r["error_rate"] / max_rate, 2)
                points[r["version"]].append(
                    RatePoint(day, r["version"], r["error_rate"], centre, y)
                )
    versions = []
    for v in version_names:
        mine = [r for r in rows if r["version"] == v]
        p99s = [r["p99_ms"] for r in mine if r["p99_ms"] is not None]
        versions.append(
            VersionUsage(
                version=v,
                series=series[v],
                calls=sum(r["calls"] for r in mine),
                rows=sum(r["rows"] for r in mine),
                errors=sum(r["errors"] for r in mine),
                p99_ms=max(p99s) if p99s else None,
                points=points[v],
            )
        )
    installs = _number(raw.get("installs"))
    return Usage(
        days=days,
        rows=rows,
        versions=versions,
        total_calls=sum(d["calls"] for d in days),
        total_rows=sum(d["rows"] for d in days),
        total_errors=sum(d["errors"] for d in days),
        installs=int(installs) if installs is not None else None,
        bars=bars,
        max_calls=top,
        max_rate=max_rate,
        check=_check(raw.get("check")),
    )


def build_catalogue(
    registry: VerifiedRegistry, usage: Mapping[str, Any] | None = None
) -> Catalogue:
    """The portal's model; ``usage`` maps ``<namespace>/<name>`` to its roll-up."""
    publishers = {p.namespace: p for p in registry.publishers}
    grouped: dict[tuple[str, str], list[Version]] = {}
    for v in registry.versions:
        grouped.setdefault((v.namespace, v.name), []).append(
            _version(v, publishers.get(v.namespace))
        )
    plugins = []
    for (namespace, name), versions in sorted(grouped.items()):
        versions.sort(key=lambda v: version_key(v.version), reverse=True)
        raw = (usage or {}).get(f"{namespace}/{name}")
        plugins.append(Plugin(namespace, name, versions, _usage(raw)))
    counts: dict[str, int] = {}
    for p in plugins:
        counts[p.namespace] = counts.get(p.namespace, 0) + 1
    return Catalogue(
        source=registry.source,
        generated_at=registry.refreshed_at,
        plugins=plugins,
        publishers=[
            Publisher(p.namespace, p.key_ids, p.threshold, p.signed_by, counts.get(p.namespace, 0))
            for p in registry.publishers
        ],
        skipped=list(registry.skipped),
    )
