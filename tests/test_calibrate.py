"""Calibration of the training bar (``grader calibrate``) and the second chance near the bar (``retry_margin``).

The bar's arithmetic is a pure function tested on synthetic runs; the calibration and the retry run through
the real grader (local sandbox) on tests/rubric_small.yaml's settings. The retry is driven by a test-only
submission whose training depends on the seed the grader set: one epoch at the check's seed (a poor run),
the full budget at the derived retry seed, a crash at another, so which run is better is known in advance.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from grader import api
from grader.calibrate import (STEP, CalibrationError, CalibrationRun, design_paths, format_calibration,
                              plan_calibration, propose_bar)
from grader.checks import KINDS
from grader.checks.full_training import RETRY_SEED_OFFSET, band_score, better_of_two, retry_seed, wants_retry
from grader.checks.verdict import Judged, result
from grader.cli import main
from grader.rubric import RubricError, load_rubric, parse_rubric, rubric_yaml

REPO = Path(__file__).resolve().parent.parent
SMALL_RUBRIC = Path(__file__).parent / "rubric_small.yaml"


def _runs(*mious: float | None) -> list[CalibrationRun]:
    return [CalibrationRun(design="d", seed=i, miou=m, floor=0.11, train_s=1.0, status="passed", message="")
            for i, m in enumerate(mious)]


# ---- the suggested bar: a pure function --------------------------------------------------------------------

def test_the_bar_is_the_lowest_honest_run_minus_the_margin_rounded_down() -> None:
    # generator 1's bench figures (bench/README history): reference 0.893-0.921, ada 0.654-0.725, ben 0.876-0.886
    assert propose_bar(_runs(0.893, 0.921, 0.654, 0.725, 0.876), floor=0.1094, margin=0.05) == 0.6
    assert propose_bar(_runs(0.55), floor=0.1, margin=0.05, step=0.05) == 0.5  # 0.5 / 0.05 is 9.999...: still 0.5
    assert propose_bar(_runs(0.6399), floor=0.1, margin=0.0) == 0.63  # rounded down to 0.01 by default
    # tests/rubric_small.yaml on generator 2 (seeds 7, 8; ada's worst 0.1418, floor 0.1110): the default margin
    # leaves no bar above the floor, --margin 0.01 suggests its bar 0.13
    small = _runs(0.1721, 0.2207, 0.1418, 0.1418, 0.1602, 0.1679, 0.1893, 0.1670)
    assert propose_bar(small, floor=0.1110, margin=0.05) is None
    assert propose_bar(small, floor=0.1110, margin=0.01) == 0.13


def test_no_bar_when_it_would_not_lie_above_the_floor() -> None:
    assert propose_bar(_runs(0.2), floor=0.15, margin=0.05) is None  # 0.15: on the floor, not above it
    assert propose_bar(_runs(0.9, None), floor=0.1, margin=0.05) is None  # a run without mIoU counts as 0
    assert propose_bar([], floor=0.1) is None


@given(mious=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8), floor=st.floats(0.0, 0.5),
       margin=st.floats(0.0, 0.2))
def test_a_suggested_bar_is_missed_by_no_honest_run_and_lies_above_the_floor(mious: list[float], floor: float,
                                                                            margin: float) -> None:
    bar = propose_bar(_runs(*mious), floor=floor, margin=margin)
    if bar is not None:
        assert floor < bar <= min(mious) - margin + 1e-9
        assert abs(bar / STEP - round(bar / STEP)) < 1e-6  # a multiple of the step
    else:
        assert min(mious) - margin < floor + STEP + 1e-9  # there was no room for a step above the floor


# ---- the plan: the real rubric's check, once per seed -----------------------------------------------------

def test_the_calibration_rubric_holds_the_training_check_once_per_seed() -> None:
    rubric = load_rubric(SMALL_RUBRIC)
    plan = plan_calibration(rubric, seeds=3, designs=("ada",), repo=REPO)
    spec = rubric.check("full_training")
    assert [c.kind for c in plan.rubric.checks] == ["model_shapes"] + ["full_training"] * 3
    assert list(plan.seeds.values()) == [spec.seed, spec.seed + 1, spec.seed + 2]  # the graded seed first
    for cid in plan.seeds:
        copy = plan.rubric.check(cid)
        assert (copy.epochs, copy.batch_size, copy.bar, copy.requires) == (spec.epochs, spec.batch_size, spec.bar,
                                                                           ("model_shapes",))
        assert copy.floor is None and copy.retry_margin == 0  # the all-background floor; raw runs
        assert plan.rubric.budget(cid) == rubric.budget("full_training")
    assert list(plan.paths) == ["reference", "ada"]
    assert plan.rubric.source_hash != rubric.source_hash  # never mistaken for a class's results
    again = parse_rubric(rubric_yaml(plan.rubric))  # what the preparation process receives
    assert again.checks == plan.rubric.checks


def test_unknown_design_or_no_seed_is_refused_before_anything_trains(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(CalibrationError, match="no example design 'nobody'.*ada"):
        design_paths(["nobody"], repo=REPO)
    with pytest.raises(CalibrationError, match="seeds must be at least 1"):
        plan_calibration(load_rubric(SMALL_RUBRIC), seeds=0, designs=(), repo=REPO)
    assert main(["calibrate", "--rubric", str(SMALL_RUBRIC), "--designs", "ada,nobody", "-q"]) == 2
    assert "no example design 'nobody'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["calibrate", "--seeds", "0"])


# ---- retry_margin: the rubric, the job, the verdicts ------------------------------------------------------

RETRY_RUBRIC = """
assignment: t
dataset: {n_train: 4, n_val: 2, size: 16}
checks:
  - {id: ft, kind: full_training, name: F, points: 10, seed: 7, epochs: 1, bar: 0.5, retry_margin: %s}
