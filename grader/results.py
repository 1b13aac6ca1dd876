"""Results: small frozen dataclasses, and their one on-disk form (result.json, schema 1).

Reports and exports read ONLY result.json (and the artefacts saved beside it), so this module is the
contract between grading and feedback. Writes are atomic (temp file + rename): a grader killed mid-write
leaves the old file or the new one, never a torn one.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA_VERSION", "CHECK_STATUSES", "SUBMISSION_STATUSES", "VISIBILITIES",
    "CheckResult", "SubmissionResult", "write_json_atomic", "write_result", "read_result",
]

SCHEMA_VERSION = 1
CHECK_STATUSES = ("passed", "failed", "error", "timeout", "skipped")
SUBMISSION_STATUSES = ("graded", "ungradable", "infrastructure_error")
VISIBILITIES = ("visible", "hidden", "after_due_date")


@dataclass(frozen=True)
class CheckResult:
    id: str  # rubric key, e.g. "transpose_conv"
    name: str  # human title from the rubric
    score: float
    max_score: float
    status: str  # one of CHECK_STATUSES
    visibility: str  # one of VISIBILITIES
    message: str  # one or two sentences for the student
    details: dict[str, Any] = field(default_factory=dict)  # JSON-able, check-specific (see README)


@dataclass(frozen=True)
class SubmissionResult:
    student: str
    status: str  # one of SUBMISSION_STATUSES
    score: float
    max_score: float
    checks: tuple[CheckResult, ...]
    message: str = ""  # why ungradable / which infrastructure fault
    provenance: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = [asdict(c) for c in self.checks]
        return {"schema": data.pop("schema"), **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SubmissionResult":
        if data.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"result.json has schema {data.get('schema')!r}; this grader reads {SCHEMA_VERSION}")
        checks = tuple(CheckResult(**c) for c in data["checks"])
        fields = {k: v for k, v in data.items() if k not in ("checks", "schema")}
        return cls(checks=checks, **fields)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(student_dir: Path, result: SubmissionResult) -> Path:
    path = student_dir / "result.json"
    write_json_atomic(path, result.to_json())
    return path


def read_result(path: Path) -> SubmissionResult:
    return SubmissionResult.from_json(json.loads(path.read_text(encoding="utf-8")))
