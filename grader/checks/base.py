"""What every check kind is made of: the rubric fields all checks share, and the kind's description.

Light on purpose (no numpy, no torch): ``grader.rubric`` reads the kinds' fields through this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

__all__ = ["RubricError", "CheckSpec", "CheckKind", "Retry", "View", "StageBudget", "Visibility", "STAGE_BUDGETS",
           "RETRY_SUFFIX", "UNIT_STAGES", "WITHHELD_UNIT_STAGE"]

Visibility = Literal["visible", "hidden", "after_due_date"]
STAGE_BUDGETS = ("import", "unit", "model", "overfit", "train")  # the rubric's `budgets:` keys
RETRY_SUFFIX = ".retry"  # a check's second-chance stage: "<id>.retry" (a check id holds no '.': grader.rubric)
# The unit checks' two shared stages: the visible ones in "unit"; the withheld ones (hidden, after_due_date) in a
# fresh process of their own, so nothing computed from their inputs can reach a visible check's output. Generic
# names (never a check id; a '.' no check id holds): serve shows both as "unit checks".
WITHHELD_UNIT_STAGE = "unit.withheld"
UNIT_STAGES = ("unit", WITHHELD_UNIT_STAGE)


class RubricError(ValueError):
    """The rubric is invalid; the message names the YAML path and what to write instead."""


@dataclass(frozen=True)
class StageBudget:
    timeout_s: float = 120.0  # wall clock for the stage, then the sandbox is killed
    memory_mb: int = 4096  # address space (local) / cgroup memory (docker)


@dataclass(frozen=True)
class CheckSpec:
    """The fields every check has. A kind subclasses it with its own fields (all with defaults)."""

    id: str  # unique; also names the check's sandbox stage and output folder (net kinds)
    kind: str  # a key of grader.checks.KINDS
    name: str
    points: float
    visibility: Visibility = "visible"
    requires: tuple[str, ...] = ()  # ids of earlier checks that must pass first, else this one is not run


@dataclass(frozen=True)
class Retry:
    """A kind's second chance: its check's stage run ONCE more, as stage ``<id>.retry`` with a config of its
    own, only when the first verdict asks for it (no cost otherwise: the stage is never started).

    - ``config(spec, first_config) -> dict | None``: in the preparation process: the retry stage's config
      (e.g. the first one with a derived seed), or None when the rubric turns the retry off.
    - ``wanted(spec, first: Judged) -> bool``: on the host: does this verdict get the retry?
    - ``combine(spec, first: Judged, second: Judged) -> Judged``: the verdict that counts, saying why; a
      second run that timed out or crashed must leave the first verdict standing.
    """

    config: Callable[[Any, dict], dict | None]
    wanted: Callable[[Any, Any], bool]
    combine: Callable[[Any, Any, Any], Any]


@dataclass(frozen=True)
class View:
    """How the reports show a check of this kind: plain data the host-only report package reads (a kind never
    imports the report: kinds are imported inside the sandbox too, grader.sandbox.confine.SANDBOX_VISIBLE).

    - ``section``: the report section that draws the check's details: a key of
      ``grader.report.views.SECTIONS`` ("unit": the smallest failing case; "model": output shape per input;
      "overfit": loss curve and the example; "training": loss, per-class IoU, confusion, best/worst images),
      each drawn by the macro of the same name in templates/checks.html.j2. None: the details as raw JSON.
    - ``artifact``: the name, in ``Judged.artifacts``, of the arrays that section draws; the pipeline saves
      them as ``artifacts/<check id>.<artifact>.npz``, so two checks of one kind keep their own pictures.
    - ``metric``: the ``details`` key of the number that ranks a class (full training's mIoU): the ``miou``
      column of grades.csv and of the class summary, its histogram, and Gradescope's leaderboard. The first
      check (rubric order) whose kind names a metric and that measured it gives the number.
    - ``metric_lines``: ``details`` keys of that check drawn as lines on the histogram (the band's floor, bar).
    """

    section: str | None = None
    artifact: str | None = None
    metric: str | None = None
    metric_lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckKind:
    """One kind of check, whole: what a newcomer reads to know what the kind does and where.

    - ``spec``: its rubric fields (a CheckSpec subclass); ``validate(spec, where)`` raises RubricError for
      combinations a type cannot express (``where`` is the YAML path, e.g. ``checks[3]``).
    - ``budget``: which of the rubric's stage budgets its sandbox run uses. Kinds with budget ``unit`` share
      a sandbox run: stage ``unit`` (every visible unit check's cases), and stage ``unit.withheld`` (the hidden
      and after-due-date ones, a separate process); every other check runs alone, in the stage named by its
      id, with its own settings.
    - ``functions``: the student names it calls (missing ones fail the check without running it).
    - ``inputs(spec, job) -> (stage config, host arrays)``: in the trusted preparation process: writes what
      the sandbox may see into the job folder (through ``job``) and returns the stage's JSON config, plus the
      arrays only the host may see (evaluation labels ...), kept per check id.
    - ``run(student, config, job_dir, writer, device)``: INSIDE the sandbox: calls the student's code and
      writes raw outputs through ``writer`` (records and arrays), never a score.
    - ``judge(spec, stage, ctx) -> Judged``: on the host: the CheckResult (and report artefacts) from the
      stage's outputs.
    - ``hint``: one sentence shown with a failure.
    - ``cases(spec)`` (unit kinds only): the check's seeded cases, rebuilt on the host for the feedback.
    - ``retry`` (optional, own-stage kinds): a second run near a decision boundary (``Retry``).
    - ``view``: how the reports draw its results (``View``); the default shows the details as raw JSON.
    - ``reads_dataset``: whether its inputs come from the dataset (the job cache then keys a prepared job by
      the evaluation key, ``grader.job.cache``). True, the safe default, unless the kind never reads it.
    - ``prerequisite(result, dependent, rubric) -> str | None`` (optional): when a check of this kind did NOT
      pass, may a check that ``requires`` it still run? "" yes; a reason (shown to the student) no; None: no
      evidence either way (the default "it requires <id> to pass first"). model_shapes answers per input size.
    """

    name: str
    spec: type[CheckSpec]
    budget: str
    functions: tuple[str, ...]
    inputs: Callable[[Any, Any], tuple[dict, dict[str, Any]]]  # (spec, grader.job.folder.JobBuilder)
    run: Callable[[Any, dict, Path, Any, str], None]  # (student, config, job_dir, grader.runner.StageWriter, device)
    judge: Callable[[Any, Any, Any], Any]  # (spec, verdict.StageResult, verdict.JudgeContext) -> verdict.Judged
    hint: str = ""
    validate: Callable[[Any, str], None] = lambda spec, where: None
    cases: Callable[[Any], list] | None = None  # unit kinds: spec -> its seeded cases (host and preparation)
    retry: Retry | None = None  # a second chance (grader.batch.pipeline runs it only when ``retry.wanted``)
    view: View = View()
    reads_dataset: bool = True
    prerequisite: Callable[[Any, Any, Any], str | None] | None = None  # (CheckResult, dependent spec, Rubric)

    def stage(self, spec: CheckSpec) -> str:
        """The sandbox stage that runs ``spec``: ``unit`` (shared by the visible unit checks), ``unit.withheld``
        (shared by the withheld ones) or the check's own id."""
        if self.budget != "unit":
            return spec.id
        return "unit" if spec.visibility == "visible" else WITHHELD_UNIT_STAGE

    def retry_stage(self, spec: CheckSpec) -> str:
        """The stage of ``spec``'s second run (``retry``): never the name of another check's stage."""
        return self.stage(spec) + RETRY_SUFFIX
