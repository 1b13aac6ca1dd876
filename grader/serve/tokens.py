"""Personal links: the roster in, ``DIR/tokens.csv`` (student, email, link) out; staff links; revocation.

Each run gives every roster student a NEW link and revokes their earlier ones, so tokens.csv always lists
the links that work (the store keeps only digests: a lost link cannot be printed again, only replaced).
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from grader.intake.ids import RESERVED_NAMES, safe_student_id
from grader.serve.config import RESERVED
from grader.serve.store import Store

__all__ = ["RosterError", "Link", "read_roster", "issue_links", "write_tokens_csv", "link_of", "TOKENS_CSV"]

TOKENS_CSV = "tokens.csv"
_NOT_A_STUDENT = RESERVED | RESERVED_NAMES | {"segmentation"}


class RosterError(ValueError):
    """The roster cannot be used; ``str`` says which row and what to do."""


@dataclass(frozen=True)
class Link:
    student: str
    email: str
    link: str


def read_roster(path: Path) -> list[tuple[str, str]]:
    """(student, email) per row of a CSV with a ``student`` column (and ``email`` where known)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RosterError(f"cannot read the roster {path}: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "student" not in [f.strip() for f in reader.fieldnames]:
        raise RosterError(f"{path}: the first line must name the columns, one of them `student` (and `email` "
                          "where known), e.g. `student,email`")
    rows, seen = [], set()
    for number, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
        name = row.get("student", "")
        if not name:
            continue
        if safe_student_id(name) != name or name.lower() in _NOT_A_STUDENT:
            raise RosterError(f"{path} line {number}: {name!r} cannot be a student id (it names a folder of the "
                              f"results: use letters, digits, '.', '_' and '-', e.g. {safe_student_id(name)!r}, "
                              "and none of the output folder's own file names)")
        if name in seen:
            raise RosterError(f"{path} line {number}: student {name!r} appears twice")
        seen.add(name)
        rows.append((name, row.get("email", "")))
    if not rows:
        raise RosterError(f"{path}: no students (one row per student under the `student` column)")
    return rows


def link_of(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/login?token={token}"


def issue_links(store: Store, roster: list[tuple[str, str]], *, base_url: str, days: float = 180,
                role: str = "student") -> list[Link]:
    links = []
    for student, email in roster:
        store.revoke(student)
        links.append(Link(student, email, link_of(base_url, store.add_token(student, role=role, email=email,
                                                                            days=days))))
    return links


def write_tokens_csv(data: Path, links: list[Link]) -> Path:
    """``DIR/tokens.csv``, readable by its owner only (each link signs a student in)."""
    path = Path(data) / TOKENS_CSV
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["student", "email", "link"])
        for link in links:
            writer.writerow([link.student, link.email, link.link])
    os.chmod(path, 0o600)
    return path
