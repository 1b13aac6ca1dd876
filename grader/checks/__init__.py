"""The check kinds: one module each, holding everything that kind knows; this registry maps ``kind:`` to it.

A kind module (PrairieLearn's element shape: prepare / run / parse / grade in one file) holds:
its rubric fields (a ``CheckSpec`` subclass) and their validation, the inputs it adds to the job (run in the
trusted preparation process), the function the runner calls inside the sandbox, the judge that turns the
sandbox's raw outputs into a CheckResult on the host, and its hint. ``grader.checks.base.CheckKind`` says
what each part is. Shared parts: ``unit`` (cases vs the reference's outputs), ``metric_cases``, ``nets``
(building the student's net), ``verdict`` (what a judge receives and returns; timeouts, OOM, crashes).

Stages and outputs are keyed by check id, never by kind: two checks of one kind run with their own settings.
The visible unit checks share one sandbox run (stage ``unit``; their case ids start with the check id), the
withheld ones (hidden, after_due_date) another, in a fresh process after it (``unit.withheld``: nothing of
theirs reaches a visible check's message); every other check runs in a stage of its own, named by its id,
under the rubric budget its kind names.

A result carries its check's kind (``CheckResult.kind``): reports, exports and Gradescope find a check by
what it is (its kind's ``View``), never by the id a rubric gives it.

Adding a kind (say ``dice``), every file it touches:
1. ``grader/checks/dice.py``: a frozen ``DiceSpec(CheckSpec)`` (or ``UnitSpec``) with a default for every
   field; ``KIND = unit_kind("dice", DiceSpec, "dice_score", make_cases, HINT)`` for a function compared
   with the reference on seeded cases, or ``KIND = CheckKind(name=..., spec=..., budget=..., functions=...,
   inputs=..., run=..., judge=..., view=View(...), reads_dataset=...)``. The hooks, all in that module:
   ``view`` (how reports draw it), ``reads_dataset`` (False only when its inputs never come from the dataset:
   the job cache, ``grader/job/cache.py``, then shares entries across evaluation keys), ``prerequisite`` (a
   check that others ``require``: may they run although it failed?), ``retry`` (a second run), ``validate``.
2. One line in ``_MODULES`` below.
3. The student API it calls: ``reference/segmentation.py`` (full marks) and ``student_template/segmentation.py``
   (a TODO stub; tests/test_template_contract.py freezes its signature and docstring).
4. ``rubric.yaml`` and ``tests/rubric_small.yaml``: a check of the kind (``grader selftest`` must still pass);
   ``budget`` names one of the rubric's ``budgets:`` keys (``base.STAGE_BUDGETS``).
5. Its report, only when no section fits: a builder in ``grader/report/views.py`` (``SECTIONS``), its typed
   view in ``grader/report/details.py`` and a macro in ``grader/report/templates/checks.html.j2`` (shown by
   ``student.html.j2``); arrays it draws are loaded in ``grader/report/artifacts.py``.
6. Tests: the reference passes it and a planted bug fails it with the message a student needs
   (tests/test_checks.py shows the pattern); a rubric using it validates (tests/test_rubric.py).
Nothing else names a kind: not the pipeline (``grader/batch/pipeline.py``), the job cache, the reports or the
exports. Heavy libraries come through ``grader.core.lazy`` (loaded on first use): the light host core imports
this registry to read rubrics. A kind module is imported inside the sandbox: it imports only ``core``,
``checks`` and ``sandbox`` (tests/test_imports.py).
"""
from __future__ import annotations

from grader.checks import (bilinear_kernel, confusion_matrix, full_training, mean_iou, model_shapes, overfit,
                           pixel_accuracy, transpose_conv)
from grader.checks.base import CheckKind, CheckSpec, View

__all__ = ["KINDS", "CheckKind", "CheckSpec", "View", "kind_of", "stage_of", "STUDENT_NAMES"]

_MODULES = (transpose_conv, bilinear_kernel, confusion_matrix, mean_iou, pixel_accuracy, model_shapes, overfit,
            full_training)
KINDS: dict[str, CheckKind] = {m.KIND.name: m.KIND for m in _MODULES}
# Every name of the student API some kind calls, in a stable order (the import stage reports which exist).
STUDENT_NAMES: tuple[str, ...] = tuple(dict.fromkeys(n for k in KINDS.values() for n in k.functions))


def kind_of(spec: CheckSpec) -> CheckKind:
    return KINDS[spec.kind]


def stage_of(spec: CheckSpec) -> str:
    """The sandbox stage that runs ``spec``: ``unit`` (the visible unit checks), ``unit.withheld`` (the withheld
    ones) or the check's own id."""
    return KINDS[spec.kind].stage(spec)
