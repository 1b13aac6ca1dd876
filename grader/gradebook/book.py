"""The gradebook of an output folder: every result with its layers (overrides, lateness) applied.

Files in the output folder, all the staff's and never written by grading (so ``--regrade`` keeps them):

- ``overrides.csv``: ``student,check,points,adjust,comment,by`` (``grader.gradebook.overrides``);
- ``extensions.csv``: ``student,due`` (a new due date, with a zone or in the policy's timezone);
- ``submission_times.csv``: ``student,submitted_at`` (e.g. from Canvas), over what intake recorded;
- ``late_policy.json``: the rubric's ``late:`` section as of the last ``grade`` / ``report --rubric``,
  so ``grader report DIR`` applies it without the rubric.

A student in these files is named by the folder name or an id the LMS knows (``identity.aliases``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from grader.batch.scoring import FinalGrade, final_grade
from grader.checks.base import RubricError
from grader.core.results import SubmissionResult, write_json_atomic
from grader.gradebook import identity
from grader.gradebook.csvfile import GradebookError, read_rows
from grader.gradebook.late import LatePolicy, lateness, parse_moment
from grader.gradebook.view import LAYERS  # per student, beside result.json (absent when no layer)
from grader.gradebook.overrides import OVERRIDES, Override, by_student, read_overrides, validate_overrides
from grader.report.collect import Loaded, Unreadable, collect

__all__ = ["EXTENSIONS", "TIMES", "POLICY", "LAYERS", "NO_LAYERS", "Layers", "Gradebook", "load_gradebook", "save_policy",
           "load_policy", "write_layers"]

EXTENSIONS = "extensions.csv"
TIMES = "submission_times.csv"
POLICY = "late_policy.json"


@dataclass(frozen=True)
class Layers:
    """Staff files given on the command line instead of the output folder's own."""

    overrides: Path | None = None
    extensions: Path | None = None
    times: Path | None = None


NO_LAYERS = Layers()  # the output folder's own files


@dataclass(frozen=True)
class Gradebook:
    results: dict[str, SubmissionResult]  # folder name -> result
    grades: dict[str, FinalGrade]
    unreadable: tuple[Unreadable, ...] = ()
    dirs: dict[str, Path] = field(default_factory=dict)  # folder name -> its folder
    collected: tuple[list[Loaded], list[Unreadable]] = ([], [])  # as read, for grades.csv (read once)


def save_policy(out_dir: Path, policy: LatePolicy | None) -> None:
    """Record the rubric's late policy in the output folder (removed when the rubric has none)."""
    path = Path(out_dir) / POLICY
    if policy is None:
        path.unlink(missing_ok=True)
    else:
        write_json_atomic(path, policy.to_json())


def load_policy(out_dir: Path) -> LatePolicy | None:
    path = Path(out_dir) / POLICY
    if not path.exists():
        return None
    try:
        return LatePolicy(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, RubricError) as exc:
        raise GradebookError(f"{path}: unreadable ({exc}); run `grader report DIR --rubric RUBRIC` to write it "
                             "again") from None


def _timed(path: Path | None, column: str, names: dict[str, str], zone: str | None) -> dict[str, datetime]:
    """student -> time, from a two-column staff file; a row naming no known student is an error."""
    if path is None:
        return {}
    out: dict[str, datetime] = {}
    for row in read_rows(path, required=("student", column)):
        where = f"{path}: line {row.line}"
        student = names.get(row.get("student"))
        if student is None:
            raise GradebookError(f"{where}: unknown student {row.get('student')!r}; use the folder name or an "
                                 "LMS id the results carry")
        if student in out:
            raise GradebookError(f"{where}: {student} appears twice; keep one row per student")
        try:
            out[student] = parse_moment(row.get(column), zone=zone, where=f"{where}: {column}")
        except ValueError as exc:
            raise GradebookError(str(exc)) from None
    return out


def _default(out_dir: Path, given: Path | None, name: str) -> Path | None:
    if given is not None:
        if not Path(given).is_file():
            raise GradebookError(f"{given}: no such file")
        return Path(given)
    path = out_dir / name
    return path if path.is_file() else None


def load_gradebook(out_dir: Path, *, layers: Layers = NO_LAYERS, policy: LatePolicy | None | str = "saved") -> Gradebook:
    """Every readable result of ``out_dir`` with its final grade. ``layers``: staff files elsewhere than the
    output folder; ``policy``: a late policy, None for none, "saved" for the one recorded in the folder.
    Raises GradebookError naming the file and line of any bad staff row."""
    out_dir = Path(out_dir)
    loaded, unreadable = collect(out_dir)
    results = {x.result.student: x.result for x in loaded}
    late_policy = load_policy(out_dir) if isinstance(policy, str) else policy
    names = identity.aliases(list(results.values()))
    zone = late_policy.timezone if late_policy else None
    rows = ()
    if path := _default(out_dir, layers.overrides, OVERRIDES):
        rows = tuple(_renamed(o, names) for o in read_overrides(path))
        validate_overrides(rows, path=path, results=results)
    ext = _timed(_default(out_dir, layers.extensions, EXTENSIONS), "due", names, zone)
    when = _timed(_default(out_dir, layers.times, TIMES), "submitted_at", names, zone)
    mine = by_student(rows)
    grades = {}
    for student, result in sorted(results.items()):
        late = lateness(late_policy, when.get(student) or identity.submitted_at(result),
                        extension=ext.get(student), lms_late=identity.lms_late(result))
        grades[student] = final_grade(result, mine.get(student, ()), late)
    return Gradebook(results, grades, tuple(unreadable), {x.result.student: x.student_dir for x in loaded},
                     (loaded, unreadable))


def _renamed(o: Override, names: dict[str, str]) -> Override:  # a row may name the student by an LMS id
    return replace(o, student=names.get(o.student, o.student))


def write_layers(book: Gradebook) -> None:
    """``<student>/grade.json`` where a layer applies (an override, a late policy), removed where none does;
    rewritten only when it changed, so an unchanged report is not redrawn."""
    for student, grade in book.grades.items():
        path = book.dirs[student] / LAYERS
        if not grade.adjustments and not (grade.late and grade.late.note):
            path.unlink(missing_ok=True)
            continue
        data = json.loads(json.dumps(grade.to_json()))
        try:
            same = json.loads(path.read_text(encoding="utf-8")) == data
        except (OSError, ValueError):
            same = False
        if not same:  # derived from the staff's files at every report: atomic, but not worth an fsync
            tmp = path.with_name(f".{LAYERS}.tmp")
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, path)
