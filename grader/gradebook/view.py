"""What a student's report shows of the staff's layers (``<student>/grade.json``): the adjustments with their
comments, the lateness and its penalty, the final score, under the same visibility policy as the checks.

Before release, an adjustment of a check the student cannot see yet, and any number derived from one (a
total override, the final score, the penalty in points) stay off the page; the late note and its percentage
are shown (they reveal no score). After release everything is shown; a hidden check's adjustment shows its
name, points and comment, as the check itself shows its name and score.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.core.results import SubmissionResult

__all__ = ["LAYERS", "AdjustmentRow", "GradeView", "grade_view"]

LAYERS = "grade.json"  # grader.gradebook.book writes it


@dataclass(frozen=True)
class AdjustmentRow:
    name: str
    auto: str
    after: str
    delta: str  # "+5", "-2.5"
    comment: str
    by: str


@dataclass(frozen=True)
class GradeView:
    adjustments: tuple[AdjustmentRow, ...]
    late_note: str | None
    late_percent: str | None  # "10 %", when a penalty applies
    auto: str | None  # None: not shown yet (before release with checks withheld)
    adjustment: str | None
    penalty: str | None
    final: str | None
    max_score: str
    pending: bool  # some adjustment (or the final score) is shown after release


def _num(value: Any) -> str:
    return f"{float(value):.2f}".rstrip("0").rstrip(".")


def _signed(value: Any) -> str:
    text = _num(value)
    return text if text.startswith("-") or text == "0" else f"+{text}"


def _read(student_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((student_dir / LAYERS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def grade_view(result: SubmissionResult, student_dir: Path, *, released: bool) -> GradeView | None:
    """The grade section of the page, or None when no layer applies (no grade.json, or one not ours)."""
    data = _read(Path(student_dir))
    if data is None or result.status == "infrastructure_error":
        return None
    try:
        return _view(data, result, released=released)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _view(data: dict[str, Any], result: SubmissionResult, *, released: bool) -> GradeView:
    seen = {c.id for c in result.checks if c.visibility == "visible" or (released and c.visibility == "after_due_date")}
    named = {c.id: c for c in result.checks}
    all_shown = released or all(c.visibility == "visible" for c in result.checks)
    rows, pending = [], False
    for a in data.get("adjustments") or []:
        check = str(a.get("check", ""))
        if not (released or check in seen or (check == "total" and all_shown)):
            pending = True
            continue
        rows.append(AdjustmentRow(str(named[check].name if check in named else a.get("name", check)),
                                  _num(a["auto"]), _num(a["after"]), _signed(a["delta"]),
                                  str(a.get("comment") or ""), str(a.get("by") or "")))
    late = data.get("late") or {}
    percent = float(late.get("percent") or 0.0)
    numbers = all_shown and not pending
    return GradeView(
        adjustments=tuple(rows), late_note=str(late.get("note") or "") or None,
        late_percent=f"{percent:g} %" if percent else None,
        auto=_num(data["auto"]) if numbers else None, adjustment=_signed(data["adjustment"]) if numbers else None,
        penalty=_num(data["late_penalty"]) if numbers else None, final=_num(data["final"]) if numbers else None,
        max_score=_num(data["max_score"]), pending=pending or not all_shown,
    )
