"""The path of one submission: stages in the sandbox, judged on the host, scored, written atomically.

``BatchSetup`` holds what every submission of a batch shares, computed once (job folder, expected outputs, the
engine; ``grader.batch.batch`` is the batch itself: intake, resume, summary); ``grade_submission`` runs
one student's stages in order, skipping a stage whose checks cannot run (missing function, a required
check failed), runs a check's second-chance stage only when its kind asks (``_second_chance``), and turns
every failure into data.
"""
from __future__ import annotations

import contextlib
import io
import json
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from grader import __version__
from grader.checks import KINDS, stage_of
from grader.checks.verdict import JudgeContext, Judged, StageResult, not_run, oneline, result, skipped
from grader.core.cleanup import remove_tree
from grader.core.files import write_atomic
from grader.intake.discover import Rejected, Submission
from grader.intake.notebooks import failed_cells_message
from grader.core.outputs import OutputError, StageOutputs, read_stage
from grader.core.results import CheckResult, SubmissionResult
from grader.rubric import CheckSpec, Rubric
from grader.sandbox.base import InfrastructureError, Sandbox, SandboxRequest, runner_device
from grader.batch.scoring import score_submission

__all__ = ["BatchSetup", "grade_submission", "judge_behind_barrier", "rejected_result", "write_artifacts"]

INFRA_RETRIES = 2


@dataclass(frozen=True)
class BatchSetup:
    rubric: Rubric
    ctx: JudgeContext
    sandbox: Sandbox
    hidden_paths: tuple[Path, ...]  # what the student must not see (reference/, cache with labels, results)
    scratch: Path  # where per-run folders are made (not hidden)
    device: str = "cpu"
    gpu: str | None = None
    gpu_memory_fraction: float | None = None  # K jobs share a GPU: each stage's cap (1/K), set by the runner
    provenance: dict = field(default_factory=dict)
    torch_home: Path | None = None  # the course's pretrained weights, read-only in every stage (grader.weights)


def _run_stage(batch: BatchSetup, sub: Submission, stage: str, run_dir: Path, *, budget_of: str | None = None) -> StageResult:
    """Run ``stage`` under the budget of stage ``budget_of`` (default: its own; a retry runs under its check's)."""
    out = run_dir / stage
    budget = batch.rubric.budget(budget_of or stage)
    with _machinery(stage):
        request = SandboxRequest(submission_dir=sub.path, job_dir=batch.ctx.plan.job_dir, out_dir=out, stage=stage,
                                 timeout_s=budget.timeout_s, memory_mb=budget.memory_mb, threads=batch.rubric.threads,
                                 gpu=batch.gpu, hidden_paths=batch.hidden_paths,
                                 gpu_memory_fraction=batch.gpu_memory_fraction if batch.gpu is not None else None,
                                 max_output_bytes=batch.rubric.max_output_kb * 1024, torch_home=batch.torch_home)
    for attempt in range(INFRA_RETRIES + 1):
        remove_tree(out, ignore_errors=True)
        out.mkdir(parents=True)
        try:
            with _machinery(stage):
                run = batch.sandbox.run(request)
            _refuse_wrong_device(batch, run.stderr)
            break
        except InfrastructureError:
            if attempt == INFRA_RETRIES:
                raise
            time.sleep(1 + attempt)
    try:
        return StageResult(stage, run, read_stage(out, stage), budget)
    except OutputError as exc:
        return StageResult(stage, run, StageOutputs(out, {}), budget, problem=str(exc))
    except Exception as exc:  # noqa: BLE001 - the fault barrier: unreadable output is this stage's problem
        return StageResult(stage, run, StageOutputs(out, {}), budget, problem=f"{type(exc).__name__}: {oneline(exc)}")


