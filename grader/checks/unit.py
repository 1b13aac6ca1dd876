"""What the unit kinds share: seeded cases of one student function, compared with the reference's outputs.

A unit kind (transpose_conv, bilinear_kernel, the three metrics) is its rubric fields plus a ``cases(spec)``
maker; ``unit_kind`` builds the rest. Its cases are pure functions of the rubric (the same rubric always
makes the same cases), written into the job as .npy arrays; ``grader.job.expected`` computes the reference's
output of every case on the host (in the trusted preparation process). Inside the sandbox all unit checks
share one run (stage ``unit``); each case's output is recorded under its id (``<check id>-<n>``).

A unit check may guard its function against forbidden operations (``forbidden``: glob patterns over the
torch operations it reaches, ``grader.checks.forbidden``): each guarded call is recorded in the sandbox and
the host judges the record. ``on_forbidden: zero`` scores a check whose function reached one 0;
``flag`` keeps the score and says what was detected.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal

from grader.checks import forbidden as ops
from grader.checks.base import CheckKind, CheckSpec, View
from grader.checks.verdict import JudgeContext, Judged, StageResult, crashed, oneline, result, stage_problem
from grader.core.lazy import numpy as np
from grader.core.lazy import torch
from grader.core.outputs import OutputError, StageOutputs
from grader.core.results import CheckResult

__all__ = ["UnitCase", "UnitSpec", "unit_kind", "run_cases", "judge_cases"]


@dataclass(frozen=True)
class UnitSpec(CheckSpec):
    seed: int = 0  # seeds the check's random cases
    cases: int = 20  # random cases
    edge_cases: bool = True  # crafted cases: lecture example, void, absent classes, all-void ...
    atol: float = 1e-5
    rtol: float = 1e-4
    forbidden: tuple[str, ...] = ()  # glob patterns over the torch operations the function may not reach
    on_forbidden: Literal["zero", "flag"] = "zero"  # zero: the check scores 0; flag: the score stands


@dataclass(frozen=True)
class UnitCase:
    id: str  # unique within the batch (``<check id>-<n>``), also the output file stem
    function: str  # the student's function to call
    arrays: dict[str, Any]  # positional tensor arguments (numpy arrays), in order
    args: tuple = ()  # positional scalars after the arrays
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # what this case is, for feedback ("lecture 4x4 example", "random #3")

    @property
    def size(self) -> int:
        return sum(a.size for a in self.arrays.values()) + sum(int(a) for a in self.args if isinstance(a, int))

    def describe(self) -> dict[str, Any]:
        """The arguments as a student would write them (shapes, not values), for feedback."""
        return {"case": self.label, "shapes": {k: list(v.shape) for k, v in self.arrays.items()},
                "args": {**{f"arg{i}": a for i, a in enumerate(self.args)}, **self.kwargs}}


def unit_kind(name: str, spec: type[UnitSpec], function: str, cases: Callable[[Any], list[UnitCase]],
              hint: str) -> CheckKind:
    """The CheckKind of a unit kind, from its fields and its case maker."""
    def inputs(spec: UnitSpec, job: Any) -> tuple[dict, dict]:
        return {"cases": [_write_case(job, case) for case in cases(spec)],
                "record_ops": bool(getattr(spec, "forbidden", ()))}, {}

    def judge(spec: UnitSpec, stage: StageResult, ctx: JudgeContext) -> Judged:
        return judge_cases(spec, stage, ctx, hint=hint)

    return CheckKind(name=name, spec=spec, budget="unit", functions=(function,), inputs=inputs, run=run_cases,
                     judge=judge, hint=hint, cases=cases, view=View(section="unit"), reads_dataset=False)


def _write_case(job: Any, case: UnitCase) -> dict:
    files = [job.save(f"unit/{case.id}-{name}.npy", arr) for name, arr in case.arrays.items()]
    return {"id": case.id, "function": case.function, "arrays": files, "args": list(case.args),
            "kwargs": case.kwargs}


# ---- in the sandbox ----------------------------------------------------------------------------------

def run_cases(student: Any, config: dict, job: Path, writer: Any, device: str) -> None:
    """Call the student's function on every case; a raised exception is recorded as data for the judge.
    A guarded check (``record_ops``) records the torch operations each call reached, around that call only.
    The inputs come from ``config["loaded"]`` (read by the runner before the import, ``grader.runner.seal_cases``:
    the job's files are sealed by then), else from the job folder."""
    loaded = config.get("loaded")
    tampered = config.get("tampered") or (lambda: [])  # grader.checks.integrity, snapshot before the import
    record = ops.OpRecorder.record  # bound before any student call
    for case in config["cases"]:
        fn = getattr(student, case["function"], None)
        if fn is None:
            continue
        args = [torch.from_numpy(loaded[a] if loaded is not None else np.load(job / a, allow_pickle=False))
                for a in case["arrays"]]
        recorder = ops.OpRecorder() if config.get("record_ops") else None
        try:
            if recorder is None:
                value = fn(*args, *case["args"], **case["kwargs"])
            else:
                with recorder:
                    value = fn(*args, *case["args"], **case["kwargs"])
            seen = record(recorder) if recorder is not None else {}
            if recorder is not None and (changes := tampered()):
                seen = {**seen, "ops": [*seen.get("ops", []), *(f"guard:grader code replaced ({c})" for c in changes)]}
            if isinstance(value, torch.Tensor) and value.ndim > 0 or isinstance(value, np.ndarray):
                writer.record(case["id"], {"ok": True, "kind": "array", "file": writer.array(case["id"], value),
                                           **seen})
            else:
                writer.record(case["id"], {"ok": True, "kind": "number", "value": float(value), **seen})
        except Exception as exc:  # the student's exception is data for the judge
            writer.error(case["id"], exc)


# ---- on the host -------------------------------------------------------------------------------------

def _compare(outputs: StageOutputs, case: UnitCase, want: Any, spec: UnitSpec) -> dict | None:
    """None when the case passes, else what to tell the student."""
    rec = outputs.record(case.id) or {}
    if isinstance(want, np.ndarray):
        if rec.get("kind") != "array":
            return {"expected": f"a tensor of shape {list(want.shape)}", "got": "a number"}
        got = outputs.array(case.id)
        if got.shape != want.shape:
            return {"expected": f"shape {list(want.shape)}", "got": f"shape {list(got.shape)}"}
        if not np.isfinite(got).all():
            return {"got": "NaN or inf values", "expected": "finite values"}
        err = float(np.abs(got.astype(np.float64) - want).max(initial=0))
        if want.dtype.kind in "iu":
            return None if err == 0 else {"max_abs_error": err, "expected": "exact integer counts"}
        ok = bool(np.allclose(got, want, atol=spec.atol, rtol=spec.rtol))
        return None if ok else {"max_abs_error": err}
    if rec.get("kind") == "number":
        got_value = outputs.number(case.id)
    else:
        arr = outputs.array(case.id)
        if arr.size != 1:
            return {"expected": "a single number", "got": f"an array of shape {list(arr.shape)}"}
        got_value = float(arr.ravel()[0])
    if math.isnan(want) and math.isnan(got_value):
        return None
    if math.isfinite(got_value) and math.isclose(got_value, want, rel_tol=spec.rtol, abs_tol=spec.atol):
        return None
    return {"expected": repr(want), "got": repr(got_value)}


def judge_cases(spec: UnitSpec, stage: StageResult, ctx: JudgeContext, *, hint: str = "") -> Judged:
    """Partial credit: points x passed cases / cases; the feedback shows the smallest failing case."""
    cases: list[UnitCase] = ctx.plan.cases[spec.id]
    failures: list[tuple[UnitCase, dict]] = []
    hits: dict[str, list[str]] = {}  # case id -> forbidden operations its call reached
    missing = 0
    for case in cases:
        rec = stage.outputs.record(case.id)
        if rec is not None and (found := ops.detected(getattr(spec, "forbidden", ()), rec.get("ops"))):
            hits[case.id] = found
        if rec is None:
            missing += 1
            failures.append((case, {"error": "no result: the stage stopped before this case"}))
        elif not rec.get("ok"):
            failures.append((case, {"error": oneline(rec.get("error"))}))
        else:
            try:
                info = _compare(stage.outputs, case, ctx.expected[case.id].value, spec)
            except OutputError as exc:
                info = {"error": str(exc)}
            if info is not None:
                failures.append((case, info))
    if missing == len(cases) and (problem := stage_problem(spec, stage) or crashed(spec, stage)):
        return Judged(problem)
    if getattr(spec, "forbidden", ()) and (changed := _grader_code_changed(stage, complete=not missing)):
        hits["integrity"] = [f"guard:grader code replaced ({c})" for c in changed]
    verdict = _verdict(spec, stage, cases, failures, missing, hint)
    verdict = _forbidden_verdict(spec, verdict, hits, cases) if hits else verdict
    return Judged(_import_flag(spec, verdict, stage))


def _grader_code_changed(stage: StageResult, *, complete: bool) -> list[str]:
    """What the guarded stage's integrity record (``grader.checks.integrity``, written by the runner) says the
    student's code replaced of the grader's; a stage that ran every case and exited cleanly without the record
    replaced its writer (one that stopped early, a crash or a timeout, is judged by its missing cases)."""
    rec = stage.outputs.record("integrity")
    if not isinstance(rec, dict):
        clean = complete and stage.run.exit_code == 0 and not stage.run.timed_out
        return ["the integrity record is missing"] if clean else []
    changed = rec.get("changed")
    if not isinstance(changed, list):
        return ["the integrity record is malformed"]
    return [str(c)[:120] for c in changed[:10]]


def _import_flag(spec: UnitSpec, verdict: CheckResult, stage: StageResult) -> CheckResult:
    """What the module reached while it was imported (``import_ops``, recorded by the runner): flagged for staff
    review, never scored (an honest notebook may compare its function with the built-in in a demo cell)."""
    rec = stage.outputs.record("import_ops") or {}
    found = ops.detected(getattr(spec, "forbidden", ()), rec.get("ops")) if isinstance(rec, dict) else []
    if not found:
        return verdict
    return replace(verdict, details={**verdict.details, "review": True, "import_detected": sorted(set(found))},
                   message=f"{verdict.message} Flagged for staff review (not scored): while it was imported, the "
                           f"module reached {ops.describe(found)}.")


def _verdict(spec: UnitSpec, stage: StageResult, cases: list[UnitCase], failures: list[tuple[UnitCase, dict]],
             missing: int, hint: str) -> CheckResult:
    passed = len(cases) - len(failures)
    score = spec.points * passed / len(cases)
    if not failures:
        return result(spec, "passed", score, f"All {len(cases)} cases match the reference.", cases=len(cases),
                      failed=0)
    case, info = min(failures, key=lambda f: f[0].size)
    smallest = {**case.describe(), "max_abs_error": None, "expected": None, "got": None, "error": None, **info}
    status = "timeout" if missing and stage.run.timed_out else "failed"
    raised = f" It raised {info['error']}" if info.get("error") and missing < len(failures) else ""
    message = (f"{len(failures)} of {len(cases)} cases differ from the reference"
               + (f"; the last {missing} were not run: the stage timed out" if status == "timeout" else "")
               + f". Smallest failing case: {case.label}.{raised}")
    return result(spec, status, score, message, cases=len(cases), failed=len(failures), smallest_failure=smallest,
                  hint=hint)


def _forbidden_verdict(spec: UnitSpec, verdict: CheckResult, hits: dict[str, list[str]],
                       cases: list[UnitCase]) -> CheckResult:
    """``on_forbidden: zero``: failed with 0 points; ``flag``: the verdict stands, with what was detected.
    Said as "detected": the recorder ran in the student's process, so its silence proves nothing."""
    names = [name for found in hits.values() for name in found]
    reached = ops.describe([n for n in names if not n.startswith("guard:")])
    around = "; ".join(dict.fromkeys(n.split(":", 1)[1] for n in names if n.startswith("guard:")))
    what = " and ".join(([f"reached {reached}"] if reached else []) + ([f"worked around the recorder ({around})"]
                                                                       if around else []))
    said = (f"Forbidden operation detected: `{cases[0].function}` {what} in {len(hits)} of {len(cases)} "
            f"cases; this check forbids {', '.join(spec.forbidden)} and any way around the recorder.")
    details = {**verdict.details, "forbidden_detected": sorted({n for names in hits.values() for n in names}),
               "forbidden_cases": len(hits), "on_forbidden": spec.on_forbidden}
    if spec.on_forbidden == "flag":
        return replace(verdict, message=f"{verdict.message} Flagged for review: {said}", details=details)
    matched = len(cases) - int(verdict.details.get("failed", 0))
    return replace(verdict, status="failed", score=0.0, details=details,
                   message=f"{said} It scores 0 (without that, {matched} of {len(cases)} cases matched the "
                           "reference). Write it with the operations the assignment allows.")
