"""The README's streaming quickstart, end to end, as a user runs it: ``dataflare quickstart``
(what ``make stream`` runs) on a fresh home, until every stream table has rows; the stream
asset's page in a real headless Chromium (signed in through the web front) shows rows
and a non-zero current rate; Ctrl-C
then leaves nothing running.

One quickstart (one web front with its daemon) serves the whole module; the tests run in file order
and the last one stops it. Screenshots go to test-artifacts/ui (gitignored, or
$DATAFLARE_TEST_ARTIFACTS) and to the pytest tmp dir.
"""

import contextlib
import html
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from dataflare_platform.gateway.process import free_port
from dataflare_platform.home import ProjectHome
from dataflare_platform.identity.local_users import LocalUsers
from dataflare_platform.identity.store import IdentityStore
from dataflare_platform.identity.tokens import ServiceTokens
from dataflare_platform_tests.browser import DevToolsChromium

pytestmark = pytest.mark.e2e

CEILING_S = 900.0  # a loaded 2-core machine starts four run workers slowly
ARTIFACTS = Path(
    os.environ.get(
        "DATAFLARE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"
    )
)
STREAMS = ("highest_bid_eur", "hot_items", "masked_persons", "sealed_persons", "bidder_sessions")
STATUS = re.compile(r"(\w+): ([\d,]+) rows, ([\d,.]+) events/s")


VIEWER, VIEWER_PASSWORD = "watcher", "a password to watch streams with"


@dataclass
class Quickstart:
    proc: subprocess.Popen
    port: int
    home: Path
    output: Path
    token: str  # a viewer service token for the test's own client

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def dagster_group(self) -> int | None:
        found = re.search(r"web front \(process group (\d+)\)", self.text())
        return int(found.group(1)) if found else None


def live_members(pgid: int) -> list[str]:
    """Processes of group ``pgid`` that still run (a zombie waiting for its reaper, which
    here is the machine's init, has stopped and holds nothing)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(f"{entry.name}: {stat[: stat.rindex(')') + 1]}")
    return found


def processes_of(home: Path) -> list[str]:
    """Every live process whose environment points DATAFLARE_HOME at ``home``."""
    needle = f"DATAFLARE_HOME={home}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{entry.name}: {cmd[:160]}")
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    base = tmp_path_factory.mktemp("quickstart")
    home, output, port = base / "home", base / "quickstart.out", free_port()
    dataflare = Path(sys.executable).with_name("dataflare")
    env = {k: v for k, v in os.environ.items() if k not in ("DATAFLARE_HOME", "DAGSTER_HOME")}
    env.pop("DATAFLARE_TOKEN", None)
    # The keys the quickstart creates outside its home (plugin lock key, the keyring of
    # sealed_persons' encrypt step) go to a per-test config dir, not the user's.
    env["XDG_CONFIG_HOME"] = str(base / "xdg-config")
    # A viewer to sign in with and a viewer token for the test's client; the quickstart's
    # first start then finds a user and prints no admin credentials (it mints its own
    # launcher token either way).
    store = IdentityStore(ProjectHome.resolve(home).ensure().root)
    LocalUsers(store).add(VIEWER, VIEWER_PASSWORD, frozenset({"viewer"}))
    _, token = ServiceTokens(store).create("quickstart-test", frozenset({"viewer"}))
    with output.open("w") as out:
        proc = subprocess.Popen(
            [
                *(str(dataflare), "quickstart", "--home", str(home), "--port", str(port)),
                *("--rate", "1000", "--status-every", "2"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, "COLUMNS": "400"},
            start_new_session=True,
        )
    started = Quickstart(proc, port, home, output, token)
    try:
        yield started
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=600)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        group = started.dagster_group()
        if group is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def rows_by_stream(text: str) -> dict[str, int]:
    """Rows per stream table in the quickstart's newest status line."""
    lines = [line for line in text.splitlines() if "producer" in line and " rows" in line]
    if not lines:
        return {}
    return {name: int(rows.replace(",", "")) for name, rows, _ in STATUS.findall(lines[-1])}


def test_the_quickstart_shows_rows_in_every_stream_table(quickstart):
    """Follows the quickstart's own status lines until every shipped pipeline's table has
    rows (its continuous run wrote and checkpointed output of live events)."""
    deadline = time.monotonic() + CEILING_S
    rows: dict[str, int] = {}
    while time.monotonic() < deadline:
        assert quickstart.proc.poll() is None, quickstart.text()[-4000:]
        rows = rows_by_stream(quickstart.text())
        if set(rows) == set(STREAMS) and all(rows.values()):
            break
        time.sleep(2)
    assert set(rows) == set(STREAMS), quickstart.text()[-4000:]
    assert all(rows.values()), rows
    assert "producer" in quickstart.text() and "events/s" in quickstart.text()


