"""One hardened container's life: made, started with its output streamed, waited for, killed, removed.

The container has no network, a read-only root, a non-root user (a fresh uid per run, so that the per-user
process limit of one submission never starves another), no capabilities, ``no-new-privileges``, cgroup
limits on memory (swap included), processes and CPU, and only the host folders it is given (the job and the
submission read-only, the out folder writable). Output is streamed and kept head + tail, never loaded whole.
Every container is adopted by the engine's ``Daemon`` the moment it exists, so that ``abort`` finds it.
"""
from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from docker.errors import APIError
from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from grader.sandbox.base import (InfrastructureError, SandboxRequest, SandboxRun, gpu_share_env, refuse_hidden,
                                 share_with_sandbox)
from grader.sandbox.container.daemon import Daemon, engine_errors, labels

__all__ = ["BindMount", "HeadTail", "ContainerSettings", "Container", "ISOLATION", "TORCH_HOME", "run_once",
           "weights_bind"]

ISOLATION = ("docker: network none, read-only root, non-root uid, no capabilities, no-new-privileges, "
             "seccomp default, cgroup memory (= memory+swap), pids and cpu limits")
_PASSTHROUGH_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # old OpenBLAS crashes on some CPUs without them
_MARKER_RESERVE = 64  # room kept for the "bytes dropped" marker so the text stays within the limit
_PUMP_GRACE_S = 10.0  # how long to wait for the output stream to drain after the container ended
DEADLINE_GRACE_S = 30.0  # a one-command container ends by itself at its budget plus this (lifeline.py)
TORCH_HOME = "/opt/torch"  # where the course's pretrained weights are mounted read-only (request.torch_home)


@dataclass(frozen=True)
class BindMount:
    """A host path shown inside the container (read-only unless said otherwise)."""

    source: Path
    target: str
    read_only: bool = True


def weights_bind(request: SandboxRequest) -> list[BindMount]:
    """The course's pretrained weights, read-only at $TORCH_HOME (none when the rubric allows none)."""
    return [BindMount(request.torch_home, TORCH_HOME)] if request.torch_home else []


class HeadTail:
    """Keeps the first and last bytes of a stream and counts those in between (never the whole stream)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        budget = max(limit - _MARKER_RESERVE, 0)
        self._head_max, self._tail_max = budget // 2, budget - budget // 2
        self._head, self._tail, self.total = bytearray(), bytearray(), 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._head_max - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self._tail_max:
            self._tail += chunk
            if len(self._tail) > 2 * self._tail_max:  # trim rarely: amortised O(1) per byte
                del self._tail[:-self._tail_max]

    def text(self) -> tuple[str, bool]:
        tail = bytes(self._tail[-self._tail_max:]) if self._tail_max else b""
        dropped = self.total - len(self._head) - len(tail)
        head_text, tail_text = self._head.decode("utf-8", "replace"), tail.decode("utf-8", "replace")
        if dropped <= 0:
            return head_text + tail_text, False
        marker = f"\n[... {dropped} bytes of output dropped ...]\n"[: max(self.limit, 0)]
        return (head_text + marker + tail_text)[: max(self.limit, 0)], True


@dataclass(frozen=True)
class ContainerSettings:
    """What every container of one engine is made from: the image, the interpreter inside it, the GPUs the
    engine offers, host folders shown to every container, and a fixed user (else a fresh uid per container)."""

    image: str
    python: str = "python"
    gpus: tuple[str, ...] = ()
    extra_mounts: tuple[BindMount, ...] = ()
    user: str | None = None

    def new_uid(self) -> str:
        return self.user or f"{random.SystemRandom().randint(100_000, 199_999)}"

    def check(self, request: SandboxRequest, extra_shown: tuple[Path, ...] = ()) -> None:
        """Refuse (as infrastructure) a request that would mount a hidden path or an unknown GPU."""
        if request.gpu is not None and self.gpus and request.gpu not in self.gpus:
            raise InfrastructureError(f"GPU {request.gpu!r} was assigned but this engine offers {self.gpus}")
        refuse_hidden([request.job_dir, request.submission_dir, request.out_dir, *extra_shown,
                       *(m.source for m in weights_bind(request)),
                       *(Path(m.source) for m in self.extra_mounts)], request.hidden_paths)

    def environment(self, request: SandboxRequest) -> dict[str, str]:
        threads = str(request.threads)
        env = {"HOME": "/tmp", "USER": "grader", "LOGNAME": "grader", "PYTHONPATH": "/opt/grader",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0",
               "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
               "NUMEXPR_NUM_THREADS": threads, "TORCH_HOME": TORCH_HOME if request.torch_home else "/tmp/torch",
               "MPLCONFIGDIR": "/tmp/matplotlib",
               "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
        env.update({k: os.environ[k] for k in _PASSTHROUGH_ENV if k in os.environ})
        env.update(gpu_share_env(request))  # K jobs per GPU: the runner caps this stage's share of its memory
        return env

    def create_kwargs(self, daemon: Daemon, argv: list[str], request: SandboxRequest, uid: str, *,
                      binds: list[BindMount], stage: str) -> dict:
        """The arguments of ``create_container`` for ``argv`` under ``request``'s limits."""
        mounts = [Mount(target=b.target, source=str(Path(b.source).resolve()), type="bind", read_only=b.read_only)
                  for b in (*binds, *self.extra_mounts)]
        return {"image": self.image, "command": list(argv), "user": uid if ":" in uid else f"{uid}:{uid}",
                "environment": self.environment(request), "working_dir": "/scratch", "labels": labels(stage),
                "host_config": _host_config(daemon, request, mounts), "network_disabled": True,
                "hostname": "sandbox", "stdin_open": False, "tty": False, "entrypoint": []}


