"""Calibration of the full-training bar on the grading hardware (``grader calibrate``, staff).

The band (``grader.checks.full_training``) gives full points at ``bar``. A fair bar sits below every honest
design's validation mIoU on the machine that grades, within the rubric's budget, and above the floor (the
all-background predictor's mIoU on the evaluation images: where a net that learnt nothing lands). Both move
with the hardware, the budget and the seed, so they are measured, not guessed.

By default every example design of examples/submissions is trained beside the reference: the bar must sit below
every honest design, not only the reference's best. A design whose required checks fail (a SegNet that does
not build: examples/submissions/dan) has no training to measure: its runs are listed, not counted.

This module plans the measurement and reads it back; ``grader.api.calibrate`` runs it through the REAL grader
(the same intake, sandbox and judge as a class): one batch of the reference (and example designs) graded
with a calibration rubric that holds the rubric's model_shapes checks and the training check once per seed
(ids ``<id>_run<k>``, seeds ``seed + k``), so each run is one check of one result and the train stage's
wall clock is in ``provenance.durations_s``. Light (no numpy, no torch): ``propose_bar`` is a pure function.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from grader.checks.full_training import FullTrainingSpec
from grader.core.results import SubmissionResult
from grader.rubric import Rubric, rubric_yaml

__all__ = ["CalibrationError", "CalibrationPlan", "CalibrationRun", "Calibration", "design_paths",
           "plan_calibration", "propose_bar", "summarise", "format_calibration"]

STEP = 0.01  # a suggested bar is rounded DOWN to this: a round number, never above what a run reached (0.05
# was too coarse: tests/rubric_small.yaml's lowest honest run 0.192 - 0.05 rounded to 0.10 fell on its floor 0.103)


class CalibrationError(ValueError):
    """The calibration cannot be planned (no training check, unknown design, no reference/): says what to do."""


@dataclass(frozen=True)
class CalibrationPlan:
    rubric: Rubric  # the required checks + the training check once per seed
    check: FullTrainingSpec  # the calibrated check, as the rubric has it
    seeds: dict[str, int]  # calibration check id -> its seed
    paths: dict[str, Path]  # design -> its submission (reference/ first)


@dataclass(frozen=True)
class CalibrationRun:
    design: str
    seed: int
    miou: float | None  # None when the run produced no mIoU (timeout, crash, a required check failed)
    floor: float | None  # the all-background mIoU on the same evaluation images
    train_s: float | None  # the train stage's wall clock, as the grader measured it
    status: str
    message: str
    counted: bool = True  # False: a required check failed (no net to train): the run says nothing of the bar


@dataclass(frozen=True)
class Calibration:
    """What ``grader calibrate`` measured and suggests (``api.calibrate`` returns it)."""

    check: FullTrainingSpec  # the rubric's training check (its bar, retry_margin, epochs, batch size)
    runs: tuple[CalibrationRun, ...]
    floor: float | None
    bar: float | None  # suggested; None when no bar lies between the floor and every honest run
    margin: float  # the suggested bar's distance below the lowest honest run (before rounding down)
    timeout_s: float  # the train stage's budget
    device: str
    out_dir: Path  # the graded runs (result.json per design)

    def mious(self, design: str) -> list[float]:
        """``design``'s mIoU per seed; a run without one counts as 0."""
        return [r.miou if r.miou is not None else 0.0 for r in self.runs if r.design == design]

    @property
    def designs(self) -> list[str]:
        """The designs whose runs count (their required checks passed)."""
        return list(dict.fromkeys(r.design for r in self.runs if r.counted))

    @property
    def excluded(self) -> list[str]:
        return list(dict.fromkeys(r.design for r in self.runs if not r.counted))

    @property
    def spread(self) -> float:
        """The seed noise: the largest (max - min) mIoU of one design over its seeds."""
        return max((max(m) - min(m) for d in self.designs if (m := self.mious(d))), default=0.0)


def _bar(spec: FullTrainingSpec) -> float:
    return spec.threshold if spec.grading == "threshold" else spec.bar


