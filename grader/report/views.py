"""What a student may see: the visibility policy, applied BEFORE anything reaches a template.

Before release, ``after_due_date`` and ``hidden`` checks become a name and "graded after the deadline":
their message, details, score and status are dropped here, so no template can leak them by mistake.
After release, ``after_due_date`` checks show everything and ``hidden`` ones their name and score only.
(The class summary for TAs does not go through here: it shows everything.)

What a check's details look like is its kind's business: the kind's ``View`` (``grader.checks.base``) names
its section in ``SECTIONS`` and the arrays that section draws; nothing here looks at a check's id.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Callable

from grader.checks.base import WITHHELD_UNIT_STAGE
from grader.core.results import CheckResult, SubmissionResult
from grader.report import details as dv
from grader.report.artifacts import artifact_path, load_overfit, load_train_eval
from grader.report.collect import kind_of

__all__ = ["STATUS_LABELS", "SECTIONS", "CheckView", "Total", "Banner", "ProvenanceView", "check_view", "total",
           "banner", "provenance_view", "withheld_ids"]

STATUS_LABELS = {
    "passed": "passed", "failed": "failed", "error": "error", "timeout": "timed out",
    "skipped": "skipped", "withheld": "graded after the deadline", "graded": "graded",
}
_WITHHELD_NOTE = "graded after the deadline"
_HIDDEN_NOTE = "hidden check: only its score is released"


@dataclass(frozen=True)
class CheckView:
    id: str
    name: str
    status: str  # a key of STATUS_LABELS; also the CSS class
    label: str
    points: str  # "7 / 10", or "—" when withheld
    message: str | None
    withheld: bool
    traceback: str | None = None
    unit: dv.UnitView | None = None
    model: dv.ModelView | None = None
    overfit: dv.OverfitView | None = None
    training: dv.TrainingView | None = None
    raw: str | None = None  # details we have no view for (or could not read), as JSON

    @property
    def has_section(self) -> bool:
        """Whether the page gives this check its own card (a bare message fits in the table)."""
        return any(v is not None for v in (self.traceback, self.unit, self.model, self.overfit,
                                           self.training, self.raw))


def _points(score: float, max_score: float) -> str:
    return f"{dv.fmt(float(score))} / {dv.fmt(float(max_score))}"


def check_view(check: CheckResult, student_dir: Path, *, released: bool) -> CheckView:
    """The view of one check under the visibility policy (see the module docstring)."""
    shown = check.visibility == "visible" or (released and check.visibility == "after_due_date")
    if not shown:
        name_only = released and check.visibility == "hidden"
        return CheckView(
            id=check.id, name=check.name, status="graded" if name_only else "withheld",
            label=STATUS_LABELS["graded" if name_only else "withheld"],
            points=_points(check.score, check.max_score) if name_only else "—",
            message=_HIDDEN_NOTE if name_only else _WITHHELD_NOTE, withheld=True,
        )
    base = dict(id=check.id, name=check.name, status=check.status,
                label=STATUS_LABELS.get(check.status, check.status),
                points=_points(check.score, check.max_score), message=check.message or None, withheld=False)
    return CheckView(**base, **_detail_views(check, student_dir))


def _detail_views(check: CheckResult, student_dir: Path) -> dict[str, Any]:
    details = dict(check.details or {})
    views: dict[str, Any] = {}
    traceback = details.pop("traceback", None)
    if check.status in ("error", "timeout") and traceback:
        views["traceback"] = str(traceback)
    try:
        views.update(_typed_view(check, details, student_dir))
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        views["raw"] = dv.json_text({"note": f"details not drawn ({exc})", **details}, limit=8000)
    return views


def _unit_section(check: CheckResult, details: dict[str, Any], arrays: Path | None) -> dict[str, Any]:
    if check.status == "passed" and not details.get("smallest_failure"):
        return {}  # a pass needs no case table; the message says how many cases passed
    return {"unit": dv.unit_view(details)}


def _model_section(check: CheckResult, details: dict[str, Any], arrays: Path | None) -> dict[str, Any]:
    return {"model": dv.model_view(details)}


def _overfit_section(check: CheckResult, details: dict[str, Any], arrays: Path | None) -> dict[str, Any]:
    return {"overfit": dv.overfit_view(details, load_overfit(arrays) if arrays else None)}


def _training_section(check: CheckResult, details: dict[str, Any], arrays: Path | None) -> dict[str, Any]:
    return {"training": dv.training_view(details, load_train_eval(arrays) if arrays else None)}


# A kind's ``View.section`` -> the builder of its CheckView fields, from (check, details without the traceback,
# the path of its ``View.artifact`` arrays or None). A builder that meets odd details raises: raw JSON instead.
SECTIONS: dict[str, Callable[[CheckResult, dict[str, Any], Path | None], dict[str, Any]]] = {
    "unit": _unit_section, "model": _model_section, "overfit": _overfit_section, "training": _training_section,
}


def _typed_view(check: CheckResult, details: dict[str, Any], student_dir: Path) -> dict[str, Any]:
    if not details:
        return {}
    kind = kind_of(check)
    section = SECTIONS.get(kind.view.section or "") if kind is not None else None
    if section is None:
        return {"raw": dv.json_text(details, limit=8000)}
    name = kind.view.artifact
    arrays = artifact_path(student_dir, check.id, name, legacy=not check.kind) if name else None
    return section(check, details, arrays)


@dataclass(frozen=True)
class Total:
    score: str
    max_score: str
    percent: int  # for the bar
    note: str | None  # e.g. which part is visible before release


def total(result: SubmissionResult, *, released: bool) -> Total:
    """The score a page may show: the full total after release, the visible part before it."""
    if result.status != "graded":
        return Total("—", dv.fmt(float(result.max_score)), 0, "not graded")
    if released or all(c.visibility == "visible" for c in result.checks):
        return Total(dv.fmt(float(result.score)), dv.fmt(float(result.max_score)),
                     _percent(result.score, result.max_score), None)
    visible = [c for c in result.checks if c.visibility == "visible"]
    score = sum(c.score for c in visible)
    max_score = sum(c.max_score for c in visible)
    pending = sum(c.max_score for c in result.checks if c.visibility != "visible")
    note = (f"This is the score of the checks visible now ({len(visible)} of {len(result.checks)}). "
            f"{dv.fmt(float(pending))} more points are graded after the deadline.")
    return Total(dv.fmt(float(score)), dv.fmt(float(max_score)), _percent(score, max_score), note)


def _percent(score: float, max_score: float) -> int:
    return round(100 * max(0.0, min(1.0, score / max_score))) if max_score else 0


@dataclass(frozen=True)
class Banner:
    kind: str  # "ungradable" | "infrastructure_error"
    title: str
    message: str
    todo: str


def banner(result: SubmissionResult) -> Banner | None:
    """The prominent box for a submission that was not graded, or None."""
    if result.status == "ungradable":
        return Banner("ungradable", "Your submission could not be graded",
                      result.message or "No reason was recorded.",
                      "This is not a score of 0 for your work: the grader could not run it. Fix the "
                      "problem described above (run the self-check locally), then resubmit.")
    if result.status == "infrastructure_error":
        return Banner("infrastructure_error", "The grader failed (not your fault)",
                      result.message or "No reason was recorded.",
                      "Something in the grading system broke while grading your submission. You do "
                      "not need to change anything: the course staff will regrade it. If this page "
                      "still looks like this after a day, contact the course staff.")
    return None


@dataclass(frozen=True)
class ProvenanceView:
    durations: tuple[tuple[str, str], ...]
    total_s: str | None
    facts: tuple[tuple[str, str], ...]  # (label, value): device, versions, sandbox, hashes, time
    seeds: tuple[tuple[str, str], ...]


def withheld_ids(checks: Sequence[CheckResult], *, released: bool) -> frozenset[str]:
    """The ids of the checks whose details the page must not show: hidden ones always, after-due-date ones
    before release."""
    return frozenset(c.id for c in checks if c.visibility == "hidden"
                     or (c.visibility == "after_due_date" and not released))


def _of_withheld(name: str, withheld: frozenset[str]) -> bool:
    """A seed or stage of a withheld check: its id, or ``<id>.<anything>`` (``full_training.retry``), or the
    withheld unit checks' shared stage (``unit.withheld``) while any check is withheld."""
    return name in withheld or name.split(".", 1)[0] in withheld or (name == WITHHELD_UNIT_STAGE and bool(withheld))


