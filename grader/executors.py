"""Where submissions are graded: one ``Executor`` interface, two implementations.

An executor is handed the submissions to grade, a ``grade_one`` callable (one submission and the GPU it may
use -> its result and artefacts; an ``InfrastructureError`` when the machinery failed) and a ``record``
callable that writes an outcome once and returns the result. It decides only where and how many at a time:

- ``PoolExecutor`` (here): a thread pool in this process, N CPU jobs or one job per GPU; ``grade_one``
  grades with a batch prepared in this process.
- ``grader.distributed.RayExecutor``: one Ray task per submission on the node Ray picks (``remote``:
  ``grade_one`` must then be plain data that builds its own sandbox on the node).

Failure policy, shared: a student's failure is a result; an ``InfrastructureError`` is recorded as such
(never a zero); an interruption (Ctrl-C, SIGTERM) records nothing for the submissions it cut short.
``grader.batch.make_executor`` picks one by name ("pool" | "ray").
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Protocol, Sequence, Union

from grader.intake import Submission
from grader.results import SubmissionResult
from grader.sandbox.base import InfrastructureError

__all__ = ["EXECUTORS", "Begin", "Executor", "GradeOne", "Graded", "Outcome", "PoolExecutor", "Record"]

EXECUTORS = ("pool", "ray")

# (result, artefact name -> arrays) of one graded submission
Graded = tuple[SubmissionResult, dict]
GradeOne = Callable[[Submission, Union[str, None]], Graded]
Outcome = Union[Graded, InfrastructureError]  # what happened to one submission
Record = Callable[[Submission, Outcome], SubmissionResult]  # writes the outcome once, returns its result
Begin = Callable[[str], None]  # a submission's sandbox is starting (progress)


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
    ``gpus``: one job per GPU at a time, each holding its GPU; else ``jobs`` CPU jobs. ``abort`` kills what
    the sandbox runs when the batch is interrupted."""

    remote, hidden_on_node = False, None

    def __init__(self, *, jobs: int = 1, gpus: Sequence[str] = (), abort: Callable[[], None] | None = None) -> None:
        self.jobs, self.gpus, self.abort = max(1, jobs), tuple(gpus), abort

    def run(self, todo: Sequence[Submission], grade_one: GradeOne, record: Record, *,
            on_begin: Begin | None = None) -> list[SubmissionResult]:
        gpus: queue.Queue = queue.Queue()
        for gpu in self.gpus or (None,) * self.jobs:
            gpus.put(gpu)
        aborted = threading.Event()

        def one(sub: Submission) -> SubmissionResult:
            gpu = gpus.get()
            if on_begin:
                on_begin(sub.student)
            try:
                outcome: Outcome = grade_one(sub, gpu)
            except InfrastructureError as exc:
                outcome = exc
            finally:
                gpus.put(gpu)
            if aborted.is_set():  # its sandbox was killed by the abort: not the student's result, write nothing
                raise InterruptedError(sub.student)
            return record(sub, outcome)

        pool = ThreadPoolExecutor(max_workers=len(self.gpus) or self.jobs)
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
