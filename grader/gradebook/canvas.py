"""Canvas's gradebook import: ``grader export canvas DIR --assignment "Assignment 5 (12345)"``.

The file follows the importer's rules (Canvas Instructor Guide, "How do I import grades in the Gradebook?"):
the identity columns ``Student,ID,SIS User ID,SIS Login ID,Section`` in that order (``ID`` is the Canvas user
id it matches on), then one column per assignment named ``Title (assignment id)``; an optional second row
``    Points Possible`` (as Canvas's own export writes it); no total or read-only columns (the importer
ignores or refuses them). A student is matched by the Canvas user id intake read from the bulk download's
file names. A roster (Canvas's own gradebook export) adds names, SIS ids, sections and the students who
submitted nothing: their cell stays blank (or 0 with ``missing="zero"``). A result that matches no roster
row, or carries no Canvas id, is unmatched: returned, so the caller prints it and writes it to a file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from grader.batch.scoring import FinalGrade
from grader.gradebook import identity
from grader.gradebook.book import Gradebook
from grader.gradebook.csvfile import GradebookError, read_rows, write_rows

__all__ = ["IDENTITY", "POINTS_POSSIBLE", "Export", "assignment_column", "read_roster", "write_canvas", "score_cell",
           "score_cells", "write_unmatched", "no_grade"]

IDENTITY = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
POINTS_POSSIBLE = "    Points Possible"
_TITLE = re.compile(r"^(?P<title>.*\S)\s*\((?P<id>\d+)\)$")


@dataclass(frozen=True)
class Export:
    path: Path
    rows: int  # students written
    graded: int  # of which with a score
    unmatched: tuple[tuple[str, str], ...]  # (student folder, why)
    unmatched_path: Path | None
    no_grade: tuple[str, ...] = ()  # matched, but blank: an infrastructure error has no grade yet


def assignment_column(assignment: str) -> str:
    """``Title (id)`` as the importer needs it; a title without ``(digits)`` is refused with the fix."""
    if not _TITLE.match(assignment.strip()):
        raise GradebookError(f"--assignment {assignment!r}: write the column as Canvas names it, \"Title (id)\", "
                             "e.g. \"Assignment 5 (12345)\": the id is in the assignment's URL (/assignments/ID)")
    return assignment.strip()


def read_roster(path: Path) -> list[dict[str, str]]:
    """The students of a Canvas gradebook export: its identity cells, by header name; the Points Possible,
    posting-policy and other rows without a numeric ID are skipped."""
    rows = read_rows(Path(path), required=("student", "id", "section"), extra_ok=True)
    out, seen = [], set()
    for row in rows:
        uid = row.get("id")
        if not uid.isdigit():
            continue  # "    Points Possible", "Manual Posting" and similar rows carry no user id
        if uid in seen:
            raise GradebookError(f"{path}: line {row.line}: Canvas user id {uid} appears twice; export the "
                                 "gradebook again")
        seen.add(uid)
        out.append({name: row.get(name.lower()) for name in IDENTITY})
    return out


def score_cell(grade: FinalGrade | None, *, missing: str) -> str:
    """A score as Canvas reads it; blank when there is no grade (no submission, or the grader's own fault)."""
    if grade is None:
        return "0" if missing == "zero" else ""
    if grade.final is None:
        return ""  # an infrastructure error: no grade exists yet, never a 0
    return f"{grade.final:.2f}".rstrip("0").rstrip(".")


def score_cells(book: Gradebook, people: list[dict], key: str, by_key: dict[str, str], *,
                missing: str) -> tuple[list[str], int]:
    """Each roster person's score cell (``person[key]`` looked up in ``by_key``: LMS id -> folder name), and how
    many of them hold a grade."""
    cells, graded = [], 0
    for person in people:
        student = by_key.get(person[key])
        grade = book.grades.get(student) if student else None
        cell = score_cell(grade, missing=missing)
        graded += cell != "" and grade is not None
        cells.append(cell)
    return cells, graded


def write_unmatched(out: str | Path, unmatched: list[tuple[str, str]]) -> Path | None:
    """``<out>.unmatched.csv`` (student, reason) when any student matched no roster row, else None."""
    return write_rows(Path(out).with_suffix(".unmatched.csv"), ["student", "reason"], unmatched) if unmatched else None


def _matches(book: Gradebook) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Canvas user id -> folder name, and the results that carry none."""
    by_uid: dict[str, str] = {}
    unmatched = []
    for student, result in sorted(book.results.items()):
        uid = identity.canvas_user_id(result)
        if not uid:
            unmatched.append((student, "no Canvas user id (not graded from a Canvas bulk download)"))
        elif uid in by_uid:
            unmatched.append((student, f"Canvas user id {uid} is also {by_uid[uid]}'s"))
        else:
            by_uid[uid] = student
    return by_uid, unmatched


def write_canvas(book: Gradebook, *, assignment: str, out: Path, roster: Path | None = None,
                 points_possible: bool = True, missing: str = "blank") -> Export:
    """Write the import file ``out`` (and ``<out>.unmatched.csv`` when some result could not be matched)."""
    column = assignment_column(assignment)
    if missing not in ("blank", "zero"):
        raise GradebookError(f"missing={missing!r}: use blank (default) or zero")
    by_uid, unmatched = _matches(book)
    people = read_roster(roster) if roster else [
        {"Student": book.results[s].student, "ID": uid, "SIS User ID": "", "SIS Login ID": "", "Section": ""}
        for uid, s in sorted(by_uid.items(), key=lambda kv: kv[1])]
    listed = {p["ID"] for p in people}
    unmatched += [(s, f"Canvas user id {uid} is not in the roster {roster}") for uid, s in sorted(by_uid.items())
                  if uid not in listed]
    top = max((r.max_score for r in book.results.values()), default=0.0)
    cells, graded = score_cells(book, people, "ID", by_uid, missing=missing)
    rows = [[*(person[c] for c in IDENTITY), cell] for person, cell in zip(people, cells)]
    head = [[POINTS_POSSIBLE, "", "", "", "", f"{top:g}"]] if points_possible else []
    path = write_rows(out, [*IDENTITY, column], [*head, *rows])
    extra = write_unmatched(out, unmatched)
    return Export(path, len(rows), graded, tuple(unmatched), extra, no_grade(book, set(by_uid.values())))


def no_grade(book: Gradebook, exported: set[str]) -> tuple[str, ...]:
    """The exported students whose cell is blank because the grader failed on them (never a 0)."""
    return tuple(s for s in sorted(exported) if book.grades[s].final is None)
