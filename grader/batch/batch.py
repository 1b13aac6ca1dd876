"""Grading many submissions: intake, resume by content hash, the summary, signals; the grading itself is
``grader.batch.grading`` (the shared job, ``grade_one``), imported only when something needs grading, and run by
the executor the options name (``grader.batch.executors``).

Student failures are results; only an infrastructure fault (the sandbox engine itself failing after
retries) is recorded as ``infrastructure_error`` — never a zero — and regraded on the next run. An unchanged
regrade reads result.json files and hashes submissions: this module imports neither numpy nor the judge.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

from grader import __version__
from grader.core.cleanup import remove_tree
from grader.batch.executors import EXECUTORS, Executor, PoolExecutor
from grader.intake.discover import Rejected, Submission, discover
from grader.batch.interrupts import aborting_on_signals
from grader.core.results import SubmissionResult, read_result, write_json_atomic, write_result
from grader.rubric import Rubric
from grader.sandbox.base import Sandbox
from grader.sandbox.factory import SandboxSource, SandboxSpec, spec_of

__all__ = ["GradeOptions", "grade_all", "make_executor"]


@dataclass(frozen=True)
class GradeOptions:
    out_dir: Path
    jobs: int = 1
    gpus: tuple[str, ...] = ()  # GPU indices; jobs_per_gpu jobs per GPU at a time
    jobs_per_gpu: int = 1  # K submissions share each GPU, each capped to 1/K of its memory (Ray: num_gpus=1/K)
    regrade: bool = False
    cache_dir: Path | None = None
    progress: Callable[[str, SubmissionResult], None] | None = None  # a submission finished
    on_total: Callable[[int], None] | None = None  # how many submissions intake found
    on_begin: Callable[[str], None] | None = None  # a submission's sandbox is starting
    executor: str = "pool"  # "pool": threads here; "ray": one Ray task per submission (grader.batch.distributed)
    ray_address: str | None = None  # executor "ray": the cluster to join (None: RAY_ADDRESS, else a local one)
    single: bool = False  # each path is one student's own upload, never read as a class export (Gradescope)


def _cached(old: SubmissionResult | None, sub: Submission, rubric: Rubric) -> SubmissionResult | None:
    """``old`` (the output folder's result for this student) when it is finished and for the same submission
    bytes, rubric and grader version, else None."""
    if old is None:
        return None
    prov = old.provenance
    same = (prov.get("submission_hash") == sub.content_hash and prov.get("rubric_hash") == rubric.source_hash
            and prov.get("grader_version") == __version__)
    return old if same and old.status != "infrastructure_error" else None


def existing_results(out: Path) -> dict[str, SubmissionResult | None]:
    """Every student folder's result.json in the output folder, read once (None: unreadable)."""
    found: dict[str, SubmissionResult | None] = {}
    for result_file in sorted(out.glob("*/result.json")):
        try:
            found[result_file.parent.name] = read_result(result_file)
        except (OSError, ValueError, KeyError, TypeError):
            found[result_file.parent.name] = None
    return found


def owners_of(existing: dict[str, SubmissionResult | None]) -> dict[str, str]:
    """The ids already in the output folder -> who they belong to (intake's ``owner``; a result from before
    owners were recorded belongs to the name it has), so that a batch never hands an id to someone else."""
    owners = {}
    for student, result in existing.items():
        identity = result.provenance.get("identity") if result is not None else None
        owner = identity.get("owner") if isinstance(identity, dict) else None
        owners[student] = owner if isinstance(owner, str) and owner else f"name:{student}"
    return owners


def known_owners(out: Path) -> dict[str, str]:
    return owners_of(existing_results(out))


def grade_all(paths: Sequence[Path], *, rubric: Rubric, sandbox: SandboxSource,
              options: GradeOptions) -> list[SubmissionResult]:
    """Grade what is not up to date under ``options.out_dir``. ``sandbox``: the engine, a ``SandboxSpec``, or a
    function that makes the engine; a spec or a function is used only when something needs grading (an
    unchanged regrade then neither imports the engine nor connects to Docker, so it works while the daemon
    is down), and a remote executor sends the spec to its nodes instead of building anything here.

    For the duration of the batch SIGTERM is a clean interruption like Ctrl-C: what runs is aborted, the
    engine closed, the scratch folder removed (``grader.batch.interrupts``)."""
    out = options.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="seg-grader-"))
    engine: Sandbox | None = sandbox if hasattr(sandbox, "run") else None

    def make_engine() -> Sandbox:
        nonlocal engine
        if engine is None:
            engine = sandbox.make() if isinstance(sandbox, SandboxSpec) else sandbox()
        return engine

    def abort() -> None:  # SIGTERM or Ctrl-C: kill what runs before the `finally` below closes the engine
        if engine is not None:
            engine.abort()

    try:
        with aborting_on_signals(abort):
            existing = existing_results(out)
            entries = discover([Path(p) for p in paths], workdir=scratch / "intake", single=options.single,
                               known=owners_of(existing))
            if options.on_total:
                options.on_total(len(entries))
            results, todo = _settled(entries, rubric, out, options, existing)
            if todo:
                results += _grade_fresh(todo, rubric, sandbox, make_engine, options, scratch, abort)
    finally:
        if engine is not None:
            engine.close()  # spare containers, fork servers: the batch is over
        remove_tree(scratch, ignore_errors=True)
    results.sort(key=lambda r: r.student)
    write_json_atomic(out / "summary.json", _summary(rubric, results))
    return results


