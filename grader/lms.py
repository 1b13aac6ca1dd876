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

import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from grader.archives import is_junk

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
    source = f"{label}/{chosen[0].name}" if len(chosen) == 1 else f"{label}/{chosen[0].who}_*"
    problems = [bad[f.name] for f in chosen if f.name in bad]
    if problems:
        return Candidate(chosen[0].who, None, source, notes, problem="; ".join(problems))
    if len(chosen) == 1:
        return Candidate(chosen[0].who, root / chosen[0].name, source, notes)
    # Several files in one Canvas submission: gather them, under their original names, as a folder.
    folder = Path(tempfile.mkdtemp(prefix="canvas-", dir=stage))
    for f in chosen:
        shutil.copyfile(root / f.name, folder / f.base)
    return Candidate(chosen[0].who, folder, source, notes)


def _ignored_note(ignored: list[str]) -> tuple[str, ...]:
    if not ignored:
        return ()
    return (f"{len(ignored)} earlier submission{'s' * (len(ignored) > 1)} ignored: {', '.join(ignored)}",)


# ------------------------------------------------------------------------------------- Gradescope
class _LenientLoader(yaml.SafeLoader):
    """SafeLoader that reads unknown (e.g. ``!ruby/object``) tags as plain data, never as objects."""


def _plain_node(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_LenientLoader.add_multi_constructor("!", _plain_node)


def _unsymbol(data: Any) -> Any:
    """Drop the leading ':' of Ruby-symbol keys, recursively (':sid' -> 'sid')."""
    if isinstance(data, dict):
        return {str(k).lstrip(":"): _unsymbol(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_unsymbol(v) for v in data]
    return data


def _read_metadata(path: Path) -> dict[str, Any]:
    data = _unsymbol(yaml.load(path.read_text(encoding="utf-8"), Loader=_LenientLoader))
    if not isinstance(data, dict):
        raise ValueError("it is not a mapping of submission folders")
    return {k: v if isinstance(v, dict) else {} for k, v in data.items()}


def _submitters(record: Mapping[str, Any]) -> list[str]:
    people = record.get("submitters") or []
    ids = []
    for person in people if isinstance(people, list) else []:
        if isinstance(person, dict):
            found = [person.get(k) for k in ("sid", "email", "name") if person.get(k) not in (None, "")]
            ids += [str(found[0])] if found else []
    return ids


_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(\.\d{1,6})?\d*\s*(Z|[+-]\d\d:?\d\d)?$")


def _parse_time(text: str) -> datetime | None:
    """Gradescope's '2024-03-02 09:30:00.123456789 -08:00' (nanoseconds, spaced zone) or ISO 8601."""
    m = _TIMESTAMP.match(text.strip())
    if not m:
        return None
    zone = (m[4] or "").replace("Z", "+00:00")
    zone = f"{zone[:3]}:{zone[-2:]}" if zone and ":" not in zone else zone
    return datetime.fromisoformat(f"{m[1]}T{m[2]}{m[3] or ''}{zone}")


def _when(value: Any) -> float:
    """``:created_at`` as seconds since the epoch (naive times taken as UTC); unknown is oldest."""
    if isinstance(value, str):
        value = _parse_time(value)
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return float("-inf")


def _folder_number(folder: str) -> int:
    digits = re.sub(r"\D", "", folder)
    return int(digits) if digits else -1


def _gradescope(root: Path, *, label: str, names: list[str], bad: Mapping[str, str]) -> list[Candidate]:
    folders = [n for n in names if n != METADATA]
    general: tuple[str, ...] = ()
    try:
        if METADATA in bad:
            raise ValueError(bad[METADATA])
        meta = _read_metadata(root / METADATA)
    except (OSError, UnicodeError, ValueError, yaml.YAMLError) as exc:
        meta, general = {}, (f"{METADATA} could not be read ({exc}); student ids are folder names",)
    rows: dict[str, list[tuple[float, int, str]]] = {}
    for folder in sorted(set(folders) | set(meta)):
        record = meta.get(folder, {})
        for person in _submitters(record) or [folder]:
            key = (_when(record.get("created_at")), _folder_number(folder), folder)
            rows.setdefault(person, []).append(key)
    return [_gradescope_person(root, person, sorted(keys), meta, label=label, bad=bad, general=general,
                               listed=bool(meta)) for person, keys in sorted(rows.items())]


def _gradescope_person(root: Path, person: str, keys: list[tuple[float, int, str]],
                       meta: Mapping[str, Any], *, label: str, bad: Mapping[str, str],
                       general: tuple[str, ...], listed: bool) -> Candidate:
    folder = keys[-1][2]
    record = meta.get(folder, {})
    notes = general + _ignored_note([k[2] for k in keys[:-1]])
    others = [p for p in _submitters(record) if p != person]
    notes += (f"group submission with {', '.join(others)}",) if others else ()
    history = record.get("history")
    if isinstance(history, list) and history:
        notes += (f"Gradescope's history lists {len(history)} earlier submission(s), not in the export",)
    if listed and folder not in meta:
        notes += (f"{folder} is not listed in {METADATA}; the student id is the folder name",)
    source = f"{label}/{folder}"
    if folder in bad:
        return Candidate(person, None, source, notes, problem=bad[folder])
    if not (root / folder).exists():
        return Candidate(person, None, source, notes,
                         problem=f"{folder} is listed in {METADATA} but missing from the export")
    return Candidate(person, root / folder, source, notes)