def _host_config(daemon: Daemon, request: SandboxRequest, mounts: list[Mount]) -> dict:
    mb = request.memory_mb
    # noexec: nothing needs to run binaries from scratch space. The image's /tmp and /scratch must be
    # mode 1777: Docker copies the image folder's mode onto the tmpfs (a mode= option is overridden).
    scratch = f"rw,noexec,nosuid,nodev,size={request.max_file_mb}m"
    file_bytes = request.max_file_mb * 1024 * 1024
    gpus = [DeviceRequest(device_ids=[request.gpu], capabilities=[["gpu"]])] if request.gpu else None
    return daemon.api.create_host_config(
        network_mode="none", mem_limit=f"{mb}m", memswap_limit=f"{mb}m", pids_limit=request.max_processes,
        nano_cpus=int(min(request.threads, daemon.cpus()) * 1e9), shm_size=f"{max(64, mb // 4)}m",
        read_only=True,
        tmpfs={"/tmp": scratch, "/scratch": scratch}, cap_drop=["ALL"], security_opt=["no-new-privileges"],
        ulimits=[Ulimit(name="nofile", soft=4096, hard=4096),
                 Ulimit(name="fsize", soft=file_bytes, hard=file_bytes),
                 Ulimit(name="nproc", soft=request.max_processes, hard=request.max_processes)],
        mounts=mounts, device_requests=gpus, privileged=False, ipc_mode="private",
        log_config=LogConfig(type=LogConfig.types.NONE))  # output comes over attach: nothing on disk


