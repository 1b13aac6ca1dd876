"""What ``grader.similarity.compare`` writes: ``similarity.csv``, the side-by-side pages and ``similarity.json``.

The pages are drawn by the report's Jinja2 environment (autoescape on) from copydetect's matches on the code
without comments (``grader.similarity.compare.Code.text``): code is data, so a ``</script>`` in a student's
string is shown, never run. Every file here is owner-only (0600, the folder 0700): staff files in a folder
that may be served to students. ``similarity.json`` is what the index's
"Similar pairs" section reads, and it carries the key of its inputs (an unchanged regrade compares nothing).
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from grader.core.files import write_atomic
from grader.core.results import write_json_atomic

__all__ = ["PAGES_DIR", "JSON_NAME", "CSV_NAME", "MAX_PAGES", "Side", "is_current", "write_outputs",
           "write_failure", "page_name"]

PAGES_DIR = "similarity"
JSON_NAME = "similarity.json"
CSV_NAME = "similarity.csv"
MAX_PAGES = 300  # side-by-side pages (and index rows) for the most similar pairs; the CSV lists them all
_SCHEMA = 1


@dataclass(frozen=True)
class Side:
    """One submission in a side-by-side page: its code cut into (text, shared with the other) segments."""

    student: str
    share: str  # "83 %": how much of its own code is found in the other
    segments: tuple[tuple[str, bool], ...]


def page_name(a: str, b: str) -> str:
    return f"{a}__{b}.html"


def is_current(out: Path, key: str) -> bool:
    """similarity.json was written for these inputs and its CSV is there."""
    try:
        data = json.loads((out / JSON_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("key") == key and not data.get("error") and (out / CSV_NAME).is_file()


def _segments(code: str, slices: Sequence[tuple[int, int]]) -> tuple[tuple[str, bool], ...]:
    parts, at = [], 0
    for start, end in slices:
        if start > at:
            parts.append((code[at:start], False))
        parts.append((code[start:end], True))
        at = end
    if at < len(code):
        parts.append((code[at:], False))
    return tuple(parts)


def _owner_only_text(path: Path, text: str) -> None:
    write_atomic(path, text)  # 0600


def _csv(pairs: Sequence) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student_a", "student_b", "similarity"])
    writer.writerows([p.student_a, p.student_b, f"{p.similarity:.4f}"] for p in pairs)
    return buffer.getvalue()


def _pages(out: Path, pairs: Sequence, codes: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """Draw the side-by-side page of the ``MAX_PAGES`` most similar pairs; remove the pages of old pairs.
    Returns each drawn pair's href relative to ``out``."""
    from grader.report.env import render_page  # Jinja2: only when pages are drawn

    folder = out / PAGES_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    hrefs: dict[tuple[str, str], str] = {}
    for pair in pairs[:MAX_PAGES]:
        name = page_name(pair.student_a, pair.student_b)
        while name in hrefs.values():  # "a__b" + "c" and "a" + "b__c": both names would be a__b__c.html
            name = "_" + name
        sides = []
        for student, share, slices in ((pair.student_a, pair.sim_a, pair.slices_a),
                                       (pair.student_b, pair.sim_b, pair.slices_b)):
            sides.append(Side(student, f"{100 * share:.0f} %", _segments(codes[student], slices)))
        path = render_page("similarity.html.j2", folder / name, pair=pair, sides=sides,
                           similarity=f"{100 * pair.similarity:.0f} %")
        os.chmod(path, 0o600)
        hrefs[(pair.student_a, pair.student_b)] = name
    for old in folder.glob("*__*.html"):
        if old.name not in hrefs.values():
            old.unlink(missing_ok=True)
    return {k: f"{PAGES_DIR}/{quote(v)}" for k, v in hrefs.items()}


def write_outputs(out: Path, pairs: Sequence, codes: Mapping[str, str], *, key: str, threshold: float,
                  floor: float, missing: Sequence[str], cut: Sequence[str] = ()) -> int:
    """similarity.csv (``pairs``: ``grader.similarity.compare.Pair`` above the floor), the pages (``codes``: student ->
    the code the pairs' offsets index), then similarity.json (last: its key says the others are complete).
    ``cut``: students whose code reached the token cap. Returns how many pairs are at or above ``threshold``."""
    _owner_only_text(out / CSV_NAME, _csv(pairs))
    hrefs = _pages(out, pairs, codes)
    flagged = [p for p in pairs if p.similarity >= threshold]
    write_json_atomic(out / JSON_NAME, {
        "schema": _SCHEMA, "key": key, "threshold": threshold, "floor": floor, "students": len(codes),
        "missing": list(missing), "cut": list(cut), "pairs": len(pairs), "error": None,
        "flagged_count": len(flagged),
        "flagged": [{"student_a": p.student_a, "student_b": p.student_b, "similarity": round(p.similarity, 4),
                     "href": hrefs.get((p.student_a, p.student_b))} for p in flagged[:MAX_PAGES]]})
    return len(flagged)


def write_failure(out: Path, message: str, *, threshold: float) -> None:
    """similarity.json saying the comparison failed (the index shows it); never raises."""
    try:
        write_json_atomic(out / JSON_NAME, {"schema": _SCHEMA, "key": None, "threshold": threshold, "floor": None,
                                            "students": 0, "missing": [], "pairs": 0, "error": message[:2000],
                                            "flagged_count": 0, "flagged": []})
    except OSError:
        pass  # the output folder itself is broken: the batch reports that elsewhere
