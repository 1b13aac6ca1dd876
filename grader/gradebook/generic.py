"""A gradebook keyed by e-mail or SID: Gradescope's roster, Moodle, Blackboard and other LMSs.

``grader export generic DIR --key email|sid [--roster roster.csv]``: header ``Name,Email,SID,Score,Max
Points`` (Gradescope's roster uses ``Name``, ``Email``, ``SID``). Rows are keyed by the chosen id the results
carry (a Gradescope export gives both; a plain folder neither); with a roster (a CSV with ``name``, ``email``
and/or ``sid`` columns) its students who submitted nothing get a blank score. A result without the key, or
not in the roster, is unmatched, as in the Canvas export.
"""
from __future__ import annotations

from pathlib import Path

from grader.gradebook import identity
from grader.gradebook.book import Gradebook
from grader.gradebook.canvas import Export, no_grade, score_cells, write_unmatched
from grader.gradebook.csvfile import GradebookError, read_rows, write_rows

__all__ = ["KEYS", "write_generic"]

KEYS = {"email": "email", "sid": "gradescope_sid"}
HEADER = ("Name", "Email", "SID", "Score", "Max Points")


def _roster(path: Path, key: str) -> list[dict[str, str]]:
    rows = read_rows(path, required=(key,), optional=("name", "email", "sid"), extra_ok=True)
    out, seen = [], {}
    for row in rows:
        value = row.get(key).lower() if key == "email" else row.get(key)
        if not value:
            continue
        if value in seen:
            raise GradebookError(f"{path}: line {row.line}: {key} {value} also on line {seen[value]}")
        seen[value] = row.line
        out.append({"Name": row.get("name"), "Email": row.get("email"), "SID": row.get("sid"), "key": value})
    return out


def write_generic(book: Gradebook, *, key: str, out: Path, roster: Path | None = None,
                  missing: str = "blank") -> Export:
    if key not in KEYS:
        raise GradebookError(f"--key {key!r}: use email or sid")
    by_key: dict[str, str] = {}
    unmatched: list[tuple[str, str]] = []
    for student, result in sorted(book.results.items()):
        value = identity.lms_ids(result).get(KEYS[key], "")
        value = value.lower() if key == "email" else value
        if not value:
            unmatched.append((student, f"no {key} recorded (grade a Gradescope export to get one)"))
        elif value in by_key:
            unmatched.append((student, f"{key} {value} is also {by_key[value]}'s"))
        else:
            by_key[value] = student
    people = _roster(roster, key) if roster else [
        {"Name": s, **_ids(book, s), "key": v} for v, s in sorted(by_key.items(), key=lambda kv: kv[1])]
    listed = {p["key"] for p in people}
    unmatched += [(s, f"{key} {v} is not in the roster {roster}") for v, s in by_key.items() if v not in listed]
    top = max((r.max_score for r in book.results.values()), default=0.0)
    cells, graded = score_cells(book, people, "key", by_key, missing=missing)
    rows = [[person["Name"], person["Email"], person["SID"], cell, f"{top:g}"] for person, cell in zip(people, cells)]
    path = write_rows(out, HEADER, rows)
    extra = write_unmatched(out, unmatched)
    return Export(path, len(rows), graded, tuple(unmatched), extra, no_grade(book, set(by_key.values())))


def _ids(book: Gradebook, student: str) -> dict[str, str]:
    ids = identity.lms_ids(book.results[student])
    return {"Email": ids.get("email", ""), "SID": ids.get("gradescope_sid", "")}
