"""The portal's usage from the platform's own data: a real WASM plugin's calls recorded by
the usage recorder into the home's event log, the portal built from that home, and its
page read back as HTML; the roll-up asset (a real Dagster materialization) and the portal
agree on the same events; the regression check's latest result is shown; a day the topic
no longer holds (retention) is read from the asset's stored Parquet."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from dataflare_platform.cli.main import app
from dataflare_platform.events.log import EventLog
from dataflare_platform.home import ProjectHome
from dataflare_platform.plugins.usage import USAGE_TOPIC, check_path, usage_topic
from dataflare_platform.portal.model import build_catalogue
from dataflare_platform.portal.render import build_site
from dataflare_platform.portal.source import read_registry
from dataflare_platform.portal.usage import home_has_usage, usage_frame, usage_from_home_data
from dataflare_platform_tests.portal.conftest import Portal
from dataflare_platform_tests.portal.recorded import (
    DAY1,
    DAY2,
    PLAN,
    ROWS_PER_CALL,
    materialize,
    percent,
    record_plan,
    usage_section,
)

UNTIL = date.fromisoformat(DAY2)


def _site(portal: Portal, home: ProjectHome, tmp_path: Path) -> Path:
    reg = read_registry(portal.registry.repo.path, tmp_path / "state", portal.root)
    usage = usage_from_home_data(home, UNTIL, days=7)
    build_site(build_catalogue(reg, usage), tmp_path / "site")
    return tmp_path / "site"


def _raw_p99(home: ProjectHome) -> dict[tuple[str, str], float]:
    """The worst window p99 per (day, version), straight from the recorded events."""
    out: dict[tuple[str, str], float] = {}
    for r in usage_topic(EventLog(home.event_log_dir)).read_all().to_pylist():
        if r["event"] == "invocation":
            key = (r["date_time"].date().isoformat(), r["version"])
            out[key] = max(out.get(key, 0.0), r["p99_ms"])
    return out


def test_the_plugin_page_shows_the_usage_recorded_by_a_real_plugin(
    portal_registry: Portal, home: ProjectHome, tmp_path
):
    record_plan(home, tmp_path / "module-cache")
    site = _site(portal_registry, home, tmp_path)
    page = usage_section((site / "plugins/acme/currency.html").read_text())

    per_day = page.tables["usage-days"]
    assert [(r["day"], r["version"]) for r in per_day] == [(d, v) for d, v, _, _ in PLAN]
    p99 = _raw_p99(home)
    for row, (day, version, ok, failing) in zip(per_day, PLAN, strict=True):
        assert int(row["calls"]) == ok + failing
        assert int(row["rows"]) == (ok + failing) * ROWS_PER_CALL
        assert int(row["errors"]) == failing
        assert percent(row["error rate"]) == pytest.approx(failing / (ok + failing), abs=5e-5)
        assert float(row["p99 (ms)"]) == pytest.approx(p99[(day, version)], abs=5e-4)

    versions = {r["version"]: r for r in page.tables["usage-versions"]}
    assert list(versions) == ["1.1.0", "1.0.0"]  # newest first
    assert (int(versions["1.0.0"]["calls"]), int(versions["1.0.0"]["errors"])) == (52, 3)
    assert (int(versions["1.1.0"]["calls"]), int(versions["1.1.0"]["errors"])) == (20, 8)
    assert percent(versions["1.1.0"]["error rate"]) == pytest.approx(0.4)
    assert page.summary == {"id": "usage-summary", "data-calls": "72", "data-rows": "720"} | {
        "data-errors": "11"
    }

    # The chart: one stacked segment per (day, version); one error-rate dot per (day, version).
    assert [(b["data-day"], b["data-version"], int(b["data-calls"])) for b in page.bars] == [
        (d, v, ok + bad) for d, v, ok, bad in PLAN
    ]
    day2 = [b for b in page.bars if b["data-day"] == DAY2]
    # Stacked: 1.1.0 sits on top of 1.0.0, and the day's total is the tallest bar.
    assert float(day2[1]["y"]) + float(day2[1]["height"]) == pytest.approx(float(day2[0]["y"]))
    rates = {(p["data-day"], p["data-version"]): float(p["data-error-rate"]) for p in page.points}
    assert rates == {(d, v): pytest.approx(bad / (ok + bad)) for d, v, ok, bad in PLAN}
    # The regression dot of 1.1.0 is the highest point of the chart (smallest y).
    top = min(page.points, key=lambda p: float(p["cy"]))
    assert top["data-version"] == "1.1.0"
    assert [line["data-version"] for line in page.lines] == ["1.0.0"]  # 2 days of 1.0.0
    assert page.check["data-passed"] == ""  # the asset never ran: no verdict to show
    assert "not run yet" in page.check_text

    # The catalogue carries the totals the browser sorts and filters by.
    index = (site / "index.html").read_text()
    assert 'data-ref="acme/currency"' in index
    assert 'data-calls="72"' in index and 'data-calls="0"' in index


def test_the_rollup_asset_and_the_portal_agree_and_the_check_result_is_shown(
    portal_registry: Portal, home: ProjectHome, tmp_path
):
    record_plan(home, tmp_path / "module-cache")
    stored = {day: materialize(home, day) for day in (DAY1, DAY2)}
    portal = usage_frame(home, UNTIL, days=7)
    for day, frame in stored.items():
        mine = portal.filter(pl.col("day") == day).drop("day").select(frame.columns)
        assert mine.to_dicts() == frame.to_dicts()
    assert portal["day"].unique().sort().to_list() == [DAY1, DAY2]

    # The check judged DAY2 (the last materialized): 1.1.0 at 40 % vs 1.0.0 at 5 %.
    record = json.loads(check_path(home.root, DAY2).read_text())
    assert record["passed"] is False and record["judged"] == {"currency": ["1.0.0", "1.1.0"]}
    page = usage_section(
        (_site(portal_registry, home, tmp_path) / "plugins/acme/currency.html").read_text()
    )
    assert page.check["data-passed"] == "false" and page.check["data-day"] == DAY2
    assert "FAILED" in page.check_text and "40.00% in 1.1.0" in page.check_text
    assert "5.00% in 1.0.0" in page.check_text

    # Retention drops the events; the portal then reads the asset's stored days.
    EventLog(home.event_log_dir).delete_topic(USAGE_TOPIC)
    assert home_has_usage(home)
    again = usage_frame(home, UNTIL, days=7)
    assert again.select(portal.columns).to_dicts() == portal.to_dicts()


def test_portal_build_uses_the_homes_usage_by_default(
    portal_registry: Portal, home: ProjectHome, tmp_path
):
    root = tmp_path / "root.json"
    root.write_bytes(portal_registry.root)
    args = ["portal", "build", "--from", str(portal_registry.registry.repo.path)]
    args += ["--root", str(root), "--state", str(tmp_path / "state"), "--out"]
    runner = CliRunner()
    assert not home_has_usage(home)
    empty = runner.invoke(app, [*args, str(tmp_path / "empty")])
    assert empty.exit_code == 0, empty.output
    assert json.loads(empty.stdout.strip().splitlines()[-1])["usage"] == "none"

    record_plan(home, tmp_path / "module-cache")
    result = runner.invoke(app, [*args, str(tmp_path / "site"), "--usage-until", DAY2])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["usage"] == "home"
    page = usage_section((tmp_path / "site/plugins/acme/currency.html").read_text())
    assert page.summary["data-calls"] == "72"
    # A window that ends before the usage shows none of it.
    early = runner.invoke(app, [*args, str(tmp_path / "early"), "--usage-until", "2026-12-01"])
    assert early.exit_code == 0, early.output
    assert "No usage data." in (tmp_path / "early/plugins/acme/currency.html").read_text()
    off = runner.invoke(app, [*args, str(tmp_path / "off"), "--no-usage-from-home"])
    assert json.loads(off.stdout.strip().splitlines()[-1])["usage"] == "none"
    clash = runner.invoke(
        app, [*args, str(tmp_path / "x"), "--usage", str(root), "--usage-from-home"]
    )
    assert clash.exit_code != 0 and "exclusive" in clash.output


def test_the_latest_check_evaluation_is_shown_whichever_day_it_judged(
    portal_registry: Portal, home: ProjectHome, tmp_path
):
    record_plan(home, tmp_path / "module-cache")
    materialize(home, DAY2)  # fails: 1.1.0 regressed
    materialize(home, DAY1)  # evaluated later (a backfill of the day before): passes
    site = _site(portal_registry, home, tmp_path)
    page = usage_section((site / "plugins/acme/currency.html").read_text())
    assert page.check["data-passed"] == "true" and page.check["data-day"] == DAY1
    assert "passed" in page.check_text and "judged 1.0.0" in page.check_text
    assert json.loads(check_path(home.root, DAY2).read_text())["passed"] is False  # kept
