"""Gradescope's "Export Submissions": ``submission_metadata.yml`` beside ``submission_<id>/`` folders.

The YAML has Ruby-symbol keys: ``submission_<id>: {:submitters: [{:name:, :sid:, :email:}], :created_at:,
:history: [...]}``. The student id is the submitter's sid, else email, else name; a group submission counts for
every submitter; the latest ``:created_at`` counts. The metadata is hostile text (``grader.intake.safe_yaml``):
its keys are matched against the export's own entries, never joined to a path.
"""
from __future__ import annotations

import functools
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from grader.intake.candidates import METADATA, Candidate, ignored_note
from grader.intake.safe_yaml import load_plain

__all__ = ["gradescope_candidates"]


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


def gradescope_candidates(root: Path, *, label: str, names: list[str], bad: Mapping[str, str]) -> list[Candidate]:
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
    notes = general + ignored_note([k[:200] for k in ignored if k not in refused])
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
