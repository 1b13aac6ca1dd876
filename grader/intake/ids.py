"""Student ids: a folder-safe form of a name, unique in a batch, and never handed to another owner.

An owner is who an id belongs to across batches: the LMS's id of the student where there is one (Canvas user id,
Gradescope sid), else the raw name (``Candidate.owner``). The output folder's ids are known with their owners
(``grader.batch.batch.known_owners``), so a later batch gives each known owner its id back and no one else.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from grader.intake.candidates import Candidate

__all__ = ["RESERVED_NAMES", "assign_ids", "safe_student_id"]

# What the output folder holds beside the students' folders: a student may never be named like one of them.
RESERVED_NAMES = frozenset({"index.html", "grades.csv", "summary.json", "similarity", "similarity.csv",
                            "similarity.json", "results.json"})


def safe_student_id(raw: str) -> str:
    """A folder-safe id: accents folded to ASCII, anything outside [A-Za-z0-9._-] made '_'."""
    ascii_ = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode()
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_).strip("._-")[:80] or "student"  # no hidden names, no '..'
    return f"student_{safe}" if safe.lower() in RESERVED_NAMES else safe


def assign_ids(cands: Sequence[Candidate], known: Mapping[str, str]) -> list[tuple[str, Candidate]]:
    """A folder-safe id for every candidate, such that an id never changes owner.

    ``known``: the ids already in the output folder -> their owners (``Candidate.owner``). An owner seen
    before keeps its id; no known id goes to anyone else. Then each id whose raw name IS that id (``Jose``,
    ``Jose-2``) keeps it; a name that folds onto a taken id (``José``) or that several owners share (two
    Canvas users named ``smithjohn``) gets a suffix: the LMS id where there is one, else the next free
    number, never a number that is another candidate's own id.
    """
    cands = _distinct_owners(list(cands))
    by_owner = {owner: sid for sid, owner in known.items()}
    bases = {c.owner: safe_student_id(c.student) for c in cands}
    claims: dict[str, set[str]] = {}  # id -> the owners whose name folds onto it
    exact: dict[str, set[str]] = {}  # id -> the owners whose name is exactly it
    for c in cands:
        claims.setdefault(bases[c.owner], set()).add(c.owner)
        if c.student == bases[c.owner]:
            exact.setdefault(bases[c.owner], set()).add(c.owner)
    taken: set[str] = set(known)
    assigned: dict[str, str] = {}
    for c in cands:  # 1. owners seen before
        if c.owner in by_owner:
            assigned[c.owner] = by_owner[c.owner]
    for c in sorted(cands, key=lambda c: (bases[c.owner], c.source)):  # 2. a name that is its own id, unshared
        base = bases[c.owner]
        if c.owner not in assigned and base not in taken and exact.get(base) == {c.owner}:
            assigned[c.owner] = base
            taken.add(base)
    reserved = taken | set(claims)
    for c in sorted(cands, key=lambda c: (bases[c.owner], c.source)):  # 3. the rest, suffixed where needed
        if c.owner in assigned:
            continue
        base = bases[c.owner]
        sid = base if base not in taken and claims[base] == {c.owner} else _suffixed(base, c.lms_id, reserved)
        taken.add(sid)
        assigned[c.owner] = sid
        reserved.add(sid)
    out = []
    for c in sorted(cands, key=lambda c: (assigned[c.owner], c.source)):
        sid, base = assigned[c.owner], bases[c.owner]
        note = (f"student id {base!r} belongs to another student; this one is {sid!r}",) if sid != base else ()
        out.append((sid, replace(c, notes=c.notes + note)))
    return out


def _suffixed(base: str, lms_id: str, reserved: set[str]) -> str:
    if lms_id and (sid := safe_student_id(f"{base}-{lms_id}")) not in reserved:
        return sid
    n = 2
    while f"{base}-{n}" in reserved:
        n += 1
    return f"{base}-{n}"


def _distinct_owners(cands: list[Candidate]) -> list[Candidate]:
    """Entries of one raw name without an LMS id (``alice.py`` beside ``alice.zip``; two paths named alike)
    are distinct owners, told apart by their entry's name, else by their whole source."""
    for key in (lambda c: Path(c.source).name, lambda c: c.source):
        count: dict[str, int] = {}
        for c in cands:
            count[c.owner] = count.get(c.owner, 0) + 1
        cands = [replace(c, key=f"entry:{key(c)}") if count[c.owner] > 1 else c for c in cands]
    return cands
