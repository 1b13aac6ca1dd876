"""The grader as a library: keyword-only ``grade``, ``check``, ``selftest``, ``calibrate``, ``handout``, ``report``,
``gradescope``.

The CLI (``grader.cli``) only parses arguments, calls these and prints; every default lives in these
signatures. Each call returns what happened (results, pass/fail and why) and decides nothing about exit
codes. ``rubric`` is a ``Rubric`` or the path of a YAML file (a ``RubricError`` names the bad key).

This module is part of the light host core: it imports neither torch, numpy nor Jinja2. The heavy parts are
reached through two seams: ``grader.batch.batch`` imports the grading side only when something needs grading, and
``grader.report`` imports the renderer only when a page is drawn (PEP 562).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from grader import report as pages_package
from grader.batch.batch import GradeOptions, grade_all
from grader.calibrate import Calibration, plan_calibration, summarise
from grader.data.evalsecret import Rotation, default_cache_dir, rotate_secret
from grader.report.export import write_grades_csv
from grader.gradebook.book import NO_LAYERS, Layers, load_gradebook, save_policy, write_layers
from grader.gradebook.canvas import Export, write_canvas
from grader.gradebook.generic import write_generic
from grader.gradebook.release import Released, release_pages
from grader.gradescope import GRADESCOPE_ROOT, run_gradescope
from grader.kit.handout import build_kit, public_rubric
from grader.kit.checkout import default_rubric
from grader.core.results import SubmissionResult
from grader.rubric import Rubric, load_rubric
from grader.sandbox.factory import SandboxSpec
from grader.similarity.compare import Outcome as SimilarityOutcome
from grader.similarity.compare import similarity as compare_class

__all__ = ["REPO", "DEFAULT_RUBRIC", "Progress", "SelftestResult", "calibrate", "check", "grade", "gradescope",
           "handout", "public_rubric", "report", "selftest", "similarity", "Layers", "export_canvas", "export_generic",
           "release"]

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RUBRIC = default_rubric(REPO / "rubric.yaml")  # a student kit: its public rubric (grader.kit.checkout)


class Progress(Protocol):
    """What a batch tells whoever watches it (``grader.progress.Progress`` draws it as a bar)."""

    def start(self, total: int) -> None: ...  # intake found ``total`` submissions
    def begin(self, student: str) -> None: ...  # a submission's sandbox is starting
    def update(self, student: str, result: SubmissionResult) -> None: ...  # a submission finished


def _load(rubric: Rubric | str | Path) -> Rubric:
    return rubric if isinstance(rubric, Rubric) else load_rubric(Path(rubric))


def grade(paths: Sequence[str | Path], *, rubric: Rubric | str | Path = DEFAULT_RUBRIC, out_dir: str | Path,
          sandbox: str = "local", image: str | None = None, executor: str = "pool", jobs: int = 1,
          gpus: Sequence[str] = (), jobs_per_gpu: int = 1, regrade: bool = False,
          cache_dir: str | Path | None = None, ray_address: str | None = None, progress: Progress | None = None,
          render: bool = True, unconfined_ok: bool = False, single: bool = False,
          layers: Layers = NO_LAYERS) -> list[SubmissionResult]:
    """Grade submissions (folders, .py, .zip, .ipynb, class folders) into ``out_dir``: result.json per
    student, summary.json, and (``render``) the reports and grades.csv, redrawing only what changed. An
    unchanged submission is not graded again unless ``regrade``. ``sandbox``: "local" | "docker" (``image``:
    its image); ``executor``: "pool" (``jobs`` at a time, or ``jobs_per_gpu`` per GPU of ``gpus``, each
    capped to that share of its GPU's memory) | "ray" (``ray_address``; 1/``jobs_per_gpu`` of a GPU per task). With ``render``, the graded submissions are also compared with each other for staff
    (``similarity``; never a score). ``single``: each path is one student's own upload, never read as a class
    export (``grader serve``). ``layers``: the staff's overrides, extensions and submission times the pages and
    grades.csv apply (default: the output folder's own files, as ``report``). Returns every student's result,
    sorted by name."""
    out = Path(out_dir)
    if jobs_per_gpu < 1:
        raise ValueError(f"jobs_per_gpu must be at least 1, not {jobs_per_gpu}")
    options = GradeOptions(out_dir=out, jobs=jobs, gpus=tuple(gpus), jobs_per_gpu=jobs_per_gpu, regrade=regrade,
                           cache_dir=Path(cache_dir) if cache_dir else None, executor=executor,
                           ray_address=ray_address, progress=progress.update if progress else None,
                           on_total=progress.start if progress else None,
                           on_begin=progress.begin if progress else None, single=single)
    # unconfined_ok: `check` only; a staff batch whose local sandbox cannot confine is an infrastructure fault
    spec = SandboxSpec(kind=sandbox, image=image, gpus=tuple(gpus), unconfined_ok=unconfined_ok)
    loaded = _load(rubric)
    results = grade_all([Path(p) for p in paths], rubric=loaded, sandbox=spec, options=options)
    if render:
        save_policy(out, loaded.late)  # `grader report DIR` applies it without the rubric
        compare_class(out, threshold=loaded.similarity.threshold, sources=[Path(p) for p in paths])
        _reports(out, only_changed=True, layers=layers)
    return results


def check(path: str | Path = ".", *, rubric: Rubric | str | Path = DEFAULT_RUBRIC, out_dir: str | Path | None = None,
          sandbox: str = "local", image: str | None = None, gpus: Sequence[str] = (), jobs_per_gpu: int = 1,
          cache_dir: str | Path | None = None, progress: Progress | None = None) -> tuple[SubmissionResult, Path]:
    """A student's self-check: the public checks only, always graded afresh, on the same code path as the
    real grading. Returns the result and its HTML report (under ``out_dir``, default a new temp folder)."""
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="seg-check-"))
    [result] = grade([path], rubric=public_rubric(_load(rubric)), out_dir=out, sandbox=sandbox, image=image,
                     gpus=gpus, jobs_per_gpu=jobs_per_gpu, regrade=True, cache_dir=cache_dir, progress=progress,
                     render=False, unconfined_ok=True)  # a student's own machine: where namespaces are refused
    _reports(out)
    return result, out / result.student / "report.html"


@dataclass(frozen=True)
class SelftestResult:
    """Whether the rubric is sound: the reference gets full marks and the template fails every check."""

    reference: SubmissionResult
    template: SubmissionResult
    problems: tuple[str, ...]  # empty when it passed; else what went wrong, one line each
    out_dir: Path

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def infrastructure_fault(self) -> bool:
        return "infrastructure_error" in (self.reference.status, self.template.status)


def selftest(*, rubric: Rubric | str | Path = DEFAULT_RUBRIC, out_dir: str | Path | None = None,
             sandbox: str = "local", image: str | None = None, jobs: int = 1, gpus: Sequence[str] = (),
             jobs_per_gpu: int = 1, cache_dir: str | Path | None = None,
             progress: Progress | None = None) -> SelftestResult:
    """Grade reference/ and student_template/ with ``rubric``: the reference must get full marks, and the
    template zero with every check failed (with a message, not an error of the grader)."""
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="seg-selftest-"))
    graded = grade([REPO / "reference", REPO / "student_template"], rubric=rubric, out_dir=out, sandbox=sandbox,
                   image=image, jobs=jobs, gpus=gpus, jobs_per_gpu=jobs_per_gpu, regrade=True, cache_dir=cache_dir,
                   progress=progress, render=False)
    by_student = {r.student: r for r in graded}
    ref, tpl = by_student["reference"], by_student["student_template"]
    problems = []
    if ref.score != ref.max_score:
        problems.append(f"reference scored {ref.score}/{ref.max_score}: " + "; ".join(
            f"{c.id}: {c.message}" for c in ref.checks if c.status != "passed"))
    if tpl.score != 0 or any(c.status != "failed" for c in tpl.checks):
        problems.append("student_template: " + "; ".join(f"{c.id} {c.status}" for c in tpl.checks
                                                          if c.status != "failed" or c.score))
    return SelftestResult(reference=ref, template=tpl, problems=tuple(problems), out_dir=out)


def calibrate(*, rubric: Rubric | str | Path = DEFAULT_RUBRIC, seeds: int = 3, designs: Sequence[str] | None = None,
              margin: float = 0.05, out_dir: str | Path | None = None, sandbox: str = "local", image: str | None = None,
              jobs: int = 1, gpus: Sequence[str] = (), jobs_per_gpu: int = 1, cache_dir: str | Path | None = None,
              progress: Progress | None = None) -> Calibration:
    """Staff: train the reference and ``designs`` of examples/submissions (None: every one) at ``seeds`` seeds of the rubric's
    full-training check, with its budget, on this machine's device (``gpus``), through the real grader (same
    sandbox and judge), into ``out_dir`` (default a new temp folder). Returns each run's mIoU, the floor and a
    suggested bar ``margin`` below the lowest honest run (``grader.calibrate``); ``jobs`` 1 (default) keeps
    the measured train times one job's. A ``CalibrationError`` says why it cannot plan the runs."""
    planned = plan_calibration(_load(rubric), seeds=seeds, designs=designs, repo=REPO)
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="seg-calibrate-"))
    results = grade(list(planned.paths.values()), rubric=planned.rubric, out_dir=out, sandbox=sandbox, image=image,
                    jobs=jobs, gpus=gpus, jobs_per_gpu=jobs_per_gpu, regrade=True, cache_dir=cache_dir,
                    progress=progress, render=False)
    return summarise(planned, results, margin=margin, out_dir=out)


