"""The one interface every sandbox engine implements.

A sandbox runs ``grader.runner`` for ONE stage of ONE submission and reports how the process
ended. It never interprets what the student's code wrote: the judge does that, on the host, from the
files in ``out_dir``. Engines: ``local`` (a child process with namespaces and rlimits) and ``docker``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = ["SandboxRequest", "SandboxRun", "Sandbox", "InfrastructureError", "runner_args", "runner_argv", "OOM_SIGNS",
           "refuse_hidden", "says_out_of_memory", "share_with_sandbox", "DEVICE_LINE", "runner_device",
           "GPU_SHARE_ENV", "GPU_SHARE_LINE", "gpu_share_env"]

# What an allocation failure says in Python / PyTorch (an rlimit makes allocations fail instead of killing).
OOM_SIGNS = ("can't allocate memory", "MemoryError", "Cannot allocate memory", "out of memory")


def says_out_of_memory(text: str) -> bool:
    """Whether ``text`` (a stage's stderr, an error message) shows an allocation failure."""
    return any(sign in text for sign in OOM_SIGNS)


DEVICE_LINE = "[runner] device: "  # the runner's stderr line, written before any student code runs


def runner_device(stderr: str) -> str:
    """What the runner said it runs on ("cpu", "cuda (NAME)", "unavailable: WHY"), from the FIRST such line:
    the runner writes it before importing the student's module, so no student output can precede it."""
    for line in stderr.splitlines():
        if line.startswith(DEVICE_LINE):
            return line[len(DEVICE_LINE):]
    return ""


# K jobs on one GPU: the share of its memory a stage may allocate, handed to the runner in the environment (both
# engines) and applied, then said on stderr, before any student code runs (``grader.runner``).
GPU_SHARE_ENV = "SEG_GPU_MEMORY_FRACTION"
GPU_SHARE_LINE = "[runner] gpu memory fraction: "


class InfrastructureError(RuntimeError):
    """The grader's machinery failed (Docker down, no disk): retry, never score it as the student's zero."""


@dataclass(frozen=True)
class SandboxRequest:
    """Everything an engine needs to run one stage. Paths are host paths."""

    submission_dir: Path  # clean copy of the student's files; put on sys.path, never imported by the host
    job_dir: Path  # inputs written by the host (job.json + .npy arrays); mounted read-only
    out_dir: Path  # empty folder for this stage's outputs; the only place the student may write to keep
    # (on the same filesystem as job_dir: the docker engine renames its container's outputs into it)
    stage: str  # "import" | "unit" | "model" | "overfit" | "train"
    timeout_s: float  # wall clock for the whole stage, then the process group / container is killed
    memory_mb: int  # address-space (local) or cgroup (docker) limit
    threads: int = 1  # torch intra-op threads (fixed for reproducibility)
    gpu: str | None = None  # GPU index the scheduler assigned, or None for CPU
    gpu_memory_fraction: float | None = None  # K jobs share the GPU: each may allocate this share (1/K) of it
    hidden_paths: tuple[Path, ...] = ()  # host paths the student must not see (reference/, labels, cache)
    max_output_bytes: int = 64_000  # stdout/stderr kept (head and tail), the rest is dropped
    max_processes: int = 256
    max_file_mb: int = 512
    disk_mb: int | None = None  # local: the stage's writable tmpfs (scratch, /tmp, out), part of memory_mb;
    # None: 1/16 of memory_mb, at most max_file_mb (grader.sandbox.local.disk_mb)
    torch_home: Path | None = None  # the course's pretrained weights (hub/checkpoints/, exactly the allowed files,
    # grader.weights): shown read-only, $TORCH_HOME inside; None: none allowed


@dataclass(frozen=True)
class SandboxRun:
    """How the stage's process ended. Never says anything about correctness."""

    exit_code: int | None
    timed_out: bool
    out_of_memory: bool
    duration_s: float
    stdout: str  # truncated to max_output_bytes, with a marker where bytes were dropped
    stderr: str
    output_truncated: bool
    isolation: str  # human-readable: what this run was isolated by (and what the kernel refused)
    engine_info: dict = field(default_factory=dict)  # e.g. image id, container id; goes to provenance


class Sandbox(Protocol):
    name: str

    def run(self, request: SandboxRequest) -> SandboxRun:
        """Run one stage. Raise InfrastructureError when the engine itself fails."""
        ...

    def describe(self) -> dict:
        """Versions / image id / isolation summary, recorded in each result's provenance."""
        ...

    def abort(self) -> None:
        """Kill everything this engine is running now (the grader was interrupted)."""
        ...

    def warm_up(self, threads: int) -> None:
        """Get ready for stages with ``threads`` torch threads, in the background (called once per batch)."""
        ...

    def end_submission(self, submission_dir: Path) -> None:
        """Every stage of this submission has run: release what was kept for it."""
        ...

    def close(self) -> None:
        """The batch is over: release what was kept for it. The engine stays usable (it starts anew)."""
        ...


def gpu_share_env(request: SandboxRequest) -> dict[str, str]:
    """The stage's environment entry that carries its GPU memory cap to the runner (none without a cap)."""
    if request.gpu_memory_fraction is None:
        return {}
    return {GPU_SHARE_ENV: repr(float(request.gpu_memory_fraction))}


def runner_args(job_dir: str, out_dir: str, submission_dir: str, stage: str) -> list[str]:
    """The arguments of ``grader.runner`` for one stage (paths as seen from inside the sandbox)."""
    return ["--job", job_dir, "--out", out_dir, "--submission", submission_dir, "--stage", stage]


def runner_argv(python: str, job_dir: str, out_dir: str, submission_dir: str, stage: str) -> list[str]:
    """The command a container runs (the local engine runs the runner in a forked, already-warm process)."""
    return [python, "-m", "grader.runner", *runner_args(job_dir, out_dir, submission_dir, stage)]


def share_with_sandbox(request: SandboxRequest) -> None:
    """The sandbox's uid owns nothing of ours (tempfile makes 0700 folders): let it read the job and the
    submission, and write the out folder."""
    for root in (request.job_dir, request.submission_dir):
        _make_readable(root)
    request.out_dir.mkdir(parents=True, exist_ok=True)
    request.out_dir.chmod(0o777)


def _make_readable(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for path, bits in [(folder, 0o555)] + [(os.path.join(folder, f), 0o444) for f in files]:
            mode = os.lstat(path).st_mode
            if mode & bits != bits and not os.path.islink(path):
                try:
                    os.chmod(path, mode | bits)
                except OSError as exc:
                    raise InfrastructureError(f"cannot make {path} readable for the sandbox: {exc}") from exc


def refuse_hidden(shown: list[Path], hidden: tuple[Path, ...]) -> None:
    """Refuse (as infrastructure: a misplaced folder is the grader's fault) to show the sandbox any path that
    holds a hidden one (reference/, the labels, the cache, the results) or lies inside one."""
    for path in (Path(p).resolve() for p in shown):
        for secret in (Path(h).resolve() for h in hidden):
            if path.is_relative_to(secret) or secret.is_relative_to(path):
                raise InfrastructureError(f"refusing to show {path} to the sandbox: it exposes hidden path "
                                          f"{secret}; keep the results, the cache and reference/ apart from the "
                                          "job, submission and scratch folders")
