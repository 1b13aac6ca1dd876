"""Per-student HTML reports.

A report is ONE self-contained file (inline CSS, images as ``data:`` URIs, no scripts, no requests), so it
can be mailed, uploaded to an LMS or opened from disk. Rendering reads only result.json and the
artefacts beside it: ``grader report DIR`` re-renders without regrading (``grader.report.folder``).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from grader.report import views
from grader.report.contrast import ContrastView, contrast_view
from grader.report.env import render_page
from grader.gradebook.view import GradeView, grade_view
from grader.core.results import SubmissionResult, read_result

__all__ = ["render_student_report"]


@dataclass(frozen=True)
class _Page:
    """Everything the student template shows, already filtered by the visibility policy."""

    student: str
    status: str
    released: bool
    generated_at: str
    banner: views.Banner | None
    total: views.Total
    checks: tuple[views.CheckView, ...]
    provenance: views.ProvenanceView
    grade: GradeView | None = None  # the staff's layers (grader.gradebook.view): adjustments, lateness, final
    contrast: ContrastView | None = None  # the lecture's 2x2, under the visibility policy (grader.report.contrast)


def _page(result: SubmissionResult, student_dir: Path, *, released: bool) -> _Page:
    return _Page(
        student=result.student, status=result.status, released=released,
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        banner=views.banner(result), total=views.total(result, released=released),
        checks=tuple(views.check_view(c, student_dir, released=released) for c in result.checks),
        provenance=views.provenance_view(result.provenance or {}, result.checks, released=released),
        grade=grade_view(result, student_dir, released=released),
        contrast=contrast_view(result, student_dir, released=released),
    )


def render_student_report(student_dir: Path, *, released: bool = False) -> Path:
    """Write ``student_dir/report.html`` from ``student_dir/result.json`` (and its artefacts).

    ``released=False`` (before the deadline): ``after_due_date`` and ``hidden`` checks show only their
    name and "graded after the deadline", and the total is that of the visible checks, labelled so.
    ``released=True``: ``after_due_date`` checks show everything, ``hidden`` ones name and score only.
    Raises OSError/ValueError/KeyError/TypeError when result.json is missing or not schema 1.
    """
    student_dir = Path(student_dir)
    result = read_result(student_dir / "result.json")
    page = _page(result, student_dir, released=released)
    return render_page("student.html.j2", student_dir / "report.html", page=page)
