"""Results: small frozen dataclasses, and their one on-disk form (result.json, schema 1).

Reports and exports read ONLY result.json (and the artefacts saved beside it), so this module is the
contract between grading and feedback. A check carries its ``kind``, so a report finds the training check
by what it is, whatever the rubric calls it; a file written before kinds were recorded reads with kind "". Writes are atomic (temp file + rename): a grader killed mid-write
leaves the old file or the new one, never a torn one.

Writing a result is total over what a judge may put in the free-form parts (a check's ``details``, the
``provenance``): ``json_safe`` turns a non-finite float into the string ``"nan"``, ``"inf"`` or ``"-inf"``
(``float()`` reads each back, so a report that converts a detail with ``float`` still sees the value; a
reader that accepts only numbers sees no number), a numpy scalar into the plain number, and any other
non-JSON value, a container nested deeper than ``MAX_DETAIL_DEPTH`` or one beyond ``MAX_DETAIL_VALUES``
values into a short string. The typed fields are not rewritten: a score that is not a finite number is a
grader bug, refused by name. ``read_result`` raises ValueError for any malformed content (OSError only when
the file cannot be read).
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.core.files import write_atomic

__all__ = [
    "SCHEMA_VERSION", "CHECK_STATUSES", "SUBMISSION_STATUSES", "VISIBILITIES",
    "CheckResult", "SubmissionResult", "write_json_atomic", "write_result", "read_result", "json_safe",
    "MAX_DETAIL_DEPTH", "MAX_DETAIL_VALUES",
]

SCHEMA_VERSION = 1
CHECK_STATUSES = ("passed", "failed", "error", "timeout", "skipped")
SUBMISSION_STATUSES = ("graded", "ungradable", "infrastructure_error")
VISIBILITIES = ("visible", "hidden", "after_due_date")
MAX_DETAIL_DEPTH = 12  # the deepest detail written today is 3 levels (smallest_failure -> shapes -> list)
MAX_DETAIL_VALUES = 200_000  # a 21x21 confusion matrix is 441; bounds a self-referencing container too
_MAX_TEXT = 2000  # a non-JSON value, as text


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
    kind: str = ""  # the rubric's kind (grader.checks.KINDS): reports find checks by it, never by id; "" unknown


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
        """The on-disk form; details and provenance made JSON-safe, scores checked finite (ValueError)."""
        checks = [{"id": c.id, "kind": c.kind, "name": c.name, "score": _finite(c.score, f"check {c.id!r}'s score"),
                   "max_score": _finite(c.max_score, f"check {c.id!r}'s max score"), "status": c.status,
                   "visibility": c.visibility, "message": c.message, "details": json_safe(c.details)}
                  for c in self.checks]
        return {"schema": self.schema, "student": self.student, "status": self.status,
                "score": _finite(self.score, "the score"), "max_score": _finite(self.max_score, "the max score"),
                "checks": checks, "message": self.message, "provenance": json_safe(self.provenance)}

    @classmethod
    def from_json(cls, data: Any) -> "SubmissionResult":
        """A result from its on-disk form; ValueError (only) when anything in it is malformed."""
        if not isinstance(data, dict):
            raise ValueError("result.json does not hold an object")
        if data.get("schema") != SCHEMA_VERSION or isinstance(data.get("schema"), bool):
            raise ValueError(f"result.json has schema {data.get('schema')!r}; this grader reads {SCHEMA_VERSION}")
        _known_keys(data, _SUBMISSION_KEYS, "result.json")
        checks = data.get("checks")
        if not isinstance(checks, list):
            raise ValueError("result.json: checks is not a list")
        return cls(student=_text(data, "student", "result.json"), status=_choice(data, "status", SUBMISSION_STATUSES),
                   score=_number(data, "score", "result.json"), max_score=_number(data, "max_score", "result.json"),
                   checks=tuple(_check(c, i) for i, c in enumerate(checks)),
                   message=_text(data, "message", "result.json", default=""),
                   provenance=_mapping(data, "provenance", "result.json"))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically (``grader.core.files.write_atomic``)."""
    write_atomic(path, json.dumps(data, indent=1, allow_nan=False))


def write_result(student_dir: Path, result: SubmissionResult) -> Path:
    path = student_dir / "result.json"
    write_json_atomic(path, result.to_json())
    return path


