"""Class layouts: which student each entry of a class folder belongs to, and which of several counts.

Three layouts are recognised in a class folder (or an unpacked class zip):

- Gradescope "Export Submissions": ``submission_metadata.yml`` beside ``submission_<id>/`` folders
  (``grader.intake.gradescope_export``).
- Canvas bulk download: flat files ``<lastfirst>[_LATE|_late]_<userid>_<submissionid>_<origname>``,
  where Canvas appends ``-1``, ``-2`` to origname on resubmission. The student id is ``<lastfirst>``
  (namesakes told apart by user id: ``grader.intake.ids``);
  the highest submission id counts, and within it the highest resubmission number of each file.
- Plain: one entry per student (a folder, an archive or a file); the id is the entry name without
  its extension.

This module only decides *who* and *what*; unpacking and checking a submission is ``intake``'s job.
"""
from __future__ import annotations

import errno
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


from grader.intake.archives import is_junk
from grader.intake.candidates import METADATA, Candidate, ignored_note
from grader.intake.gradescope_export import gradescope_candidates

__all__ = ["METADATA", "Candidate", "class_candidates", "is_canvas_name", "visible_entries"]

_CANVAS = re.compile(r"^(?P<who>[^_]+)_(?:(?:LATE|late)_)?(?P<uid>\d+)_(?P<sub>\d+)_(?P<orig>.+)$")
_CANVAS_LATE = re.compile(r"^[^_]+_(?:LATE|late)_")
_RESUBMITTED = re.compile(r"^(?P<stem>.+)-(?P<n>\d+)(?P<ext>\.[^.]+)?$")


@dataclass(frozen=True)
class _CanvasFile:
    name: str
    who: str
    uid: str
    sub: int
    base: str  # origname without the resubmission suffix
    n: int  # resubmission number (0 for the first upload)
    late: bool


def is_canvas_name(name: str) -> bool:
    return _CANVAS.match(name) is not None


def visible_entries(root: Path) -> list[str]:
    """Names in ``root`` that may belong to a student: no hidden files, no OS litter."""
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and not is_junk((p.name,)))


def class_candidates(root: Path, *, label: str, stage: Path,
                     poisoned: Mapping[str, str] | None = None) -> list[Candidate]:
    """Every student entry of the class folder ``root`` (``poisoned``: entries already rejected)."""
    bad = dict(poisoned or {})
    names = sorted(set(visible_entries(root)) | set(bad))
    bad.update({n: f"{n} is a symbolic link; links are not followed" for n in names
                if (root / n).is_symlink()})
    if METADATA in names:
        return gradescope_candidates(root, label=label, names=names, bad=bad)
    canvas = [n for n in names if is_canvas_name(n) and not (root / n).is_dir()]
    plain = [n for n in names if n not in canvas]
    return _canvas(root, canvas, label=label, stage=stage, bad=bad) + [
        _plain(root, n, label=label, bad=bad) for n in plain]


def _plain(root: Path, name: str, *, label: str, bad: Mapping[str, str]) -> Candidate:
    path = root / name
    student = name if path.is_dir() else Path(name).stem
    if name in bad:
        return Candidate(student, None, f"{label}/{name}", problem=bad[name])
    return Candidate(student, path, f"{label}/{name}")


# ----------------------------------------------------------------------------------------- Canvas
def _canvas_file(name: str) -> _CanvasFile:
    m = _CANVAS.match(name)
    assert m is not None  # callers pass names that matched
    orig, n = m["orig"], 0
    if r := _RESUBMITTED.match(orig):
        orig, n = r["stem"] + (r["ext"] or ""), int(r["n"])
    return _CanvasFile(name, m["who"], m["uid"], int(m["sub"]), orig, n, bool(_CANVAS_LATE.match(name)))


def _canvas(root: Path, names: list[str], *, label: str, stage: Path,
            bad: Mapping[str, str]) -> list[Candidate]:
    people: dict[tuple[str, str], list[_CanvasFile]] = {}
    for f in map(_canvas_file, names):
        people.setdefault((f.who, f.uid), []).append(f)
    return [_canvas_person(root, files, label=label, stage=stage, bad=bad)
            for _, files in sorted(people.items())]


def _canvas_person(root: Path, files: list[_CanvasFile], *, label: str, stage: Path,
                   bad: Mapping[str, str]) -> Candidate:
    latest = max(f.sub for f in files)
    keep: dict[str, _CanvasFile] = {}
    for f in sorted((f for f in files if f.sub == latest), key=lambda f: (f.n, f.name)):
        keep[f.base] = f  # a later resubmission of the same file replaces the earlier one
    chosen = sorted(keep.values(), key=lambda f: f.base)
    ignored = sorted(f.name for f in files if f not in chosen)
    notes = ignored_note(ignored)
    notes += ("Canvas marked this submission late",) if any(f.late for f in chosen) else ()
    who, uid = chosen[0].who, chosen[0].uid
    source = f"{label}/{chosen[0].name}" if len(chosen) == 1 else f"{label}/{chosen[0].who}_{uid}_*"
    # '.' and '..' name the folder itself or its parent: such a file cannot be gathered under its name.
    unusable = [f for f in chosen if f.base in (".", "..")]
    notes += tuple(f"dropped {f.name}: its original name {f.base!r} cannot be a file name; rename the file "
                   "and resubmit if it was needed" for f in unusable)
    chosen = [f for f in chosen if f not in unusable]
    problems = [bad[f.name] for f in chosen if f.name in bad]
    if not chosen:
        problems = [f"every file of this submission has an unusable name ({', '.join(f.name for f in unusable)}); "
                    "submit segmentation.py again under that name"]
    if problems:
        return Candidate(who, None, source, notes, problem="; ".join(problems), lms_id=uid, lms="canvas")
    if len(chosen) == 1:
        return Candidate(who, root / chosen[0].name, source, notes, lms_id=uid, lms="canvas")
    # Several files in one Canvas submission: gather them, under their original names, as a folder.
    folder = Path(tempfile.mkdtemp(prefix="canvas-", dir=stage))
    for f in chosen:
        try:  # copyfile refuses FIFOs and devices; an unreadable file rejects this student only
            shutil.copyfile(root / f.name, folder / f.base, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise  # the grader's disk, not the student's fault
            return Candidate(who, None, source, notes,
                             problem=f"{f.name} could not be read ({exc.strerror or exc}); submit it again", lms_id=uid, lms="canvas")
    return Candidate(who, folder, source, notes, lms_id=uid, lms="canvas")
