"""The daily compliance report: one UTC day of checks, PII findings, retention deletions,
audit-chain verification and alerts, as JSON (for machines and archives) and as one
self-contained HTML page (for people).

Data plane: nothing here imports Dagster. The control plane reads its instance (check
evaluations, audit log, alert store) and fills a :class:`ComplianceSnapshot` with plain
values, so the renderer can be tested, and re-run from an archived JSON file, without a
Dagster instance. The ``from_*`` constructors take the compliance and alerting types by
duck typing (their imports are for type checkers only), so loading this module does not
pull in Polars, DuckDB or SQLAlchemy.

The HTML page has no external CSS, JavaScript, fonts or images: it is mailed, attached
to tickets and opened years later from an archive, where nothing else may be reachable.
Every piece of text that came from data (asset names, check descriptions, alert
messages) is HTML-escaped, because those strings are written by whoever controls the
data, not by us. The headline numbers are plain sentences at the top of the page, so a
reader (or a test) sees the state of the day without reading tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from dataflare_platform.durable import write_atomic
from dataflare_platform.models import StrictModel
from dataflare_platform.times import as_utc

if TYPE_CHECKING:
    from dataflare_platform.alerting.state import Alert
    from dataflare_platform.compliance.audit import VerifyReport
    from dataflare_platform.compliance.pii import PiiFinding
    from dataflare_platform.compliance.retention import RetentionAction

__all__ = [
    "AlertRecord",
    "AssetCompliance",
    "AuditStatus",
    "CheckRecord",
    "ComplianceSnapshot",
    "PiiRecord",
    "RetentionRecord",
    "headlines",
    "load_snapshot",
    "render_html",
    "render_json",
    "report_paths",
    "write_report",
]


class CheckRecord(StrictModel):
    """One evaluation of an asset check on the day (a check run twice is two records)."""

    name: str
    severity: str = "error"  # "error" or "warn", as Dagster's AssetCheckSeverity in lower case
    passed: bool
    description: str = ""  # why it failed (or what it verified)
    at: datetime | None = None

    @field_validator("severity")
    @classmethod
    def _lower(cls, value: str) -> str:
        """Dagster spells it ERROR/WARN, the expectation suites error/warn: one spelling."""
        return value.strip().lower()

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else as_utc(value)


class PiiRecord(StrictModel):
    """Raw PII found in one column: counts and redacted samples only, never a raw value
    (the report is mailed around; it must not become the leak it reports)."""

    column: str
    kind: str  # compliance.pii.PiiKind value: email, phone, card, national_id
    rows: int
    total_rows: int = 0
    samples: list[str] = Field(default_factory=list)  # already redacted by compliance.pii
    classification: str | None = None  # what the column was declared, if anything

    @property
    def violation(self) -> bool:
        """Raw PII is fine only where the column is declared to hold it."""
        return self.classification != "pii_allowed"

    @classmethod
    def from_finding(cls, finding: PiiFinding, classification: str | None = None) -> PiiRecord:
        """From ``compliance.pii.scan_pii``'s output, whose samples are redacted there."""
        return cls(
            column=finding.column,
            kind=str(finding.kind),
            rows=finding.rows,
            total_rows=finding.total_rows,
            samples=list(finding.samples),
            classification=None if classification is None else str(classification),
        )


class RetentionRecord(StrictModel):
    """What one retention run deleted (or, in a dry run, would have deleted)."""

    dataset: str
    target: str = ""
    what: str = "rows"  # rows, partitions or segments
    cutoff: datetime
    rows_deleted: int = 0
    files_deleted: int = 0
    dry_run: bool = False
    notes: list[str] = Field(default_factory=list)

    @field_validator("cutoff")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return as_utc(value)

    @classmethod
    def from_audit(cls, details: Mapping[str, Any]) -> RetentionRecord:
        """From ``RetentionAction.to_audit()``, the form the audit log keeps, so the
        control plane can rebuild the day's deletions from audit entries alone."""
        return cls(
            dataset=str(details["dataset"]),
            target=str(details.get("target", "")),
            what=str(details.get("what", "rows")),
            cutoff=datetime.fromisoformat(str(details["cutoff"])),
            rows_deleted=int(details.get("rows_deleted", 0)),
            files_deleted=int(details.get("files_deleted", 0)),
            dry_run=bool(details.get("dry_run", False)),
            notes=[str(n) for n in details.get("notes", [])],
        )

    @classmethod
    def from_action(cls, action: RetentionAction) -> RetentionRecord:
        return cls.from_audit(action.to_audit())


