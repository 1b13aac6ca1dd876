"""Class layouts: which student each entry of a class folder belongs to, and which of several counts.

Three layouts are recognised in a class folder (or an unpacked class zip):

- Gradescope "Export Submissions": ``submission_metadata.yml`` beside ``submission_<id>/`` folders. The
  YAML has Ruby-symbol keys: ``submission_<id>: {:submitters: [{:name:, :sid:, :email:}],
  :created_at:, :history: [...]}``. The student id is the submitter's sid, else email, else name; a
  group submission counts for every submitter; the latest ``:created_at`` counts.
- Canvas bulk download: flat files ``<lastfirst>[_LATE|_late]_<userid>_<submissionid>_<origname>``,
  where Canvas appends ``-1``, ``-2`` to origname on resubmission. The student id is ``<lastfirst>``;
  the highest submission id counts, and within it the highest resubmission number of each file.
- Plain: one entry per student (a folder, an archive or a file); the id is the entry name without
  its extension.

This module only decides *who* and *what*; unpacking and checking a submission is ``intake``'s job.
"""
from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from grader.intake.archives import is_junk
from grader.intake.safe_yaml import load_plain

__all__ = ["METADATA", "Candidate", "class_candidates", "is_canvas_name", "visible_entries"]

METADATA = "submission_metadata.yml"
_CANVAS = re.compile(r"^(?P<who>[^_]+)_(?:(?:LATE|late)_)?(?P<uid>\d+)_(?P<sub>\d+)_(?P<orig>.+)$")
_CANVAS_LATE = re.compile(r"^[^_]+_(?:LATE|late)_")
_RESUBMITTED = re.compile(r"^(?P<stem>.+)-(?P<n>\d+)(?P<ext>\.[^.]+)?$")


@dataclass(frozen=True)
class Candidate:
    """One student's entry before unpacking: ``problem`` non-empty means it is already rejected."""

    student: str  # raw id, sanitised later (all ids of a batch at once, so they stay unique)
    path: Path | None
    source: str  # for messages: where it came from, in the instructor's terms
    notes: tuple[str, ...] = ()
    problem: str = ""
    lms_id: str = ""  # the LMS's own id of the student: Canvas user id, Gradescope sid ("" in a plain folder)
    email: str = ""  # where the LMS gives it (Gradescope)
    key: str = ""  # who it is when neither an LMS id nor the raw name tells (set by intake)
    lms: str = ""  # which LMS export it came from: "canvas", "gradescope" or "" (a plain folder)
    submitted_at: str = ""  # ISO 8601, where the export says (Gradescope's :created_at:)

    @property
    def owner(self) -> str:
        """Who an id belongs to, across batches: the LMS id where there is one, else the raw name."""
        return self.key or (f"lms:{self.lms_id}" if self.lms_id else f"name:{self.student}")


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
        return _gradescope(root, label=label, names=names, bad=bad)
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
    notes = _ignored_note(ignored)
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


def _ignored_note(ignored: list[str]) -> tuple[str, ...]:
    if not ignored:
        return ()
    return (f"{len(ignored)} earlier submission{'s' * (len(ignored) > 1)} ignored: {', '.join(ignored)}",)


# ------------------------------------------------------------------------------------- Gradescope
MAX_METADATA_BYTES = 16 * 1024 * 1024  # a class of thousands with long histories is a few MB
_REEXPORT = (f"export the submissions from Gradescope again and grade that export (never edit {METADATA})")


def _read_bounded(path: Path, limit: int) -> bytes:
    """A regular file's bytes: links not followed, never blocking (a FIFO), at most ``limit`` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("it is not a regular file")
        if st.st_size > limit:
            raise ValueError(f"it is {st.st_size / 2**20:.1f} MB, over the {limit / 2**20:g} MB limit")
        return f.read(limit + 1)[:limit]


def _field(record: Mapping[str, Any], name: str) -> Any:
    """A field of a record whose keys are Ruby symbols (':sid') or plain ('sid')."""
    return record.get(f":{name}", record.get(name))


def _read_metadata(path: Path) -> dict[str, dict[str, Any]]:
    data = load_plain(_read_bounded(path, MAX_METADATA_BYTES).decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("it is not a mapping of submission folders")
    return {k.lstrip(":"): v if isinstance(v, dict) else {} for k, v in data.items()}


def _people(record: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(id, sid, email) of each submitter: the id is the sid, else the email, else the name."""
    people = _field(record, "submitters") or []
    found = []
    for person in people if isinstance(people, list) else []:
        if isinstance(person, dict):  # only text counts as an id: a nested value is not one
            sid, email, name = (v.strip() if isinstance(v, str) else ""
                                for v in map(functools.partial(_field, person), ("sid", "email", "name")))
            if sid or email or name:
                found.append((sid or email or name, sid, email))
    return found


def _submitters(record: Mapping[str, Any]) -> list[str]:
    return [who for who, _, _ in _people(record)]


_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d)(?:[ T](\d\d:\d\d:\d\d)(\.\d{1,6})?\d*\s*(Z|[+-]\d\d:?\d\d)?)?$")