def _chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("DATAFLARE_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required here (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium); CI installs it")
    return found


# The metadata table shows when each value was recorded between label and value.
_RECORDED = r"(?:[A-Z][a-z]{2} \d{1,2}, \d{1,2}:\d{2}(?::\d{2})? [AP]M\s+)?"


def metadata_number(page: str, label: str) -> float | None:
    """The number shown next to ``label`` in the asset page's metadata table."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    found = re.search(re.escape(label) + r"\s+" + _RECORDED + r"(-?[\d,]+(?:\.\d+)?)", text)
    return float(found.group(1).replace(",", "")) if found else None


def test_the_stream_asset_page_shows_rows_and_a_current_rate(quickstart, tmp_path):
    """The hot_items asset's page (latest continuous checkpoint) in a real browser: output
    rows (``events_out``) and a non-zero ``events_per_s``; screenshots kept."""
    from dataflare_platform.client import DataflareClient
    from dataflare_platform.home import LOCATION_NAME

    chromium = _chromium()
    client = DataflareClient(port=quickstart.port, timeout_s=60, token=quickstart.token)
    # One code-location name everywhere (as under `make ui` and in the demo's runs).
    assert {ref.location for ref in client.jobs()} == {LOCATION_NAME}
    deadline = time.monotonic() + CEILING_S
    # Follow the checkpoints until one reports output and a rate.
    while time.monotonic() < deadline:
        assert quickstart.proc.poll() is None, quickstart.text()[-4000:]
        meta = client.asset_metadata(["streams", "hot_items"])
        if meta.get("events_out", 0) > 0 and meta.get("events_per_s", 0) > 0:
            break
        time.sleep(2)
    base = f"http://127.0.0.1:{quickstart.port}"
    url = f"{base}/assets/streams/hot_items"
    folder = ARTIFACTS / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    browser = DevToolsChromium(chromium, tmp_path / "profile", window="1400,1400")
    try:
        browser.sign_in(base, VIEWER, VIEWER_PASSWORD)
        page, rate, rows = "", None, None
        for _attempt in range(10):  # a checkpoint without output may land between renders
            browser.call("Page.navigate", url=url)
            with contextlib.suppress(AssertionError):
                browser.wait_for("document.body.innerText.includes('events_per_s')", 60)
                time.sleep(1)  # the values render just after the labels
                browser.dismiss_first_visit_dialog()
            page = browser.js("document.documentElement.outerHTML") or ""
            rate, rows = metadata_number(page, "events_per_s"), metadata_number(page, "events_out")
            if rate and rows:
                break
        (folder / "quickstart-hot-items.html").write_text(page)
        assert rate is not None and rate > 0, "no non-zero events_per_s on the asset page"
        assert rows is not None and rows > 0, "no output rows (events_out) on the asset page"
        for shot in (folder / "quickstart-hot-items.png", tmp_path / "quickstart-hot-items.png"):
            browser.screenshot(shot)
            assert shot.stat().st_size > 10_000
    finally:
        browser.close()


def test_ctrl_c_stops_the_runs_the_producer_and_dagster(quickstart, monkeypatch):
    import dagster as dg

    from dataflare_platform.home import ProjectHome

    quickstart.proc.send_signal(signal.SIGINT)
    assert quickstart.proc.wait(timeout=600) == 0, quickstart.text()[-4000:]
    text = quickstart.text()
    assert "producer stopped:" in text and "web front stopped" in text, text[-3000:]
    group = quickstart.dagster_group()
    assert group is not None
    assert live_members(group) == []  # the whole web front process group has stopped
    assert processes_of(quickstart.home) == []
    for key, value in ProjectHome.resolve(quickstart.home).environ().items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.get() as instance:
        runs = [
            r
            for r in instance.get_runs()
            if r.job_name.endswith("_continuous") and r.job_name[: -len("_continuous")] in STREAMS
        ]
        assert {r.job_name for r in runs} == {f"{s}_continuous" for s in STREAMS}
        assert all(r.is_finished for r in runs), [(r.job_name, r.status) for r in runs]
