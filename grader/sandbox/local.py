"""The local sandbox: each stage is a confined child of a warm fork server. The default for self-checks and CI.

One fork server (``grader.sandbox.forkserver``) per torch thread count imports torch once; every stage is a
fork of it, confined by ``confine`` before any student code runs, so a stage costs a fork, not a fresh
interpreter importing torch. Weaker than Docker, and documented so: it shares the host kernel (the
allow-list root shows only the system folders, Python, the grader package and the stage's own folders), and
its memory limit is an rlimit, not a cgroup (the address space; with a GPU, the private data segment).
"""
from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import IO

from grader.sandbox.base import (OOM_SIGNS, InfrastructureError, SandboxRequest, SandboxRun, runner_args,
                                 share_with_sandbox)
from grader.sandbox.confine import MARKER

__all__ = ["LocalSandbox", "OutputTail"]

KILL_WAIT_S = 15.0  # a killed stage's exit must be reported by then, or the server is broken


class OutputTail:
    """Keeps the head and the tail of a stream, at most ``limit`` bytes, counting what it dropped."""

    def __init__(self, limit: int) -> None:
        self.limit, self.head, self.tail, self.dropped = limit, bytearray(), bytearray(), 0

    def feed(self, chunk: bytes) -> None:
        room = self.limit // 2 - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        excess = len(self.tail) - self.limit // 2
        if excess > 0:
            del self.tail[:excess]
            self.dropped += excess

    def text(self) -> str:
        middle = f"\n... [{self.dropped} bytes of output dropped] ...\n" if self.dropped else ""
        return (bytes(self.head).decode(errors="replace") + middle + bytes(self.tail).decode(errors="replace"))


def _pump(stream: IO[bytes], tail: OutputTail) -> None:
    while chunk := stream.read1(65536):
        tail.feed(chunk)


class _Stage:
    def __init__(self, ident: int) -> None:
        self.ident, self.done = ident, threading.Event()
        self.exit_code: int | None = None
        self.error = ""


class _ForkServer:
    """The grader's end of one fork server: starts stages, kills them, hears how they ended."""

    def __init__(self, python: str, threads: int) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        threads_s = str(threads)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
               "PYTHONHASHSEED": "0", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg",
               "OMP_NUM_THREADS": threads_s, "MKL_NUM_THREADS": threads_s, "OPENBLAS_NUM_THREADS": threads_s,
               **_machine_quirks()}
        self.log = tempfile.TemporaryFile()  # the server's own stderr, quoted if it dies
        argv = [python, "-s", "-m", "grader.sandbox.forkserver", "--fd", str(theirs.fileno()),
                "--parent-pid", str(os.getpid())]
        try:
            self.proc = _launch(argv, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=self.log, env=env, cwd="/",
                                start_new_session=True)
        except OSError as exc:
            raise InfrastructureError(f"cannot start the local sandbox's fork server {python}: {exc}") from exc
        finally:
            theirs.close()
        self.sock, self.lock, self.pending, self.last_id, self.dead = mine, threading.Lock(), {}, 0, ""
        self.python = python
        self.listener = threading.Thread(target=self._listen, name="forkserver-listener", daemon=True)
        self.listener.start()

    def start(self, payload: dict, fds: list[int]) -> _Stage:
        with self.lock:
            if self.dead:
                raise InfrastructureError(self.dead)
            self.last_id += 1
            stage = self.pending[self.last_id] = _Stage(self.last_id)
            try:
                socket.send_fds(self.sock, [json.dumps({**payload, "op": "run", "id": stage.ident}).encode()], fds)
                return stage
            except OSError as exc:
                del self.pending[stage.ident]
                failure = exc
        self.listener.join(timeout=10)  # it says how the server ended
        raise InfrastructureError(self.dead or f"the local sandbox's fork server is gone: {failure}")

    def preload(self) -> None:
        try:
            self.sock.send(json.dumps({"op": "preload"}).encode())
        except OSError:  # gone: the next stage starts a new server
            pass

    def kill(self, stage: _Stage) -> None:
        try:
            self.sock.send(json.dumps({"op": "kill", "id": stage.ident}).encode())
        except OSError:  # the server is gone, and its stages with it
            pass

    def close(self) -> None:
        """Closing the socket makes the server kill every stage and exit."""
        self.sock.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _listen(self) -> None:
        while True:
            try:
                message = self.sock.recv(1 << 16)
            except OSError:
                message = b""
            if not message:
                break
            event = json.loads(message)
            with self.lock:
                stage = self.pending.get(event["id"])
                if stage is not None and ("exit" in event or "error" in event):
                    del self.pending[event["id"]]
                    stage.exit_code, stage.error = event.get("exit"), event.get("error", "")
                    stage.done.set()
        self.proc.wait()
        self.log.seek(0)
        tail = self.log.read()[-2000:].decode(errors="replace").strip()
        with self.lock:
            self.dead = (f"the local sandbox's fork server ({self.python}) ended (exit code {self.proc.returncode})"
                         + (f": {tail}" if tail else ""))
            for stage in self.pending.values():
                stage.error = self.dead
                stage.done.set()
            self.pending.clear()