def rotate_key(*, cache_dir: str | Path | None = None) -> Rotation:
    """Staff, once per term before its first batch: a new evaluation key in ``cache_dir`` (default
    ``$SEG_GRADER_CACHE`` or ~/.cache/seg-autograder), hence a new embedded evaluation split; the old key is kept
    beside it as ``eval-secret.key.retired-<UTC time>`` (``grader.data.evalsecret.rotate_secret``)."""
    return rotate_secret(Path(cache_dir) if cache_dir else default_cache_dir())


def handout(out_dir: str | Path, *, rubric: Rubric | str | Path = DEFAULT_RUBRIC) -> Path:
    """Staff: write the student kit into ``out_dir`` (missing or empty; ``grader.kit.handout``): the template as
    .py and .ipynb, a README, and an installable grader whose ``check`` runs the public checks against the
    reference's outputs computed now, with no line of reference/. A ``KitError`` says why it cannot."""
    return build_kit(Path(out_dir), rubric=_load(rubric))


def report(out_dir: str | Path, *, released: bool = False, rubric: Rubric | str | Path | None = None,
           layers: Layers = NO_LAYERS, only_changed: bool = False) -> list[Path]:
    """Redraw every page and grades.csv from the result.json files under ``out_dir``, without regrading
    (``released``: after-due-date checks are shown to students), with the staff's layers: overrides,
    extensions and submission times (the folder's own files, or ``layers``) and the late policy (``rubric``'s,
    then recorded in the folder; else the one recorded). ``only_changed``: skip the pages whose inputs did not
    change (``grader serve`` after each batch). Returns the pages written. A bad staff file raises
    ``GradebookError`` naming its line."""
    if rubric is not None:
        save_policy(Path(out_dir), _load(rubric).late)
    return _reports(Path(out_dir), released=released, layers=layers, only_changed=only_changed)


