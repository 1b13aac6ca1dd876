"""Grading many submissions: intake, the shared job, a worker pool, resume by content hash, summary.

Student failures are results; only an infrastructure fault (the sandbox engine itself failing after
retries) is recorded as ``infrastructure_error`` — never a zero — and regraded on the next run.
"""
from __future__ import annotations

import platform
import queue
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from grader import __version__
from grader.expected import expected_outputs, reference_module
from grader.intake import Rejected, Submission, discover
from grader.jobs import build_job
from grader.judge import JudgeContext
from grader.pipeline import Batch, grade_submission, rejected_result, write_artifacts
from grader.results import SubmissionResult, read_result, write_json_atomic, write_result
from grader.rubric import Rubric
from grader.sandbox.base import InfrastructureError, Sandbox
from grader.scoring import score_submission

__all__ = ["GradeOptions", "grade_all", "default_cache_dir"]


@dataclass(frozen=True)
class GradeOptions:
    out_dir: Path
    jobs: int = 1
    gpus: tuple[str, ...] = ()  # GPU indices; one job per GPU at a time
    regrade: bool = False
    cache_dir: Path | None = None
    progress: Callable[[str, SubmissionResult], None] | None = None


def default_cache_dir() -> Path:
    import os

    return Path(os.environ.get("SEG_GRADER_CACHE", Path.home() / ".cache" / "seg-autograder"))


def _cached(student_dir: Path, sub: Submission, rubric: Rubric) -> SubmissionResult | None:
    """A finished result for the same submission bytes, rubric and grader version, else None."""
    try:
        old = read_result(student_dir / "result.json")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    prov = old.provenance
    same = (prov.get("submission_hash") == sub.content_hash and prov.get("rubric_hash") == rubric.source_hash
            and prov.get("grader_version") == __version__)
    return old if same and old.status != "infrastructure_error" else None


def _infra_result(rubric: Rubric, sub: Submission, exc: Exception) -> SubmissionResult:
    return score_submission(student=sub.student, checks=[], rubric=rubric, status="infrastructure_error",
                            message=f"Not graded — the grading machinery failed: {exc}. This is not the "
                                    "student's fault; fix it and run the same command again (finished "
                                    "results are kept).",
                            provenance={"grader_version": __version__, "submission_hash": sub.content_hash})


def _provenance(rubric: Rubric, dataset_hash: str, device: str) -> dict:
    return {"grader_version": __version__, "torch_version": torch.__version__,
            "python_version": platform.python_version(), "device": device, "dataset_hash": dataset_hash,
            "seeds": {c.id: c.seed for c in rubric.checks}, "threads": rubric.threads}


def grade_all(paths: Sequence[Path], *, rubric: Rubric, sandbox: Sandbox, options: GradeOptions) -> list[SubmissionResult]:
    out = options.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = (options.cache_dir or default_cache_dir()).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="seg-grader-"))
    try:
        entries = discover([Path(p) for p in paths], workdir=scratch / "intake")
        device = "cuda" if options.gpus else "cpu"
        plan = build_job(rubric, job_dir=scratch / "job", cache_dir=cache, device=device)
        ctx = JudgeContext(plan=plan, expected=expected_outputs(plan.cases), num_classes=rubric.num_classes)
        hidden = (Path(reference_module().__file__).resolve().parent, cache, out)
        batch = Batch(rubric=rubric, ctx=ctx, sandbox=sandbox, hidden_paths=hidden, scratch=scratch,
                      device=device, provenance=_provenance(rubric, plan.dataset_hash, device))
        results = _grade_entries(batch, entries, out, options)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write_json_atomic(out / "summary.json", _summary(rubric, results))
    return results


def _grade_entries(batch: Batch, entries: list, out: Path, options: GradeOptions) -> list[SubmissionResult]:
    gpus: queue.Queue = queue.Queue()
    for g in options.gpus or (None,) * options.jobs:
        gpus.put(g)
    lock, aborted = threading.Lock(), threading.Event()

    def one(entry: Submission | Rejected) -> SubmissionResult:
        student_dir = out / entry.student
        if isinstance(entry, Rejected):
            result = rejected_result(batch.rubric, entry)
        elif not options.regrade and (old := _cached(student_dir, entry, batch.rubric)):
            result = old
        else:
            gpu = gpus.get()
            try:
                result, artifacts = grade_submission(_with_gpu(batch, gpu), entry)
                if aborted.is_set():  # its sandbox was killed by the abort: not the student's result
                    raise InterruptedError(entry.student)
                write_artifacts(student_dir, artifacts)
            except InfrastructureError as exc:
                result = _infra_result(batch.rubric, entry, exc)
            finally:
                gpus.put(gpu)
        write_result(student_dir, result)
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
    return sorted(results, key=lambda r: r.student)


def _with_gpu(batch: Batch, gpu: str | None) -> Batch:
    from dataclasses import replace

    return replace(batch, gpu=gpu)


def _summary(rubric: Rubric, results: list[SubmissionResult]) -> dict:
    return {"schema": 1, "assignment": rubric.assignment, "rubric_hash": rubric.source_hash,
            "max_score": rubric.max_score, "checks": [{"id": c.id, "name": c.name, "points": c.points,
                                                        "visibility": c.visibility} for c in rubric.checks],
            "students": [{"student": r.student, "status": r.status, "score": r.score} for r in results]}