class LocalSandbox:
    name = "local"

    def __init__(self, *, python: str = sys.executable) -> None:
        self.python = python
        self._servers: dict[int, _ForkServer] = {}  # torch threads -> server (set before torch is imported)
        self._lock = threading.Lock()
        self._aborted = False

    def abort(self) -> None:
        """Kill every running stage and refuse new ones (the grader was interrupted)."""
        with self._lock:
            self._aborted = True
        self.close()

    def close(self) -> None:
        """Stop the fork servers (and so every stage); a later stage starts a new one."""
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.close()

    def describe(self) -> dict:
        return {"engine": self.name, "python": self.python}

    def warm_up(self, threads: int) -> None:
        """Start the fork server and have it import torch now, while the host prepares the batch."""
        self._server(threads).preload()

    def run(self, request: SandboxRequest) -> SandboxRun:
        return self._stage(request, {"runner": runner_args(str(request.job_dir), str(request.out_dir),
                                                           str(request.submission_dir), request.stage)})

    def run_argv(self, command: list[str], request: SandboxRequest) -> SandboxRun:
        """Run ``command`` confined as ``request`` says (tests use it to run hostile programs)."""
        return self._stage(request, {"argv": command})

    def _server(self, threads: int) -> _ForkServer:
        with self._lock:
            if self._aborted:
                raise InfrastructureError("the grader was interrupted")
            server = self._servers.get(threads)
            if server is None or server.dead:
                server = self._servers[threads] = _ForkServer(self.python, threads)
            return server

    def _stage(self, request: SandboxRequest, what: dict) -> SandboxRun:
        share_with_sandbox(request)
        for d in (request.job_dir, request.submission_dir, request.out_dir):
            _traversable_parents(d)  # needed only where the kernel refuses the allow-list root
        with tempfile.TemporaryDirectory(prefix="seg-sandbox-") as scratch, \
                tempfile.TemporaryDirectory(prefix="seg-root-") as root_dir:
            os.chmod(scratch, 0o777)
            settings = self._confine_config(request, scratch, root_dir)
            _refuse_exposed_secrets(settings["expose"], request.hidden_paths)
            return self._spawn({"config": settings, **what}, request)

    def _confine_config(self, request: SandboxRequest, scratch: str, root_dir: str) -> dict:
        prefixes = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(os.path.realpath(self.python)))}
        package = str(Path(__file__).resolve().parent.parent)  # grader/ itself (the runner), never reference/
        expose = [[p, False] for p in sorted(prefixes | {package})] + [
            [str(request.job_dir), False], [str(request.submission_dir), False], [str(request.out_dir), True],
            [scratch, True]]
        return {"root_dir": root_dir, "expose": expose,
                "cwd": scratch, "env": self._env(request, scratch),
                "memory_mb": request.memory_mb, "gpu": request.gpu is not None, "max_processes": request.max_processes,
                "max_file_mb": request.max_file_mb}

    def _env(self, request: SandboxRequest, scratch: str) -> dict[str, str]:
        threads = str(request.threads)
        return {"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MPLBACKEND": "Agg",
                "CUDA_VISIBLE_DEVICES": request.gpu if request.gpu is not None else "", **_machine_quirks()}

    def _spawn(self, payload: dict, request: SandboxRequest) -> SandboxRun:
        out, err = OutputTail(request.max_output_bytes), OutputTail(request.max_output_bytes)
        (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
        start = time.monotonic()
        try:
            server = self._server(request.threads)
            stage = server.start(payload, [out_w, err_w])
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        pumps = [threading.Thread(target=_pump, args=(open(fd, "rb"), tail), daemon=True)
                 for fd, tail in ((out_r, out), (err_r, err))]
        for p in pumps:
            p.start()
        timed_out = False
        try:
            timed_out = not stage.done.wait(timeout=request.timeout_s)
        finally:  # also on KeyboardInterrupt: never leave a student's stage behind
            if not stage.done.is_set():
                server.kill(stage)
                stage.done.wait(timeout=KILL_WAIT_S)
        duration = time.monotonic() - start
        for p in pumps:
            p.join(timeout=5)
        if not stage.done.is_set():
            raise InfrastructureError(f"the local sandbox could not kill a stage within {KILL_WAIT_S:g} s")
        if stage.error:
            raise InfrastructureError(stage.error)
        isolation, stderr = _split_marker(err.text())
        if isolation is None:  # the stage ended before confine reported: the grader's failure, not the student's
            raise InfrastructureError(f"the local sandbox did not start the stage (exit code {stage.exit_code}): "
                                      f"{stderr.strip()[-1500:] or 'no output'}")
        return SandboxRun(exit_code=None if timed_out else stage.exit_code, timed_out=timed_out,
                          out_of_memory=not timed_out and any(s in stderr for s in OOM_SIGNS),
                          duration_s=duration, stdout=out.text(), stderr=stderr,
                          output_truncated=bool(out.dropped or err.dropped), isolation=isolation)


def _machine_quirks() -> dict[str, str]:
    return {key: os.environ[key] for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # not secrets
            if key in os.environ}


_LAUNCHES: queue.Queue = queue.Queue()
_LAUNCHER_LOCK = threading.Lock()


def _launch(argv: list[str], **popen: object) -> subprocess.Popen:
    """Popen from one thread that lives as long as the grader: a child's parent-death signal fires when the
    THREAD that started it ends, and a batch's worker threads end before its sandbox does."""
    with _LAUNCHER_LOCK:
        if not any(t.name == "forkserver-launcher" for t in threading.enumerate()):
            threading.Thread(target=_launcher, name="forkserver-launcher", daemon=True).start()
    done: Future = Future()
    _LAUNCHES.put((argv, popen, done))
    return done.result()


def _launcher() -> None:
    while True:
        argv, popen, done = _LAUNCHES.get()
        try:
            done.set_result(subprocess.Popen(argv, **popen))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            done.set_exception(exc)


def _refuse_exposed_secrets(expose: list, hidden: tuple[Path, ...]) -> None:
    """The allow-list root shows only what is exposed: a hidden path must not lie inside any of it."""
    for path, _ in expose:
        for secret in hidden:
            if Path(secret).resolve().is_relative_to(Path(path).resolve()):
                raise InfrastructureError(f"{secret} (hidden from students) lies inside {path}, which the "
                                          "sandbox must show; move the results / cache / reference elsewhere")


def _traversable_parents(path: Path) -> None:
    """The sandbox runs as nobody when the grader is root: our folders' parents must be enterable."""
    for parent in path.parents:
        if str(parent) in ("/tmp", "/") or parent.stat().st_uid != os.getuid():
            break
        if parent.stat().st_mode & 0o001 == 0:
            os.chmod(parent, parent.stat().st_mode | 0o001)


def _split_marker(stderr: str) -> tuple[str | None, str]:
    """(what isolated the stage, the student's stderr); None when the confinement never reported."""
    first, _, rest = stderr.partition("\n")
    if first.startswith(MARKER):
        return first[len(MARKER):], rest
    return None, stderr
