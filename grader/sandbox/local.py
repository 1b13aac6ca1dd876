"""The local sandbox: a confined child process (see ``confine``). The default for self-checks and CI.

Weaker than Docker, and documented so: it shares the host kernel and filesystem (minus the hidden
paths), and its memory limit is an address-space rlimit, not a cgroup.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from grader.sandbox.base import (OOM_SIGNS, InfrastructureError, SandboxRequest, SandboxRun, runner_argv,
                                 share_with_sandbox)
from grader.sandbox.confine import MARKER

__all__ = ["LocalSandbox", "OutputTail"]



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


class LocalSandbox:
    name = "local"

    def __init__(self, *, python: str = sys.executable) -> None:
        self.python = python
        self._live: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._aborted = False

    def abort(self) -> None:
        """Kill every running stage and refuse new ones (the grader was interrupted)."""
        with self._lock:
            self._aborted = True
            live = list(self._live)
        for proc in live:
            _kill_group(proc)

    def describe(self) -> dict:
        return {"engine": self.name, "python": self.python}

    def run(self, request: SandboxRequest) -> SandboxRun:
        return self.run_argv(runner_argv(self.python, str(request.job_dir), str(request.out_dir),
                                         str(request.submission_dir), request.stage), request)

    def run_argv(self, command: list[str], request: SandboxRequest) -> SandboxRun:
        """Run ``command`` confined as ``request`` says (tests use it to run hostile programs)."""
        if self._aborted:
            raise InfrastructureError("the grader was interrupted")
        share_with_sandbox(request)
        for d in (request.job_dir, request.submission_dir, request.out_dir):
            _traversable_parents(d)  # needed only where the kernel refuses the allow-list root
        with tempfile.TemporaryDirectory(prefix="seg-sandbox-") as scratch, \
                tempfile.TemporaryDirectory(prefix="seg-root-") as root_dir, \
                tempfile.NamedTemporaryFile("w", prefix="seg-confine-", suffix=".json") as config:
            os.chmod(scratch, 0o777)
            settings = self._confine_config(request, scratch, root_dir)
            _refuse_exposed_secrets(settings["expose"], request.hidden_paths)
            json.dump(settings, config)  # read by confine before it changes root
            config.flush()
            argv = [self.python, "-m", "grader.sandbox.confine", "--config", config.name, "--", *command]
            return self._spawn(argv, request, scratch)

    def _confine_config(self, request: SandboxRequest, scratch: str, root_dir: str) -> dict:
        prefixes = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(os.path.realpath(self.python)))}
        package = str(Path(__file__).resolve().parent.parent)  # grader/ itself (the runner), never reference/
        expose = [[p, False] for p in sorted(prefixes | {package})] + [
            [str(request.job_dir), False], [str(request.submission_dir), False], [str(request.out_dir), True],
            [scratch, True]]
        return {"root_dir": root_dir, "expose": expose,
                "cwd": scratch, "env": self._env(request, scratch),
                "memory_mb": request.memory_mb, "max_processes": request.max_processes,
                "max_file_mb": request.max_file_mb}

    def _env(self, request: SandboxRequest, scratch: str) -> dict[str, str]:
        threads = str(request.threads)
        env = {"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": threads,
               "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MPLBACKEND": "Agg",
               "CUDA_VISIBLE_DEVICES": request.gpu if request.gpu is not None else ""}
        for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # machine quirks, not secrets
            if key in os.environ:
                env[key] = os.environ[key]
        return env

    def _spawn(self, argv: list[str], request: SandboxRequest, scratch: str) -> SandboxRun:
        out, err = OutputTail(request.max_output_bytes), OutputTail(request.max_output_bytes)
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, cwd=scratch, env={"PATH": "/usr/bin:/bin"})
        with self._lock:
            self._live.add(proc)
        pumps = [threading.Thread(target=_pump, args=(s, t), daemon=True)
                 for s, t in ((proc.stdout, out), (proc.stderr, err))]
        for p in pumps:
            p.start()
        timed_out = False
        try:
            proc.wait(timeout=request.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:  # also on KeyboardInterrupt: never leave a student's process group behind
            _kill_group(proc)
            with self._lock:
                self._live.discard(proc)
        for p in pumps:
            p.join(timeout=5)
        stderr = err.text()
        isolation, stderr = _split_marker(stderr)
        return SandboxRun(exit_code=None if timed_out else proc.returncode, timed_out=timed_out,
                          out_of_memory=not timed_out and any(s in stderr for s in OOM_SIGNS),
                          duration_s=time.monotonic() - start, stdout=out.text(), stderr=stderr,
                          output_truncated=bool(out.dropped or err.dropped), isolation=isolation)


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


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _split_marker(stderr: str) -> tuple[str, str]:
    first, _, rest = stderr.partition("\n")
    if first.startswith(MARKER):
        return first[len(MARKER):], rest
    return "unknown: the sandbox bootstrap did not report", stderr
