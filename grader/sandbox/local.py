"""The local sandbox: each stage is a confined child of a warm fork server. The default for self-checks and CI.

One fork server (``grader.sandbox.forkserver``) per torch thread count imports torch once; every stage is a
fork of it, confined by ``confine`` before any student code runs, so a stage costs a fork, not a fresh
interpreter importing torch. Weaker than Docker, and documented so: it shares the host kernel (the
allow-list root shows only the system folders, Python, the runner's part of the grader package and the
stage's own folders), and its memory limit is an rlimit, not a cgroup (the address space; with a GPU, the
private data segment), plus a size-capped tmpfs for everything the stage writes.

Between students, as between Docker containers: each submission runs as a uid of its own from a reserved
range (kept for all its stages, released by ``end_submission``), so process limits and keyrings are per
student; each stage has its own IPC namespace and its own writable tmpfs, which die with it.
"""
from __future__ import annotations

import os
import queue
import random
import socket
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path

from grader.sandbox.base import (InfrastructureError, SandboxRequest, SandboxRun, gpu_share_env, refuse_hidden,
                                 runner_args, says_out_of_memory, share_with_sandbox)
from grader.sandbox.confine import SUBMISSION_UIDS, visible_package
from grader.sandbox.forkclient import ForkServerClient, run_forked

__all__ = ["LocalSandbox", "disk_mb"]