def _parse_time(text: str) -> datetime | None:
    """Gradescope's '2024-03-02 09:30:00.123456789 -08:00' (nanoseconds, spaced zone), ISO 8601 or a date."""
    m = _TIMESTAMP.match(text.strip())
    if not m:
        return None
    zone = (m[4] or "").replace("Z", "+00:00")
    zone = f"{zone[:3]}:{zone[-2:]}" if zone and ":" not in zone else zone
    try:
        return datetime.fromisoformat(f"{m[1]}T{m[2] or '00:00:00'}{m[3] or ''}{zone}")
    except ValueError:  # shaped like a time, but month 13 or hour 25
        return None


def _when(value: Any) -> float:
    """``:created_at`` as seconds since the epoch (naive times taken as UTC); unknown is oldest."""
    when = _parse_time(value) if isinstance(value, str) else None
    if when is None:
        return float("-inf")
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def _folder_number(folder: str) -> int:
    digits = re.sub(r"\D", "", folder)[:18]  # int() refuses thousands of digits; 18 order any real export
    return int(digits) if digits else -1


def _key_problem(root: Path, key: str, names: list[str]) -> str:
    """Why a metadata key cannot be graded ('' when it names a folder directly inside the export).

    Keys are text from a file anyone could have edited: they are matched against the export's own
    entries, never joined to a path first, so '../x', '/abs' or 'a/../..' cannot reach outside it.
    """
    plain = key not in ("", ".", "..") and not key.startswith(".") and not any(c in key for c in "/\\\0")
    if plain and key != METADATA and key in names and (root / key).is_dir():
        return ""
    if plain and key not in names:
        return f"{key} is listed in {METADATA} but missing from the export; {_REEXPORT}"
    return (f"{METADATA} lists {key[:200]!r}, which is not a folder directly inside the export, so it was not "
            f"graded; {_REEXPORT}")


def _gradescope(root: Path, *, label: str, names: list[str], bad: Mapping[str, str]) -> list[Candidate]:
    folders = [n for n in names if n != METADATA]
    general: tuple[str, ...] = ()
    try:
        if METADATA in bad:
            raise ValueError(bad[METADATA])
        meta = _read_metadata(root / METADATA)
    except (OSError, UnicodeError, ValueError, yaml.YAMLError) as exc:
        why = " ".join(str(exc).split())[:300]
        meta, general = {}, (f"{METADATA} could not be read ({why}); student ids are folder names. To use "
                             f"Gradescope's ids, {_REEXPORT}",)
    rows: dict[str, list[tuple[float, int, str]]] = {}
    for folder in sorted(set(folders) | set(meta)):
        record = meta.get(folder, {})
        for person in _submitters(record) or [folder]:
            key = (_when(_field(record, "created_at")), _folder_number(folder), folder)
            rows.setdefault(person, []).append(key)
    problems = {k: _key_problem(root, k, names) for k in meta}
    ids = {who: (sid, email) for record in meta.values() for who, sid, email in _people(record)}
    return [_with_identity(_gradescope_person(root, person, sorted(keys), meta, problems, label=label, bad=bad,
                                              general=general), ids.get(person, ("", "")), meta)
            for person, keys in sorted(rows.items())]


def _with_identity(cand: Candidate, ids: tuple[str, str], meta: Mapping[str, Any]) -> Candidate:
    """The Gradescope sid and e-mail of ``cand``'s person, and when the graded folder was submitted."""
    folder = cand.source.rsplit("/", 1)[-1]
    created = _field(meta.get(folder, {}), "created_at")
    when = _parse_time(created) if isinstance(created, str) else None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return replace(cand, lms_id=ids[0], email=ids[1], lms="gradescope",
                   submitted_at=when.isoformat() if when else "")


def _gradescope_person(root: Path, person: str, keys: list[tuple[float, int, str]],
                       meta: Mapping[str, Any], problems: Mapping[str, str], *, label: str,
                       bad: Mapping[str, str], general: tuple[str, ...]) -> Candidate:
    usable = [k for k in keys if not problems.get(k[2]) and k[2] not in bad] or keys
    folder = usable[-1][2]
    record = meta.get(folder, {})
    ignored = [k[2] for k in keys if k[2] != folder]
    refused = [k for k in ignored if problems.get(k) or k in bad]
    notes = general + _ignored_note([k[:200] for k in ignored if k not in refused])
    notes += tuple(f"not graded: {problems.get(k) or bad[k]}" for k in refused)
    others = [p for p in _submitters(record) if p != person]
    notes += (f"group submission with {', '.join(others)}",) if others else ()
    history = _field(record, "history")
    if isinstance(history, list) and history:
        notes += (f"Gradescope's history lists {len(history)} earlier submission(s), not in the export",)
    created = _field(record, "created_at")
    if created is not None and _when(created) == float("-inf"):
        shown = repr(created[:60]) if isinstance(created, str) else f"a {type(created).__name__}"
        notes += (f"its :created_at: {shown} is not a date; among several submissions of one "
                  "student the folder number decides",)
    if meta and folder not in meta:
        notes += (f"{folder} is not listed in {METADATA}; the student id is the folder name",)
    source = f"{label}/{folder[:200]}"
    if folder in bad:
        return Candidate(person, None, source, notes, problem=bad[folder])
    if problems.get(folder):
        return Candidate(person, None, source, notes, problem=problems[folder])
    return Candidate(person, root / folder, source, notes)
