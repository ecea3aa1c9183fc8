"""The daily compliance report: a snapshot with planted failures renders to JSON that
reads back equal, and to a self-contained, escaped HTML page that a real headless
Chromium shows with the planted numbers in its headline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dataflare_platform.alerting.state import Alert, AlertStore
from dataflare_platform.compliance.audit import AuditLog, EntryProblem, VerifyReport
from dataflare_platform.compliance.audit_keys import key_id
from dataflare_platform.compliance.pii import scan_pii
from dataflare_platform.compliance.report import (
    AlertRecord,
    AssetCompliance,
    AuditStatus,
    CheckRecord,
    ComplianceSnapshot,
    PiiRecord,
    RetentionRecord,
    headlines,
    load_snapshot,
    render_html,
    render_json,
    write_report,
)
from dataflare_platform.compliance.retention import (
    RetentionAction,
    RetentionPolicy,
    delete_duckdb_rows,
)
from dataflare_platform_tests.audit_support import ENTRY_KEY
from dataflare_platform_tests.browser import chromium_binary, run_chromium

DAY = date(2026, 3, 31)
NOW = datetime(2026, 4, 1, 0, 5, tzinfo=UTC)
EVIL_ASSET = '<script>alert("pwned")</script>/evil'
EVIL_DESCRIPTION = '"><img src=x onerror=alert(1)> <script>steal()</script>'
# Where a person looks at what the browser rendered (gitignored), as in e2e/test_ui_browser.
ARTIFACTS = Path(
    os.environ.get(
        "DATAFLARE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"
    )
)


def _pii_findings() -> list[PiiRecord]:
    """Two real findings from the scanner (an email column and a card column), so the
    samples are whatever compliance.pii redacts them to."""
    frame = pl.DataFrame(
        {
            "contact": ["alice@example.com", "no pii here", "bob.smith@example.org"],
            "note": ["paid with 4111 1111 1111 1111", "", "cash"],
        }
    )
    findings = scan_pii(frame)
    return [PiiRecord.from_finding(f) for f in findings]


def _checks(prefix: str, passed: int, failed: list[tuple[str, str]]) -> list[CheckRecord]:
    at = datetime(2026, 3, 31, 6, 0, tzinfo=UTC)
    out = [
        CheckRecord(name=f"{prefix}_ok_{i}", severity="ERROR", passed=True, at=at)
        for i in range(passed)
    ]
    out += [
        CheckRecord(name=f"{prefix}_bad_{i}", severity=severity, passed=False, description=text)
        for i, (severity, text) in enumerate(failed)
    ]
    return out


def _snapshot() -> ComplianceSnapshot:
    """Planted: 12 checks of which 3 failed, 2 PII findings, one retention action of
    1,234 rows and 5 files (plus a dry run that must not count), an audit chain tampered
    at entry 17, and 2 open alerts of which 1 is escalated to tier 2 (plus a resolved
    one that must not count as open)."""
    retention = RetentionAction(
        dataset="nexmark.bids",
        target="parquet:/data/bids",
        what="partitions",
        cutoff=datetime(2026, 3, 1, tzinfo=UTC),
        rows_deleted=1234,
        files_deleted=5,
        oldest_deleted=datetime(2026, 2, 27, tzinfo=UTC),
        newest_deleted=datetime(2026, 3, 1, tzinfo=UTC),
        dry_run=False,
        items=("day=2026-02-27", "day=2026-02-28"),
    )
    dry = RetentionAction(
        dataset="nexmark.auctions",
        target="duckdb:warehouse.duckdb#auctions",
        what="rows",
        cutoff=datetime(2026, 3, 1, tzinfo=UTC),
        rows_deleted=99,
        files_deleted=0,
        oldest_deleted=None,
        newest_deleted=None,
        dry_run=True,
    )
    audit = VerifyReport(
        url="sqlite:///audit.db",
        entries=40,
        head_seq=40,
        head_hash="ab" * 32,
        checkpoints=2,
        first_bad_entry=EntryProblem(seq=17, problem="hash does not match the entry's content"),
        bad_entries=1,
    )
    alerts = [
        Alert(
            fingerprint="fp-bids-null",
            rule="check_failed",
            labels={"asset": "nexmark/bids"},
            severity="critical",
            status="firing",
            message="gx_bids failed on nexmark/bids",
            first_seen=NOW - timedelta(hours=3),
            last_seen=NOW,
            occurrences=4,
            tier=2,
        ),
        Alert(
            fingerprint="fp-fresh",
            rule="freshness",
            labels={"asset": "nexmark/auctions"},
            severity="warning",
            status="acknowledged",
            message="auctions is 3 h late",
            first_seen=NOW - timedelta(hours=5),
            last_seen=NOW,
            acknowledged_by="alice",
        ),
        Alert(
            fingerprint="fp-old",
            rule="run_failed",
            severity="critical",
            status="resolved",
            first_seen=NOW - timedelta(hours=20),
            last_seen=NOW - timedelta(hours=19),
            tier=3,
        ),
    ]
    return ComplianceSnapshot(
        day=DAY,
        generated_at=NOW,
        assets=[
            AssetCompliance(
                asset="nexmark/bids",
                checks=_checks(
                    "bids",
                    4,
                    [
                        ("error", "expect_column_values_to_not_be_null on price: 12 unexpected"),
                        ("warn", "expect_column_values_to_be_between on price: 3 unexpected"),
                    ],
                ),
                pii=_pii_findings(),
                retention=[RetentionRecord.from_action(retention)],
            ),
            AssetCompliance(
                asset="nexmark/auctions",
                checks=_checks("auctions", 3, [("error", "row count 0 < 1")]),
                retention=[RetentionRecord.from_action(dry)],
            ),
            AssetCompliance(
                asset=EVIL_ASSET,
                checks=[
                    CheckRecord(name="evil_check", passed=True, description=EVIL_DESCRIPTION),
                    CheckRecord(name="evil_check_2", severity="warn", passed=True),
                ],
            ),
        ],
        audit=AuditStatus.from_report(audit),
        alerts=[AlertRecord.from_alert(a) for a in alerts],
    )


def test_the_planted_snapshot_has_the_planted_totals():
    snapshot = _snapshot()
    assert (snapshot.checks_run, snapshot.checks_failed, snapshot.pii_findings) == (12, 3, 2)
    assert [p.kind for p in snapshot.assets[0].pii] == ["email", "card"]
    assert headlines(snapshot) == [
        "Checks: 12 run, 9 passed, 3 failed (2 error, 1 warn)",
        "PII findings: 2 (3 rows with raw PII)",
        "Retention: 1,234 rows and 5 files deleted (dry run: 99 rows and 0 files would go)",
        "Audit chain: TAMPERED at entry 17 — hash does not match the entry's content"
        " (1 bad of 40 entries)",
        "Alerts: 2 open, 1 escalated (1 firing, 1 acknowledged)",
    ]


def test_json_round_trips_to_an_equal_snapshot(tmp_path: Path):
    snapshot = _snapshot()
    text = render_json(snapshot)
    assert load_snapshot(text) == snapshot
    assert ComplianceSnapshot.model_validate_json(text) == snapshot
    html_path, json_path = write_report(snapshot, tmp_path / "reports")
    assert (html_path.name, json_path.name) == (
        "compliance-2026-03-31.html",
        "compliance-2026-03-31.json",
    )
    assert load_snapshot(json_path.read_bytes()) == snapshot
    assert html_path.read_text(encoding="utf-8") == render_html(snapshot)
    # Nothing but the two reports is left behind (no temporary files of the atomic write).
    assert sorted(p.name for p in html_path.parent.iterdir()) == [
        "compliance-2026-03-31.html",
        "compliance-2026-03-31.json",
    ]


def test_html_escapes_asset_names_and_descriptions():
    page = render_html(_snapshot())
    # The only tags are ours: no script element and no injected img.
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert escape_html(EVIL_ASSET) in page
    assert escape_html(EVIL_DESCRIPTION) in page


def escape_html(text: str) -> str:
    """The escaping the page must show, spelled out independently of html.escape."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#x27;")
    )