def _start_server(python: str, threads: int) -> ForkServerClient:
    """A fork server as this process's child, connected by a socketpair."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = {**_base_env(threads), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    log = tempfile.TemporaryFile()  # the server's own stderr, quoted if it dies
    argv = [python, "-s", "-m", "grader.sandbox.forkserver", "--fd", str(theirs.fileno()),
            "--parent-pid", str(os.getpid())]
    try:
        proc = _launch(argv, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=log, env=env, cwd="/", start_new_session=True)
    except OSError as exc:
        mine.close()
        raise InfrastructureError(f"cannot start the local sandbox's fork server {python}: {exc}") from exc
    finally:
        theirs.close()

    def ended() -> str:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.seek(0)
        tail = log.read()[-2000:].decode(errors="replace").strip()
        log.close()
        return f"the local sandbox's fork server ({python}) ended (exit code {proc.returncode})" + \
            (f": {tail}" if tail else "")

    return ForkServerClient(mine, ended)


class LocalSandbox:
    name = "local"

    def __init__(self, *, python: str = sys.executable, unconfined_ok: bool = False) -> None:
        self.python = python
        # True only for ``grader check`` (a student's own machine): where the kernel refuses namespaces, its
        # stages run unconfined and say so. Otherwise such a stage is an InfrastructureError (fail closed).
        self.unconfined_ok = unconfined_ok
        self._servers: dict[int, ForkServerClient] = {}  # torch threads -> server (set before torch is imported)
        self._lock = threading.Lock()
        self._aborted = False
        self._uids: dict[str, int] = {}  # submission folder -> its uid, while it is graded

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
            server.listener.join(timeout=10)  # the server has killed its stages and exited

    def describe(self) -> dict:
        return {"engine": self.name, "python": self.python}

    def warm_up(self, threads: int) -> None:
        """Start the fork server and have it import torch now, while the host prepares the batch."""
        self._server(threads).preload()

    def end_submission(self, submission_dir: Path) -> None:
        """The submission's uid goes back to the range (its stages' processes, IPC and tmpfs are gone with
        them; its keyrings are emptied when the uid serves again)."""
        with self._lock:
            self._uids.pop(str(Path(submission_dir).resolve()), None)

    def _uid(self, submission_dir: Path) -> int | None:
        """The submission's uid: the same for all its stages, never one another submission holds now. Drawn at
        random, so that two graders on one machine (or a later batch) rarely meet on one; None unless root."""
        if os.getuid() != 0:
            return None
        key = str(Path(submission_dir).resolve())
        with self._lock:
            if key not in self._uids:
                taken, draw = set(self._uids.values()), random.SystemRandom()
                uid = draw.choice(SUBMISSION_UIDS)
                while uid in taken:
                    uid = draw.choice(SUBMISSION_UIDS)
                self._uids[key] = uid
            return self._uids[key]

    def run(self, request: SandboxRequest) -> SandboxRun:
        return self._stage(request, {"runner": runner_args(str(request.job_dir), str(request.out_dir),
                                                           str(request.submission_dir), request.stage)})

    def run_argv(self, command: list[str], request: SandboxRequest) -> SandboxRun:
        """Run ``command`` confined as ``request`` says (tests use it to run hostile programs)."""
        return self._stage(request, {"argv": command})

    def _server(self, threads: int) -> ForkServerClient:
        with self._lock:
            if self._aborted:
                raise InfrastructureError("the grader was interrupted")
            server = self._servers.get(threads)
            if server is None or server.dead:
                server = self._servers[threads] = _start_server(self.python, threads)
            return server

    def _stage(self, request: SandboxRequest, what: dict) -> SandboxRun:
        share_with_sandbox(request)
        for d in (request.job_dir, request.submission_dir, request.out_dir):
            _traversable_parents(d)  # needed only where the kernel refuses the allow-list root
        # scratch: where the kernel refuses namespaces only (else a tmpfs is mounted over it); mounts: the
        # mount points of the new root and of the stage's writable tmpfs (outside that root)
        with tempfile.TemporaryDirectory(prefix="seg-sandbox-") as scratch, \
                tempfile.TemporaryDirectory(prefix="seg-root-") as mounts:
            os.chmod(scratch, 0o777)
            os.mkdir(f"{mounts}/root")
            os.mkdir(f"{mounts}/rw")
            settings = self._confine_config(request, scratch, mounts)
            refuse_hidden([path for path, _ in settings["expose"]] + [scratch, str(request.out_dir)],
                          request.hidden_paths)
            return self._spawn({"config": settings, **what}, request)

    def _confine_config(self, request: SandboxRequest, scratch: str, mounts: str) -> dict:
        package = str(Path(__file__).resolve().parent.parent)  # grader/ (the runner's part of it), never reference/
        expose = [[p, False] for p in _python_folders(self.python)] + [
            [str(request.job_dir), False], [str(request.submission_dir), False]] + (
            [[str(request.torch_home), False]] if request.torch_home else [])  # the course's weights, read-only
        return {"root_dir": f"{mounts}/root", "rw_dir": f"{mounts}/rw", "expose": expose, "cwd": scratch,
                "package": package, "package_files": visible_package(package), "unconfined_ok": self.unconfined_ok,
                "out_dir": str(request.out_dir), "env": self._env(request, scratch),
                "uid": self._uid(request.submission_dir), "memory_mb": request.memory_mb,
                "disk_mb": disk_mb(request), "gpu": request.gpu is not None, "cpus": request.threads,
                "max_processes": request.max_processes, "max_file_mb": request.max_file_mb}

    def _env(self, request: SandboxRequest, scratch: str) -> dict[str, str]:
        # USER/LOGNAME: the stage's uid has no passwd entry, and getpass.getuser() (torch's caches) needs a name
        return {**_base_env(request.threads), "HOME": scratch, "TMPDIR": scratch, "USER": "student",
                "LOGNAME": "student", "CUDA_VISIBLE_DEVICES": request.gpu if request.gpu is not None else "",
                **gpu_share_env(request), **({"TORCH_HOME": str(request.torch_home)} if request.torch_home else {})}

    def _spawn(self, payload: dict, request: SandboxRequest) -> SandboxRun:
        done = run_forked(self._server(request.threads), payload, timeout_s=request.timeout_s,
                         max_output_bytes=request.max_output_bytes)
        return SandboxRun(exit_code=done.exit_code, timed_out=done.timed_out,
                          out_of_memory=not done.timed_out and says_out_of_memory(done.stderr),
                          duration_s=done.duration_s, stdout=done.stdout, stderr=done.stderr,
                          output_truncated=done.truncated, isolation=done.isolation)


def _python_folders(python: str) -> list[str]:
    """The Python installation a stage needs: its prefixes and every site folder on the path (a venv made
    with a .pth or --system-site-packages reaches its packages there). A site folder that holds the grader
    package shows only its runner's part: confine covers the rest (``grader.sandbox.rootfs``)."""
    found = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(os.path.realpath(python)))}
    found |= {os.path.realpath(p) for p in sys.path
              if os.path.basename(p.rstrip("/")) in ("site-packages", "dist-packages") and os.path.isdir(p)}
    return sorted(found)


def disk_mb(request: SandboxRequest) -> int:
    """The stage's writable space (one tmpfs: /tmp, /var/tmp, /dev/shm, scratch, out), taken out of its memory
    budget: ``request.disk_mb`` or 1/16 of the budget, at most ``max_file_mb``, always under a quarter. A
    small share: the fork server's torch already maps ~3.5 GB of the address space every stage inherits."""
    wanted = request.disk_mb or min(request.max_file_mb, request.memory_mb // 16)
    return max(1, min(wanted, request.memory_mb // 4))


def _base_env(threads: int) -> dict[str, str]:
    """What the fork server and every stage run with: fixed threads and hashing, nothing of the grader's."""
    n = str(threads)
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MPLBACKEND": "Agg",
            **_machine_quirks()}


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


def _traversable_parents(path: Path) -> None:
    """The sandbox runs as the submission's uid when the grader is root: our folders' parents must be enterable."""
    for parent in path.parents:
        if str(parent) in ("/tmp", "/") or parent.stat().st_uid != os.getuid():
            break
        if parent.stat().st_mode & 0o001 == 0:
            os.chmod(parent, parent.stat().st_mode | 0o001)
