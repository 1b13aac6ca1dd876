"""The production sandbox engine: hardened, throw-away Docker containers.

A submission's stages run in one container of its own (``docker_session``: a warm fork server is its PID 1);
``run_argv`` (and ``per_submission=False``) runs one container per command.

The container has no network, a read-only root, a non-root user (a fresh uid per run, so that the per-user
process limit of one submission never starves another), no capabilities, ``no-new-privileges``, cgroup
limits on memory (swap included), processes and CPU, and only three host folders: the job (read-only),
the submission (read-only) and the out folder (writable). Output is streamed and kept head + tail, never
loaded whole. The container is always removed: in ``finally``, and for a grader that is interrupted, by
a SIGTERM / atexit hook over a registry of live containers. Engine failures raise InfrastructureError.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import os
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from grader.sandbox.base import (InfrastructureError, SandboxRequest, SandboxRun, refuse_hidden, runner_argv,
                                 share_with_sandbox)
from grader.sandbox.docker_session import SESSION_ISOLATION, SubmissionContainer

__all__ = ["DockerSandbox", "BindMount", "connect", "docker_sandbox_for_cli", "cleanup_leftovers",
           "remove_live_containers", "LABEL", "START_DOCKER_HINT"]

LABEL = "seg-autograder"  # every container we create carries {LABEL: "1"}: leftovers are findable
START_DOCKER_HINT = ("start the Docker Engine: `sudo systemctl start docker` (or `sudo dockerd &`; "
                     "`bash .ci/docker-setup.sh` installs and starts it)")
ISOLATION = ("docker: network none, read-only root, non-root uid, no capabilities, no-new-privileges, "
             "seccomp default, cgroup memory (= memory+swap), pids and cpu limits")
_INSIDE = {"job": "/job", "out": "/out", "submission": "/submission"}
_PASSTHROUGH_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # old OpenBLAS crashes on some CPUs without them
_MARKER_RESERVE = 64  # room kept for the "bytes dropped" marker so the text stays within the limit
_PUMP_GRACE_S = 10.0  # how long to wait for the output stream to drain after the container ended
MAX_SPARES = 2  # warm blank containers kept per job, GPU and thread count (each holds torch imported)

_LIVE: dict[str, Any] = {}  # container id -> low-level API client; removed by the hooks below
_LIVE_LOCK = threading.Lock()
_HOOKS: list[bool] = []


@dataclass(frozen=True)
class BindMount:
    """A host path shown inside the container (read-only unless said otherwise)."""

    source: Path
    target: str
    read_only: bool = True


class _HeadTail:
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


def connect(*, base_url: str | None = None, timeout_s: int = 60) -> docker.DockerClient:
    """A client for the local (or given) Docker Engine; InfrastructureError saying how to start it."""
    try:
        if base_url is None:
            return docker.from_env(timeout=timeout_s)
        return docker.DockerClient(base_url=base_url, timeout=timeout_s)
    except DockerException as exc:
        raise InfrastructureError(f"Docker Engine not reachable ({exc}); {START_DOCKER_HINT}") from exc


@contextlib.contextmanager
def _engine_errors(image: str) -> Iterator[None]:
    """Turn the engine's failures into InfrastructureError: they are never the student's fault."""
    try:
        yield
    except ImageNotFound as exc:
        raise InfrastructureError(f"Docker image {image!r} is missing: build it with "
                                  f"`docker build -t {image} .` in the grader repository ({exc})") from exc
    except (requests.exceptions.ConnectionError, DockerException) as exc:
        if isinstance(exc, APIError) and "device driver" in str(exc):
            raise InfrastructureError(f"GPU requested but Docker has no GPU support ({exc}): install the "
                                      "NVIDIA Container Toolkit and restart dockerd") from exc
        if isinstance(exc, APIError):
            raise InfrastructureError(f"Docker Engine error: {exc}") from exc
        raise InfrastructureError(f"Docker Engine not reachable ({exc}); {START_DOCKER_HINT}") from exc


def _remove(api: Any, container_id: str) -> None:
    with contextlib.suppress(NotFound, DockerException, requests.exceptions.RequestException):
        api.remove_container(container_id, force=True)
    with _LIVE_LOCK:
        _LIVE.pop(container_id, None)


def remove_live_containers() -> int:
    """Force-remove every container this process still runs (for Ctrl-C / SIGTERM in a worker pool)."""
    with _LIVE_LOCK:
        items = list(_LIVE.items())
    for container_id, api in items:
        _remove(api, container_id)
    return len(items)


def _on_sigterm(previous: Any, signum: int, frame: Any) -> None:
    remove_live_containers()
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:  # default action: die by the same signal, as if we were not here
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_hooks() -> None:
    """atexit + SIGTERM remove live containers; SIGINT needs nothing (KeyboardInterrupt runs `finally`)."""
    if _HOOKS:
        return
    _HOOKS.append(True)
    atexit.register(remove_live_containers)
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, functools.partial(_on_sigterm, previous))


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str) -> bool:
    """Whether the grader that made a container may still be running it (another host's: cannot tell)."""
    host, _, pid = owner.rpartition(":")
    if host and host != socket.gethostname():
        return True
    if not pid.isdigit() or int(pid) == os.getpid():
        return False  # unlabelled, or ours but not in the live registry: an orphan
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, run by another user
    return True


def cleanup_leftovers(client: docker.DockerClient, *, keep_live_owners: bool = True) -> list[str]:
    """Remove labelled containers left by a crashed grader; those of still-running graders are kept."""
    with _engine_errors("-"):
        found = client.api.containers(all=True, filters={"label": f"{LABEL}=1"})
    with _LIVE_LOCK:
        ours = set(_LIVE)
    removed = []
    for entry in found:
        owner = (entry.get("Labels") or {}).get(f"{LABEL}.owner", "")
        if entry["Id"] in ours or (keep_live_owners and _owner_alive(owner)):
            continue
        _remove(client.api, entry["Id"])
        removed.append(entry["Id"])
    return removed


def _pump(stream: Any, out: _HeadTail, err: _HeadTail) -> None:
    with contextlib.suppress(Exception):  # the stream ends (or breaks) when the container goes away
        for stdout_chunk, stderr_chunk in stream:
            if stdout_chunk:
                out.add(stdout_chunk)
            if stderr_chunk:
                err.add(stderr_chunk)


class DockerSandbox:
    """Runs each stage in a fresh hardened container from ``image``; see the module docstring."""

    name = "docker"

    def __init__(self, *, image: str, gpus: tuple[str, ...] = (), python: str = "python",
                 extra_mounts: tuple[BindMount, ...] = (), client: docker.DockerClient | None = None,
                 user: str | None = None, per_submission: bool = True) -> None:
        self.image, self.gpus, self.python, self.per_submission = image, tuple(gpus), python, per_submission
        self._sessions: dict[tuple[Path, str | None], SubmissionContainer] = {}  # (submission, gpu) ->
        self._spares: dict[tuple, list[SubmissionContainer]] = {}  # (job, gpu, threads) -> warm, blank
        self._starting: set[threading.Thread] = set()  # spares being started
        self._generation = 0  # close() starts a new one: spares of an older one are not kept
        self._sessions_lock = threading.Lock()
        self.extra_mounts, self.user = tuple(extra_mounts), user
        self._client = client if client is not None else connect()
        self._description: dict | None = None
        self._cpus: int | None = None
        self._aborted = False
        _install_hooks()

    def abort(self) -> None:
        """Remove every live container and refuse new runs (the grader was interrupted)."""
        self._aborted = True
        remove_live_containers()
        self.close()

    def warm_up(self, threads: int) -> None:
        """Nothing to warm once per batch: each submission's container imports torch before its first stage."""

    def run(self, request: SandboxRequest) -> SandboxRun:
        if not self.per_submission:
            argv = runner_argv(self.python, _INSIDE["job"], _INSIDE["out"], _INSIDE["submission"], request.stage)
            return self.run_argv(argv, request)
        return self._container_of(request).run(request)

    def end_submission(self, submission_dir: Path) -> None:
        """The submission is graded: remove its container."""
        with self._sessions_lock:
            ended = [k for k in self._sessions if k[0] == submission_dir]
            sessions = [self._sessions.pop(k) for k in ended]
        for session in sessions:
            session.close()

    def close(self) -> None:
        """The batch is over: remove the spare containers (and any submission's still open)."""
        with self._sessions_lock:
            self._generation += 1
            starting = list(self._starting)
        for thread in starting:  # a spare being started is removed by its own thread (older generation)
            thread.join()
        with self._sessions_lock:
            sessions = list(self._sessions.values()) + [c for spares in self._spares.values() for c in spares]
            self._sessions, self._spares = {}, {}
        for session in sessions:
            session.close()

    def _container_of(self, request: SandboxRequest) -> SubmissionContainer:
        """The submission's container: its own, or a warm spare bound to it now (then another spare starts)."""
        if self._aborted:
            raise InfrastructureError("the grader was interrupted")
        key, pool = (request.submission_dir, request.gpu), (request.job_dir, request.gpu, request.threads)
        with self._sessions_lock:
            session = self._sessions.get(key)
            if session is not None and session.dead:
                del self._sessions[key]
                stale, session = session, None
            else:
                stale = None
            spares = self._spares.setdefault(pool, [])
            spare = spares.pop(0) if session is None and spares else None
        if stale is not None:
            stale.close()
        if session is not None:
            return session
        if spare is None or spare.dead:
            if spare is not None:
                spare.close()
            spare = SubmissionContainer(self, request)
        with self._sessions_lock:
            starter = threading.Thread(target=self._start_spare, args=(request, pool, self._generation), daemon=True)
            self._starting.add(starter)
        starter.start()
        spare.bind(request)
        with self._sessions_lock:
            self._sessions[key] = spare
        return spare

    def _start_spare(self, template: SandboxRequest, pool: tuple, generation: int) -> None:
        try:
            with self._sessions_lock:
                if len(self._spares.get(pool, ())) >= MAX_SPARES:
                    return
            try:
                spare = SubmissionContainer(self, template)
            except Exception:  # noqa: BLE001 - the next submission starts its own and reports why
                return
            with self._sessions_lock:
                keep = (not self._aborted and generation == self._generation
                        and len(self._spares.setdefault(pool, [])) < MAX_SPARES)
                if keep:
                    self._spares[pool].append(spare)
            if not keep:
                spare.close()
        finally:
            with self._sessions_lock:
                self._starting.discard(threading.current_thread())

    def run_argv(self, argv: list[str], request: SandboxRequest) -> SandboxRun:
        """Run ``argv`` in the hardened container made for ``request``; always remove the container."""
        if self._aborted:
            raise InfrastructureError("the grader was interrupted")
        self._check(request)
        uid = self.user or f"{random.SystemRandom().randint(100_000, 199_999)}"
        share_with_sandbox(request)
        api = self._client.api
        with _engine_errors(self.image):
            created = api.create_container(**self._create_kwargs(argv, request, uid))
            container_id = created["Id"]
            with _LIVE_LOCK:
                _LIVE[container_id] = api
        try:
            with _engine_errors(self.image):
                return self._start_and_wait(container_id, request, uid, created.get("Warnings") or [])
        finally:
            _remove(api, container_id)

    def describe(self) -> dict:
        if self._description is None:
            with _engine_errors(self.image):
                version = self._client.version()
                image_id = self._client.api.inspect_image(self.image)["Id"]
            self._description = {"engine": self.name, "image": self.image, "image_id": image_id,
                                 "docker_version": version.get("Version"),
                                 "api_version": version.get("ApiVersion"), "gpus": list(self.gpus),
                                 "isolation": ISOLATION + (f"; {SESSION_ISOLATION}" if self.per_submission else ""),
                                 "per_submission": self.per_submission}
        return dict(self._description)

    def _check(self, request: SandboxRequest, extra_shown: tuple[Path, ...] = ()) -> None:
        """Refuse (as infrastructure) a request that would mount a hidden path or an unknown GPU."""
        if request.gpu is not None and self.gpus and request.gpu not in self.gpus:
            raise InfrastructureError(f"GPU {request.gpu!r} was assigned but this engine offers {self.gpus}")
        refuse_hidden([request.job_dir, request.submission_dir, request.out_dir, *extra_shown,
                       *(Path(m.source) for m in self.extra_mounts)], request.hidden_paths)

    def _mounts(self, request: SandboxRequest) -> list[Mount]:
        binds = [BindMount(request.job_dir, _INSIDE["job"]), BindMount(request.out_dir, _INSIDE["out"], False),
                 BindMount(request.submission_dir, _INSIDE["submission"]), *self.extra_mounts]
        return [Mount(target=b.target, source=str(Path(b.source).resolve()), type="bind",
                      read_only=b.read_only) for b in binds]

    def _engine_cpus(self) -> int:
        """The daemon refuses a CPU quota above its own core count: clamp to it (asked once)."""
        if self._cpus is None:
            self._cpus = int(self._client.info().get("NCPU") or os.cpu_count() or 1)
        return self._cpus

    def _environment(self, request: SandboxRequest) -> dict[str, str]:
        threads = str(request.threads)
        env = {"HOME": "/tmp", "USER": "grader", "LOGNAME": "grader", "PYTHONPATH": "/opt/grader",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0",
               "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
               "NUMEXPR_NUM_THREADS": threads, "TORCH_HOME": "/tmp/torch", "MPLCONFIGDIR": "/tmp/matplotlib",
               "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
        env.update({k: os.environ[k] for k in _PASSTHROUGH_ENV if k in os.environ})
        return env

    def _host_config(self, request: SandboxRequest, mounts: list[Mount]) -> dict:
        api, mb = self._client.api, request.memory_mb
        # noexec: nothing needs to run binaries from scratch space. The image's /tmp and /scratch must be
        # mode 1777: Docker copies the image folder's mode onto the tmpfs (a mode= option is overridden).
        scratch = f"rw,noexec,nosuid,nodev,size={request.max_file_mb}m"
        file_bytes = request.max_file_mb * 1024 * 1024
        gpus = [DeviceRequest(device_ids=[request.gpu], capabilities=[["gpu"]])] if request.gpu else None
        return api.create_host_config(
            network_mode="none", mem_limit=f"{mb}m", memswap_limit=f"{mb}m", pids_limit=request.max_processes,
            nano_cpus=int(min(request.threads, self._engine_cpus()) * 1e9), shm_size=f"{max(64, mb // 4)}m",
            read_only=True,
            tmpfs={"/tmp": scratch, "/scratch": scratch}, cap_drop=["ALL"], security_opt=["no-new-privileges"],
            ulimits=[Ulimit(name="nofile", soft=4096, hard=4096),
                     Ulimit(name="fsize", soft=file_bytes, hard=file_bytes),
                     Ulimit(name="nproc", soft=request.max_processes, hard=request.max_processes)],
            mounts=mounts, device_requests=gpus, privileged=False, ipc_mode="private",
            log_config=LogConfig(type=LogConfig.types.NONE))  # output comes over attach: nothing on disk

    def _create_kwargs(self, argv: list[str], request: SandboxRequest, uid: str, *,
                       mounts: list[Mount] | None = None, stage: str | None = None) -> dict:
        labels = {LABEL: "1", f"{LABEL}.stage": stage or request.stage, f"{LABEL}.owner": _owner()}
        return {"image": self.image, "command": list(argv), "user": uid if ":" in uid else f"{uid}:{uid}",
                "environment": self._environment(request), "working_dir": "/scratch", "labels": labels,
                "host_config": self._host_config(request, mounts or self._mounts(request)), "network_disabled": True, "hostname": "sandbox",
                "stdin_open": False, "tty": False, "entrypoint": []}

    def _start_and_wait(self, container_id: str, request: SandboxRequest, uid: str,
                        warnings: list[str]) -> SandboxRun:
        api = self._client.api
        out, err = _HeadTail(request.max_output_bytes), _HeadTail(request.max_output_bytes)
        # Attach before start so that no early output is lost; the log driver is "none".
        stream = api.attach(container_id, stdout=True, stderr=True, stream=True, logs=False, demux=True)
        pump = threading.Thread(target=_pump, args=(stream, out, err), daemon=True)
        pump.start()
        started = time.monotonic()
        api.start(container_id)
        timed_out = not _wait(api, container_id, request.timeout_s)
        if timed_out:
            with contextlib.suppress(APIError):  # it may have ended on its own in the meantime
                api.kill(container_id)
            _wait(api, container_id, _PUMP_GRACE_S)
        duration = time.monotonic() - started
        pump.join(timeout=_PUMP_GRACE_S)
        with contextlib.suppress(Exception):
            stream.close()
        state = api.inspect_container(container_id)["State"]
        return self._result(state, timed_out, duration, out, err, container_id, uid, warnings)

    def _result(self, state: dict, timed_out: bool, duration: float, out: _HeadTail, err: _HeadTail,
                container_id: str, uid: str, warnings: list[str]) -> SandboxRun:
        stdout, out_cut = out.text()
        stderr, err_cut = err.text()
        isolation = ISOLATION + (f"; the engine warned: {' | '.join(warnings)}" if warnings else "")
        info = {"engine": self.name, "image": self.image, "container_id": container_id[:12], "user": uid,
                "warnings": list(warnings)}
        return SandboxRun(exit_code=state.get("ExitCode"), timed_out=timed_out,
                          out_of_memory=bool(state.get("OOMKilled")), duration_s=duration, stdout=stdout,
                          stderr=stderr, output_truncated=out_cut or err_cut, isolation=isolation,
                          engine_info=info)


def docker_sandbox_for_cli(*, image: str | None = None, gpus: tuple[str, ...] = ()) -> DockerSandbox:
    """The engine behind ``--sandbox docker``: the production image (it must exist: the error names the
    build command), or with ``image="test"`` the local test image on the host's Python (no registry needed).
    Leftover containers of graders that died are removed first."""
    from grader.sandbox import image as images  # late import: image.py builds on this module

    client = connect()
    cleanup_leftovers(client)
    if image in ("test", images.TEST_TAG):
        return DockerSandbox(image=images.build_test_image(client), gpus=gpus, python=images.test_python(),
                             extra_mounts=images.test_mounts(), client=client)
    tag = image or images.PRODUCTION_TAG
    images.ensure_image(client, tag, build=False)
    return DockerSandbox(image=tag, gpus=gpus, client=client)


def _wait(api: Any, container_id: str, timeout_s: float) -> bool:
    """True when the container ended within ``timeout_s``."""
    try:
        api.wait(container_id, timeout=max(timeout_s, 0.01))
        return True
    except requests.exceptions.RequestException:  # read timeout (reported as ConnectionError on sockets)
        return not api.inspect_container(container_id)["State"]["Running"]
