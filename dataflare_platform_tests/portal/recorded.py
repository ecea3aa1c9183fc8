"""Usage recorded the way production records it (a real WASM plugin's calls through the
``PluginUsage`` recorder into the home's event log), and an HTML reader for the portal's
usage section, for the portal's usage tests."""

from __future__ import annotations

import html.parser
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from dataflare_platform.errors import BatchRejectedError
from dataflare_platform.events.log import EventLog
from dataflare_platform.home import ProjectHome
from dataflare_platform.plugins import Limits, Plugin
from dataflare_platform.plugins.usage import PluginUsage, UsageSettings, record_install
from dataflare_platform_tests.plugins.hostile import MANIFEST, TRAP, module

SETTINGS = UsageSettings(tenant="Acme Corp", tenant_salt="portal-usage-salt-0123456789")
DAY1, DAY2 = "2026-12-03", "2026-12-04"
ROWS_PER_CALL = 10

# (day, version, good calls, trapping calls): 1.1.0 regresses on DAY2 (40 % vs 5 %).
PLAN = [
    (DAY1, "1.0.0", 30, 2),
    (DAY2, "1.0.0", 19, 1),
    (DAY2, "1.1.0", 12, 8),
]


def noon(day: str) -> float:
    return datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC).timestamp()


def use(
    home: ProjectHome,
    cache: Path,
    day: str,
    version: str,
    ok: int,
    failing: int,
    name: str = "currency",
) -> None:
    """``ok + failing`` calls of a real WASM map plugin, published as ``acme/<name>``
    ``version`` (the portal registry's names), recorded at noon UTC of ``day``."""
    manifest = MANIFEST.model_copy(update={"name": name, "version": version})
    plugin = Plugin(
        manifest, module(), limits=Limits(max_failures=10_000), pool_size=1, cache_dir=cache
    )
    at = noon(day)
    usage = PluginUsage.attach(
        plugin, EventLog(home.event_log_dir), SETTINGS, "orders", "acme", clock=lambda: at
    )
    good = pl.DataFrame({"x": [7] * ROWS_PER_CALL})
    bad = pl.DataFrame({"x": [TRAP] + [7] * (ROWS_PER_CALL - 1)})
    for _ in range(ok):
        plugin.map(good)
    for _ in range(failing):
        with pytest.raises(BatchRejectedError):
            plugin.map(bad)
    usage.close()


def record_plan(home: ProjectHome, cache: Path) -> None:
    for day, version, ok, failing in PLAN:
        use(home, cache, day, version, ok, failing)
    record_install(
        EventLog(home.event_log_dir), SETTINGS, "currency", "1.1.0", "acme", now=noon(DAY2)
    )


def materialize(home: ProjectHome, day: str) -> pl.DataFrame:
    """``plugins/usage_daily_by_plugin`` for ``day`` (a real Dagster run on a test
    instance; it also keeps the regression check's result under the home)."""
    import dagster as dg

    from dataflare_platform.defs.plugins.usage import BY_PLUGIN, usage_daily_by_plugin
    from dataflare_platform.defs.resources import ProjectHomeResource

    job = dg.Definitions(
        assets=[usage_daily_by_plugin],
        resources={"dataflare": ProjectHomeResource(path=str(home.root))},
        jobs=[dg.define_asset_job("usage_rollup", selection=[BY_PLUGIN])],
    ).resolve_job_def("usage_rollup")
    config = {"min_calls": 10, "regression_threshold": 0.05}
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance,
            partition_key=day,
            run_config={"ops": {"plugins__usage_daily_by_plugin": {"config": config}}},
        )
        assert result.success
    mat = result.get_asset_materialization_events()[0].event_specific_data.materialization
    return pl.read_parquet(mat.metadata["path"].value)


@dataclass
class UsageSection:
    """What a plugin page's usage section shows, read from its HTML."""

    tables: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    bars: list[dict[str, str]] = field(default_factory=list)
    points: list[dict[str, str]] = field(default_factory=list)
    lines: list[dict[str, str]] = field(default_factory=list)
    check: dict[str, str] = field(default_factory=dict)
    check_text: str = ""
    summary: dict[str, str] = field(default_factory=dict)


class _UsageReader(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out = UsageSection()
        self._table: str | None = None
        self._headers: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_check = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "table" and a.get("id", "").startswith("usage-"):
            self._table, self._headers = a["id"], []
            self.out.tables[a["id"]] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "rect" and "bar" in classes:
            self.out.bars.append(a)
        elif tag == "circle" and "rate-point" in classes:
            self.out.points.append(a)
        elif tag == "polyline" and "rate" in classes:
            self.out.lines.append(a)
        elif a.get("id") == "usage-check":
            self.out.check, self._in_check = a, True
        elif a.get("id") == "usage-summary":
            self.out.summary = a

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_check:
            self.out.check_text += data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            if not self._headers:
                self._headers = self._row
            else:
                row = dict(zip(self._headers, self._row, strict=True))
                self.out.tables[self._table].append(row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "p":
            self._in_check = False


def usage_section(page: str) -> UsageSection:
    reader = _UsageReader()
    reader.feed(page)
    return reader.out


def percent(text: str) -> float:
    """``"40.00 %"`` -> 0.4"""
    return float(text.removesuffix("%").strip()) / 100
