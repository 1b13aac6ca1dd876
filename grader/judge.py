"""Judging: the sandbox's raw outputs + the host's expected values -> one CheckResult per check.

Trusted code only. Every number that becomes a score is computed here from outputs (arrays, logits,
label maps), never taken from what the student's code says about itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from grader.cases import UnitCase
from grader.expected import Expected
from grader.jobs import JobPlan
from grader.outputs import OutputError, StageOutputs
from grader.results import CheckResult
from grader.rubric import CheckSpec, StageBudget
from grader.sandbox.base import SandboxRun, says_out_of_memory

__all__ = ["StageResult", "Judged", "JudgeContext", "judge_check", "skipped", "HINTS"]

HINTS = {
    "transpose_conv": "Each input pixel scatters a copy of the kernel, scaled by its value, into the output at "
                      "(i*stride, j*stride); then crop `padding` from every side and keep `output_padding` extra "
                      "rows/columns at the bottom/right: (H-1)*stride - 2*padding + k + output_padding.",
    "bilinear_kernel": "bilinear_kernel(2) is [[.25,.5,.25],[.5,1,.5],[.25,.5,.25]]: the outer product of "
                       "1 - |d|/f for d = -(f-1) .. f-1.",
    "confusion_matrix": "Rows are ground truth, columns predictions; drop every pixel whose TARGET is 255 "
                        "before counting.",
    "mean_iou": "IoU = TP / (TP + FP + FN) per class; average only over classes whose union is non-empty "
                "(present in the target or the prediction); nan when there is none.",
    "pixel_accuracy": "Correct pixels over all non-void pixels: trace / sum of the confusion matrix; nan when "
                      "the matrix is empty.",
}


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
    expected: dict[str, Expected]
    num_classes: int


@dataclass(frozen=True)
class Judged:
    result: CheckResult
    artifacts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # npz name -> arrays


def _result(spec: CheckSpec, status: str, score: float, message: str, **details: Any) -> CheckResult:
    return CheckResult(id=spec.id, name=spec.name, score=round(score, 4), max_score=spec.points, status=status,
                       visibility=spec.visibility, message=message, details=details)


def skipped(spec: CheckSpec, why: str) -> CheckResult:
    return _result(spec, "skipped", 0.0, f"Not run: {why}.")


def stage_problem(spec: CheckSpec, stage: StageResult) -> CheckResult | None:
    """timeout / out of memory / crash of the stage as a whole, when it left no usable output."""
    run = stage.run
    tb = {"traceback": _trim(run.stderr)}
    if run.timed_out:
        return _result(spec, "timeout", 0.0, f"Timed out: the {stage.stage} stage did not finish within its "
                       f"{stage.budget.timeout_s:g} s budget (stages that finished are kept).", **tb)
    if run.out_of_memory:
        return _result(spec, "error", 0.0, f"Out of memory: the {stage.stage} stage exceeded its "
                       f"{stage.budget.memory_mb} MB limit.", **tb)
    if stage.problem:
        return _result(spec, "error", 0.0, f"The {stage.stage} stage's output could not be read: {stage.problem}.")
    err = stage.outputs.record("stage_error")
    if err and says_out_of_memory(str(err.get("error"))):
        return _result(spec, "error", 0.0, f"Out of memory: your code tried to allocate more than the "
                       f"{stage.stage} stage's {stage.budget.memory_mb} MB limit ({_oneline(err.get('error'))}).",
                       traceback=_trim(str(err.get("traceback", ""))))
    if err:
        return _result(spec, "failed", 0.0, f"Your code raised {_oneline(err.get('error'))}",
                       traceback=_trim(str(err.get("traceback", ""))))
    return None


def crashed(spec: CheckSpec, stage: StageResult) -> CheckResult:
    code = stage.run.exit_code
    how = f"was killed by signal {code - 128}" if code and code > 128 else f"exited with code {code}"
    return _result(spec, "error", 0.0, f"The {stage.stage} stage {how} before writing this result "
                   "(a crash of the Python process, e.g. os._exit, a segfault or sys.exit in your code).",
                   traceback=_trim(stage.run.stderr))


def _oneline(text: Any) -> str:
    return str(text).splitlines()[0][:300] if text else "an exception"


def _trim(text: str, lines: int = 25) -> str:
    """The last lines of a traceback, without the grader's own paths."""
    kept = [ln for ln in text.splitlines() if "/grader/" not in ln and "site-packages" not in ln]
    return "\n".join(kept[-lines:])


