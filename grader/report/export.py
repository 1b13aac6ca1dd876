"""Gradebook exports: grades.csv for a spreadsheet, and Gradescope's results.json for one submission.

Both read SubmissionResult (result.json) only. The Gradescope format follows the autograder
specification (gradescope-autograders.readthedocs.io, "Autograder Specifications": top-level score,
execution_time, output, visibility, stdout_visibility, tests[], leaderboard[]).
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Mapping

from grader.report.collect import Loaded, Unreadable, check_order, collect, metric_check, miou_of
from grader.core.files import write_atomic
from grader.core.results import CheckResult, SubmissionResult, write_json_atomic
from grader.batch.scoring import FinalGrade, final_grade

__all__ = ["GRADESCOPE_VISIBILITY", "GradescopeInfrastructureError", "write_grades_csv", "gradescope_results",
           "write_gradescope_results"]

# Our visibility -> Gradescope's. "hidden" becomes "after_published": like our released report, the
# student sees the name and score once grades are published, and the output we give it is never the
# check's message (see _test).
GRADESCOPE_VISIBILITY = {"visible": "visible", "after_due_date": "after_due_date", "hidden": "after_published"}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run these as formulas


class GradescopeInfrastructureError(RuntimeError):
    """The grader itself failed on this submission: no honest score exists, so none is written."""


def _cell_text(text: str) -> str:
    # Student ids come from folder names; a leading "=" would become a live formula in Excel/LibreOffice.
    return "'" + text if text.startswith(_FORMULA_START) else text


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:.4f}".rstrip("0").rstrip(".")


def write_grades_csv(out_dir: Path, grades: Mapping[str, FinalGrade] | None = None,
                     collected: tuple[list[Loaded], list[Unreadable]] | None = None) -> Path:
    """Write ``out_dir/grades.csv``: one row per student folder.

    Columns: student, source (the file or folder the row came from), lms_id (the Canvas user id or Gradescope
    sid, where the class came from an LMS export), status, auto (the autograded total), adjustment (staff
    overrides), late_penalty,
    final, max, one column per check id (its autograded score, rubric order as the results list them), miou.
    ``grades``: the layers per student (``grader.gradebook.book``); without it none apply. auto and final
    are blank for infrastructure errors (no grade exists yet) and auto is 0 for ungradable submissions; a
    folder whose result.json cannot be read gets status "unreadable".
    """
    out_dir = Path(out_dir)
    loaded, unreadable = collected if collected is not None else collect(out_dir)  # read once by the caller
    results = [x.result for x in loaded]
    check_ids = [check_id for check_id, _ in check_order(results)]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["student", "source", "lms_id", "status", "auto", "adjustment", "late_penalty", "final", "max",
                     *check_ids, "miou"])
    for result in sorted(results, key=lambda r: r.student):
        scores = {c.id: c.score for c in result.checks}
        grade = (grades or {}).get(result.student) or final_grade(result)
        identity = result.provenance.get("identity") if isinstance(result.provenance, dict) else None
        source, lms_id = ((_cell_text(str(identity.get(k, ""))) for k in ("source", "lms_id"))
                          if isinstance(identity, dict) else ("", ""))
        writer.writerow([_cell_text(result.student), source, lms_id, result.status, _number(grade.auto),
                         _number(grade.adjustment),
                         _number(grade.late_penalty), _number(grade.final), _number(result.max_score),
                         *(_number(scores.get(i)) for i in check_ids), _number(miou_of(result))])
    for item in unreadable:
        writer.writerow([_cell_text(item.student), "", "", "unreadable", "", "", "", "", "",
                         *([""] * len(check_ids)), ""])
    return write_atomic(out_dir / "grades.csv", buffer.getvalue(), mode=0o644)


def _test(check: CheckResult, number: int) -> dict[str, Any]:
    output = check.message
    if check.visibility == "hidden":
        output = "Hidden check: only its score is released."  # never the message: it may name the hidden case
    return {
        "name": check.name, "number": str(number), "score": float(check.score), "max_score": float(check.max_score),
        "status": "passed" if check.status == "passed" else "failed", "output": output, "output_format": "text",
        "visibility": GRADESCOPE_VISIBILITY.get(check.visibility, "after_published")
    }


def _summary_text(result: SubmissionResult) -> str:
    """The output every upload shows: the total only when every check is visible, else the visible checks'
    own sum (the total minus it would give away the hidden and after-due-date points at each upload)."""
    shown = [c for c in result.checks if c.visibility == "visible"]
    pending = len(result.checks) - len(shown)
    if pending:
        lines = [f"Visible checks: {sum(c.score for c in shown):g} / {sum(c.max_score for c in shown):g}"]
    else:
        lines = [f"Autograder score: {result.score:g} / {result.max_score:g}"]
    lines += [f"- {c.name}: {c.status}" for c in shown]
    if pending:
        lines.append(f"{pending} more check(s) and your total are shown after the due date / when grades are "
                     "published.")
    return "\n".join(lines)


def _leaderboard(result: SubmissionResult) -> list[dict[str, Any]]:
    found = metric_check(result)  # found by kind (View.metric), whatever the rubric calls the check
    if found is None or found[0].visibility != "visible":  # would leak a score the student may not see yet
        return []
    return [{"name": "mIoU", "value": round(found[1], 4), "order": "desc"}]


def gradescope_results(result: SubmissionResult, *, leaderboard: bool = True) -> dict[str, Any]:
    """The Gradescope ``results.json`` object for one submission.

    - graded: ``score`` is the total, its top-level ``visibility`` "after_published" while any check is not
      visible (and ``output`` then sums only the visible checks, with no execution time); one test per check
      with its score, ``status`` "passed"/"failed",
      the check's message as ``output`` and its visibility (``hidden`` -> ``after_published`` with the
      message withheld); ``execution_time`` is the sum of the stage durations (whole seconds);
      ``leaderboard`` holds the mIoU when asked for and the full-training check is visible.
    - ungradable: ``score`` 0 and the reason in ``output`` (the student must resubmit).
    - infrastructure_error: raises GradescopeInfrastructureError. Writing 0 would record a grade the
      student did not earn; with no results.json Gradescope shows an autograder failure instead, which
      is the honest outcome, and the submission can be rerun.
    """
    if result.status == "infrastructure_error":
        raise GradescopeInfrastructureError(f"grader failure for {result.student}: {result.message}")
    durations = (result.provenance or {}).get("durations_s") or {}
    execution_time = round(sum(v for v in durations.values() if isinstance(v, (int, float))))
    withheld = any(c.visibility != "visible" for c in result.checks)
    data: dict[str, Any] = {
        "score": float(result.score) if result.status == "graded" else 0.0,
        # The top-level visibility is the submission's score (and the default of tests, each of which sets its
        # own): with points the student may not see yet, the total waits until grades are published.
        "output_format": "text", "visibility": "after_published" if withheld else "visible",
        "stdout_visibility": "hidden",  # stdout is the grader's log, for staff
    }
    if not withheld:  # the time of the hidden stages (a retry near the bar among them) says something too
        data["execution_time"] = int(execution_time)
    if result.status == "ungradable":
        data["output"] = f"Your submission could not be graded: {result.message}\nFix it and resubmit."
        data["tests"] = []
        return data
    data["output"] = _summary_text(result)
    data["tests"] = [_test(c, n) for n, c in enumerate(result.checks, start=1)]
    if leaderboard:
        data["leaderboard"] = _leaderboard(result)
    return data


def write_gradescope_results(result: SubmissionResult, path: Path, *, leaderboard: bool = True) -> Path:
    """Write ``gradescope_results(result)`` to ``path`` (usually /autograder/results/results.json)
    atomically. Raises GradescopeInfrastructureError for an infrastructure error, writing nothing."""
    write_json_atomic(Path(path), gradescope_results(result, leaderboard=leaderboard))
    return Path(path)