def _training_check(rubric: Rubric) -> FullTrainingSpec:
    found = [c for c in rubric.checks if isinstance(c, FullTrainingSpec)]
    if not found:
        raise CalibrationError("the rubric has no full_training check: there is no bar to calibrate")
    return found[0]


def design_paths(designs: Sequence[str] | None, *, repo: Path) -> dict[str, Path]:
    """design -> submission: ``reference`` (always, first) and each named entry of examples/submissions
    (``None``: every entry)."""
    reference, examples = repo / "reference", repo / "examples" / "submissions"
    if not (reference / "segmentation.py").is_file():
        raise CalibrationError(f"no {reference}/segmentation.py: calibrate is a staff command, run it from the "
                               "repository checkout")
    paths = {"reference": reference}
    there = sorted(p for p in examples.iterdir() if not p.name.startswith(".")) if examples.is_dir() else []
    for design in (designs if designs is not None else [p.stem for p in there]):
        if design == "reference":
            continue
        match = [p for p in there if design in (p.name, p.stem)]
        if not match:
            raise CalibrationError(f"no example design {design!r} in {examples} (there: "
                                   f"{', '.join(p.stem for p in there) or 'nothing'})")
        paths[design] = match[0]
    return paths


def plan_calibration(rubric: Rubric, *, seeds: int, designs: Sequence[str] | None, repo: Path) -> CalibrationPlan:
    """The calibration rubric: the checks the training check requires (transitively), then the training check
    once per seed (``seed``, ``seed + 1``, ...: the graded seed first), each with the all-background floor and
    no retry, so every number is one raw run."""
    if seeds < 1:
        raise CalibrationError(f"seeds must be at least 1, not {seeds}")
    check = _training_check(rubric)
    needed, todo = set(), list(check.requires)
    while todo:  # the prerequisites' prerequisites too: each must be in the rubric before its dependants
        req = todo.pop()
        if req not in needed:
            needed.add(req)
            todo += rubric.check(req).requires
    kept = tuple(dataclasses.replace(c, visibility="visible") for c in rubric.checks if c.id in needed)
    runs = {f"{check.id[:50]}_run{k}": check.seed + k for k in range(seeds)}
    copies = tuple(dataclasses.replace(check, id=cid, seed=seed, floor=None, retry_margin=0.0, visibility="visible",
                                       name=f"{check.name} (seed {seed})") for cid, seed in runs.items())
    calibration = dataclasses.replace(rubric, checks=kept + copies)
    digest = hashlib.sha256(rubric_yaml(calibration).encode()).hexdigest()  # its own: never a class's results
    return CalibrationPlan(rubric=dataclasses.replace(calibration, source_hash=digest), check=check, seeds=runs,
                           paths=design_paths(designs, repo=repo))


def propose_bar(runs: Sequence[CalibrationRun], *, floor: float | None, margin: float = 0.05,
                step: float = STEP) -> float | None:
    """The lowest honest mIoU minus ``margin``, rounded DOWN to ``step``: no honest run measured misses it.
    A run without an mIoU counts as 0; a run not ``counted`` is left out. None when that bar would not lie above
    the floor: no bar separates these honest runs from a net that learnt nothing (a budget too short?)."""
    runs = [r for r in runs if r.counted]
    if not runs:
        return None
    lowest = min(r.miou if r.miou is not None else 0.0 for r in runs)
    bar = round(math.floor((lowest - margin) / step + 1e-9) * step, 4)  # 1e-9: (0.55 - 0.05) / 0.05 is 9.999...
    return bar if bar > (floor if floor is not None else 0.0) else None