def similarity(out_dir: str | Path, *, rubric: Rubric | str | Path = DEFAULT_RUBRIC,
               sources: Sequence[str | Path] = (), force: bool = False) -> SimilarityOutcome:
    """Compare the graded submissions of ``out_dir`` pairwise (staff only, ``grader.similarity.compare``):
    similarity.csv, similarity/<a>__<b>.html, and index.html's "Similar pairs" (pairs at or above the
    rubric's ``similarity.threshold``). Code comes from the copies a batch kept; ``sources`` (the submissions
    as given to ``grade``) supply the missing or stale ones. Unchanged inputs compare nothing unless ``force``.
    Only the index is redrawn (the students' reports keep their release state)."""
    out = Path(out_dir)
    outcome = compare_class(out, threshold=_load(rubric).similarity.threshold, sources=[Path(p) for p in sources],
                            force=force)
    if outcome.computed or outcome.error or not (out / "index.html").exists():
        pages_package.render_class_summary(out)
    return outcome


def gradescope(*, rubric: Rubric | str | Path = DEFAULT_RUBRIC, sandbox: str = "local", image: str | None = None,
               cache_dir: str | Path | None = None, root: str | Path | None = None) -> int:
    """Inside Gradescope's container: grade ``root``/submission, write ``root``/results/results.json.
    Returns 0, 2 (not in such a container) or 3 (an infrastructure fault: no score written).

    Gradescope's container (one per upload, thrown away after) is the outer boundary, and its Docker defaults
    refuse the namespaces the local sandbox wants: there the stage still runs as its own uid under rlimits,
    and the provenance (staff only) says it was not isolated; failing closed would fail every upload."""
    return run_gradescope(rubric=_load(rubric), sandbox=SandboxSpec(kind=sandbox, image=image,
                                                                    unconfined_ok=sandbox == "local").make(),
                          cache_dir=Path(cache_dir) if cache_dir else None,
                          root=Path(root) if root else GRADESCOPE_ROOT)