# ---- unit checks -------------------------------------------------------------------------------------

def _compare(outputs: StageOutputs, case: UnitCase, exp: Expected, spec: CheckSpec) -> dict | None:
    """None when the case passes, else what to tell the student."""
    rec = outputs.record(case.id) or {}
    if isinstance(exp.value, np.ndarray):
        if rec.get("kind") != "array":
            return {"expected": f"a tensor of shape {list(exp.value.shape)}", "got": "a number"}
        got = outputs.array(case.id)
        if got.shape != exp.value.shape:
            return {"expected": f"shape {list(exp.value.shape)}", "got": f"shape {list(got.shape)}"}
        if exp.value.dtype.kind in "iu":
            err = float(np.abs(got.astype(np.float64) - exp.value).max(initial=0))
            return None if err == 0 else {"max_abs_error": err, "expected": "exact integer counts"}
        err = float(np.nan_to_num(np.abs(got - exp.value), nan=np.inf).max(initial=0))
        ok = np.allclose(got, exp.value, atol=spec.atol, rtol=spec.rtol)
        return None if ok else {"max_abs_error": err}
    got_value = outputs.number(case.id) if rec.get("kind") == "number" else float(outputs.array(case.id).ravel()[0])
    if math.isnan(exp.value) and math.isnan(got_value):
        return None
    if math.isclose(got_value, exp.value, rel_tol=spec.rtol, abs_tol=spec.atol):
        return None
    return {"expected": repr(exp.value), "got": repr(got_value)}


def judge_unit(spec: CheckSpec, stage: StageResult, ctx: JudgeContext) -> Judged:
    cases = ctx.plan.cases[spec.id]
    failures: list[tuple[UnitCase, dict]] = []
    missing = 0
    for case in cases:
        rec = stage.outputs.record(case.id)
        if rec is None:
            missing += 1
            failures.append((case, {"error": "no result: the stage stopped before this case"}))
        elif not rec.get("ok"):
            failures.append((case, {"error": _oneline(rec.get("error"))}))
        else:
            try:
                info = _compare(stage.outputs, case, ctx.expected[case.id], spec)
            except OutputError as exc:
                info = {"error": str(exc)}
            if info is not None:
                failures.append((case, info))
    if missing == len(cases) and (problem := stage_problem(spec, stage) or crashed(spec, stage)):
        return Judged(problem)
    passed = len(cases) - len(failures)
    score = spec.points * passed / len(cases)
    if not failures:
        return Judged(_result(spec, "passed", score, f"All {len(cases)} cases match the reference.",
                              cases=len(cases), failed=0))
    case, info = min(failures, key=lambda f: f[0].size)
    smallest = {**case.describe(), "max_abs_error": None, "expected": None, "got": None, "error": None, **info}
    status = "timeout" if missing and stage.run.timed_out else "failed"
    raised = f" It raised {info['error']}" if info.get("error") and missing < len(failures) else ""
    message = (f"{len(failures)} of {len(cases)} cases differ from the reference"
               + (f"; the last {missing} were not run: the stage timed out" if status == "timeout" else "")
               + f". Smallest failing case: {case.label}.{raised}")
    return Judged(_result(spec, status, score, message, cases=len(cases), failed=len(failures),
                          smallest_failure=smallest, hint=HINTS.get(spec.kind, "")))


# ---- model, overfit, full training: see judge_nets.py ------------------------------------------------

def judge_check(spec: CheckSpec, stage: StageResult, ctx: JudgeContext) -> Judged:
    from grader.judge_nets import JUDGES

    judge: Callable[[CheckSpec, StageResult, JudgeContext], Judged] = JUDGES.get(spec.kind, judge_unit)
    return judge(spec, stage, ctx)