def test_html_is_self_contained():
    page = render_html(_snapshot())
    # No way to fetch anything: no script, stylesheet link, image or frame element, no
    # attribute that loads a resource, no CSS url() or @import. (Escaped text may spell
    # "src=", which is why the tags are what is searched.)
    tags = re.findall(r"<[A-Za-z][^>]*>", page)
    names = {re.match(r"<([A-Za-z0-9]+)", tag).group(1).lower() for tag in tags}
    assert not names & {"script", "link", "img", "iframe", "object", "embed"}, names
    for tag in tags:
        assert re.search(r"\b(src|href|srcset)=", tag, re.IGNORECASE) is None, tag
    style = re.search(r"<style>(.*?)</style>", page, re.DOTALL)
    assert style is not None
    assert "url(" not in style.group(1) and "@import" not in style.group(1)
    # The only URLs are SVG namespace declarations, which browsers never fetch.
    urls = set(re.findall(r"https?://[^\s\"'<>]+", page))
    assert urls == {"http://www.w3.org/2000/svg"}
    assert page.count("<svg") == 2  # the checks chart and the alerts donut


def test_headline_numbers_are_plain_text_in_the_page():
    page = render_html(_snapshot())
    headline = re.search(r'<ul class="headline" id="headline">(.*?)</ul>', page)
    assert headline is not None
    text = re.sub(r"<[^>]+>", "\n", headline.group(1))
    for expected in (
        "Checks: 12 run, 9 passed, 3 failed",
        "PII findings: 2",
        "Retention: 1,234 rows and 5 files deleted",
        "Audit chain: TAMPERED at entry 17",
        "Alerts: 2 open, 1 escalated",
    ):
        assert expected in text, expected
    assert "ATTENTION NEEDED" in page