class Container:
    """One container of ours, created (and adopted by ``daemon``) by the constructor. Every engine failure
    of its methods is an InfrastructureError."""

    def __init__(self, daemon: Daemon, settings: ContainerSettings, argv: list[str], request: SandboxRequest, *,
                 uid: str, binds: list[BindMount], stage: str, cpu_shares: int | None = None,
                 lifeline: bool = False) -> None:
        daemon.refuse_if_sealed()
        self.daemon, self.image = daemon, settings.image
        self._pump: threading.Thread | None = None
        self._stream: Any = None
        self._lifeline: Any = None  # ``lifeline``: the container's stdin, held open by this process (lifeline.py)
        self.lifeline = lifeline
        with engine_errors(self.image):
            kwargs = settings.create_kwargs(daemon, argv, request, uid, binds=binds, stage=stage)
            if lifeline:  # with stdin_open docker-py sets StdinOnce: Docker closes the container's stdin
                kwargs.update(stdin_open=True)  # once the one client attached to it (this grader) is gone
            if cpu_shares is not None:
                kwargs["host_config"]["CpuShares"] = cpu_shares
            created = daemon.api.create_container(**kwargs)
        self.id, self.warnings = created["Id"], list(created.get("Warnings") or [])
        daemon.adopt(self.id)  # interrupted meanwhile: removed, and it raises

    def start(self, out: HeadTail, err: HeadTail) -> None:
        """Start it, its stdout and stderr pumped into ``out`` and ``err`` by a thread."""
        with engine_errors(self.image):
            # Attach before start so that no early output is lost; the log driver is "none".
            stream = self.daemon.api.attach(self.id, stdout=True, stderr=True, stream=True, logs=False, demux=True)
            self._stream = stream
            if self.lifeline:
                self._lifeline = self.daemon.api.attach_socket(self.id, params={"stdin": 1, "stream": 1})
            self._pump = threading.Thread(target=_pump, args=(stream, out, err), daemon=True)
            self._pump.start()
            self.daemon.api.start(self.id)

    def wait(self, timeout_s: float) -> bool:
        """True when the container ended within ``timeout_s``."""
        with engine_errors(self.image):
            try:
                self.daemon.api.wait(self.id, timeout=max(timeout_s, 0.01))
                return True
            except requests.exceptions.RequestException:  # read timeout (a ConnectionError on sockets)
                return not self.state()["Running"]

    def kill(self) -> None:
        with engine_errors(self.image), contextlib.suppress(APIError):  # it may have ended on its own
            self.daemon.api.kill(self.id)

    def state(self) -> dict:
        with engine_errors(self.image):
            return self.daemon.api.inspect_container(self.id)["State"]

    def update(self, **limits: Any) -> None:
        """Change its cgroup limits (memory, CPU shares) while it runs."""
        with engine_errors(self.image):
            self.daemon.api.update_container(self.id, **limits)

    def drain(self) -> None:
        """Let the output stream run dry once the container ended (bounded), then close it."""
        if self._pump is not None:
            self._pump.join(timeout=_PUMP_GRACE_S)
            with contextlib.suppress(Exception):
                self._stream.close()

    def remove(self) -> None:
        self.daemon.remove(self.id)
        if self._lifeline is not None:
            with contextlib.suppress(Exception):
                self._lifeline.close()


def _pump(stream: Any, out: HeadTail, err: HeadTail) -> None:
    with contextlib.suppress(Exception):  # the stream ends (or breaks) when the container goes away
        for stdout_chunk, stderr_chunk in stream:
            if stdout_chunk:
                out.add(stdout_chunk)
            if stderr_chunk:
                err.add(stderr_chunk)


def run_once(daemon: Daemon, settings: ContainerSettings, argv: list[str], request: SandboxRequest) -> SandboxRun:
    """Run ``argv`` in a fresh hardened container made for ``request`` (the job at /job, the submission at
    /submission, the out folder at /out); the container is always removed."""
    settings.check(request)
    uid = settings.new_uid()
    share_with_sandbox(request)
    binds = [BindMount(request.job_dir, "/job"), BindMount(request.out_dir, "/out", False),
             BindMount(request.submission_dir, "/submission"), *weights_bind(request)]
    init = [settings.python, "-s", "-m", "grader.sandbox.container.lifeline",
            f"{request.timeout_s + DEADLINE_GRACE_S:g}", "--"]  # it ends by itself, with or without us
    container = Container(daemon, settings, [*init, *argv], request, uid=uid, binds=binds, stage=request.stage,
                          lifeline=True)
    try:
        out, err = HeadTail(request.max_output_bytes), HeadTail(request.max_output_bytes)
        started = time.monotonic()
        container.start(out, err)
        timed_out = not container.wait(request.timeout_s)
        if timed_out:
            container.kill()
            container.wait(_PUMP_GRACE_S)
        duration = time.monotonic() - started
        container.drain()
        return _result(container, settings, container.state(), timed_out, duration, (out, err), uid)
    finally:
        container.remove()


def _result(container: Container, settings: ContainerSettings, state: dict, timed_out: bool, duration: float,
            streams: tuple[HeadTail, HeadTail], uid: str) -> SandboxRun:
    (stdout, out_cut), (stderr, err_cut) = streams[0].text(), streams[1].text()
    warnings = container.warnings
    isolation = ISOLATION + (f"; the engine warned: {' | '.join(warnings)}" if warnings else "")
    info = {"engine": "docker", "image": settings.image, "container_id": container.id[:12], "user": uid,
            "warnings": list(warnings)}
    return SandboxRun(exit_code=state.get("ExitCode"), timed_out=timed_out,
                      out_of_memory=bool(state.get("OOMKilled")), duration_s=duration, stdout=stdout,
                      stderr=stderr, output_truncated=out_cut or err_cut, isolation=isolation, engine_info=info)
