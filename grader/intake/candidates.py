"""One student's entry of a class, before unpacking: who (the raw name and the LMS's ids), what, from where."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["METADATA", "Candidate", "ignored_note"]

METADATA = "submission_metadata.yml"  # Gradescope's export: its presence makes a folder or zip a class


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


def ignored_note(ignored: list[str]) -> tuple[str, ...]:
    if not ignored:
        return ()
    return (f"{len(ignored)} earlier submission{'s' * (len(ignored) > 1)} ignored: {', '.join(ignored)}",)