def _reports(out: Path, *, released: bool = False, only_changed: bool = False, layers: Layers = NO_LAYERS) -> list[Path]:
    """The report seam: Jinja2 and the templates are imported only when a page is drawn (``grader.report``
    resolves ``render_all`` on first use). The staff's layers are read (and refused) before anything is drawn."""
    book = load_gradebook(out, layers=layers)
    write_layers(book)  # <student>/grade.json: what the student's report shows of them
    pages = pages_package.render_all(out, released=released, only_changed=only_changed)
    write_grades_csv(out, book.grades, collected=book.collected)
    return pages


def export_canvas(out_dir: str | Path, *, assignment: str, out: str | Path | None = None,
                  roster: str | Path | None = None, points_possible: bool = True, missing: str = "blank",
                  layers: Layers = NO_LAYERS) -> Export:
    """The final grades of ``out_dir`` as a Canvas gradebook import (``grader.gradebook.canvas``), by default
    ``out_dir/canvas.csv``; unmatched results are returned and listed in ``<out>.unmatched.csv``."""
    book = load_gradebook(Path(out_dir), layers=layers)
    return write_canvas(book, assignment=assignment, out=Path(out or Path(out_dir) / "canvas.csv"),
                        roster=Path(roster) if roster else None, points_possible=points_possible, missing=missing)


def export_generic(out_dir: str | Path, *, key: str = "email", out: str | Path | None = None,
                   roster: str | Path | None = None, missing: str = "blank",
                   layers: Layers = NO_LAYERS) -> Export:
    """The final grades keyed by e-mail or SID (``grader.gradebook.generic``), by default ``out_dir/grades_<key>.csv``."""
    book = load_gradebook(Path(out_dir), layers=layers)
    return write_generic(book, key=key, out=Path(out or Path(out_dir) / f"grades_{key}.csv"),
                         roster=Path(roster) if roster else None, missing=missing)


def release(out_dir: str | Path, *, out: str | Path, layers: Layers = NO_LAYERS) -> Released:
    """Each student's released report as one self-contained HTML file in ``out``, named by the id the LMS
    knows, and ``out/manifest.csv`` (``grader.gradebook.release``)."""
    return release_pages(load_gradebook(Path(out_dir), layers=layers), Path(out))