def provenance_view(provenance: dict[str, Any], checks: Sequence[CheckResult] = (), *,
                    released: bool = False) -> ProvenanceView:
    """The "what ran" box: durations per stage, device, versions, seeds, sandbox isolation. Never a seed or a
    stage of a withheld check (``withheld_ids``): a hidden seed lets a student compute its cases, a stage name
    says a check ran, a ``.retry`` stage that a run landed just under the bar."""
    withheld = withheld_ids(checks, released=released)
    durations = {str(k): v for k, v in (provenance.get("durations_s") or {}).items()
                 if isinstance(v, (int, float)) and not _of_withheld(str(k), withheld)}
    sandbox = provenance.get("sandbox") or {}
    facts = [
        ("device", provenance.get("device")), ("grader", provenance.get("grader_version")),
        ("PyTorch", provenance.get("torch_version")), ("Python", provenance.get("python_version")),
        ("sandbox engine", sandbox.get("engine")), ("isolation", sandbox.get("isolation")),
        ("graded at", provenance.get("graded_at")),
        ("submission hash", _short(provenance.get("submission_hash"))),
        ("rubric hash", _short(provenance.get("rubric_hash"))),
        ("dataset hash", _short(provenance.get("dataset_hash"))),
    ]
    return ProvenanceView(
        durations=tuple((k, f"{v:.1f} s") for k, v in durations.items()),
        total_s=f"{sum(durations.values()):.1f} s" if durations else None,
        facts=tuple((label, str(value)) for label, value in facts if value not in (None, "")),
        seeds=tuple((str(k), str(v)) for k, v in (provenance.get("seeds") or {}).items()
                    if not _of_withheld(str(k), withheld)),
    )


def _short(digest: Any) -> str | None:
    return None if not digest else str(digest)[:16]
