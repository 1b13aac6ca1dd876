"""``grader release DIR --out FOLDER``: each student's released report, one self-contained HTML file each.

The page is the student report drawn with ``released=True`` (after-due-date checks in full, hidden checks
by name and score only: ``grader.report.views``) and the staff layers (an override's comment, the late
penalty). It is drawn by the report package itself (inline CSS, images as ``data:`` URIs, no scripts, no
requests), from a scratch copy of the student's folder, so the folder's own report keeps its release
state. Files are named by the id the LMS knows (Canvas user id, Gradescope SID, e-mail, else the folder
name); ``manifest.csv`` maps each file to its student, ready to upload or mail.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from grader.gradebook import identity
from grader.gradebook.book import LAYERS, Gradebook, write_layers
from grader.gradebook.csvfile import GradebookError, write_rows

__all__ = ["MANIFEST", "Released", "release_pages", "file_name"]

MANIFEST = "manifest.csv"
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")
_COPIED = ("result.json", LAYERS)


@dataclass(frozen=True)
class Released:
    folder: Path
    manifest: Path
    pages: int
    failed: tuple[tuple[str, str], ...]  # (student, why its page could not be drawn)


def file_name(lms_id: str) -> str:
    """A file name for an id: the id itself when it is plain, else its plain part and a short hash (two
    ids never share a name; no id becomes a path)."""
    plain = _UNSAFE.sub("_", lms_id).strip("._")[:80]
    if plain == lms_id and plain:
        return f"{plain}.html"
    return f"{plain or 'student'}-{hashlib.sha256(lms_id.encode()).hexdigest()[:10]}.html"


def _draw(student_dir: Path, scratch: Path) -> Path:
    from grader.report.render import render_student_report  # Jinja2: only when a page is drawn

    copy = scratch / "student"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir()
    for name in _COPIED:
        if (student_dir / name).is_file():
            shutil.copyfile(student_dir / name, copy / name)
    if (student_dir / "artifacts").is_dir():
        shutil.copytree(student_dir / "artifacts", copy / "artifacts", symlinks=True)
    return render_student_report(copy, released=True)


def release_pages(book: Gradebook, out: Path) -> Released:
    """Write ``out/<id>.html`` per student with a result, and ``out/manifest.csv``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_layers(book)
    rows, failed, names = [], [], {}
    with tempfile.TemporaryDirectory(prefix="seg-release-") as scratch:
        for student, result in sorted(book.results.items()):
            kind, lms_id = identity.release_id(result)
            name = file_name(lms_id)
            if name in names:
                raise GradebookError(f"{student} and {names[name]} would both be released as {name}: their LMS "
                                     "ids collide; fix the ids and release again")
            names[name] = student
            try:
                page = _draw(book.dirs[student], Path(scratch))
            except Exception as exc:  # noqa: BLE001 -- failure is data: one page never stops the release
                failed.append((student, f"{type(exc).__name__}: {exc}"))
                continue
            shutil.move(page, out / name)
            grade = book.grades[student]
            ids = identity.lms_ids(result)
            rows.append([name, student, kind, lms_id, ids.get("email", ""), result.status,
                         "" if grade.final is None else f"{grade.final:g}", f"{result.max_score:g}"])
    manifest = write_rows(out / MANIFEST, ["file", "student", "id_kind", "id", "email", "status", "final", "max"],
                          rows)
    return Released(out, manifest, len(rows), tuple(failed))