def _miou(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _runs(plan: CalibrationPlan, results: Sequence[SubmissionResult]) -> list[CalibrationRun]:
    by_student = {r.student: r for r in results}
    runs = []
    for design, path in plan.paths.items():
        result = by_student.get(design) or by_student.get(path.stem)
        durations = ((result.provenance or {}).get("durations_s") or {}) if result else {}
        required = [c for c in (result.checks if result else ()) if c.id not in plan.seeds]
        # a required check failed or crashed (a timeout still counts, as 0): the design has no net to train (dan's
        # SegNet raises NotImplementedError), so its runs measure nothing of the bar
        counted = design == "reference" or not any(c.status in ("failed", "error") for c in required)
        for cid, seed in plan.seeds.items():
            check = next((c for c in result.checks if c.id == cid), None) if result else None
            details = check.details if check else {}
            runs.append(CalibrationRun(
                design=design, seed=seed, miou=_miou(details.get("miou")), floor=_miou(details.get("floor")),
                train_s=_miou(durations.get(cid)), status=check.status if check else (result.status if result
                                                                                        else "missing"),
                message=check.message if check else (result.message if result else "not graded"),
                counted=counted))
    return runs


def summarise(plan: CalibrationPlan, results: Sequence[SubmissionResult], *, margin: float,
              out_dir: Path) -> Calibration:
    """The graded calibration batch as a Calibration: runs per design and seed, floor, suggested bar."""
    runs = _runs(plan, results)
    floors = [r.floor for r in runs if r.floor is not None]  # one evaluation split: equal wherever computed
    floor = max(floors) if floors else None
    devices = {str((r.provenance or {}).get("device")) for r in results if (r.provenance or {}).get("device")}
    return Calibration(check=plan.check, runs=tuple(runs), floor=floor,
                       bar=propose_bar(runs, floor=floor, margin=margin), margin=margin,
                       timeout_s=plan.rubric.budget(next(iter(plan.seeds))).timeout_s,
                       device=", ".join(sorted(devices)) or "unknown", out_dir=out_dir)


def _number(value: float | None, fmt: str = ".4f") -> str:
    return format(value, fmt) if value is not None else "-"


def format_calibration(cal: Calibration) -> str:
    """The table and the summary ``grader calibrate`` prints."""
    spec = cal.check
    lines = [f"{spec.id}: epochs={spec.epochs} batch_size={spec.batch_size}, train budget {cal.timeout_s:g} s, "
             f"device {cal.device}; results in {cal.out_dir}",
             f"{'design':12s} {'seed':>6s} {'mIoU':>7s} {'train_s':>8s}  status"]
    lines += [f"{r.design:12s} {r.seed:6d} {_number(r.miou):>7s} {_number(r.train_s, '.1f'):>8s}  {r.status}"
              + ("" if r.counted else " (not counted: a required check failed)") for r in cal.runs]
    lines.append("")
    for design in cal.designs:
        got = cal.mious(design)
        lines.append(f"{design:12s} mIoU min {min(got):.4f} max {max(got):.4f} over {len(got)} seed(s)")
    if cal.excluded:
        lines.append(f"not counted (a required check failed, no net to train): {', '.join(cal.excluded)}")
    lines.append(f"floor (all-background mIoU on the evaluation images): {_number(cal.floor)}")
    lowest = min((m for d in cal.designs for m in cal.mious(d)), default=0.0)
    if cal.bar is None:
        lines.append(f"suggested bar: none: the lowest honest run ({lowest:.4f}) minus the margin {cal.margin:g} is "
                     "not above the floor; look at the runs (is the budget too short?)")
    else:
        lines.append(f"suggested bar: {cal.bar:g} (the lowest honest run {lowest:.4f} minus the margin "
                     f"{cal.margin:g}, rounded down to {STEP:g}); the rubric's: {_bar(spec):g}")
    lines.append(f"seed spread (largest max - min of one design): {cal.spread:.4f}; retry_margin retrains once a "
                 f"run that far below the bar (the rubric's: {spec.retry_margin:g})")
    secs = [r.train_s for r in cal.runs if r.train_s is not None]
    longest = max(secs, default=0.0)
    lines.append(f"train stage: at most {longest:.1f} s of its {cal.timeout_s:g} s budget "
                 f"({longest / cal.timeout_s:.0%}); load average now {os.getloadavg()[0]:.2f}")
    missed = [f"{r.design}@{r.seed}" for r in cal.runs if r.counted and (r.miou is None or r.miou < _bar(spec))]
    lines.append(f"runs below the rubric's bar {_bar(spec):g}: {', '.join(missed) or 'none'}")
    return "\n".join(lines)