"""


@pytest.mark.parametrize(("margin", "error"), [("-0.01", "retry_margin: must be at least 0"),
                                               ("0.5", "retry_margin: must be at least 0 .* below the bar")])
def test_a_retry_margin_outside_0_and_the_bar_is_refused(margin: str, error: str) -> None:
    with pytest.raises(RubricError, match=f"checks\\[0\\].{error}"):
        parse_rubric(RETRY_RUBRIC % margin)


def test_a_check_id_cannot_name_another_checks_retry_stage() -> None:
    text = (RETRY_RUBRIC % "0.03") + "  - {id: ft.retry, kind: full_training, name: G, points: 1}\n"
    with pytest.raises(RubricError, match=r"checks\[1\].id: 'ft.retry' must be letters, digits and _"):
        parse_rubric(text)


@pytest.mark.parametrize("margin", ["0.03", "0"])
def test_the_job_holds_the_retry_stage_only_when_retries_are_on(tmp_path: Path, cache_dir: Path, margin: str) -> None:
    from grader.job.folder import build_job

    rubric = parse_rubric(RETRY_RUBRIC % margin)
    plan = build_job(rubric, job_dir=tmp_path / "job", cache_dir=cache_dir)
    stages = json.loads((plan.job_dir / "job.json").read_text())["stages"]
    if margin == "0":
        assert set(stages) == {"import", "ft"}
        return
    assert set(stages) == {"import", "ft", "ft.retry"}
    assert stages["ft.retry"] == {**stages["ft"], "seed": 7 + RETRY_SEED_OFFSET}  # same arrays, derived seed


def _judged(spec, miou: float | None, status: str = "failed") -> Judged:  # noqa: ANN001 - a FullTrainingSpec
    details = {"miou": miou, "floor": 0.1, "bar": spec.bar} if miou is not None else {}
    score = band_score(spec, miou, 0.1) if miou is not None else 0.0
    return Judged(result(spec, status, score, f"Validation mIoU {miou}." if miou is not None else "Timed out.",
                         **details), {"train_eval": {"seed": spec.seed}})


def test_only_a_run_within_the_margin_below_the_bar_asks_for_the_retry() -> None:
    spec = parse_rubric(RETRY_RUBRIC % "0.03").check("ft")
    assert wants_retry(spec, _judged(spec, 0.47)) and wants_retry(spec, _judged(spec, 0.4999))  # edges included
    assert not wants_retry(spec, _judged(spec, 0.5, "passed"))  # at the bar: full points already
    assert not wants_retry(spec, _judged(spec, 0.4699))  # too far below
    assert not wants_retry(spec, _judged(spec, None, "timeout"))  # no mIoU: nothing near the bar
    assert not wants_retry(spec, _judged(spec, float("nan")))
    off = parse_rubric(RETRY_RUBRIC % "0").check("ft")
    assert not wants_retry(off, _judged(off, 0.49))
    assert KINDS["full_training"].retry_stage(spec) == "ft.retry"


def test_the_better_run_counts_and_the_message_says_why() -> None:
    spec = parse_rubric(RETRY_RUBRIC % "0.03").check("ft")
    first = _judged(spec, 0.48)
    better = better_of_two(spec, first, _judged(spec, 0.52, "passed"))
    assert better.result.status == "passed" and better.result.score == 10
    assert ("Retrained once with seed 1007 because 0.480 was within 0.03 of the bar (0.500); the better run "
            "counts (first 0.480, retrained 0.520).") in better.result.message
    assert better.result.details["retry"] == {"seed": retry_seed(spec), "first_seed": 7, "margin": 0.03,
                                              "first_miou": 0.48, "retry_miou": 0.52, "retry_status": "passed",
                                              "counted": "retry"}
    worse = better_of_two(spec, first, _judged(spec, 0.3))
    assert worse.result.score == first.result.score and worse.result.details["retry"]["counted"] == "first"
    assert worse.result.message.startswith("Validation mIoU 0.48.") and "retrained 0.300" in worse.result.message
    crashed = better_of_two(spec, first, _judged(spec, None, "timeout"))
    assert crashed.result.score == first.result.score and crashed.artifacts == first.artifacts
    assert "that run ended without a result (timeout: Timed out.); the first run counts." in crashed.result.message


# ---- through the real grader (slow) -----------------------------------------------------------------------

SEED_DEPENDENT = '''

_honest_train = train


def train(model, loader, epochs):
    """Test-only: what the run reaches depends on the seed the grader set before building the net."""
    seed = torch.initial_seed()
    if seed == 2007:
        raise RuntimeError("a retry that crashes")
    return _honest_train(model, loader, epochs if seed == 1007 else 1)
'''


def _retry_rubric(tmp: Path) -> Path:
    """tests/rubric_small.yaml's settings; three training checks whose first runs are known in advance: `better`
    (seed 7: one epoch) and `crash` (seed 1007: the full budget) fall within their wide margin below an
    unreachable bar, `far` (seed 7 again) lies outside its narrow one."""
    data = yaml.safe_load(SMALL_RUBRIC.read_text())
    data["checks"] = yaml.safe_load("""
  - {id: model_shapes, kind: model_shapes, name: S, points: 10, seed: 5}
  - {id: better, kind: full_training, name: B, points: 20, requires: [model_shapes], seed: 7, epochs: 10,
     batch_size: 8, bar: 0.95, retry_margin: 0.945}
  - {id: crash, kind: full_training, name: C, points: 20, requires: [model_shapes], seed: 1007, epochs: 10,
     batch_size: 8, bar: 0.95, retry_margin: 0.945}
  - {id: far, kind: full_training, name: F, points: 20, requires: [model_shapes], seed: 7, epochs: 10,
     batch_size: 8, bar: 0.95, retry_margin: 0.01}