def test_a_clean_day_reads_all_clear():
    snapshot = ComplianceSnapshot(
        day=DAY,
        generated_at=NOW,
        assets=[AssetCompliance(asset="nexmark/bids", checks=_checks("bids", 5, []))],
        audit=AuditStatus(ok=True, entries=812, head_seq=812, checkpoints_verified=3),
    )
    assert headlines(snapshot) == [
        "Checks: 5 run, 5 passed, 0 failed",
        "PII findings: 0",
        "Retention: 0 rows and 0 files deleted",
        "Audit chain: OK (812 entries, 3 checkpoints verified)",
        "Alerts: 0 open, 0 escalated (0 firing, 0 acknowledged)",
    ]
    page = render_html(snapshot)
    assert "ALL CLEAR" in page and "ATTENTION NEEDED" not in page
    assert "No alerts." in page


def test_pii_samples_in_the_report_are_redacted():
    page = render_html(_snapshot())
    json_text = render_json(_snapshot())
    for raw in ("alice@example.com", "bob.smith@example.org", "4111 1111 1111 1111"):
        assert raw not in page and raw not in json_text, raw
    email = _snapshot().assets[0].pii[0]
    assert (email.column, email.rows, email.total_rows) == ("contact", 2, 3)
    assert email.samples and all(s.endswith(".com") or s.endswith(".org") for s in email.samples)


def test_retention_record_from_a_real_deletion_equals_its_audit_form():
    con = duckdb.connect()
    con.execute("CREATE TABLE bids (ts TIMESTAMPTZ, price INT)")
    con.execute(
        "INSERT INTO bids SELECT TIMESTAMPTZ '2026-03-01 00:00:00+00' + i * INTERVAL 1 DAY, i"
        " FROM range(30) t(i)"
    )
    action = delete_duckdb_rows(
        con, "bids", RetentionPolicy(keep="10d", time_column="ts"), NOW, dataset="bids"
    )
    record = RetentionRecord.from_action(action)
    assert record == RetentionRecord.from_audit(action.to_audit())
    assert (record.dataset, record.what, record.dry_run) == ("bids", "rows", False)
    assert record.rows_deleted == action.rows_deleted == 22  # 1–22 March are older than 22 March
    assert record.cutoff == datetime(2026, 3, 22, 0, 5, tzinfo=UTC)


