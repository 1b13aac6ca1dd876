"""``grader serve``: parse, then run the web process and its grading worker, or write the personal links.

    grader serve --data DIR [--host 127.0.0.1] [--port 8000] [--rubric R] [-j N] [--sandbox local|docker]
                 [--executor pool|ray [--address HOST:PORT]] [--attempts 5 --window-hours 24] [--due ISO]
    grader serve tokens --data DIR --roster roster.csv [--base-url URL]   # DIR/tokens.csv, printed
    grader serve tokens --data DIR --staff NAME                           # a staff link, printed
    grader serve tokens --data DIR --revoke NAME                          # NAME's links stop working

This module imports neither FastAPI nor uvicorn until the server starts (they are the ``serve`` extra).
"""
from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction, *, default_rubric: Path) -> None:
    serve = sub.add_parser("serve", help="run the submission service (students upload, see live status and "
                                         "reports); `grader serve tokens` writes their personal links")
    serve.add_argument("action", nargs="?", choices=("run", "tokens"), default="run",
                       help="run (default): the web server and its grading worker; tokens: personal links")
    serve.add_argument("--data", type=Path, required=True, help="the service's folder: results, serve.sqlite, uploads")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: put a TLS "
                                                           "reverse proxy in front to open it)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--base-url", default=None, help="tokens: the address students open (default "
                                                        "http://HOST:PORT)")
    serve.add_argument("--roster", type=Path, help="tokens: CSV with a `student` column (and `email`)")
    serve.add_argument("--staff", metavar="NAME", help="tokens: print a staff link for NAME")
    serve.add_argument("--revoke", metavar="NAME", help="tokens: withdraw every link of NAME")
    serve.add_argument("--days", type=float, default=180, help="tokens: days a link stays valid (default 180)")
    serve.add_argument("--rubric", type=Path, default=default_rubric, help="rubric YAML (default: %(default)s)")
    serve.add_argument("--sandbox", choices=("local", "docker"), default="local")
    serve.add_argument("--image", default=None, help="docker image (default: the grading image)")
    serve.add_argument("--executor", choices=("pool", "ray"), default="pool",
                       help="pool: this machine (default); ray: one Ray task per submission")
    serve.add_argument("--address", default=None, help="--executor ray: the cluster (default $RAY_ADDRESS)")
    serve.add_argument("-j", "--jobs", type=int, default=1, help="submissions graded at once (CPU)")
    serve.add_argument("--gpus", default="", help="GPU indices, e.g. 0,1")
    serve.add_argument("--jobs-per-gpu", type=int, default=1, metavar="K")
    serve.add_argument("--cache-dir", type=Path, default=None, help="dataset cache (default ~/.cache/seg-autograder)")
    serve.add_argument("--attempts", type=int, default=5, help="graded attempts per student per window (default 5)")
    serve.add_argument("--window-hours", type=float, default=24, help="the attempt window (default 24 h)")
    serve.add_argument("--max-upload-mb", type=float, default=20, help="upload size cap (default 20 MB)")
    serve.add_argument("--due", default=None, help="uploads close, ISO 8601 (UTC unless an offset is given); "
                                                   "default: the rubric's late: hard_deadline, if any (uploads "
                                                   "after late.due are then accepted as late)")


def _config(args: argparse.Namespace):  # -> ServeConfig
    from grader.rubric import load_rubric
    from grader.serve.config import ServeConfig, parse_due

    late = load_rubric(Path(args.rubric)).late  # the rubric's late: policy, where there is one

    return ServeConfig(data=str(args.data.resolve()), rubric=str(Path(args.rubric).resolve()), sandbox=args.sandbox,
                       image=args.image, executor=args.executor, ray_address=args.address, jobs=args.jobs,
                       gpus=tuple(g.strip() for g in args.gpus.split(",") if g.strip()),
                       jobs_per_gpu=args.jobs_per_gpu, cache_dir=str(args.cache_dir) if args.cache_dir else None,
                       attempts=args.attempts, window_hours=args.window_hours, max_upload_mb=args.max_upload_mb,
                       due=parse_due(args.due) if args.due else None,
                       late_due=late.due.timestamp() if late else None,
                       late_closes=late.hard_deadline.timestamp() if late and late.hard_deadline else None)


