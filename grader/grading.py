"""Grading the submissions that need it: the batch's shared job (built once, by a trusted subprocess), a
worker pool over the sandbox (N CPU jobs, or one job per GPU), each result recorded atomically.

``grader.batch`` decides what needs grading (resume by content hash) and imports this module only then.
"""
from __future__ import annotations

import platform
import queue
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from grader import __version__
from grader.batch import GradeOptions, infrastructure_result
from grader.intake import Submission
from grader.jobcache import installed_version, reference_dir
from grader.judge import JudgeContext
from grader.pipeline import Batch, grade_submission, write_artifacts
from grader.prepare import prepare_job
from grader.results import SubmissionResult, write_result
from grader.rubric import Rubric
from grader.sandbox.base import InfrastructureError, Sandbox
from grader.shapes import default_cache_dir

__all__ = ["grade_fresh", "prepare_batch", "record_result"]


def _provenance(rubric: Rubric, dataset_hash: str, device: str) -> dict:
    return {"grader_version": __version__, "torch_version": installed_version("torch"),
            "python_version": platform.python_version(), "device": device, "dataset_hash": dataset_hash,
            "seeds": {c.id: c.seed for c in rubric.checks}, "threads": rubric.threads}


def prepare_batch(rubric: Rubric, *, sandbox: Sandbox, scratch: Path, cache_dir: Path, device: str = "cpu",
                  hidden: tuple[Path, ...] = ()) -> Batch:
    """What every submission of a batch shares: the job folder, expected outputs, provenance (built once, by
    a trusted subprocess: see ``grader.prepare``). Hidden from the sandbox: reference/, the dataset cache
    (labels) and the host-only folder (expected outputs, evaluation labels)."""
    sandbox.warm_up(rubric.threads)  # in the background, while the job is prepared
    prepared = prepare_job(rubric, job_dir=scratch / "job", host_dir=scratch / "host", cache_dir=cache_dir,
                           device=device)
    ctx = JudgeContext(plan=prepared.plan, expected=prepared.expected, num_classes=rubric.num_classes)
    hidden_paths = (reference_dir(), cache_dir, prepared.host_dir, *hidden)
    return Batch(rubric=rubric, ctx=ctx, sandbox=sandbox, hidden_paths=hidden_paths, scratch=scratch,
                 device=device, provenance=_provenance(rubric, prepared.plan.dataset_hash, device))


def record_result(student_dir: Path, result: SubmissionResult, artifacts: dict) -> None:
    """Artefacts first, result.json last and atomically: a result on disk is always a finished one."""
    if artifacts:
        write_artifacts(student_dir, artifacts)
    write_result(student_dir, result)


def grade_fresh(todo: list[Submission], *, rubric: Rubric, sandbox: Sandbox, options: GradeOptions,
                scratch: Path) -> list[SubmissionResult]:
    if options.engine == "ray":
        from grader.distributed import grade_on_ray  # optional extra: imported only when asked for

        return grade_on_ray(todo, rubric=rubric, sandbox=sandbox, options=options)
    device = "cuda" if options.gpus else "cpu"
    cache = (options.cache_dir or default_cache_dir()).resolve()
    batch = prepare_batch(rubric, sandbox=sandbox, scratch=scratch, cache_dir=cache, device=device,
                          hidden=(options.out_dir.resolve(),))
    return _grade_entries(batch, todo, options.out_dir.resolve(), options)


def _grade_entries(batch: Batch, entries: list[Submission], out: Path,
                   options: GradeOptions) -> list[SubmissionResult]:
    gpus: queue.Queue = queue.Queue()
    for g in options.gpus or (None,) * options.jobs:
        gpus.put(g)
    lock, aborted = threading.Lock(), threading.Event()

    def one(entry: Submission) -> SubmissionResult:
        gpu, artifacts = gpus.get(), {}
        if options.on_begin:
            options.on_begin(entry.student)
        try:
            result, artifacts = grade_submission(_with_gpu(batch, gpu), entry)
        except InfrastructureError as exc:
            result = infrastructure_result(batch.rubric, entry, exc)
        finally:
            gpus.put(gpu)
        if aborted.is_set():  # its sandbox was killed by the abort: not the student's result, write nothing
            raise InterruptedError(entry.student)
        record_result(out / entry.student, result, artifacts)
        if options.progress:
            with lock:
                options.progress(entry.student, result)
        return result

    workers = len(options.gpus) or options.jobs
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    futures = [pool.submit(one, e) for e in entries]
    try:
        results = [f.result() for f in as_completed(futures)]
    except BaseException:  # Ctrl-C: kill what runs, write nothing for the jobs it interrupted
        aborted.set()
        pool.shutdown(wait=False, cancel_futures=True)
        batch.sandbox.abort()
        raise
    pool.shutdown()
    return results


def _with_gpu(batch: Batch, gpu: str | None) -> Batch:
    from dataclasses import replace

    return replace(batch, gpu=gpu)
