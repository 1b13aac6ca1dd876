"""Grading many submissions: intake, the shared job, a worker pool, resume by content hash, summary.

Student failures are results; only an infrastructure fault (the sandbox engine itself failing after
retries) is recorded as ``infrastructure_error`` — never a zero — and regraded on the next run.
"""
from __future__ import annotations

import importlib.metadata
import platform
import queue
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from grader import __version__
from grader.intake import Rejected, Submission, discover
from grader.judge import JudgeContext
from grader.pipeline import Batch, grade_submission, rejected_result, write_artifacts
from grader.prepare import prepare_job
from grader.results import SubmissionResult, read_result, write_json_atomic, write_result
from grader.rubric import Rubric
from grader.sandbox.base import InfrastructureError, Sandbox
from grader.scoring import score_submission
from grader.shapes import default_cache_dir

__all__ = ["GradeOptions", "grade_all", "prepare_batch", "record_result",
           "infrastructure_result"]


@dataclass(frozen=True)
class GradeOptions:
    out_dir: Path
    jobs: int = 1
    gpus: tuple[str, ...] = ()  # GPU indices; one job per GPU at a time
    regrade: bool = False
    cache_dir: Path | None = None
    progress: Callable[[str, SubmissionResult], None] | None = None  # a submission finished
    on_total: Callable[[int], None] | None = None  # how many submissions intake found
    on_begin: Callable[[str], None] | None = None  # a submission's sandbox is starting
    engine: str = "local"  # "local": a worker pool here; "ray": one Ray task per submission (grader.distributed)
    ray_address: str | None = None  # engine "ray": the cluster to join (None: RAY_ADDRESS, else a local one)


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


def infrastructure_result(rubric: Rubric, sub: Submission, exc: Exception) -> SubmissionResult:
    """Not graded because the machinery failed: never a zero, regraded by the next run."""
    return score_submission(student=sub.student, checks=[], rubric=rubric, status="infrastructure_error",
                            message=f"Not graded — the grading machinery failed: {exc}. This is not the "
                                    "student's fault; fix it and run the same command again (finished "
                                    "results are kept).",
                            provenance={"grader_version": __version__, "submission_hash": sub.content_hash})


def _torch_version() -> str:
    """The installed torch's version, read from its metadata: this process never imports torch."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _reference_dir() -> Path:
    """reference/ (found without importing it: importing the reference would import torch)."""
    import importlib.util

    spec = importlib.util.find_spec("reference")
    if spec is None or not spec.submodule_search_locations:
        raise InfrastructureError("the reference solution (package `reference`) is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _provenance(rubric: Rubric, dataset_hash: str, device: str) -> dict:
    return {"grader_version": __version__, "torch_version": _torch_version(),
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
    hidden_paths = (_reference_dir(), cache_dir, prepared.host_dir, *hidden)
    return Batch(rubric=rubric, ctx=ctx, sandbox=sandbox, hidden_paths=hidden_paths, scratch=scratch,
                 device=device, provenance=_provenance(rubric, prepared.plan.dataset_hash, device))


def record_result(student_dir: Path, result: SubmissionResult, artifacts: dict) -> None:
    """Artefacts first, result.json last and atomically: a result on disk is always a finished one."""
    if artifacts:
        write_artifacts(student_dir, artifacts)
    write_result(student_dir, result)


def grade_all(paths: Sequence[Path], *, rubric: Rubric, sandbox: Sandbox, options: GradeOptions) -> list[SubmissionResult]:
    out = options.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = (options.cache_dir or default_cache_dir()).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="seg-grader-"))
    try:
        entries = discover([Path(p) for p in paths], workdir=scratch / "intake")
        if options.on_total:
            options.on_total(len(entries))
        results, todo = _settled(entries, rubric, out, options)
        if todo:  # the job folder is built only when something needs grading: an unchanged regrade is cheap
            results += _grade_fresh(todo, rubric=rubric, sandbox=sandbox, options=options, cache=cache,
                                    scratch=scratch)
    finally:
        sandbox.close()  # spare containers, fork servers: the batch is over
        shutil.rmtree(scratch, ignore_errors=True)
    results.sort(key=lambda r: r.student)
    write_json_atomic(out / "summary.json", _summary(rubric, results))
    return results


def _settled(entries: list, rubric: Rubric, out: Path,
             options: GradeOptions) -> tuple[list[SubmissionResult], list[Submission]]:
    """(results known without a sandbox: rejected or up to date, submissions that need grading)."""
    done, todo = [], []
    for entry in entries:
        if isinstance(entry, Rejected):
            result = rejected_result(rubric, entry)
            write_result(out / entry.student, result)
        elif options.regrade or not (result := _cached(out / entry.student, entry, rubric)):
            todo.append(entry)
            continue
        done.append(result)
        if options.progress:
            options.progress(entry.student, result)
    return done, todo


def _grade_fresh(todo: list[Submission], *, rubric: Rubric, sandbox: Sandbox, options: GradeOptions, cache: Path,
                 scratch: Path) -> list[SubmissionResult]:
    if options.engine == "ray":
        from grader.distributed import grade_on_ray  # optional extra: imported only when asked for

        return grade_on_ray(todo, rubric=rubric, sandbox=sandbox, options=options)
    device = "cuda" if options.gpus else "cpu"
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


def _summary(rubric: Rubric, results: list[SubmissionResult]) -> dict:
    return {"schema": 1, "assignment": rubric.assignment, "rubric_hash": rubric.source_hash,
            "max_score": rubric.max_score, "checks": [{"id": c.id, "name": c.name, "points": c.points,
                                                        "visibility": c.visibility} for c in rubric.checks],
            "students": [{"student": r.student, "status": r.status, "score": r.score} for r in results]}
