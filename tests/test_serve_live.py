"""grader serve for real: the command itself (uvicorn on loopback and its grading worker process), a real
headless Chromium as a student, and the server killed mid-grading and restarted. Both grade with
tests/rubric_small.yaml less its two training checks (seconds per submission)."""
from __future__ import annotations

import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from test_browser import CHROMIUM, Chromium, _keep  # noqa: E402 - the DevTools-pipe client the report tests use

REPO = Path(__file__).resolve().parents[1]
SMALL = REPO / "tests" / "rubric_small.yaml"
EXAMPLE = REPO / "examples" / "submissions" / "ada" / "segmentation.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``grader serve`` as a course runs it, in its own process group (so a test can kill all of it)."""

    def __init__(self, data: Path, rubric: Path, cache: Path, log: Path) -> None:
        self.data, self.rubric, self.cache, self.log = data, rubric, cache, log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def links(self, roster: dict[str, str]) -> dict[str, str]:
        path = self.data.parent / "roster.csv"
        path.write_text("student,email\n" + "".join(f"{s},{e}\n" for s, e in roster.items()))
        subprocess.run([sys.executable, "-m", "grader", "serve", "tokens", "--data", str(self.data), "--roster",
                        str(path), "--base-url", self.url], check=True, capture_output=True)
        with open(self.data / "tokens.csv", newline="") as f:
            return {r["student"]: r["link"] for r in csv.DictReader(f)}

    def start(self) -> "Server":
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "grader", "serve", "--data", str(self.data), "--port", str(self.port),
                 "--rubric", str(self.rubric), "--cache-dir", str(self.cache)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("grader serve did not answer within 60 s:\n" + self.log.read_text())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        if self.process is not None:
            try:  # anything of the group still alive (the worker's sandboxes): gone too
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@pytest.fixture
def serve(tmp_path: Path, cache_dir: Path) -> Iterator:
    started: list[Server] = []

    def make(rubric: Path = SMALL) -> Server:
        server = Server(tmp_path / "data", rubric, cache_dir, tmp_path / "serve.log")
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def _signed_in(link: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(timeout=30)
    page = client.get(link, follow_redirects=True)
    assert page.status_code == 200, page.text
    return client, re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def _wait(predicate, timeout_s: float, what: str, every: float = 0.2):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def _statuses(client: httpx.Client, url: str) -> list[dict]:
    return client.get(f"{url}/api/status").json()["submissions"]


def _quick_rubric(path: Path) -> Path:
    """tests/rubric_small.yaml without the two training checks: a few seconds of grading per submission."""
    rubric = yaml.safe_load(SMALL.read_text())
    rubric["checks"] = [c for c in rubric["checks"] if c["kind"] not in ("overfit", "full_training")]
    rubric["budgets"] = {k: v for k, v in rubric["budgets"].items() if k not in ("overfit", "train")}
    path.write_text(yaml.safe_dump(rubric))
    return path


@pytest.mark.slow
def test_killed_mid_grading_and_restarted_nothing_is_lost_or_graded_twice(serve, tmp_path: Path) -> None:
    server = serve(_quick_rubric(tmp_path / "quick.yaml"))
    links = server.links({"alice": "", "bob": ""})
    server.start()
    clients = {name: _signed_in(link) for name, link in links.items()}
    for client, csrf in clients.values():
        sent = client.post(f"{server.url}/submit", data={"csrf": csrf},
                           files={"file": ("segmentation.py", EXAMPLE.read_bytes())})
        assert sent.status_code == 303, sent.text
    alice, bob = clients["alice"][0], clients["bob"][0]
    # one batch, one job at a time: alice first; kill everything while bob's submission is in the sandbox
    _wait(lambda: _statuses(alice, server.url)[0]["status"] == "done"
          and _statuses(bob, server.url)[0]["status"] == "running", 240, "alice done and bob running", every=0.05)
    before = _statuses(alice, server.url)[0]
    server.kill()
    server.start()  # the same port and folder: the links and cookies still work
    done = _wait(lambda: (s := _statuses(bob, server.url)[0])["status"] == "done" and s, 240, "bob graded")
    assert done["score"] is not None and done["report"]
    after = _statuses(alice, server.url)
    assert after == [before]  # alice's finished result kept, not graded again
    page = bob.get(server.url + "/").text
    assert f"{done['score']:g} / {done['max_score']:g}" in page
    assert "Transpose convolution" in bob.get(server.url + done["report"]).text
    from grader.serve.store import Store

    subs = {s.student: s for s in Store(server.data).submissions()}
    assert (subs["alice"].runs, subs["bob"].runs) == (1, 2)  # bob's interrupted run, then the one that finished
    assert sorted(p.name for p in (server.data / ".serve" / "history").iterdir()) == sorted(
        str(s.id) for s in subs.values())
    assert "queued again" in server.log.read_text()


def _worker_pid(server: Server) -> int | None:
    """The grading worker: the child of ``grader serve`` that runs grader.serve.worker."""
    children = []
    for task in Path(f"/proc/{server.process.pid}/task").iterdir():  # any thread may have started it
        try:
            children += (task / "children").read_text().split()
        except OSError:
            continue
    for child in children:
        try:
            if b"grader.serve.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
        except OSError:
            continue
    return None


@pytest.mark.slow
def test_a_worker_that_dies_is_replaced_and_the_queue_goes_on(serve, tmp_path: Path) -> None:
    server = serve(_quick_rubric(tmp_path / "quick.yaml"))
    links = server.links({"alice": ""})
    server.start()
    first = _wait(lambda: _worker_pid(server), 30, "the worker")
    os.kill(first, signal.SIGKILL)  # a crash of the grading side, not of the service
    _wait(lambda: (pid := _worker_pid(server)) and pid != first, 60, "a new worker")
    client, csrf = _signed_in(links["alice"])
    sent = client.post(f"{server.url}/submit", data={"csrf": csrf},
                       files={"file": ("segmentation.py", EXAMPLE.read_bytes())})
    assert sent.status_code == 303
    _wait(lambda: _statuses(client, server.url)[0]["status"] == "done", 240, "the upload graded")
    assert "starting a new one" in server.log.read_text()


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: run .ci/browser-setup.sh")
def test_a_student_uploads_in_chromium_watches_the_status_and_reads_the_report(serve, tmp_path: Path) -> None:
    server = serve(_quick_rubric(tmp_path / "quick.yaml"))
    links = server.links({"alice": "alice@uni.edu", "bob": ""})
    server.start()
    upload = tmp_path / "segmentation.py"
    upload.write_bytes(EXAMPLE.read_bytes())
    browser = Chromium(tmp_path / "profile", timeout_s=60)
    try:
        browser.open(links["alice"])
        assert browser.evaluate("location.pathname") == "/"
        assert "0 of 5 graded attempts" in browser.evaluate("document.getElementById('attempts').textContent")
        root = browser.call("DOM.getDocument")["root"]["nodeId"]
        node = browser.call("DOM.querySelector", {"nodeId": root, "selector": "#file"})["nodeId"]
        browser.call("DOM.setFileInputFiles", {"nodeId": node, "files": [str(upload)]})
        browser.evaluate("document.getElementById('send').click()")
        browser.wait_for("Page.loadEventFired")
        assert "is queued" in browser.evaluate("document.getElementById('notice').textContent")
        browser.evaluate("window.sameLoad = true")  # gone if the page reloads
        seen: list[str] = []

        def finished() -> bool:
            text = browser.evaluate("document.querySelector('#history tbody tr .status').textContent")
            if not seen or seen[-1] != text:
                seen.append(text)
            return text == "done"

        _wait(finished, 300, "the status to reach done", every=0.1)
        assert browser.evaluate("window.sameLoad") is True, "the page reloaded"
        assert len(seen) >= 3, seen  # e.g. queued (place 1), running: <stage>, ..., done
        assert any(s.startswith("running") for s in seen), seen
        assert any(stage in s for s in seen for stage in ("importing", "unit checks", "model shapes")), seen
        score = browser.evaluate("document.querySelector('#history tbody tr .score').textContent")
        # rubric_small without its training checks: 65 points, 60 of them visible before release
        assert re.fullmatch(r"\d+(\.\d+)? / 60", score), score
        assert "1 of 5 graded attempts" in browser.evaluate("document.getElementById('attempts').textContent")
        _keep(browser.screenshot(tmp_path / "serve-student-page.png"))
        browser.evaluate("document.querySelector('#history tbody tr .report a').click()")
        browser.wait_for("Page.loadEventFired")
        report = browser.evaluate("document.body.innerText")
        assert "alice" in report and "Transpose convolution" in report
        assert score.split(" / ")[0] in report
        assert browser.evaluate("location.pathname").startswith("/submissions/")
        report_url = browser.evaluate("location.href")
        problems = _problems(browser.events, server.url)
        assert not problems, problems
    finally:
        browser.close()
    bob, _ = _signed_in(links["bob"])  # a second student: none of alice's pages
    assert bob.get(report_url).status_code == 404
    assert bob.get(f"{server.url}/api/status").json()["submissions"] == []


def _problems(events: list[dict], base: str) -> list[str]:
    """Console errors, exceptions, failed loads, and any request that leaves the service."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Runtime.exceptionThrown":
            found.append(f"exception: {params.get('exceptionDetails')}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            found.append(f"failed request: {params.get('errorText')} {params.get('blockedReason', '')}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith((base, "data:")):
                found.append(f"request leaves the service: {url}")
    return found
