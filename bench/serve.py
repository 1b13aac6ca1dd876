"""The submission service's cost: a class through `grader serve` vs the same class through `grader grade`.

Usage: python bench/serve.py [--n 8] [--jobs 2] [--tiny] [--rounds 1]
Each round: (1) `grader grade CLASS -j J` as a TA runs it (interpreter start to the reports); (2) the running
service (`grader serve -j J`, uvicorn on loopback and its worker), every student signs in and uploads at once
over HTTP and polls its page's status every second as the page does; the clock stops when the store has every
submission `done`. Then, with the service idle, one more upload:
the time until its answer (the page with its queue place) and until /api/status first shows it moving on
(the upload -> first status update time). Goal: the service adds at most 5 % to the class's wall time.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from common import (MODERATE_RUBRIC, REPO, TINY_RUBRIC, grader_command, machine, run_grader,  # noqa: I001
                    write_class, write_rubric)

from grader.serve.store import Store

__all__ = ["main"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(data: Path, rubric: Path, cache: Path, jobs: int, port: int, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        server = subprocess.Popen([sys.executable, "-m", "grader", "serve", "--data", str(data), "--port", str(port),
                                   "--rubric", str(rubric), "--cache-dir", str(cache), "-j", str(jobs),
                                   "--attempts", "100"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("grader serve did not start: " + log.read_text())


def _sign_in(link: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(timeout=60)
    page = client.get(link, follow_redirects=True)
    return client, re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def _states(client: httpx.Client, base: str) -> list[dict]:
    return client.get(f"{base}/api/status").json()["submissions"]


def _poll_like_a_page(client: httpx.Client, base: str) -> None:
    while _states(client, base)[0]["status"] != "done":
        time.sleep(1.0)


def _service_round(klass: Path, work: Path, rubric: Path, cache: Path, jobs: int) -> tuple[float, float, float]:
    data, port = work / "data", _port()
    base = f"http://127.0.0.1:{port}"
    students = sorted(p.name for p in klass.iterdir())
    (work / "roster.csv").write_text("student\n" + "\n".join(students) + "\n")
    subprocess.run([sys.executable, "-m", "grader", "serve", "tokens", "--data", str(data), "--roster",
                    str(work / "roster.csv"), "--base-url", base], check=True, cwd=REPO, capture_output=True)
    with open(data / "tokens.csv", newline="") as f:
        links = {r["student"]: r["link"] for r in csv.DictReader(f)}
    server = _start(data, rubric, cache, jobs, port, work / "serve.log")
    try:
        sessions = {s: _sign_in(links[s]) for s in students}

        def upload(student: str) -> None:
            client, csrf = sessions[student]
            body = (klass / student / "segmentation.py").read_bytes()
            answer = client.post(f"{base}/submit", data={"csrf": csrf}, files={"file": ("segmentation.py", body)})
            assert answer.status_code == 303, answer.text

        store = Store(data)
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(upload, students))
            # each student's page polls /api/status every second while busy (grader/serve/static/app.js)
            pages = [pool.submit(_poll_like_a_page, sessions[s][0], base) for s in students]
            while len(store.submissions(status=("done",))) < len(students):  # the clock: the store, read directly
                time.sleep(0.05)
            class_s = time.perf_counter() - started
            for polled in pages:
                polled.result()
        time.sleep(5)  # the worker redraws the class summary after the batch: let the service go idle
        # idle service, one more upload: its answer, then the first change /api/status shows
        client, csrf = sessions[students[0]]
        body = (klass / students[0] / "segmentation.py").read_bytes() + b"\n# again\n"
        sent = time.perf_counter()
        client.post(f"{base}/submit", data={"csrf": csrf}, files={"file": ("segmentation.py", body)})
        answered = time.perf_counter() - sent
        while _states(client, base)[0]["stage"] in ("queued", ""):
            time.sleep(0.02)
        first_update = time.perf_counter() - sent
        while _states(client, base)[0]["status"] != "done":
            time.sleep(0.1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    return class_s, answered, first_update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="unit checks only (default: unit+model+overfit)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
            work = Path(tmp)
            rubric = write_rubric(work / "rubric.yaml", TINY_RUBRIC if args.tiny else MODERATE_RUBRIC)
            klass, cache = write_class(work / "class", args.n), work / "cache"
            # the job (expected outputs, dataset) cached first, so neither side pays for preparing it
            run_grader(grader_command(klass / "student000", out=work / "warm", rubric=rubric, cache=cache))
            grade_s = run_grader(grader_command(klass, out=work / "out", rubric=rubric, cache=cache, jobs=args.jobs))
            serve_s, answered, first = _service_round(klass, work, rubric, cache, args.jobs)
            rows.append((grade_s, serve_s, answered, first))
            print(f"round {r}: grader grade {grade_s:.1f} s ({args.n / grade_s * 60:.1f}/min); service "
                  f"{serve_s:.1f} s ({args.n / serve_s * 60:.1f}/min), ratio {serve_s / grade_s:.3f}; one upload: "
                  f"answered in {answered * 1000:.0f} ms, first status update after {first:.2f} s", flush=True)
    print(f"machine: {machine()}")
    ratios = sorted(s / g for g, s, _, _ in rows)
    print(f"class of {args.n}, -j {args.jobs}: service / grader grade median {ratios[len(ratios) // 2]:.3f} "
          f"(goal <= 1.05); upload -> first status update median {sorted(f for *_, f in rows)[len(rows) // 2]:.2f} s")


if __name__ == "__main__":
    main()
