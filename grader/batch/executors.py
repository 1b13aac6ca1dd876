"""Where submissions are graded: one ``Executor`` interface, two implementations.

An executor is handed the submissions to grade, a ``grade_one`` callable (one submission and the GPU it may
use -> its result and artefacts; an ``InfrastructureError`` when the machinery failed) and a ``record``
callable that writes an outcome once and returns the result. It decides only where and how many at a time:

- ``PoolExecutor`` (here): a thread pool in this process, N CPU jobs or K jobs per GPU (``gpu_slots``: a
  queue holding each GPU index K times); ``grade_one`` grades with a batch prepared in this process.
- ``grader.batch.distributed.RayExecutor``: one Ray task per submission on the node Ray picks (``remote``:
  ``grade_one`` must then be plain data that builds its own sandbox on the node).

Failure policy, shared: a student's failure is a result; an ``InfrastructureError`` is recorded as such
(never a zero); an interruption (Ctrl-C, SIGTERM) records nothing for the submissions it cut short.
``grader.batch.batch.make_executor`` picks one by name ("pool" | "ray").
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Protocol, Sequence, Union

from grader.intake.discover import Submission
from grader.core.results import SubmissionResult
from grader.sandbox.base import InfrastructureError

__all__ = ["EXECUTORS", "Begin", "Executor", "GradeOne", "Graded", "Finished", "PoolExecutor", "Record",
           "gpu_memory_fraction", "gpu_sharing", "gpu_slots", "mps_running"]

EXECUTORS = ("pool", "ray")

# (result, artefact name -> arrays) of one graded submission
Graded = tuple[SubmissionResult, dict]
GradeOne = Callable[[Submission, Union[str, None]], Graded]
Finished = Union[Graded, InfrastructureError]  # what happened to one submission
Record = Callable[[Submission, Finished], SubmissionResult]  # writes the outcome once, returns its result
Begin = Callable[[str], None]  # a submission's sandbox is starting (progress)


def gpu_slots(gpus: Sequence[str], jobs_per_gpu: int = 1) -> list[str]:
    """The GPU slot queue's contents: each GPU index ``jobs_per_gpu`` times, round-robin (0, 1, 0, 1, ...), so
    the first jobs of a batch spread over every GPU before any GPU takes a second one."""
    if jobs_per_gpu < 1:
        raise ValueError(f"jobs per GPU must be at least 1, not {jobs_per_gpu}")
    return [gpu for _ in range(jobs_per_gpu) for gpu in gpus]


def gpu_memory_fraction(jobs_per_gpu: int) -> float | None:
    """The share of its GPU's memory each of ``jobs_per_gpu`` jobs may allocate (None: one job, no cap)."""
    return 1.0 / jobs_per_gpu if jobs_per_gpu > 1 else None


def mps_running(proc: Path = Path("/proc")) -> bool:
    """Whether an NVIDIA MPS control daemon runs on this machine (``nvidia-cuda-mps-control -d``)."""
    for comm in proc.glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "nvidia-cuda-mps-control":
                return True
        except OSError:  # a process that ended while we looked
            continue
    return False


def gpu_sharing(jobs_per_gpu: int) -> dict:
    """What a GPU batch's provenance says about sharing its GPUs. MPS is noted, not used: its server serves one
    uid at a time (the local engine runs each submission as a uid of its own, so they would queue behind one
    another) and its control pipe, shown to a stage, would let a student stop it for every neighbour; the
    sandboxes never see its pipe folder, so their CUDA contexts time-slice the GPU as without MPS (a GPU in
    EXCLUSIVE_PROCESS mode then refuses them: an infrastructure error that names the device)."""
    mps = "running, not used by the sandboxes" if mps_running() else "not running"
    return {"jobs_per_gpu": jobs_per_gpu, "memory_fraction": gpu_memory_fraction(jobs_per_gpu), "mps": mps,
            "deterministic": "cudnn.deterministic, cudnn.benchmark off, CUBLAS_WORKSPACE_CONFIG=:4096:8"}


class Executor(Protocol):
    remote: bool  # True: grade_one runs in other processes or machines (it must be picklable plain data)
    # remote: folders of the executor's own runtime on a node that the sandbox must not see (travels by name)
    hidden_on_node: Callable[[], tuple[Path, ...]] | None

    def run(self, todo: Sequence[Submission], grade_one: GradeOne, record: Record, *,
            on_begin: Begin | None = None) -> list[SubmissionResult]:
        """Grade every submission of ``todo`` once, recording each outcome as it arrives."""
        ...


class PoolExecutor:
    """A thread pool in this process (the sandbox's stages are other processes: threads only wait on them).
    ``gpus``: ``jobs_per_gpu`` jobs per GPU at a time, each holding one of its GPU's slots; else ``jobs`` CPU
    jobs. ``abort`` kills what the sandbox runs when the batch is interrupted."""

    remote, hidden_on_node = False, None

    def __init__(self, *, jobs: int = 1, gpus: Sequence[str] = (), jobs_per_gpu: int = 1,
                 abort: Callable[[], None] | None = None) -> None:
        self.jobs, self.gpus, self.abort = max(1, jobs), tuple(gpus), abort
        self.slots = gpu_slots(self.gpus, jobs_per_gpu)  # checks jobs_per_gpu >= 1 also without GPUs

    def run(self, todo: Sequence[Submission], grade_one: GradeOne, record: Record, *,
            on_begin: Begin | None = None) -> list[SubmissionResult]:
        gpus: queue.Queue = queue.Queue()  # a job takes a slot (a GPU index, or None: the CPU) and gives it back
        for gpu in self.slots or [None] * self.jobs:
            gpus.put(gpu)
        aborted = threading.Event()

        def one(sub: Submission) -> SubmissionResult:
            gpu = gpus.get()
            if on_begin:
                on_begin(sub.student)
            try:
                outcome: Finished = grade_one(sub, gpu)
            except InfrastructureError as exc:
                outcome = exc
            finally:
                gpus.put(gpu)
            if aborted.is_set():  # its sandbox was killed by the abort: not the student's result, write nothing
                raise InterruptedError(sub.student)
            return record(sub, outcome)

        pool = ThreadPoolExecutor(max_workers=len(self.slots) or self.jobs)
        futures = [pool.submit(one, sub) for sub in todo]
        try:
            results = [f.result() for f in as_completed(futures)]
        except BaseException:  # Ctrl-C, SIGTERM: kill what runs, write nothing for the jobs it interrupted
            aborted.set()
            pool.shutdown(wait=False, cancel_futures=True)
            if self.abort:
                self.abort()
            raise
        pool.shutdown()
        return results