def _grade_fresh(todo: list[Submission], rubric: Rubric, sandbox: SandboxSource, make_engine: Callable[[], Sandbox],
                 options: GradeOptions, scratch: Path, abort: Callable[[], None]) -> list[SubmissionResult]:
    executor = make_executor(options.executor, jobs=options.jobs, gpus=options.gpus, address=options.ray_address,
                             threads=rubric.threads, abort=abort, jobs_per_gpu=options.jobs_per_gpu)
    return _grading().grade_fresh(todo, rubric=rubric, executor=executor,
                       sandbox=spec_of(sandbox) if executor.remote else make_engine, out_dir=options.out_dir,
                       scratch=scratch, cache_dir=options.cache_dir, gpus=options.gpus,
                       jobs_per_gpu=options.jobs_per_gpu,
                       progress=options.progress, on_begin=options.on_begin)


def _settled(entries: list, rubric: Rubric, out: Path, options: GradeOptions,
             existing: dict[str, SubmissionResult | None]) -> tuple[list[SubmissionResult], list[Submission]]:
    """(results known without a sandbox: rejected or up to date, submissions that need grading)."""
    done, todo = [], []
    for entry in entries:
        if isinstance(entry, Rejected):
            result = _grading().rejected_result(rubric, entry)  # numpy and the judge: rare, and only then
            write_result(out / entry.student, result)
        elif options.regrade or not (result := _cached(existing.get(entry.student), entry, rubric)):
            todo.append(entry)
            continue
        done.append(result)
        if options.progress:
            options.progress(entry.student, result)
    return done, todo


def make_executor(kind: str = "pool", *, jobs: int = 1, gpus: Sequence[str] = (), address: str | None = None,
                  threads: int = 1, abort: Callable[[], None] | None = None, jobs_per_gpu: int = 1) -> Executor:
    """``pool``: this machine (``jobs`` / ``gpus``, ``jobs_per_gpu`` on each); ``ray``: a Ray cluster
    (``address``; None: $RAY_ADDRESS, else a local one), whose scheduler places the tasks and their GPUs
    (1/``jobs_per_gpu`` of one each), ``threads`` CPUs per task."""
    if kind == "pool":
        return PoolExecutor(jobs=jobs, gpus=gpus, jobs_per_gpu=jobs_per_gpu, abort=abort)
    if kind == "ray":
        from grader.batch.distributed import RayExecutor  # the optional extra: imported only when asked for

        return RayExecutor(address=address, threads=threads, jobs_per_gpu=jobs_per_gpu)
    raise ValueError(f"unknown executor {kind!r}: choose one of {', '.join(EXECUTORS)}")


def _grading() -> ModuleType:
    """The seam between the light host core and the heavy engine: the job, the sandbox engines, numpy and the
    judge are imported here, only when something needs grading (an unchanged regrade is the interpreter's
    start and little else)."""
    import grader.batch.grading

    return grader.batch.grading


def _summary(rubric: Rubric, results: list[SubmissionResult]) -> dict:
    return {"schema": 1, "assignment": rubric.assignment, "rubric_hash": rubric.source_hash,
            "max_score": rubric.max_score, "checks": [{"id": c.id, "name": c.name, "points": c.points,
                                                        "visibility": c.visibility} for c in rubric.checks],
            "students": [{"student": r.student, "status": r.status, "score": r.score} for r in results]}