""")
    text = yaml.safe_dump(data, sort_keys=False)
    path = tmp / "retry.yaml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_a_run_near_the_bar_is_retrained_once_and_only_then(tmp_path: Path, cache_dir: Path) -> None:
    sub = tmp_path / "subs" / "seedy"
    sub.mkdir(parents=True)
    (sub / "segmentation.py").write_text((REPO / "reference" / "segmentation.py").read_text() + SEED_DEPENDENT)
    rubric = load_rubric(_retry_rubric(tmp_path))
    [graded] = api.grade([sub], rubric=rubric, out_dir=tmp_path / "out", cache_dir=cache_dir, render=False)
    checks = {c.id: c for c in graded.checks}
    # only the verdicts within their margin started a retry stage: `far`'s never ran
    assert set(graded.provenance["durations_s"]) == {"import", "model_shapes", "better", "better.retry", "crash",
                                                     "crash.retry", "far"}, graded.message
    far = checks["far"]
    assert "retry" not in far.details and "Retrained" not in far.message and far.details["miou"] < 0.94
    better = checks["better"]
    retry = better.details["retry"]
    assert retry["seed"] == 1007 and retry["counted"] == "retry", better.message
    assert retry["first_miou"] == far.details["miou"]  # the same first run (seed 7), judged alike
    assert better.details["miou"] == retry["retry_miou"] > retry["first_miou"]
    spec = rubric.check("better")
    assert better.score == round(band_score(spec, retry["retry_miou"], better.details["floor"]), 4)
    assert f"Retrained once with seed 1007 because {retry['first_miou']:.3f} was within 0.945" in better.message
    crash = checks["crash"]  # its retry (seed 2007) raised: the first run's verdict stands
    assert crash.details["retry"]["counted"] == "first" and crash.details["retry"]["retry_status"] == "failed"
    assert crash.details["miou"] == crash.details["retry"]["first_miou"] > far.details["miou"]
    assert "ended without a result (failed: Your code raised RuntimeError: a retry that crashes" in crash.message
    assert crash.score == round(band_score(rubric.check("crash"), crash.details["miou"], crash.details["floor"]), 4)


def test_by_default_every_example_design_is_trained_beside_the_reference() -> None:
    plan = plan_calibration(load_rubric(SMALL_RUBRIC), seeds=1, designs=None, repo=REPO)
    examples = sorted(p.stem for p in (REPO / "examples" / "submissions").iterdir() if not p.name.startswith("."))
    assert list(plan.paths) == ["reference", *examples] and {"ada", "ben", "cleo", "dan"} <= set(examples)
    assert plan.paths["cleo"].name == "cleo.ipynb"
    only = plan_calibration(load_rubric(SMALL_RUBRIC), seeds=1, designs=("reference",), repo=REPO)
    assert list(only.paths) == ["reference"]


def test_a_design_without_a_net_is_listed_and_not_counted() -> None:
    runs = [*_runs(0.62, 0.58), CalibrationRun(design="dan", seed=7, miou=None, floor=None, train_s=None,
                                                status="failed", message="Not run", counted=False)]
    assert propose_bar(runs, floor=0.11, margin=0.05) == 0.53  # dan's missing mIoU is not a 0
    assert propose_bar(runs[:2] + [dataclasses.replace(runs[2], counted=True)], floor=0.11) is None


@pytest.mark.slow
def test_calibrate_measures_the_reference_over_seeds(tmp_path: Path, cache_dir: Path) -> None:
    rubric = load_rubric(SMALL_RUBRIC)
    cal = api.calibrate(rubric=rubric, seeds=2, designs=("dan",), out_dir=tmp_path / "cal", cache_dir=cache_dir)
    spec = rubric.check("full_training")
    assert [(r.design, r.seed) for r in cal.runs] == [("reference", spec.seed), ("reference", spec.seed + 1),
                                                      ("dan", spec.seed), ("dan", spec.seed + 1)]
    assert cal.designs == ["reference"] and cal.excluded == ["dan"]  # dan's SegNet raises: nothing to measure
    assert all(not r.counted and r.miou is None for r in cal.runs if r.design == "dan")
    assert "not counted (a required check failed, no net to train): dan" in format_calibration(cal)
    cal = dataclasses.replace(cal, runs=tuple(r for r in cal.runs if r.design == "reference"))
    assert all(r.status == "passed" and r.miou is not None and r.train_s for r in cal.runs), cal.runs
    assert {r.floor for r in cal.runs} == {cal.floor} and 0 < cal.floor < min(cal.mious("reference"))
    assert cal.bar == propose_bar(cal.runs, floor=cal.floor, margin=0.05)
    assert cal.spread == pytest.approx(max(cal.mious("reference")) - min(cal.mious("reference")))
    text = format_calibration(cal)
    assert f"floor (all-background mIoU on the evaluation images): {cal.floor:.4f}" in text
    assert ("suggested bar: none" in text) if cal.bar is None else (f"suggested bar: {cal.bar:g}" in text)
    assert (tmp_path / "cal" / "reference" / "result.json").is_file()
