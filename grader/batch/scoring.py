"""Scoring: a pure function from check results to a submission result. No I/O, no clocks."""
from __future__ import annotations

from typing import Any, Sequence

from grader.core.results import CheckResult, SubmissionResult
from grader.rubric import Rubric

__all__ = ["score_submission"]


def score_submission(*, student: str, checks: Sequence[CheckResult], rubric: Rubric, status: str = "graded",
                     message: str = "", provenance: dict[str, Any] | None = None) -> SubmissionResult:
    """Total = sum of check scores (each already within [0, points]); an ungradable submission scores 0."""
    total = 0.0 if status != "graded" else sum(min(max(c.score, 0.0), c.max_score) for c in checks)
    return SubmissionResult(student=student, status=status, score=round(total, 2), max_score=rubric.max_score,
                            checks=tuple(checks), message=message,
                            provenance={**(provenance or {}), "rubric_hash": rubric.source_hash})