@contextlib.contextmanager
def _machinery(stage: str) -> Iterator[None]:
    """Setting up and running a stage is the grader's own machinery: whatever it raises (a grader bug, a
    broken engine) is an infrastructure fault, reported and retried, never a student's zero. What the
    student's outputs make the grader raise is judged later, behind the judges' barrier."""
    try:
        yield
    except (InfrastructureError, KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - converted, not swallowed
        raise InfrastructureError(f"the grader failed while running stage {stage!r} ({type(exc).__name__}: "
                                  f"{oneline(exc)}); this is a grader fault, not the student's") from exc


def _refuse_wrong_device(batch: BatchSetup, stderr: str) -> None:
    """A GPU batch whose stage could not use its GPU must not be graded on the CPU (wrong budgets, and not
    what the TA asked for): that is the machine's fault, never the student's."""
    said = runner_device(stderr)
    if batch.device == "cuda" and said and not said.startswith("cuda"):
        raise InfrastructureError(f"GPU {batch.gpu} cannot be used inside the {batch.sandbox.name} sandbox "
                                  f"({said}); check `nvidia-smi` and torch.cuda.is_available() with the grader's "
                                  "Python, or grade without --gpus")


def _import_verdict(stage: StageResult) -> tuple[str | None, set[str], str]:
    """(ungradable reason, names present, why checks are skipped)."""
    err = stage.outputs.record("import_error")
    names = stage.outputs.record("names") or {}
    if err and err.get("syntax"):
        return (f"segmentation.py does not compile: {err.get('error')}. Fix the syntax error (run "
                "`python segmentation.py` locally) and resubmit.", set(), "")
    if err:
        return None, set(), f"importing segmentation.py raised {oneline(err.get('error'))}"
    if stage.run.timed_out:
        return None, set(), f"importing segmentation.py took longer than {stage.budget.timeout_s:g} s"
    present = names.get("present")
    if not isinstance(present, list):
        return None, set(), f"importing segmentation.py crashed the interpreter (exit code {stage.run.exit_code})"
    return None, {n for n in present if isinstance(n, str)}, ""


def grade_submission(batch: BatchSetup, sub: Submission) -> tuple[SubmissionResult, dict]:
    """Grade one submission. Returns the result and the artefacts (npz name -> arrays) for the report."""
    rubric, durations, stages, artifacts = batch.rubric, {}, {}, {}
    results: dict[str, CheckResult] = {}
    run_dir = Path(tempfile.mkdtemp(prefix=f"{sub.student[:40]}-", dir=batch.scratch))
    try:
        stages["import"] = _run_stage(batch, sub, "import", run_dir)
        durations["import"] = round(stages["import"].run.duration_s, 3)
        ungradable, present, import_skip = _import_verdict(stages["import"])
        if ungradable:
            return _finish(batch, sub, [skipped(c, "the submission does not compile") for c in rubric.checks],
                           durations, stages, status="ungradable", message=ungradable), {}
        for check in rubric.checks:
            why = _skip_reason(check, present, import_skip, results, rubric)
            if why:  # the student's own failure (missing name, failed prerequisite) fails the check
                results[check.id] = skipped(check, why) if import_skip else not_run(check, why)
                continue
            stage = stage_of(check)
            if stage not in stages:
                stages[stage] = _run_stage(batch, sub, stage, run_dir)
                durations[stage] = round(stages[stage].run.duration_s, 3)
            judged = _second_chance(batch, sub, check, judge_behind_barrier(check, stages[stage], batch.ctx),
                                    stages, durations, run_dir)
            results[check.id] = judged.result
            # keyed by check id: two checks of one kind keep their own (report: View.artifact)
            artifacts.update({f"{check.id}.{name}": arrays for name, arrays in judged.artifacts.items()})
        message = f"Nothing was graded: {import_skip}. Run `python segmentation.py` locally to see why." \
            if import_skip else failed_cells_message(stages["import"].outputs.record("names"))
        return _finish(batch, sub, list(results.values()), durations, stages, message=message), artifacts
    except InfrastructureError:
        raise
    except Exception as exc:  # noqa: BLE001 - the fault barrier around the whole submission, past the judges'
        why = f"{type(exc).__name__}: {oneline(exc)}"
        checks = [results.get(c.id) or result(c, "error", 0.0, f"Not judged: the grader could not process this "
                                                 f"submission's outputs ({why}).") for c in rubric.checks]
        return _finish(batch, sub, checks, durations, stages, message=f"Partly graded: {why}. The checks judged "
                       "before it keep their scores."), {}
    finally:
        batch.sandbox.end_submission(sub.path)
        remove_tree(run_dir, ignore_errors=True)


def judge_behind_barrier(check: CheckSpec, stage: StageResult, ctx: JudgeContext) -> Judged:
    """The check's verdict; whatever its judge raises on this submission's (hostile) outputs becomes this
    check's ``error`` result with the reason, and the other checks keep their scores."""
    try:
        judged = KINDS[check.kind].judge(check, stage, ctx)
        json.dumps(judged.result.details, default=str)  # details that cannot be written fail here, not later
        return judged
    except InfrastructureError:
        raise
    except Exception as exc:  # noqa: BLE001 - the fault barrier: one submission's odd output is its result
        return Judged(result(check, "error", 0.0, f"The {stage.stage} stage's output could not be judged: "
                             f"{type(exc).__name__}: {oneline(exc)}. Check what your function returns "
                             "(type, shape, dtype) against the template's docstring."))


def _second_chance(batch: BatchSetup, sub: Submission, check: CheckSpec, first: Judged, stages: dict,
                   durations: dict, run_dir: Path) -> Judged:
    """The kind's retry (``grader.checks.base.Retry``): its stage ``<id>.retry`` is run, once, only when the
    first verdict asks for it (else nothing is started), judged like the first, and the kind says which
    verdict counts. A fault of the trusted hooks on odd outputs leaves the first verdict (the barrier)."""
    kind = KINDS[check.kind]
    try:
        if kind.retry is None or not kind.retry.wanted(check, first):
            return first
    except Exception:  # noqa: BLE001 - the fault barrier: a verdict the hook cannot read gets no second run
        return first
    name = kind.retry_stage(check)
    stages[name] = _run_stage(batch, sub, name, run_dir, budget_of=stage_of(check))
    durations[name] = round(stages[name].run.duration_s, 3)
    second = judge_behind_barrier(check, stages[name], batch.ctx)
    try:
        return kind.retry.combine(check, first, second)
    except Exception:  # noqa: BLE001 - the fault barrier: the first verdict stands
        return first


def _skip_reason(check: CheckSpec, present: set[str], import_skip: str, results: dict[str, CheckResult],
                 rubric: Rubric) -> str:
    if import_skip:
        return import_skip
    missing = [n for n in KINDS[check.kind].functions if n not in present]
    if missing:
        return f"segmentation.py does not define {', '.join(f'`{n}`' for n in missing)}"
    unmet = [why for req in check.requires if (why := _unmet(check, req, results.get(req), rubric))]
    return "; ".join(unmet)


def _unmet(check: CheckSpec, req: str, done: CheckResult | None, rubric: Rubric) -> str:
    """Why the required check ``req`` keeps ``check`` from running, or "" when it does not: it passed, or
    its kind's prerequisite hook (``CheckKind.prerequisite``) finds that what ``check`` needs of it worked."""
    if done is not None and done.status == "passed":
        return ""
    why = f"it requires {req} to pass first"
    hook = KINDS[rubric.check(req).kind].prerequisite if done is not None else None
    verdict = hook(done, check, rubric) if hook is not None else None
    if verdict is None:
        return why
    return f"{why}: {verdict}" if verdict else ""


def _finish(batch: BatchSetup, sub: Submission, checks: list[CheckResult], durations: dict, stages: dict,
            *, status: str = "graded", message: str = "") -> SubmissionResult:
    isolation = {s: r.run.isolation for s, r in stages.items()}
    devices = {s: runner_device(r.run.stderr) for s, r in stages.items()}
    provenance = {**batch.provenance, "submission_hash": sub.content_hash, "durations_s": durations,
                  "device_by_stage": devices,
                  "sandbox": {**batch.sandbox.describe(), "isolation": next(iter(isolation.values()), "")},
                  "graded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "intake_notes": list(sub.notes), **intake_identity(sub)}
    return score_submission(student=sub.student, checks=checks, rubric=batch.rubric, status=status,
                            message=message, provenance=provenance)


def rejected_result(rubric: Rubric, rejected: Rejected) -> SubmissionResult:
    checks = [skipped(c, "the submission could not be read") for c in rubric.checks]
    return score_submission(student=rejected.student, checks=checks, rubric=rubric, status="ungradable",
                            message=f"{rejected.reason} (from {rejected.source}). Fix it and resubmit.",
                            provenance={"grader_version": __version__, "python_version": platform.python_version(),
                                        **intake_identity(rejected)})


def intake_identity(entry: Submission | Rejected) -> dict:
    """Where a result's row came from (its file or folder, the LMS and its id of the student) and, where the
    LMS says, when it was submitted: the provenance keys grades.csv, the gradebook and intake read back."""
    return {"identity": entry.identity(), **({"submitted_at": entry.submitted_at} if entry.submitted_at else {})}


def write_artifacts(student_dir: Path, artifacts: dict[str, dict[str, np.ndarray]]) -> None:
    for name, arrays in artifacts.items():
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        write_atomic(student_dir / "artifacts" / f"{name}.npz", buffer.getvalue(), mode=0o644)
