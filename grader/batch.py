"""Grading many submissions: intake, resume by content hash, the summary; the grading itself is
``grader.grading`` (the shared job, the worker pool), imported only when something needs grading.

Student failures are results; only an infrastructure fault (the sandbox engine itself failing after
retries) is recorded as ``infrastructure_error`` — never a zero — and regraded on the next run. An unchanged
regrade reads result.json files and hashes submissions: this module imports neither numpy nor the judge.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from grader import __version__
from grader.intake import Rejected, Submission, discover
from grader.interrupts import aborting_on_signals
from grader.results import SubmissionResult, read_result, write_json_atomic, write_result
from grader.rubric import Rubric
from grader.sandbox.base import Sandbox
from grader.scoring import score_submission

__all__ = ["GradeOptions", "grade_all", "infrastructure_result"]


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


def grade_all(paths: Sequence[Path], *, rubric: Rubric, sandbox: Sandbox | Callable[[], Sandbox],
              options: GradeOptions) -> list[SubmissionResult]:
    """Grade what is not up to date under ``options.out_dir``. ``sandbox``: the engine, or a function that
    makes it, called only when something needs grading (an unchanged regrade then neither imports the engine
    nor connects to Docker, so it works while the daemon is down)."""
    out = options.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="seg-grader-"))
    engine: Sandbox | None = sandbox if hasattr(sandbox, "run") else None

    def abort() -> None:  # SIGTERM or Ctrl-C: kill what runs before the `finally` below closes the engine
        if engine is not None:
            engine.abort()

    try:
        with aborting_on_signals(abort):
            entries = discover([Path(p) for p in paths], workdir=scratch / "intake")
            if options.on_total:
                options.on_total(len(entries))
            results, todo = _settled(entries, rubric, out, options)
            if todo:  # the job, the sandbox and numpy only when something needs grading: an unchanged regrade
                from grader.grading import grade_fresh  # is the interpreter's start and little else

                engine = engine or sandbox()
                results += grade_fresh(todo, rubric=rubric, sandbox=engine, options=options, scratch=scratch)
    finally:
        if engine is not None:
            engine.close()  # spare containers, fork servers: the batch is over
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
            from grader.pipeline import rejected_result  # numpy and the judge: rare, and only then

            result = rejected_result(rubric, entry)
            write_result(out / entry.student, result)
        elif options.regrade or not (result := _cached(out / entry.student, entry, rubric)):
            todo.append(entry)
            continue
        done.append(result)
        if options.progress:
            options.progress(entry.student, result)
    return done, todo


def _summary(rubric: Rubric, results: list[SubmissionResult]) -> dict:
    return {"schema": 1, "assignment": rubric.assignment, "rubric_hash": rubric.source_hash,
            "max_score": rubric.max_score, "checks": [{"id": c.id, "name": c.name, "points": c.points,
                                                        "visibility": c.visibility} for c in rubric.checks],
            "students": [{"student": r.student, "status": r.status, "score": r.score} for r in results]}
