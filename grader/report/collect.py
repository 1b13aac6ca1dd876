"""Finding and reading the result.json files of a grading output folder, one bad folder at a time.

Shared by the reports and the exports: both must agree on which students exist, and both must list a
broken folder instead of stopping at it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from grader.checks import KINDS, CheckKind
from grader.core.results import CheckResult, SubmissionResult, read_result

__all__ = ["Unreadable", "Loaded", "student_dirs", "collect", "check_order", "kind_of", "metric_check", "miou_of"]


@dataclass(frozen=True)
class Unreadable:
    student: str  # the folder name
    reason: str


@dataclass(frozen=True)
class Loaded:
    student_dir: Path
    result: SubmissionResult


def _safe_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name


def student_dirs(out_dir: Path) -> list[Path]:
    """Every subfolder with a result.json, plus every student summary.json names (so a folder whose
    result.json went missing is reported, not forgotten), sorted by name."""
    out_dir = Path(out_dir)
    found = {p.parent for p in out_dir.glob("*/result.json")}
    try:
        summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
        names = [s.get("student") if isinstance(s, dict) else s for s in summary.get("students", [])]
        found |= {out_dir / str(s) for s in names if s is not None and _safe_name(str(s))}
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # summary.json is optional: the result.json files are the truth
    return sorted(found, key=lambda p: p.name)


def collect(out_dir: Path) -> tuple[list[Loaded], list[Unreadable]]:
    """Read every student's result.json; the ones that cannot be read come back as Unreadable."""
    loaded, unreadable = [], []
    for student_dir in student_dirs(out_dir):
        path = student_dir / "result.json"
        try:
            loaded.append(Loaded(student_dir, read_result(path)))
        except FileNotFoundError:
            unreadable.append(Unreadable(student_dir.name, "result.json is missing"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            unreadable.append(Unreadable(student_dir.name, f"result.json unreadable: {type(exc).__name__}: {exc}"))
    return loaded, unreadable


def check_order(results: list[SubmissionResult]) -> list[tuple[str, str]]:
    """(id, name) of every check, in rubric order as the results list them (first seen wins)."""
    order: dict[str, str] = {}
    for result in results:
        for check in result.checks:
            order.setdefault(check.id, check.name)
    return list(order.items())


def kind_of(check: CheckResult) -> CheckKind | None:
    """The check's kind: the one it carries; for a result.json written before kinds were recorded, the kind
    its id names (the shipped rubric's ids are its kinds' names); None when unknown."""
    return KINDS.get(check.kind or check.id)


def _measured(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def metric_check(result: SubmissionResult) -> tuple[CheckResult, float] | None:
    """The check that gives this result's ranking number (its kind's ``View.metric``: full training's mIoU,
    whatever the rubric calls the check) and the number, or None when no such check measured one."""
    for check in result.checks:
        kind = kind_of(check)
        value = _measured((check.details or {}).get(kind.view.metric)) if kind and kind.view.metric else None
        if value is not None:
            return check, value
    return None


def miou_of(result: SubmissionResult) -> float | None:
    """The ranking number the host measured (full training's mIoU), or None when none was produced."""
    found = metric_check(result)
    return found[1] if found else None
