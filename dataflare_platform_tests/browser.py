"""Headless Chromium for tests that must prove a page renders (Debian's chromium)."""

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest


def chromium_binary() -> str:
    """The browser binary; its absence is a failure, not a skip: this test is the only
    proof that the page renders, and CI installs the browser."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "chromium is not installed: run `apt-get install -y chromium` (Debian; .ci/run"
            " does this in CI) to render pages in a headless browser",
            pytrace=False,
        )
    return found


def run_chromium(binary: str, profile: Path, url: str, *extra: str) -> str:
    """One headless Chromium run, flags as in e2e/test_ui_browser (root, closed network)."""
    result = subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class DevToolsChromium:
    """Headless Chromium driven over the DevTools protocol (fill a form, run script,
    screenshot)."""

    def __init__(self, binary: str, profile: Path, window: str = "1400,900") -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--window-size={window}",
                f"--remote-debugging-port={self.port}",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list") as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.3)
        from websockets.sync.client import connect

        self._stack = ExitStack()
        self.ws = self._stack.enter_context(
            connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024)
        )
        self._id = 0

    def call(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=120))
            if message.get("id") == self._id:
                assert "error" not in message, message
                return message["result"]

    def send(self, method: str, **params) -> int:
        """Send a command without waiting for its answer (for one that waits on events)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        return self._id

    def wait_event(self, method: str, ceiling_s: float = 120) -> dict:
        """The parameters of the next event named ``method`` (other messages skipped)."""
        deadline = time.monotonic() + ceiling_s
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv(timeout=max(1.0, deadline - time.monotonic())))
            if message.get("method") == method:
                return message["params"]
        raise AssertionError(f"no {method} within {ceiling_s:g} s")

    def js(self, expression: str):
        result = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        return result["result"].get("value")

    def wait_for(self, expression: str, ceiling_s: float = 120):
        deadline = time.monotonic() + ceiling_s
        while time.monotonic() < deadline:
            try:
                value = self.js(expression)
            except AssertionError as err:
                # An evaluation sent while the page is being replaced (a click that
                # navigates) is refused; the new page is asked at the next turn.
                if "Inspected target navigated or closed" not in str(err):
                    raise
                value = None
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"{expression} stayed false for {ceiling_s:g} s")

    def close(self) -> None:
        self._stack.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def sign_in(self, base: str, username: str, password: str, code: str = "") -> None:
        """Sign in through the web front's login form, as a person would."""
        self.call("Page.enable")
        self.call("Page.navigate", url=f"{base}/login")
        self.wait_for("location.pathname === '/login' && !!document.forms[0]")
        self.js(
            "(() => { const f = document.forms[0];"
            f" f.username.value = {json.dumps(username)};"
            f" f.password.value = {json.dumps(password)};"
            f" f.code.value = {json.dumps(code)}; f.submit(); }})()"
        )
        self.wait_for("location.pathname !== '/login'")

    SKIP_BUTTON = "[...document.querySelectorAll('button')].find(b => b.innerText === 'Skip')"

    def dismiss_first_visit_dialog(self) -> bool:
        """Click "Skip" on Dagster's first-visit dialog if it shows (a ``setNuxSeen``
        mutation the UI sends itself); True when it was there and went away."""
        if not self.js(f"!!{self.SKIP_BUTTON}"):
            return False
        self.js(f"{self.SKIP_BUTTON}.click()")
        self.wait_for(f"!{self.SKIP_BUTTON}", 30)
        return True

    def screenshot(self, target: Path) -> None:
        shot = self.call("Page.captureScreenshot", format="png")["data"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(shot))
