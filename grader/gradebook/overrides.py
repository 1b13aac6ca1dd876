"""Staff overrides: ``overrides.csv`` (``student,check,points,adjust,comment,by``), read and validated.

``check`` is a check id or ``total``; ``points`` sets that score, ``adjust`` adds to it (+/-), one of the two
per row. The file lives in the output folder (or ``--overrides FILE``) and is never written by the grader, so
a regrade, a rubric edit or a grader upgrade keeps it: the autograded score is recomputed and the override
applied on top (``grader.batch.scoring.final_grade``). Every error names the file and the line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from grader.core.results import SubmissionResult
from grader.gradebook.csvfile import GradebookError, read_rows

__all__ = ["OVERRIDES", "TOTAL", "Override", "read_overrides", "validate_overrides", "by_student"]

OVERRIDES = "overrides.csv"
TOTAL = "total"
COLUMNS = ("student", "check", "points", "adjust", "comment", "by")


@dataclass(frozen=True)
class Override:
    line: int
    student: str
    check: str  # a check id or "total"
    points: float | None  # the new score, or
    adjust: float | None  # a change of the score
    comment: str
    by: str


def _number(text: str, where: str, column: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text.replace(",", ".")) if text.count(",") == 1 and "." not in text else float(text)
    except ValueError:
        raise GradebookError(f"{where}: {column} {text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise GradebookError(f"{where}: {column} {text[:40]!r} is not a finite number")
    return value


def read_overrides(path: Path) -> tuple[Override, ...]:
    """The rows of ``path``, each with one of points/adjust (else an error naming the line)."""
    found = []
    for row in read_rows(Path(path), required=("student", "check"), optional=COLUMNS[2:]):
        where = f"{path}: line {row.line}"
        points = _number(row.get("points"), where, "points")
        adjust = _number(row.get("adjust"), where, "adjust")
        if not row.get("student") or not row.get("check"):
            raise GradebookError(f"{where}: student and check are required")
        if (points is None) == (adjust is None):
            raise GradebookError(f"{where}: give points (a new score) or adjust (a +/- change), exactly one")
        found.append(Override(row.line, row.get("student"), row.get("check"), points, adjust,
                              row.get("comment"), row.get("by")))
    return tuple(found)


def validate_overrides(overrides: Sequence[Override], *, path: Path,
                       results: Mapping[str, SubmissionResult]) -> None:
    """Refuse an unknown student, a check that student's result does not hold, points outside [0, max], and
    two rows for one student's check. ``results``: folder name -> result."""
    seen: dict[tuple[str, str], int] = {}
    for o in overrides:
        where = f"{path}: line {o.line}"
        result = results.get(o.student)
        if result is None:
            raise GradebookError(f"{where}: unknown student {o.student!r}; use the folder name the results use "
                                 "(grades.csv's student column) or an LMS id they carry")
        maxima = {c.id: c.max_score for c in result.checks}
        if o.check != TOTAL and o.check not in maxima:
            raise GradebookError(f"{where}: unknown check {o.check!r}; use a check id ({', '.join(maxima)}) "
                                 f"or {TOTAL}")
        top = result.max_score if o.check == TOTAL else maxima[o.check]
        if o.points is not None and not 0 <= o.points <= top:
            raise GradebookError(f"{where}: points {o.points:g} is outside 0..{top:g}, the maximum of {o.check}")
        if (o.student, o.check) in seen:
            raise GradebookError(f"{where}: {o.student} / {o.check} is already overridden on line "
                                 f"{seen[o.student, o.check]}; keep one row per student and check")
        seen[o.student, o.check] = o.line


def by_student(overrides: Sequence[Override]) -> dict[str, tuple[Override, ...]]:
    out: dict[str, list[Override]] = {}
    for o in overrides:
        out.setdefault(o.student, []).append(o)
    return {k: tuple(v) for k, v in out.items()}
