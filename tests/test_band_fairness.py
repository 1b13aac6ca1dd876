"""The full-training band is fair: honest designs other than the reference reach the bar, and the floor is
the mIoU of predicting background everywhere on the evaluation images.

A cheap version of `grader calibrate` (grader/calibrate.py) on the test rubric: the two honest example designs
(ada: a plain U-Net with GroupNorm and Adam; ben: an FCN with BatchNorm and SGD + momentum) are graded by the
real grader (local sandbox) with the calibration rubric of tests/rubric_small.yaml at its training seed (its
model_shapes check and the full_training check, floor computed, no retry).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from grader.calibrate import CalibrationPlan, plan_calibration
from grader.data.dataset import embedded_voc_root, load_split
from grader.data.evalsecret import KEY_FILE
from grader.core.results import SubmissionResult
from grader.rubric import Rubric, load_rubric

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SMALL_RUBRIC = Path(__file__).parent / "rubric_small.yaml"
HONEST = ("ada", "ben")


def _band_plan() -> CalibrationPlan:
    """tests/rubric_small.yaml as `grader calibrate --seeds 1` grades it (the same settings otherwise)."""
    return plan_calibration(load_rubric(SMALL_RUBRIC), seeds=1, designs=HONEST, repo=REPO)


@pytest.fixture(scope="module")
def band(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[Rubric, dict[str, SubmissionResult]]:
    """(the band rubric, {student: result}) for ada and ben graded in one batch, two at a time."""
    from grader.batch.batch import GradeOptions, grade_all
    from grader.sandbox.local import LocalSandbox

    plan = _band_plan()
    assert [c.kind for c in plan.rubric.checks] == ["model_shapes", "full_training"]
    results = grade_all([plan.paths[name] for name in HONEST], rubric=plan.rubric, sandbox=LocalSandbox(),
                        options=GradeOptions(out_dir=tmp_path_factory.mktemp("band") / "out", jobs=2,
                                             cache_dir=cache_dir))
    return plan.rubric, {r.student: r for r in results}


def _training(result: SubmissionResult):  # noqa: ANN202 - a CheckResult
    [cid] = _band_plan().seeds  # the one calibration run: full_training_run0, at the rubric's seed
    return next(c for c in result.checks if c.id == cid)


def _all_background_miou(labels: np.ndarray, num_classes: int) -> float:
    """Written out for this test alone (not grader.core.metrics): predicting 0 everywhere, void pixels dropped.

    Background's IoU is (background pixels) / (labelled pixels); every other class present in the
    labels has IoU 0; classes absent from the labels (and never predicted) are left out of the mean.
    """
    kept = labels[labels != 255].astype(np.int64)
    present = np.unique(np.append(kept, 0))  # background is always predicted, so always in the mean
    assert present.max() < num_classes
    return float(np.count_nonzero(kept == 0) / kept.size / present.size)


@pytest.mark.parametrize("student", HONEST)
def test_honest_design_reaches_the_bar(band, student: str) -> None:
    rubric, results = band
    check = _training(results[student])
    spec = rubric.check(check.id)
    assert results[student].status == "graded", results[student].message
    assert check.details["miou"] >= spec.bar, f"{student}: {check.message}"
    assert check.status == "passed" and check.score == spec.points, check.message


@pytest.mark.parametrize("student", HONEST)
def test_floor_is_the_all_background_miou_of_the_eval_labels(band, student: str, tmp_path: Path,
                                                             cache_dir: Path) -> None:
    rubric, results = band
    ds = rubric.dataset
    # a fresh cache: the labels are regenerated here, not read from what the grader used; the evaluation
    # split is drawn from the installation's secret, so the fresh cache gets the grader's key file
    (tmp_path / "cache").mkdir()
    shutil.copy2(cache_dir / KEY_FILE, tmp_path / "cache" / KEY_FILE)
    root = embedded_voc_root(cache_dir=tmp_path / "cache", n_train=ds.n_train, n_val=ds.n_val, size=ds.size,
                             seed=ds.seed)
    _, labels = load_split(root, ds.eval_split, size=ds.size)
    labels = labels[:ds.max_eval_images]
    expected = _all_background_miou(labels, rubric.num_classes)
    details = _training(results[student]).details
    assert details["floor"] == pytest.approx(expected, abs=1e-12)
    assert details["floor"] < details["bar"] == load_rubric(SMALL_RUBRIC).check("full_training").bar
