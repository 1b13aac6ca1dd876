"""The reports in a real headless Chromium: no console errors, no failed or outgoing requests, sorting works.

Chromium is driven over the DevTools protocol through ``--remote-debugging-pipe`` (fd 3 in, fd 4 out,
NUL-separated JSON), with the small client below: no WebDriver, no extra Python package.
Screenshots go under tmp_path, and to $SEG_GRADER_ARTIFACTS when that is set.
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grader.report import render_all
from report_samples import FAILING_UNIT, PASSING, build_samples

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: run .ci/browser-setup.sh"),
]
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-pipe")


class Chromium:
    """A headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, profile: Path, *, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire_fds() -> None:  # the pipe protocol wants exactly fd 3 (commands) and fd 4 (replies)
            high = [os.dup(fd) for fd in (to_child_r, from_child_w)]  # neither clobbers the other; and a pipe end
            os.dup2(high[0], 3)  # already AT 3 (a fresh interpreter's first pipe) still loses close-on-exec
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=wire_fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session = self._attach()

    def _attach(self) -> str:
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=None)["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, session=None)
        return session["sessionId"]

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if not select.select([self._from_child], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise ConnectionError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None | bool = True
             ) -> dict[str, Any]:
        """Send one command (to the page's session unless ``session=None``) and wait for its answer."""
        self._next_id += 1
        command: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is True:
            command["sessionId"] = self.session
        os.write(self._to_child, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            message = self._read_message(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str) -> dict[str, Any]:
        """Wait for the next event named ``method`` (events seen earlier are kept in ``events``)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            message = self._read_message(deadline)
            self.events.append(message)
            if message.get("method") == method:
                return message

    def open(self, url: str) -> None:
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def screenshot(self, path: Path) -> Path:
        self.call("Emulation.setDeviceMetricsOverride", {"width": 1100, "height": 800, "deviceScaleFactor": 1,
                                                          "mobile": False})  # measure at the shot's width
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        self.call("Emulation.setDeviceMetricsOverride", {"width": 1100, "height": int(min(size["height"], 12000)),
                                                          "deviceScaleFactor": 1, "mobile": False})
        shot = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.call("Browser.close", session=None)
        except (OSError, TimeoutError, ConnectionError, RuntimeError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_child)
        os.close(self._from_child)


def problems(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions, failed loads and any request that is not file: or data:."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Runtime.exceptionThrown":
            found.append(f"exception: {params.get('exceptionDetails')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            found.append(f"failed request: {params.get('errorText')} {params.get('blockedReason', '')}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("file:", "data:")):
                found.append(f"request leaves the page: {url}")
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = build_samples(tmp_path_factory.mktemp("browser"))
    render_all(out)
    return out


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Chromium]:
    chromium = Chromium(tmp_path / "profile")
    yield chromium
    chromium.close()


def _keep(shot: Path) -> None:
    target = os.environ.get("SEG_GRADER_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(target) / shot.name)


@pytest.mark.parametrize("student", [PASSING, FAILING_UNIT])
def test_student_report_loads_cleanly(site: Path, browser: Chromium, tmp_path: Path, student: str) -> None:
    browser.open((site / student / "report.html").as_uri())
    shot = browser.screenshot(tmp_path / f"report-{student}.png")
    _keep(shot)
    assert problems(browser.events) == []
    assert browser.evaluate("document.querySelectorAll('img').length") >= 1
    assert browser.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    assert browser.evaluate("document.querySelectorAll('script').length") == 0
    assert shot.stat().st_size > 10_000


def test_summary_loads_cleanly_and_sorts(site: Path, browser: Chromium, tmp_path: Path) -> None:
    browser.open((site / "index.html").as_uri())
    shot = browser.screenshot(tmp_path / "summary.png")
    _keep(shot)
    assert problems(browser.events) == []
    first_cells = "Array.from(document.querySelectorAll('#students tbody tr')).map(r => r.cells[{}].dataset.sort)"
    browser.evaluate("document.querySelectorAll('#students th button')[2].click()")  # score, ascending
    scores = [s for s in browser.evaluate(first_cells.format(2)) if s != ""]
    assert scores == sorted(scores, key=float)
    assert browser.evaluate(first_cells.format(2))[-1] == ""  # not graded sorts last
    browser.evaluate("document.querySelectorAll('#students th button')[2].click()")  # descending
    again = [s for s in browser.evaluate(first_cells.format(2)) if s != ""]
    assert again == sorted(scores, key=float, reverse=True)
    href = browser.evaluate("document.querySelector('#students a').getAttribute('href')")
    assert href.endswith("/report.html") and not href.startswith(("/", "http"))
