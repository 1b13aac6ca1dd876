"""A check's kind travels with its result: reports, grades.csv and Gradescope find the training check by its
kind, whatever the rubric calls it, and a result.json written before kinds travelled still reads and draws."""
from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grader.checks import KINDS
from grader.checks.verdict import result as check_result
from grader.core.results import SubmissionResult, read_result, write_result
from grader.kit.handout import PRACTICE_SUFFIX, kit_rubric
from grader.report.collect import kind_of, miou_of
from grader.report.export import gradescope_results, write_grades_csv
from grader.report.render import render_student_report
from grader.report.summary import metric_lines, summarize
from grader.report.views import SECTIONS
from grader.rubric import parse_rubric
from report_samples import PASSING, build_samples, sample_result

TRAIN_RUBRIC = """\
assignment: a training check named train
checks:
  - {id: shapes, kind: model_shapes, name: Shapes, points: 5}
  - {id: train, kind: full_training, name: Training, points: 20, requires: [shapes], bar: 0.5}
"""
TRAINING = dict(miou=0.42, pixel_accuracy=0.8, floor=0.1, bar=0.5, losses=[2.0, 1.0], per_class_iou={"background": 0.9})


def _graded(rubric, *details_by_id: tuple[str, dict]) -> SubmissionResult:
    checks = [check_result(rubric.check(cid), "failed", 0.0, "msg", **details) for cid, details in details_by_id]
    return SubmissionResult(student="ann", status="graded", score=0.0, max_score=rubric.max_score, checks=tuple(checks))


def test_every_kind_s_view_names_a_report_section_and_the_result_carries_the_kind(tmp_path: Path) -> None:
    assert {k.view.section for k in KINDS.values()} <= set(SECTIONS) | {None}
    rubric = parse_rubric(TRAIN_RUBRIC)
    write_result(tmp_path, _graded(rubric, ("shapes", {}), ("train", TRAINING)))
    assert [c.kind for c in read_result(tmp_path / "result.json").checks] == ["model_shapes", "full_training"]


def test_an_old_result_without_kinds_reads_with_kind_empty_and_infers_it_from_a_kind_named_id(tmp_path: Path) -> None:
    rubric = parse_rubric(TRAIN_RUBRIC.replace("id: train", "id: full_training").replace("[shapes]", "[]"))
    data = _graded(rubric, ("full_training", TRAINING)).to_json()
    del data["checks"][0]["kind"]
    (tmp_path / "result.json").write_text(json.dumps(data))
    [check] = read_result(tmp_path / "result.json").checks
    assert check.kind == "" and kind_of(check) is KINDS["full_training"]  # the shipped rubric's ids are kinds
    assert kind_of(dataclasses.replace(check, id="train")) is None  # unknown: no column, never a crash
    assert miou_of(read_result(tmp_path / "result.json")) == 0.42


KIND_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
                           | st.sampled_from(sorted(KINDS)),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=10)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=KIND_VALUES, check_id=st.sampled_from(["train", "full_training", "overfit", "x"]))
def test_a_hostile_kind_in_result_json_is_a_value_error_or_a_string_never_a_crash(kind, check_id, tmp_path: Path) -> None:
    rubric = parse_rubric(TRAIN_RUBRIC)
    data = _graded(rubric, ("shapes", {}), ("train", TRAINING)).to_json()
    data["checks"][1].update(kind=kind, id=check_id)
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data))
    try:
        result = read_result(path)
    except ValueError:
        assert not isinstance(kind, str)
        return
    assert isinstance(kind, str) and result.checks[1].kind == kind
    expected = KINDS.get(kind or check_id)
    assert kind_of(result.checks[1]) is expected
    assert miou_of(result) == (0.42 if expected is KINDS["full_training"] else None)
    gradescope_results(result)  # never raises on what it read


def test_a_training_check_named_train_keeps_the_miou_column_the_floor_and_bar_and_the_leaderboard(tmp_path: Path) -> None:
    rubric = parse_rubric(TRAIN_RUBRIC)
    graded = _graded(rubric, ("shapes", {}), ("train", TRAINING))
    write_result(tmp_path / "ann", graded)
    with (write_grades_csv(tmp_path)).open(newline="") as f:
        [row] = list(csv.DictReader(f))
    assert row["miou"] == "0.42" and row["train"] == "0"
    summary = summarize(tmp_path)
    assert summary.students[0].miou == 0.42 and summary.miou_png is not None
    assert metric_lines([graded]) == [(0.1, "floor", "#cf222e"), (0.5, "bar", "#2da44e")]
    assert gradescope_results(graded)["leaderboard"] == [{"name": "mIoU", "value": 0.42, "order": "desc"}]
    # found by KIND: the same result with no kind and an id no kind has shows no mIoU (the test can fail)
    anonymous = dataclasses.replace(graded, checks=tuple(dataclasses.replace(c, kind="") for c in graded.checks))
    assert miou_of(anonymous) is None and metric_lines([anonymous]) == [] and \
        gradescope_results(anonymous)["leaderboard"] == []
    hidden = dataclasses.replace(graded, checks=tuple(dataclasses.replace(c, visibility="after_due_date")
                                                      for c in graded.checks))
    assert gradescope_results(hidden)["leaderboard"] == []  # never a leaderboard entry before release


