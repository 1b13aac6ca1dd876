"""The class summary for TAs (index.html): problems first, then distributions, then every student.

It shows everything (no visibility filtering): it is for staff, never for students.
"""
from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from grader.intake.scan import scan_folder
from grader.report.collect import Loaded, Unreadable, check_order, collect, kind_of, metric_check, miou_of
from grader.report.details import fmt
from grader.gradebook.view import grade_view
from grader.report.contrast import ContrastMedians, class_medians
from grader.report.env import render_page
from grader.core.results import SubmissionResult

__all__ = ["ProblemRow", "ReviewRow", "CheckRow", "StudentRow", "SimilarRow", "SimilarityView", "Summary", "metric_lines",
           "summarize", "render_class_summary"]

_PROBLEM_LABELS = {"ungradable": "ungradable", "infrastructure_error": "infrastructure error",
                   "unreadable": "unreadable"}


@dataclass(frozen=True)
class ProblemRow:
    student: str
    kind: str  # "ungradable" | "infrastructure_error" | "unreadable"
    label: str
    reason: str
    href: str | None  # the student's report, when there is one


@dataclass(frozen=True)
class CheckRow:
    id: str
    name: str
    max_score: str
    passed: int
    graded: int
    rate: str
    mean_score: str
    errors: int  # status error or timeout: the code crashed or hung, worth a look


@dataclass(frozen=True)
class StudentRow:
    student: str
    href: str | None
    status: str
    score: float | None
    score_text: str
    percent: float | None
    miou: float | None
    miou_text: str
    final: float | None = None  # after the staff's layers (overrides, late penalty: grade.json); else the score
    final_text: str = "—"
    adjusted: bool = False  # a layer changed or annotated this student's grade


@dataclass(frozen=True)
class ReviewRow:
    """A submission flagged for staff review: the static scan of its code, or torch work at import time.
    Never a score: the flag is for a human to read the code."""

    student: str
    href: str | None
    reasons: tuple[str, ...]


CODE_DIR = "code"  # the staff copy of a student's code (grader.similarity.compare.CODE_DIR)


def _review(loaded: list[Loaded]) -> tuple[ReviewRow, ...]:
    rows = []
    for item in loaded:
        reasons = [f"{f.what} ({f.file}:{f.line})" for f in scan_folder(item.student_dir / CODE_DIR)]
        for check in item.result.checks:
            found = (check.details or {}).get("import_detected")
            if (check.details or {}).get("review") and isinstance(found, list):
                reasons.append(f"{check.name}: torch work while the module was imported "
                               f"({', '.join(str(n) for n in found[:4])})")
        if reasons:
            rows.append(ReviewRow(item.result.student, _href(item.student_dir), tuple(dict.fromkeys(reasons))[:12]))
    return tuple(sorted(rows, key=lambda r: r.student))


@dataclass(frozen=True)
class SimilarRow:
    student_a: str
    student_b: str
    similarity: str  # "83 %"
    href: str | None  # the side-by-side page, similarity/<a>__<b>.html


@dataclass(frozen=True)
class SimilarityView:
    """The "Similar pairs" section: pairs at or above the rubric's threshold (grader.similarity.compare)."""

    threshold: str
    students: int  # submissions compared
    pairs: int  # rows of similarity.csv
    rows: tuple[SimilarRow, ...]  # the most similar (at most grader.similarity.pages.MAX_PAGES)
    more: int  # pairs at or above the threshold not in ``rows`` (similarity.csv has them)
    missing: tuple[str, ...]  # graded students whose code was not available
    error: str | None


@dataclass(frozen=True)
class Summary:
    generated_at: str
    counts: tuple[tuple[str, int], ...]
    mean_score: str
    median_score: str
    problems: tuple[ProblemRow, ...]
    checks: tuple[CheckRow, ...]
    students: tuple[StudentRow, ...]
    score_png: str | None
    pass_png: str | None
    miou_png: str | None
    similarity: SimilarityView | None = None  # None: never computed in this folder
    review: tuple[ReviewRow, ...] = ()  # flagged for staff review (grader.intake.scan, import-time torch work)
    contrast: ContrastMedians | None = None  # class medians of the lecture's 2x2 (grader.report.contrast)


_PAGE_HREF = re.compile(r"^similarity/[A-Za-z0-9._%-]+\.html$")  # a link into the pages folder, nothing else