def test_audit_status_from_a_really_tampered_log(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    key = Ed25519PrivateKey.generate()
    with AuditLog(url, entry_key=ENTRY_KEY) as log:
        for i in range(20):
            log.append("system", "materialization", f"nexmark/q{i % 3}", {"i": i})
        log.checkpoint(key)
        engine = sa.create_engine(url)
        with engine.begin() as conn:  # an attacker with database access
            conn.execute(sa.text("UPDATE audit_entries SET subject = 'x' WHERE seq = 17"))
        engine.dispose()
        report = log.verify({key_id(key.public_key()): key.public_key()})
    status = AuditStatus.from_report(report)
    assert (status.ok, status.entries, status.first_bad_seq) == (False, 20, 17)
    snapshot = ComplianceSnapshot(day=DAY, generated_at=NOW, audit=status)
    assert headlines(snapshot)[3].startswith("Audit chain: TAMPERED at entry 17 — ")


def test_alert_records_from_the_alert_store(tmp_path: Path):
    store = AlertStore(f"sqlite:///{tmp_path / 'alerts.db'}")
    try:
        with store.session() as s:
            for i, tier in enumerate((1, 2)):
                s.add(
                    Alert(
                        fingerprint=f"fp{i}",
                        rule="check_failed",
                        labels={"asset": "nexmark/bids"},
                        severity="critical",
                        first_seen=NOW,
                        last_seen=NOW,
                        tier=tier,
                        occurrences=i + 1,
                    )
                )
            s.commit()
        store.acknowledge("fp0", "alice", NOW)
        records = [AlertRecord.from_alert(a) for a in store.alerts()]
    finally:
        store.close()
    assert [(r.status, r.tier, r.escalated, r.asset) for r in records] == [
        ("acknowledged", 1, False, "nexmark/bids"),
        ("firing", 2, True, "nexmark/bids"),
    ]
    assert records[0].first_seen == NOW  # aware UTC, read back from SQLite
    snapshot = ComplianceSnapshot(day=DAY, generated_at=NOW, alerts=records)
    assert headlines(snapshot)[4] == "Alerts: 2 open, 1 escalated (1 firing, 1 acknowledged)"


# -- in a real browser -------------------------------------------------------------------
@pytest.mark.e2e
def test_the_report_renders_in_headless_chromium(tmp_path: Path):
    binary = chromium_binary()
    html_path, _ = write_report(_snapshot(), tmp_path)
    url = html_path.as_uri()
    dom = run_chromium(binary, tmp_path / "profile-dom", url, "--dump-dom")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "compliance-report.dom.html").write_text(dom, encoding="utf-8")
    # The DOM Chromium built: the headline as the browser parsed it, tags stripped.
    headline = re.search(r'<ul class="headline" id="headline">(.*?)</ul>', dom, re.DOTALL)
    assert headline is not None, dom[:2000]
    text = re.sub(r"<[^>]+>", "\n", headline.group(1))
    for expected in (
        "3 failed",
        "PII findings: 2",
        "1,234 rows and 5 files deleted",
        "TAMPERED at entry 17",
        "2 open, 1 escalated",
    ):
        assert expected in text, (expected, text)
    for name in ("nexmark/bids", "nexmark/auctions"):
        assert f"<h3>{name}</h3>" in dom, name
    # The malicious asset name stayed text: Chromium built no script element from it.
    assert "<script" not in dom.lower()
    assert "&lt;script&gt;alert(" in dom
    assert dom.count("<svg") == 2
    shot = ARTIFACTS / "compliance-report.png"
    shot.unlink(missing_ok=True)
    run_chromium(
        binary,
        tmp_path / "profile-shot",
        url,
        f"--screenshot={shot}",
        "--window-size=1280,2000",
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000  # a blank page compresses to far less


def test_the_report_module_loads_without_dagster_or_the_data_engines():
    """Data plane: the renderer runs where Dagster is not installed (re-rendering an
    archived JSON file), and importing it pulls in no Polars, DuckDB or SQLAlchemy."""
    code = (
        "import sys, dataflare_platform.compliance.report\n"
        "heavy = {'dagster', 'polars', 'duckdb', 'sqlalchemy'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_pii_in_a_column_allowed_to_hold_it_is_listed_but_is_no_violation():
    allowed = PiiRecord(column="email", kind="email", rows=40, classification="pii_allowed")
    leaked = PiiRecord(column="notes", kind="card", rows=2)
    raw_zone = AssetCompliance(asset="nexmark/persons", pii=[allowed])
    clean = ComplianceSnapshot(day=DAY, generated_at=NOW, assets=[raw_zone])
    assert clean.pii_findings == 0 and not clean.needs_attention
    assert headlines(clean)[1] == "PII findings: 0; 1 in columns classified pii_allowed"
    mixed = ComplianceSnapshot(
        day=DAY,
        generated_at=NOW,
        assets=[raw_zone, AssetCompliance(asset="crm/contacts", pii=[leaked])],
    )
    assert mixed.needs_attention
    assert headlines(mixed)[1] == (
        "PII findings: 1 (2 rows with raw PII); 1 in columns classified pii_allowed"
    )