def read_result(path: Path) -> SubmissionResult:
    """The result in ``path``: OSError when it cannot be read, ValueError when its content is malformed."""
    text = path.read_text(encoding="utf-8")  # a byte that is not UTF-8: UnicodeDecodeError, a ValueError
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:  # nesting deeper than the parser's stack
        raise ValueError("result.json is nested too deeply") from None
    if _depth(data) > MAX_DETAIL_DEPTH + 4:  # what json_safe writes nests less: a report must not recurse
        raise ValueError("result.json is nested too deeply")
    return SubmissionResult.from_json(data)


def _depth(value: Any) -> int:
    deepest, work = 0, [(value, 1)]
    while work:
        item, depth = work.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        if children:
            deepest = max(deepest, depth)
            work.extend((child, depth + 1) for child in children)
    return deepest


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that ``json.dump(..., allow_nan=False)`` always writes (see the module's
    docstring). Iterative: a value of any depth is walked without recursion."""
    box: list[Any] = [None]
    work: list[tuple[Any, Any, Any, int]] = [(value, box, 0, 0)]  # (value, container, slot, depth)
    budget = MAX_DETAIL_VALUES
    while work:
        item, parent, slot, depth = work.pop()
        budget -= 1
        if budget < 0:
            parent[slot] = "... (cut: too many values)"
        elif isinstance(item, (dict, list, tuple)) and depth >= MAX_DETAIL_DEPTH:
            parent[slot] = f"... (cut: a {type(item).__name__} nested deeper than {MAX_DETAIL_DEPTH} levels)"
        elif isinstance(item, dict):
            out: dict[str, Any] = {}
            parent[slot] = out
            for key, child in item.items():
                name = key if isinstance(key, str) else _scalar_text(key)
                out[name] = None  # keeps the order; filled when popped
                work.append((child, out, name, depth + 1))
        elif isinstance(item, (list, tuple)):
            parent[slot] = items = [None] * len(item)
            work.extend((child, items, i, depth + 1) for i, child in enumerate(item))
        else:
            parent[slot] = _scalar(item)
    return box[0]


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # a numpy scalar (np.bool_ is no bool)
        try:
            plain = value.item()
        except Exception:  # noqa: BLE001 - whatever it is, it is written as text below
            plain = value
        if plain is None or isinstance(plain, (bool, int, float, str)):
            value = plain
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isfinite(number):
            return number
        return "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")
    return _scalar_text(value)


def _scalar_text(value: Any) -> str:
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - an object whose __str__ raises is still written, by its type
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + f"... (cut: {len(text) - _MAX_TEXT} more characters)"


_CHECK_KEYS = frozenset({"id", "kind", "name", "score", "max_score", "status", "visibility", "message", "details"})
_SUBMISSION_KEYS = frozenset({"schema", "student", "status", "score", "max_score", "checks", "message", "provenance"})


def _finite(value: Any, where: str) -> int | float:
    """A score as a plain finite number (a numpy scalar converted), else ValueError naming it."""
    plain = _scalar(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None
    if not isinstance(plain, (int, float)) or not _is_finite(plain):
        raise ValueError(f"{where} is {_scalar_text(value)[:60]}, not a finite number")
    return plain


def _is_finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond a float's range
        return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"result.json holds {name}, which this grader never writes")


def _check(data: Any, index: int) -> CheckResult:
    where = f"result.json: checks[{index}]"
    if not isinstance(data, dict):
        raise ValueError(f"{where} is not an object")
    _known_keys(data, _CHECK_KEYS, where)
    return CheckResult(id=_text(data, "id", where), name=_text(data, "name", where),
                       score=_number(data, "score", where), max_score=_number(data, "max_score", where),
                       status=_choice(data, "status", CHECK_STATUSES, where),
                       visibility=_choice(data, "visibility", VISIBILITIES, where),
                       message=_text(data, "message", where), details=_mapping(data, "details", where),
                       kind=_text(data, "kind", where, default=""))  # written before kinds travelled: ""


def _known_keys(data: dict, allowed: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown[:5]}")


def _text(data: dict, key: str, where: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{where}: {key} is not a string")
    return value


def _number(data: dict, key: str, where: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _is_finite(value):
        raise ValueError(f"{where}: {key} is not a finite number")
    return float(value)


def _choice(data: dict, key: str, allowed: tuple[str, ...], where: str = "result.json") -> str:
    value = data.get(key)
    if value not in allowed or not isinstance(value, str):
        shown = repr(value[:40]) if isinstance(value, str) else f"a {type(value).__name__}"
        raise ValueError(f"{where}: {key} is {shown}, not one of {', '.join(allowed)}")
    return value


def _mapping(data: dict, key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{where}: {key} is not an object")
    return value
