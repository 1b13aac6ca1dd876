"""What a judge works from and what it returns; the verdicts every kind shares (timeout, OOM, crash, skip).

Trusted code only. Every number that becomes a score is computed by a kind's judge from outputs (arrays,
logits, label maps), never taken from what the student's code says about itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.checks.base import CheckSpec, StageBudget
from grader.core.lazy import numpy as np
from grader.core.outputs import StageOutputs
from grader.core.results import CheckResult
from grader.sandbox.base import SandboxRun, says_out_of_memory

__all__ = ["JobPlan", "StageResult", "JudgeContext", "Judged", "result", "skipped", "not_run", "stage_problem",
           "crashed", "problem_or_crash", "oneline", "trim"]


@dataclass(frozen=True)
class JobPlan:
    """The batch's job as the host knows it: the folder the sandbox sees, and what only the host sees."""

    job_dir: Path  # readable by the sandbox
    cases: dict[str, list[Any]]  # check id -> its unit cases (grader.checks.unit.UnitCase), with metadata
    host: dict[str, dict[str, np.ndarray]]  # check id -> host-only arrays (labels, ...): NEVER in job_dir
    dataset_hash: str = ""


@dataclass(frozen=True)
class StageResult:
    stage: str
    run: SandboxRun
    outputs: StageOutputs
    budget: StageBudget
    problem: str | None = None  # the outputs were unreadable


@dataclass(frozen=True)
class JudgeContext:
    plan: JobPlan
    expected: dict[str, Any]  # unit case id -> grader.job.expected.Expected
    num_classes: int


@dataclass(frozen=True)
class Judged:
    result: CheckResult
    artifacts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # npz name -> arrays


def result(spec: CheckSpec, status: str, score: float, message: str, **details: Any) -> CheckResult:
    return CheckResult(id=spec.id, name=spec.name, score=round(score, 4), max_score=spec.points, status=status,
                       visibility=spec.visibility, message=message, details=details, kind=spec.kind)


def skipped(spec: CheckSpec, why: str) -> CheckResult:
    return result(spec, "skipped", 0.0, f"Not run: {why}.")


def not_run(spec: CheckSpec, why: str) -> CheckResult:
    """A missing function or a failed prerequisite is the student's failure, not a skip."""
    advice = (" Define it with the signature of the template (student_template/segmentation.py)."
              if "define" in why else "")
    return result(spec, "failed", 0.0, f"Not run: {why}.{advice}")


def stage_problem(spec: CheckSpec, stage: StageResult) -> CheckResult | None:
    """timeout / out of memory / crash of the stage as a whole, when it left no usable output."""
    run = stage.run
    tb = {"traceback": trim(run.stderr)}
    if run.timed_out:
        return result(spec, "timeout", 0.0, f"Timed out: the {stage.stage} stage did not finish within its "
                      f"{stage.budget.timeout_s:g} s budget (stages that finished are kept).", **tb)
    if run.out_of_memory:
        return result(spec, "error", 0.0, f"Out of memory: the {stage.stage} stage exceeded its "
                      f"{stage.budget.memory_mb} MB limit.", **tb)
    if stage.problem:
        return result(spec, "error", 0.0, f"The {stage.stage} stage's output could not be read: {stage.problem}.")
    err = stage.outputs.record("stage_error")
    if err and "CUDA out of memory" in str(err.get("error")):  # the GPU, not the host memory limit
        return result(spec, "error", 0.0, "Out of GPU memory: your code tried to allocate more than this stage's "
                      f"share of the GPU ({oneline(err.get('error'))}).", traceback=trim(str(err.get("traceback", ""))))
    if err and says_out_of_memory(str(err.get("error"))):
        return result(spec, "error", 0.0, f"Out of memory: your code tried to allocate more than the "
                      f"{stage.stage} stage's {stage.budget.memory_mb} MB limit ({oneline(err.get('error'))}).",
                      traceback=trim(str(err.get("traceback", ""))))
    if err:
        return result(spec, "failed", 0.0, f"Your code raised {oneline(err.get('error'))}",
                      traceback=trim(str(err.get("traceback", ""))))
    return None


def crashed(spec: CheckSpec, stage: StageResult) -> CheckResult:
    code = stage.run.exit_code
    how = f"was killed by signal {code - 128}" if code and code > 128 else f"exited with code {code}"
    return result(spec, "error", 0.0, f"The {stage.stage} stage {how} before writing this result "
                  "(a crash of the Python process, e.g. os._exit, a segfault or sys.exit in your code).",
                  traceback=trim(stage.run.stderr))


def problem_or_crash(spec: CheckSpec, stage: StageResult) -> Judged:
    return Judged(stage_problem(spec, stage) or crashed(spec, stage))


def oneline(text: Any) -> str:
    """The first non-blank line of a (student-made) message, bounded; never fails on odd input."""
    lines = [ln.strip() for ln in str(text if text is not None else "").splitlines() if ln.strip()]
    return lines[0][:300] if lines else "an exception"


def trim(text: str, lines: int = 25) -> str:
    """The last lines of a traceback, without the grader's own paths."""
    kept = [ln for ln in str(text).splitlines() if "/grader/" not in ln and "site-packages" not in ln]
    return "\n".join(kept[-lines:])
