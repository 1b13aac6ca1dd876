"""Scoring: pure functions, no I/O, no clocks.

``score_submission``: check results -> the autograded SubmissionResult (the facts a regrade recomputes).
``final_grade``: that result + the staff's overrides + the lateness -> the grade the LMS gets, the layers
kept apart (auto, staff adjustment, late penalty, final), as nbgrader keeps ``auto_score`` and
``manual_score``. A result is never changed by the layers above it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from grader.core.results import CheckResult, SubmissionResult
from grader.gradebook.late import Lateness, lateness
from grader.gradebook.overrides import TOTAL, Override
from grader.rubric import Rubric

__all__ = ["score_submission", "Adjustment", "FinalGrade", "final_grade"]


def score_submission(*, student: str, checks: Sequence[CheckResult], rubric: Rubric, status: str = "graded",
                     message: str = "", provenance: dict[str, Any] | None = None) -> SubmissionResult:
    """Total = sum of check scores (each already within [0, points]); an ungradable submission scores 0."""
    total = 0.0 if status != "graded" else sum(min(max(c.score, 0.0), c.max_score) for c in checks)
    return SubmissionResult(student=student, status=status, score=round(total, 2), max_score=rubric.max_score,
                            checks=tuple(checks), message=message,
                            provenance={**(provenance or {}), "rubric_hash": rubric.source_hash})


@dataclass(frozen=True)
class Adjustment:
    """One staff override as applied: the autograded score of ``check`` (or the total) and the score after it."""

    check: str  # a check id or "total"
    name: str  # the check's name, or "Total"
    auto: float
    after: float
    max_score: float
    comment: str
    by: str
    line: int  # in overrides.csv

    @property
    def delta(self) -> float:
        return round(self.after - self.auto, 2)


@dataclass(frozen=True)
class FinalGrade:
    student: str
    status: str
    auto: float | None  # None: an infrastructure error, no grade exists yet
    adjustment: float  # staff: (score after overrides) - auto
    late_penalty: float  # points taken by the late policy, of the score after overrides
    final: float | None
    max_score: float
    adjustments: tuple[Adjustment, ...] = ()
    late: Lateness | None = None

    def to_json(self) -> dict[str, Any]:
        late = self.late
        return {"student": self.student, "status": self.status, "auto": self.auto, "adjustment": self.adjustment,
                "late_penalty": self.late_penalty, "final": self.final, "max_score": self.max_score,
                "adjustments": [{**a.__dict__, "delta": a.delta} for a in self.adjustments],
                "late": None if late is None else {**late.__dict__, "late": late.late}}


def _apply(o: Override, auto: float, top: float) -> float:
    value = o.points if o.points is not None else auto + (o.adjust or 0.0)
    return round(min(max(value, 0.0), top), 2)  # an adjust never goes below 0 or above the maximum


def final_grade(result: SubmissionResult, overrides: Sequence[Override] = (),
                late: Lateness | None = None) -> FinalGrade:
    """The layers of one student's grade. Check overrides first (each on its check's autograded score),
    then a ``total`` override on their sum, then the late penalty (``late.percent`` of that score).
    An infrastructure error has no grade: no layer applies and ``final`` is None. An override of a check
    the result does not hold is a KeyError (``validate_overrides`` refuses it first, naming the line)."""
    late = late or lateness(None, None)
    if result.status == "infrastructure_error":
        return FinalGrade(result.student, result.status, None, 0.0, 0.0, None, result.max_score, (), late)
    checks = {c.id: c for c in result.checks}
    auto = float(result.score)
    scores = {c.id: float(c.score) if result.status == "graded" else 0.0 for c in result.checks}
    applied = []
    for o in (o for o in overrides if o.check != TOTAL):
        check = checks[o.check]
        after = _apply(o, scores[o.check], check.max_score)
        applied.append(Adjustment(o.check, check.name, scores[o.check], after, check.max_score, o.comment, o.by,
                                  o.line))
        scores[o.check] = after
    subtotal = round(sum(scores.values()), 2) if applied else auto
    for o in (o for o in overrides if o.check == TOTAL):
        after = _apply(o, subtotal, result.max_score)
        applied.append(Adjustment(TOTAL, "Total", subtotal, after, result.max_score, o.comment, o.by, o.line))
        subtotal = after
    penalty = round(subtotal * late.percent / 100, 2)
    return FinalGrade(result.student, result.status, auto, round(subtotal - auto, 2), penalty,
                      round(subtotal - penalty, 2), result.max_score, tuple(applied), late)