class AuditStatus(StrictModel):
    """The outcome of ``AuditLog.verify`` for the report: whether the chain holds, and
    where it first breaks (later breaks are usually consequences of the first)."""

    ok: bool
    entries: int
    head_seq: int
    first_bad_seq: int | None = None
    first_bad_problem: str | None = None
    bad_entries: int = 0
    checkpoints_verified: int = 0
    checkpoints_bad: int = 0
    checkpoint_problems: list[str] = Field(default_factory=list)

    @classmethod
    def from_report(cls, report: VerifyReport) -> AuditStatus:
        bad = report.first_bad_entry
        return cls(
            ok=report.ok,
            entries=report.entries,
            head_seq=report.head_seq,
            first_bad_seq=None if bad is None else bad.seq,
            first_bad_problem=None if bad is None else bad.problem,
            bad_entries=report.bad_entries,
            checkpoints_verified=report.checkpoints - len(report.bad_checkpoints),
            checkpoints_bad=len(report.bad_checkpoints),
            checkpoint_problems=[
                f"checkpoint at seq {cp.seq} (key {cp.key_id}): {cp.problem}"
                for cp in report.bad_checkpoints
            ],
        )


class AlertRecord(StrictModel):
    """One alert as the alert store keeps it; escalated means it reached tier 2 or
    higher (nobody acknowledged it in time at tier 1)."""

    rule: str
    fingerprint: str
    status: str  # firing, acknowledged or resolved
    severity: str = ""
    tier: int = 1
    occurrences: int = 1
    message: str = ""
    asset: str | None = None  # from the alert's "asset" label, when it has one
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    acknowledged_by: str | None = None

    @field_validator("first_seen", "last_seen")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else as_utc(value)

    @property
    def open(self) -> bool:
        return self.status != "resolved"

    @property
    def escalated(self) -> bool:
        return self.tier > 1

    @classmethod
    def from_alert(cls, alert: Alert) -> AlertRecord:
        return cls(
            rule=alert.rule,
            fingerprint=alert.fingerprint,
            status=alert.status,
            severity=alert.severity,
            tier=alert.tier,
            occurrences=alert.occurrences,
            message=alert.message,
            asset=(alert.labels or {}).get("asset"),
            first_seen=alert.first_seen,
            last_seen=alert.last_seen,
            acknowledged_by=alert.acknowledged_by,
        )


class AssetCompliance(StrictModel):
    """Everything the day did to, and found in, one asset."""

    asset: str  # the asset key as a path, e.g. "nexmark/bids"
    checks: list[CheckRecord] = Field(default_factory=list)
    pii: list[PiiRecord] = Field(default_factory=list)
    retention: list[RetentionRecord] = Field(default_factory=list)

    @property
    def checks_run(self) -> int:
        return len(self.checks)

    @property
    def checks_passed(self) -> int:
        return sum(c.passed for c in self.checks)

    @property
    def checks_failed(self) -> int:
        return self.checks_run - self.checks_passed