def test_the_kit_s_practice_check_shows_its_miou(tmp_path: Path, test_rubric) -> None:
    kit = kit_rubric(test_rubric)
    practice = [c for c in kit.checks if c.id.endswith(PRACTICE_SUFFIX)]
    assert [c.id for c in practice] == ["full_training" + PRACTICE_SUFFIX]
    graded = _graded(kit, (practice[0].id, TRAINING))
    write_result(tmp_path / "ann", graded)
    assert summarize(tmp_path).students[0].miou == 0.42
    page = render_student_report(tmp_path / "ann").read_text(encoding="utf-8")
    assert "against the floor and the bar" in page  # the training section's gauge: drawn for the practice check


@pytest.mark.parametrize("legacy", [False, True])
def test_pictures_are_found_by_check_id_and_an_old_folder_s_by_its_kind_wide_name(tmp_path: Path, legacy: bool) -> None:
    out = build_samples(tmp_path)  # artifacts/<check id>.<name>.npz, as the pipeline writes them
    student = out / PASSING
    if legacy:  # a folder graded before kinds travelled: no kinds, artifacts/overfit.npz and train_eval.npz
        for path in (student / "artifacts").glob("*.*.npz"):
            path.rename(path.with_name(path.name.split(".", 1)[1]))
        old = sample_result(PASSING)
        write_result(student, dataclasses.replace(old, checks=tuple(dataclasses.replace(c, kind="") for c in old.checks)))
    page = render_student_report(student, released=True).read_text(encoding="utf-8")
    assert len(re.findall(r"<img ", page)) == 2 + 4  # overfit: loss, example; training: loss, confusion, worst, best


TWO_OVERFITS = """\
assignment: two overfit checks and a training check named train
num_classes: 21
threads: 1
dataset: {kind: embedded, size: 64, n_train: 96, n_val: 24, seed: 0}
budgets:
  import: {timeout_s: 30, memory_mb: 4096}
  model: {timeout_s: 30, memory_mb: 4096}
  overfit: {timeout_s: 60, memory_mb: 4096}
  train: {timeout_s: 60, memory_mb: 4096}
checks:
  - {id: model_shapes, kind: model_shapes, name: Shapes, points: 5, seed: 5}
  - {id: overfit_a, kind: overfit, name: Overfit A, points: 5, requires: [model_shapes], seed: 6, epochs: 3,
     image_size: 32, example_index: 0}
  - {id: overfit_b, kind: overfit, name: Overfit B, points: 5, requires: [model_shapes], seed: 6, epochs: 3,
     image_size: 32, example_index: 1}
  - {id: train, kind: full_training, name: Training, points: 10, requires: [model_shapes], seed: 7, epochs: 1,
     batch_size: 16, bar: 0.5}
"""


@pytest.mark.slow
def test_two_overfit_checks_keep_two_sets_of_pictures_and_train_keeps_its_miou(tmp_path: Path, cache_dir: Path) -> None:
    """The real grader on the reference: each overfit check's example is saved under its own id and drawn on
    the page, and the training check called ``train`` fills grades.csv's mIoU column and the leaderboard."""
    import numpy as np

    from grader import api
    from grader.report.export import gradescope_results

    (tmp_path / "rubric.yaml").write_text(TWO_OVERFITS)
    [graded] = api.grade([Path(__file__).resolve().parent.parent / "reference"], rubric=tmp_path / "rubric.yaml",
                         out_dir=tmp_path / "out", cache_dir=cache_dir)
    assert graded.status == "graded" and {c.id: c.kind for c in graded.checks}["overfit_b"] == "overfit"
    folder = tmp_path / "out" / "reference" / "artifacts"
    pictures = {cid: np.load(folder / f"{cid}.overfit.npz")["image"] for cid in ("overfit_a", "overfit_b")}
    assert not np.array_equal(pictures["overfit_a"], pictures["overfit_b"])  # two examples, two files
    assert (folder / "train.train_eval.npz").is_file()
    page = (tmp_path / "out" / "reference" / "report.html").read_text(encoding="utf-8")
    assert page.count("The example: image, ground truth, your prediction") == 2
    with (tmp_path / "out" / "grades.csv").open(newline="") as f:
        [row] = list(csv.DictReader(f))
    assert miou_of(graded) is not None and float(row["miou"]) == pytest.approx(miou_of(graded), abs=1e-4)
    assert gradescope_results(graded)["leaderboard"][0]["name"] == "mIoU"