def run(args: argparse.Namespace) -> int:
    try:
        return _tokens(args) if args.action == "tokens" else _serve(args)
    except ValueError as exc:  # a bad --due, a bad roster
        print(f"grader serve: {exc}", file=sys.stderr)
        return 2


def _tokens(args: argparse.Namespace) -> int:
    from grader.serve.store import Store
    from grader.serve.tokens import issue_links, link_of, read_roster, write_tokens_csv

    args.data.mkdir(parents=True, exist_ok=True)
    store = Store(args.data)
    base = args.base_url or f"http://{args.host}:{args.port}"
    if args.revoke:
        print(f"Revoked {store.revoke(args.revoke)} link(s) of {args.revoke}.")
        return 0
    if args.staff:
        print(f"Staff link for {args.staff} (keep it private): "
              f"{link_of(base, store.add_token(args.staff, role='staff', days=args.days))}")
        return 0
    if not args.roster:
        print("grader serve tokens: give --roster roster.csv (or --staff NAME, or --revoke NAME)", file=sys.stderr)
        return 2
    links = issue_links(store, read_roster(args.roster), base_url=base, days=args.days)
    path = write_tokens_csv(args.data, links)
    for link in links:
        print(f"{link.student},{link.email},{link.link}")
    print(f"Wrote {len(links)} personal link(s) to {path} (earlier links of these students no longer work).",
          file=sys.stderr)
    return 0


class _Supervisor:
    """The grading worker, restarted when it dies unexpectedly (what it was grading is requeued by the new one);
    after ``MAX_RESTARTS`` in ten minutes it is left down and says so (the queue waits, nothing is lost)."""

    MAX_RESTARTS = 5

    def __init__(self, config) -> None:  # noqa: ANN001 - a ServeConfig
        self.config, self.process, self.returncode = config, None, None
        self.restarts: list[float] = []
        self._stopping = threading.Event()

    def start(self) -> bool:
        self.process = subprocess.Popen([sys.executable, "-m", "grader.serve.worker", self.config.to_json(),
                                         str(os.getpid())], stdin=subprocess.DEVNULL)
        time.sleep(0.2)
        self.returncode = self.process.poll()
        return self.returncode is None

    def watch(self) -> None:
        while not self._stopping.wait(1.0):
            code = self.process.poll()
            if code is None or self._stopping.is_set():
                continue
            now = time.time()
            self.restarts = [t for t in self.restarts if now - t < 600]
            if code == 2 or len(self.restarts) >= self.MAX_RESTARTS:
                print(f"grader serve: the grading worker stopped (exit {code}) and is NOT restarted; uploads "
                      "wait in the queue: restart `grader serve`", file=sys.stderr)
                return
            print(f"grader serve: the grading worker stopped (exit {code}); starting a new one", file=sys.stderr)
            self.restarts.append(now)
            self.start()

    def stop(self) -> None:
        self._stopping.set()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from grader.serve.app import create_app
    except ImportError as exc:
        print(f"grader serve needs the `serve` extra ({exc}): pip install -e '.[serve]'", file=sys.stderr)
        return 2
    from grader.rubric import RubricError, load_rubric

    try:
        load_rubric(Path(args.rubric))
    except RubricError as exc:
        print(f"grader serve: invalid rubric {args.rubric}: {exc}", file=sys.stderr)
        return 2
    config = _config(args)
    (args.data / ".serve").mkdir(parents=True, exist_ok=True)
    (args.data / ".serve").chmod(0o700)  # uploads and history: the service's user only
    lock = os.open(args.data / ".serve" / "web.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"grader serve: another `grader serve` already uses {args.data}", file=sys.stderr)
        return 2
    supervisor = _Supervisor(config)
    if not supervisor.start():
        print("grader serve: the grading worker did not start (see above)", file=sys.stderr)
        return 2 if supervisor.returncode == 2 else 3
    print(f"grader serve: http://{args.host}:{args.port} (data in {args.data}); students sign in with the links "
          f"of `grader serve tokens`, staff with `grader serve tokens --staff NAME`", file=sys.stderr)
    watching = threading.Thread(target=supervisor.watch, name="worker-supervisor", daemon=True)
    watching.start()
    try:
        uvicorn.run(create_app(config), host=args.host, port=args.port, access_log=False, log_level="warning",
                    proxy_headers=True, forwarded_allow_ips="127.0.0.1")
    finally:
        supervisor.stop()
    return 0