class ComplianceSnapshot(StrictModel):
    """One UTC day of compliance state: what ``render_html`` and ``render_json`` show.
    Plain values only (no Dagster or database objects), so the control plane fills it
    from its instance and an archived JSON file renders the same page again."""

    day: date
    generated_at: datetime
    assets: list[AssetCompliance] = Field(default_factory=list)
    audit: AuditStatus | None = None  # None: the audit chain was not verified
    alerts: list[AlertRecord] = Field(default_factory=list)

    @field_validator("generated_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return as_utc(value)

    # -- totals the headline states ----------------------------------------------------
    @property
    def checks_run(self) -> int:
        return sum(a.checks_run for a in self.assets)

    @property
    def checks_failed(self) -> int:
        return sum(a.checks_failed for a in self.assets)

    @property
    def pii_findings(self) -> int:
        """Findings that break the policy: raw PII anywhere but a column allowed to
        hold it."""
        return sum(1 for a in self.assets for p in a.pii if p.violation)

    @property
    def pii_allowed(self) -> int:
        return sum(1 for a in self.assets for p in a.pii if not p.violation)

    @property
    def open_alerts(self) -> list[AlertRecord]:
        return [a for a in self.alerts if a.open]

    @property
    def needs_attention(self) -> bool:
        return bool(
            self.checks_failed
            or self.pii_findings
            or (self.audit is not None and not self.audit.ok)
            or self.open_alerts
        )


# -- JSON ------------------------------------------------------------------------------
def render_json(snapshot: ComplianceSnapshot) -> str:
    """The snapshot as JSON; ``ComplianceSnapshot.model_validate_json`` reads it back
    into an equal snapshot (the archive can be re-rendered later)."""
    return snapshot.model_dump_json(indent=2) + "\n"


# -- headline sentences ----------------------------------------------------------------
def _n(value: int) -> str:
    return f"{value:,}"


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{_n(count)} {word if count == 1 else plural or word + 's'}"


def _checks_line(s: ComplianceSnapshot) -> str:
    failed = [c for a in s.assets for c in a.checks if not c.passed]
    errors = sum(c.severity == "error" for c in failed)
    line = f"Checks: {_n(s.checks_run)} run, {_n(s.checks_run - len(failed))} passed,"
    line += f" {_n(len(failed))} failed"
    if failed:
        line += f" ({_n(errors)} error, {_n(len(failed) - errors)} warn)"
    return line


def _pii_line(s: ComplianceSnapshot) -> str:
    rows = sum(p.rows for a in s.assets for p in a.pii if p.violation)
    line = f"PII findings: {_n(s.pii_findings)}"
    line += f" ({_plural(rows, 'row')} with raw PII)" if s.pii_findings else ""
    if s.pii_allowed:
        line += f"; {_n(s.pii_allowed)} in columns classified pii_allowed"
    return line


def _retention_line(s: ComplianceSnapshot) -> str:
    actions = [r for a in s.assets for r in a.retention]
    real = [r for r in actions if not r.dry_run]
    dry = [r for r in actions if r.dry_run]
    rows, files = sum(r.rows_deleted for r in real), sum(r.files_deleted for r in real)
    line = f"Retention: {_plural(rows, 'row')} and {_plural(files, 'file')} deleted"
    if dry:
        rows = sum(r.rows_deleted for r in dry)
        files = sum(r.files_deleted for r in dry)
        line += f" (dry run: {_plural(rows, 'row')} and {_plural(files, 'file')} would go)"
    return line


def _audit_line(s: ComplianceSnapshot) -> str:
    audit = s.audit
    if audit is None:
        return "Audit chain: not verified"
    if audit.ok:
        return (
            f"Audit chain: OK ({_plural(audit.entries, 'entry', 'entries')},"
            f" {_plural(audit.checkpoints_verified, 'checkpoint')} verified)"
        )
    if audit.first_bad_seq is not None:
        return (
            f"Audit chain: TAMPERED at entry {audit.first_bad_seq}"
            f" — {audit.first_bad_problem or 'unknown problem'}"
            f" ({_n(audit.bad_entries)} bad of {_n(audit.entries)} entries)"
        )
    return (
        f"Audit chain: BAD CHECKPOINTS ({_n(audit.checkpoints_bad)} bad,"
        f" {_n(audit.checkpoints_verified)} verified; {_n(audit.entries)} entries)"
    )


def _alerts_line(s: ComplianceSnapshot) -> str:
    open_ = s.open_alerts
    firing = sum(a.status == "firing" for a in open_)
    acked = sum(a.status == "acknowledged" for a in open_)
    escalated = sum(a.escalated for a in open_)
    return (
        f"Alerts: {_n(len(open_))} open, {_n(escalated)} escalated"
        f" ({_n(firing)} firing, {_n(acked)} acknowledged)"
    )


def headlines(snapshot: ComplianceSnapshot) -> list[str]:
    """The page's headline sentences, in order (also useful for a chat message)."""
    return [
        _checks_line(snapshot),
        _pii_line(snapshot),
        _retention_line(snapshot),
        _audit_line(snapshot),
        _alerts_line(snapshot),
    ]


# -- inline SVG charts -------------------------------------------------------------------
_GREEN, _RED, _AMBER, _BLUE, _GREY = "#2e7d32", "#c62828", "#ef6c00", "#1565c0", "#9e9e9e"


def _svg_checks(assets: Sequence[AssetCompliance]) -> str:
    """Horizontal stacked bars, passed then failed, one per asset, to scale with the
    asset that ran the most checks."""
    rows = [a for a in assets if a.checks_run]
    if not rows:
        return '<p class="muted">No checks ran.</p>'
    label_w, bar_w, row_h = 220, 420, 26
    height = row_h * len(rows) + 10
    most = max(a.checks_run for a in rows)
    parts = [
        f'<svg class="chart" role="img" width="{label_w + bar_w + 150}" height="{height}"'
        f' viewBox="0 0 {label_w + bar_w + 150} {height}"'
        ' xmlns="http://www.w3.org/2000/svg">',
        "<title>Checks passed and failed per asset</title>",
    ]
    for i, asset in enumerate(rows):
        y = 5 + i * row_h
        ok_w = bar_w * asset.checks_passed / most
        bad_w = bar_w * asset.checks_failed / most
        name = asset.asset if len(asset.asset) <= 30 else asset.asset[:29] + "…"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{escape(name)}</text>'
        )
        parts.append(
            f'<rect x="{label_w}" y="{y}" width="{ok_w:.1f}" height="{row_h - 8}" fill="{_GREEN}"/>'
        )
        parts.append(
            f'<rect x="{label_w + ok_w:.1f}" y="{y}" width="{bad_w:.1f}" height="{row_h - 8}"'
            f' fill="{_RED}"/>'
        )
        parts.append(
            f'<text x="{label_w + ok_w + bad_w + 6:.1f}" y="{y + 15}">'
            f"{asset.checks_passed} ok / {asset.checks_failed} failed</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _svg_alerts(alerts: Sequence[AlertRecord]) -> str:
    """A donut of alerts by status, with the count of escalated open alerts beside it
    (escalation is a tier, not a status, so it is not a slice)."""
    counts = [
        ("firing", sum(a.status == "firing" for a in alerts), _RED),
        ("acknowledged", sum(a.status == "acknowledged" for a in alerts), _AMBER),
        ("resolved", sum(a.status == "resolved" for a in alerts), _GREEN),
    ]
    escalated = sum(a.escalated and a.open for a in alerts)
    total = sum(c for _, c, _ in counts)
    radius, width = 50.0, 22
    circumference = 2 * math.pi * radius
    parts = [
        '<svg class="chart" role="img" width="420" height="140" viewBox="0 0 420 140"'
        ' xmlns="http://www.w3.org/2000/svg">',
        "<title>Alerts by status</title>",
        f'<circle cx="70" cy="70" r="{radius}" fill="none" stroke="#eeeeee"'
        f' stroke-width="{width}"/>',
    ]
    offset = 0.0
    for _, count, colour in counts:
        if not count:
            continue
        length = circumference * count / total
        parts.append(
            f'<circle cx="70" cy="70" r="{radius}" fill="none" stroke="{colour}"'
            f' stroke-width="{width}" stroke-dasharray="{length:.2f} {circumference - length:.2f}"'
            f' stroke-dashoffset="{-offset:.2f}" transform="rotate(-90 70 70)"/>'
        )
        offset += length
    parts.append(
        f'<text x="70" y="76" text-anchor="middle" font-size="20" font-weight="bold">{total}</text>'
    )
    for i, (label, count, colour) in enumerate(
        [*counts, ("escalated (tier ≥ 2)", escalated, "#6a1b9a")]
    ):
        y = 22 + i * 26
        parts.append(f'<rect x="150" y="{y}" width="14" height="14" fill="{colour}"/>')
        parts.append(f'<text x="172" y="{y + 12}">{label}: {count}</text>')
    parts.append("</svg>")
    return "".join(parts)


# -- HTML ------------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px;
  color: #212121; max-width: 1200px; }
h1 { margin-bottom: 4px; } h2 { margin-top: 32px; border-bottom: 1px solid #ddd; }
.muted { color: #757575; }
.status { display: inline-block; padding: 4px 10px; border-radius: 4px; color: #fff;
  font-weight: bold; }
.status.ok { background: #2e7d32; } .status.bad { background: #c62828; }
ul.headline { font-size: 1.15em; line-height: 1.7; padding-left: 20px; }
ul.headline li.bad { color: #b71c1c; font-weight: 600; }
table { border-collapse: collapse; margin: 8px 0 16px; width: 100%; font-size: 0.92em; }
th, td { border: 1px solid #e0e0e0; padding: 4px 8px; text-align: left;
  vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #ffebee; } tr.warn td { background: #fff8e1; }
.charts { display: flex; flex-wrap: wrap; gap: 32px; align-items: flex-start; }
svg.chart text { font-size: 12px; fill: #212121; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; }
"""


def _cell(value: object, num: bool = False) -> str:
    text = _n(value) if isinstance(value, int) and not isinstance(value, bool) else str(value)
    return f'<td class="num">{escape(text)}</td>' if num else f"<td>{escape(text)}</td>"


def _table(headers: Sequence[str], rows: Sequence[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _asset_section(asset: AssetCompliance) -> str:
    out = [
        f"<section><h3>{escape(asset.asset)}</h3>",
        f"<p>{_plural(asset.checks_run, 'check')} run, {_n(asset.checks_passed)} passed,"
        f" {_n(asset.checks_failed)} failed; {_plural(len(asset.pii), 'PII finding')};"
        f" {_plural(len(asset.retention), 'retention action')}.</p>",
    ]
    if asset.checks:
        rows = []
        for c in sorted(asset.checks, key=lambda c: (c.passed, c.severity != "error", c.name)):
            css = (
                ""
                if c.passed
                else (' class="failed"' if c.severity == "error" else ' class="warn"')
            )
            rows.append(
                f"<tr{css}>{_cell(c.name)}{_cell(c.severity)}"
                f"{_cell('passed' if c.passed else 'FAILED')}{_cell(c.description)}"
                f"{_cell(_when(c.at))}</tr>"
            )
        out.append(_table(["Check", "Severity", "Result", "Description", "At"], rows))
    if asset.pii:
        rows = [
            f'<tr class="failed">{_cell(p.column)}{_cell(p.kind)}{_cell(p.rows, num=True)}'
            f"{_cell(p.total_rows, num=True)}{_cell(p.classification or 'unclassified')}"
            f"{_cell(', '.join(p.samples))}</tr>"
            for p in asset.pii
        ]
        out.append(
            _table(["Column", "Kind", "Rows", "Of rows", "Declared", "Samples (redacted)"], rows)
        )
    if asset.retention:
        rows = [
            f"<tr>{_cell(r.dataset)}{_cell(r.target)}{_cell(r.what)}{_cell(_when(r.cutoff))}"
            f"{_cell(r.rows_deleted, num=True)}{_cell(r.files_deleted, num=True)}"
            f"{_cell('yes' if r.dry_run else 'no')}{_cell('; '.join(r.notes))}</tr>"
            for r in asset.retention
        ]
        out.append(
            _table(
                ["Dataset", "Target", "Unit", "Cutoff", "Rows", "Files", "Dry run", "Notes"], rows
            )
        )
    out.append("</section>")
    return "".join(out)


def _audit_section(audit: AuditStatus | None) -> str:
    if audit is None:
        return '<p class="muted">The audit chain was not verified for this report.</p>'
    rows = [
        f"<tr><th>Status</th>{_cell('OK' if audit.ok else 'TAMPERED')}</tr>",
        f"<tr><th>Entries</th>{_cell(audit.entries, num=True)}</tr>",
        f"<tr><th>Head seq</th>{_cell(audit.head_seq, num=True)}</tr>",
        f"<tr><th>Bad entries</th>{_cell(audit.bad_entries, num=True)}</tr>",
        f"<tr><th>Checkpoints verified</th>{_cell(audit.checkpoints_verified, num=True)}</tr>",
        f"<tr><th>Checkpoints bad</th>{_cell(audit.checkpoints_bad, num=True)}</tr>",
    ]
    if audit.first_bad_seq is not None:
        first_bad = f"seq {audit.first_bad_seq}: {audit.first_bad_problem or ''}"
        rows.append(f"<tr><th>First bad entry</th>{_cell(first_bad)}</tr>")
    rows.extend(f"<tr><th>Bad checkpoint</th>{_cell(p)}</tr>" for p in audit.checkpoint_problems)
    return f"<table>{''.join(rows)}</table>"


def _alerts_section(alerts: Sequence[AlertRecord]) -> str:
    if not alerts:
        return '<p class="muted">No alerts.</p>'
    order = {"firing": 0, "acknowledged": 1, "resolved": 2}
    rows = []
    for a in sorted(alerts, key=lambda a: (order.get(a.status, 3), -a.tier, a.rule)):
        css = ' class="failed"' if a.status == "firing" else ""
        rows.append(
            f"<tr{css}>{_cell(a.status)}{_cell(a.tier, num=True)}{_cell(a.rule)}"
            f"{_cell(a.asset or '')}{_cell(a.severity)}{_cell(a.occurrences, num=True)}"
            f"<td><code>{escape(a.fingerprint)}</code></td>{_cell(a.message)}"
            f"{_cell(_when(a.first_seen))}{_cell(a.acknowledged_by or '')}</tr>"
        )
    headers = ["Status", "Tier", "Rule", "Asset", "Severity", "Occurrences"]
    headers += ["Fingerprint", "Message", "First seen", "Acknowledged by"]
    return _table(headers, rows)


def render_html(snapshot: ComplianceSnapshot) -> str:
    """One self-contained HTML page: inline CSS, inline SVG charts, no script, no
    external resources. All data-derived text is escaped."""
    s = snapshot
    bad_lines = {
        0: s.checks_failed > 0,
        1: s.pii_findings > 0,
        3: s.audit is not None and not s.audit.ok,
        4: bool(s.open_alerts),
    }
    bad_class = ' class="bad"'
    items = "".join(
        f"<li{bad_class if bad_lines.get(i) else ''}>{escape(line)}</li>"
        for i, line in enumerate(headlines(s))
    )
    status = (
        '<span class="status bad">ATTENTION NEEDED</span>'
        if s.needs_attention
        else '<span class="status ok">ALL CLEAR</span>'
    )
    day = s.day.isoformat()
    body = [
        f"<h1>Compliance report — {day} (UTC)</h1>",
        f'<p class="muted">Generated {escape(_when(s.generated_at))}. {status}</p>',
        f'<ul class="headline" id="headline">{items}</ul>',
        '<div class="charts">',
        f"<figure>{_svg_checks(s.assets)}<figcaption>Checks per asset</figcaption></figure>",
        f"<figure>{_svg_alerts(s.alerts)}<figcaption>Alerts by status</figcaption></figure>",
        "</div>",
        "<h2>Audit chain</h2>",
        _audit_section(s.audit),
        "<h2>Alerts</h2>",
        _alerts_section(s.alerts),
        "<h2>Assets</h2>",
        "".join(_asset_section(a) for a in s.assets)
        or '<p class="muted">No asset activity on this day.</p>',
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Compliance report {day}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


# -- files -----------------------------------------------------------------------------
def report_paths(day: date, directory: Path | str) -> tuple[Path, Path]:
    """``compliance-YYYY-MM-DD.html`` and ``.json``: one pair per day, sorted by name."""
    stem = Path(directory) / f"compliance-{day.isoformat()}"
    return stem.with_suffix(".html"), stem.with_suffix(".json")


def write_report(snapshot: ComplianceSnapshot, directory: Path | str) -> tuple[Path, Path]:
    """Write both renderings, each atomically (a reader or an archiver never sees half a
    report, and a rerun for the same day replaces the previous pair). Returns
    ``(html_path, json_path)``."""
    html_path, json_path = report_paths(snapshot.day, directory)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(json_path, render_json(snapshot).encode("utf-8"))
    write_atomic(html_path, render_html(snapshot).encode("utf-8"))
    return html_path, json_path


def load_snapshot(text: str | bytes) -> ComplianceSnapshot:
    """A snapshot back from ``render_json``'s output (an archived report)."""
    return ComplianceSnapshot.model_validate_json(text)
