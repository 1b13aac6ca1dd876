"""Per-student HTML reports, and re-rendering a whole grading output folder from its result.json files.

A report is ONE self-contained file (inline CSS, images as ``data:`` URIs, no scripts, no requests), so it
can be mailed, uploaded to an LMS or opened from disk. Rendering reads only result.json and the
artefacts beside it: ``grader report DIR`` re-renders without regrading.
"""
from __future__ import annotations

import hashlib

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from grader.report import views
from grader.report.env import render_page
from grader.report.collect import Unreadable, student_dirs
from grader.report.summary import render_class_summary
from grader.results import SubmissionResult, read_result

__all__ = ["render_student_report", "render_all"]


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


def _page(result: SubmissionResult, student_dir: Path, *, released: bool) -> _Page:
    return _Page(
        student=result.student, status=result.status, released=released,
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        banner=views.banner(result), total=views.total(result, released=released),
        checks=tuple(views.check_view(c, student_dir, released=released) for c in result.checks),
        provenance=views.provenance_view(result.provenance or {}),
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


def _inputs_digest(student_dir: Path, released: bool) -> str:
    """What a report is made from: result.json, the artefacts, the release flag."""
    digest = hashlib.sha256(f"released={released}".encode())
    for path in [student_dir / "result.json", *sorted((student_dir / "artifacts").glob("*.npz"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _up_to_date(student_dir: Path, digest: str) -> bool:
    stamp = student_dir / ".report.sha256"
    return (student_dir / "report.html").exists() and stamp.exists() and stamp.read_text() == digest


def render_all(out_dir: Path, *, released: bool = False, only_changed: bool = False) -> list[Path]:
    """Re-render every student's report.html and the class summary index.html from result.json files.

    One broken folder (unreadable result.json, a report that fails to render) is listed on the
    summary with its reason and does not stop the others. Returns the pages written, summary last.
    ``only_changed`` skips a report whose inputs (result.json, artefacts, release flag) are unchanged
    since it was rendered, and the summary when none of them nor summary.json changed: a regrade of an
    unchanged class then draws nothing (the summary keeps the time it was generated at).
    """
    out_dir = Path(out_dir)
    written: list[Path] = []
    failures: list[Unreadable] = []
    index_inputs = hashlib.sha256(f"released={released}".encode())
    for student_dir in student_dirs(out_dir):
        try:
            digest = _inputs_digest(student_dir, released) if (student_dir / "result.json").exists() else ""
            index_inputs.update(f"{student_dir.name}\0{digest}\0".encode())
            if only_changed and digest and _up_to_date(student_dir, digest):
                continue
            written.append(render_student_report(student_dir, released=released))
            if digest:
                (student_dir / ".report.sha256").write_text(digest)
        except Exception as exc:  # noqa: BLE001 -- failure is data: one bad folder never stops the batch
            failures.append(Unreadable(student_dir.name, f"report not rendered: {type(exc).__name__}: {exc}"))
    index_inputs.update((out_dir / "summary.json").read_bytes() if (out_dir / "summary.json").exists() else b"")
    stamp, digest = out_dir / ".index.sha256", index_inputs.hexdigest()
    if only_changed and not failures and (out_dir / "index.html").exists() and stamp.exists() \
            and stamp.read_text() == digest:
        return written  # nothing the summary shows changed: not even matplotlib is imported
    written.append(render_class_summary(out_dir, failures=tuple(failures)))
    stamp.write_text(digest)
    return written