def _similarity(out_dir: Path) -> SimilarityView | None:
    """similarity.json, as the index shows it; a broken file is shown as such, never raised."""
    path = out_dir / "similarity.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = tuple(SimilarRow(str(r["student_a"]), str(r["student_b"]), f"{100 * float(r['similarity']):.0f} %",
                                r["href"] if isinstance(r.get("href"), str) and _PAGE_HREF.match(r["href"]) else None)
                     for r in data["flagged"])
        return SimilarityView(threshold=f"{100 * float(data['threshold']):.0f} %", students=int(data["students"]),
                              pairs=int(data["pairs"]), rows=rows,
                              more=max(0, int(data.get("flagged_count", len(rows))) - len(rows)), missing=tuple(map(str, data["missing"])),
                              error=str(data["error"]) if data.get("error") else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return SimilarityView("—", 0, 0, (), 0, (), f"similarity.json unreadable: {type(exc).__name__}: {exc}")


def _href(student_dir: Path) -> str | None:
    report = student_dir / "report.html"
    return f"{quote(student_dir.name)}/report.html" if report.is_file() else None


def _problems(loaded: list[Loaded], unreadable: Sequence[Unreadable]) -> tuple[ProblemRow, ...]:
    rows = [ProblemRow(x.result.student, x.result.status, _PROBLEM_LABELS[x.result.status],
                       x.result.message or "no reason recorded", _href(x.student_dir))
            for x in loaded if x.result.status in ("ungradable", "infrastructure_error")]
    rows += [ProblemRow(u.student, "unreadable", _PROBLEM_LABELS["unreadable"], u.reason, None) for u in unreadable]
    order = {"infrastructure_error": 0, "unreadable": 1, "ungradable": 2}  # staff-side faults first
    return tuple(sorted(rows, key=lambda r: (order[r.kind], r.student)))


def _check_rows(graded: list[SubmissionResult]) -> tuple[CheckRow, ...]:
    rows = []
    for check_id, name in check_order(graded):
        found = [c for r in graded for c in r.checks if c.id == check_id]
        passed = sum(c.status == "passed" for c in found)
        rows.append(CheckRow(
            id=check_id, name=name, max_score=fmt(float(max(c.max_score for c in found))),
            passed=passed, graded=len(found), rate=f"{100 * passed / len(found):.0f} %",
            mean_score=fmt(statistics.fmean(c.score for c in found), 3),
            errors=sum(c.status in ("error", "timeout") for c in found),
        ))
    return tuple(rows)


def _student_row(item: Loaded) -> StudentRow:
    result, graded = item.result, item.result.status == "graded"
    miou = miou_of(result)
    percent = 100 * result.score / result.max_score if graded and result.max_score else None
    layer = grade_view(result, item.student_dir, released=True)  # staff see every number
    final = float(layer.final) if layer is not None and layer.final is not None else (
        float(result.score) if graded else None)
    return StudentRow(
        student=result.student, href=_href(item.student_dir), status=result.status,
        score=float(result.score) if graded else None,
        score_text=f"{fmt(float(result.score))} / {fmt(float(result.max_score))}" if graded else "—",
        percent=percent, miou=miou, miou_text=fmt(miou, 3), final=final, adjusted=layer is not None,
        final_text=f"{fmt(final)} / {fmt(float(result.max_score))}" if final is not None else "—",
    )


_LINE_COLOURS = ("#cf222e", "#2da44e", "#8250df", "#bf8700")  # floor red, bar green, then others


def metric_lines(graded: list[SubmissionResult]) -> list[tuple[float, str, str]]:
    """The lines the metric's kind draws on its histogram (``View.metric_lines``: the band's floor and bar),
    from the first result whose metric check recorded them all."""
    for result in graded:
        found = metric_check(result)
        if found is None:
            continue
        check, _ = found
        names, details = kind_of(check).view.metric_lines, check.details or {}
        if names and all(isinstance(details.get(n), (int, float)) for n in names):
            return [(float(details[n]), n, _LINE_COLOURS[i % len(_LINE_COLOURS)]) for i, n in enumerate(names)]
    return []


def _figures(graded: list[SubmissionResult], checks: tuple[CheckRow, ...]) -> dict[str, str | None]:
    from grader.report import plots  # matplotlib, imported only when something is drawn

    if not graded:
        return {"score_png": None, "pass_png": None, "miou_png": None}
    top = max(r.max_score for r in graded)
    mious = [m for m in (miou_of(r) for r in graded) if m is not None]
    return {
        "score_png": plots.histogram([r.score for r in graded], xlabel="total score", title="scores",
                                     value_range=(0, top or 1)),
        "pass_png": plots.pass_rate_bars([c.name for c in checks], [c.passed / c.graded for c in checks])
        if checks else None,
        "miou_png": plots.histogram(mious, xlabel="mIoU (full training)", title="mIoU", value_range=(0, 1),
                                    lines=metric_lines(graded)) if mious else None,
    }


def summarize(out_dir: Path, *, failures: Sequence[Unreadable] = ()) -> Summary:
    """Everything index.html shows, from the result.json files under ``out_dir``."""
    loaded, unreadable = collect(out_dir)
    seen = {u.student for u in unreadable}
    unreadable += [f for f in failures if f.student not in seen]
    graded = [x.result for x in loaded if x.result.status == "graded"]
    scores = [r.score for r in graded]
    checks = _check_rows(graded)
    counts = (("students", len(loaded) + len(unreadable)), ("graded", len(graded)),
              ("ungradable", sum(x.result.status == "ungradable" for x in loaded)),
              ("infrastructure errors", sum(x.result.status == "infrastructure_error" for x in loaded)),
              ("unreadable", len(unreadable)))
    return Summary(
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), counts=counts,
        mean_score=fmt(statistics.fmean(scores), 3) if scores else "—",
        median_score=fmt(float(statistics.median(scores)), 3) if scores else "—",
        problems=_problems(loaded, unreadable), checks=checks,
        students=tuple(_student_row(x) for x in loaded), **_figures(graded, checks),
        similarity=_similarity(out_dir), review=_review(loaded), contrast=class_medians(graded),
    )


def render_class_summary(out_dir: Path, *, failures: Sequence[Unreadable] = ()) -> Path:
    """Write ``out_dir/index.html``: problems (ungradable, infrastructure errors, unreadable results and
    the reports in ``failures``) first, score and mIoU distributions, pass rate per check, and a table
    of students sortable by score, status and mIoU that links to each ``<student>/report.html``."""
    out_dir = Path(out_dir)
    return render_page("summary.html.j2", out_dir / "index.html", summary=summarize(out_dir, failures=failures))
