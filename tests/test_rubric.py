"""rubric.yaml validation: every mistake names its YAML path; both shipped rubrics load."""
from __future__ import annotations

from pathlib import Path

import pytest

from grader.rubric import RubricError, load_rubric, parse_rubric

REPO = Path(__file__).resolve().parent.parent
MINIMAL = """
assignment: t
checks:
  - {id: tc, kind: transpose_conv, name: T, points: 5}
"""


@pytest.mark.parametrize("path", [REPO / "rubric.yaml", REPO / "tests" / "rubric_small.yaml"])
def test_shipped_rubrics_load(path: Path) -> None:
    rubric = load_rubric(path)
    assert rubric.max_score == 100
    assert rubric.stages() == ["import", "unit", "unit.withheld", "model_shapes", "overfit",  # withheld unit checks
                               "full_training"]  # apart, after the visible ones; net checks by id


def test_defaults_fill_what_the_yaml_leaves_out() -> None:
    rubric = parse_rubric(MINIMAL)
    assert rubric.checks[0].atol == 1e-5 and rubric.checks[0].visibility == "visible"
    assert rubric.budgets.of("import").timeout_s == 60
    assert len(rubric.source_hash) == 64


@pytest.mark.parametrize(("yaml_text", "path"), [
    (MINIMAL + "colour: red\n", "colour: unknown key"),
    (MINIMAL.replace("points: 5", "points: five"), "checks[0].points: expected float"),
    (MINIMAL.replace("name: T, ", ""), "checks[0].name: missing"),
    (MINIMAL.replace("kind: transpose_conv", "kind: fft"), "checks[0].kind: 'fft' is not one of"),
    (MINIMAL.replace("points: 5", "points: 5, epochs: 3"), "checks[0].epochs: not a setting of a transpose_conv"),
    (MINIMAL.replace("points: 5", "points: 5, visibility: secret"), "checks[0].visibility: 'secret' is not one of"),
    (MINIMAL + "budgets: {train: {timeout: 5}}\n", "budgets.train.timeout: unknown key"),
    (MINIMAL + "dataset: {kind: voc}\n", "dataset.voc_root: required"),
    (MINIMAL + "dataset: {contrast_split: val}\n", "dataset.contrast_split: with kind: embedded"),
    (MINIMAL + "dataset: {kind: voc, voc_root: /d, contrast_split: train}\n", "dataset.contrast_split: 'train' is the tr"),
    (MINIMAL + "dataset: {kind: voc, voc_root: /d, contrast_split: ../x}\n", "dataset.contrast_split: '../x' must name"),
    (MINIMAL.replace("points: 5}", "points: 5}\n  - {id: tc, kind: mean_iou, name: M, points: 1}"),
     "checks[1].id: 'tc' is used twice"),
    (MINIMAL.replace("points: 5}", "points: 5, requires: [later]}"), "checks[0].requires: 'later'"),
    ("assignment: [unclosed", "not valid YAML"),
])
def test_errors_name_the_yaml_path(yaml_text: str, path: str) -> None:
    with pytest.raises(RubricError, match=path.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        parse_rubric(yaml_text)


def test_the_contrast_image_comes_from_a_public_validation_split() -> None:
    """The report's unseen image shows its ground truth: the embedded set's public_val, VOC's val (public)."""
    assert parse_rubric(MINIMAL).dataset.public_split == "public_val"
    assert parse_rubric(MINIMAL + "dataset: {kind: voc, voc_root: /d}\n").dataset.public_split == "val"
    chosen = parse_rubric(MINIMAL + "dataset: {kind: voc, voc_root: /d, eval_split: test, contrast_split: mine}\n")
    assert chosen.dataset.public_split == "mine"


def test_scientific_notation_without_a_dot_is_a_float() -> None:
    assert parse_rubric(MINIMAL.replace("points: 5", "points: 5, atol: 1e-6")).checks[0].atol == 1e-6


def test_cli_reports_an_invalid_rubric_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from grader.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL + "colour: red\n")
    assert main(["grade", str(tmp_path), "--out", str(tmp_path / "o"), "--rubric", str(bad)]) == 2
    assert "colour: unknown key" in capsys.readouterr().err


def test_the_hash_follows_values_not_layout_and_ignores_the_similarity_threshold() -> None:
    base = parse_rubric(MINIMAL)
    assert parse_rubric("# a comment\n" + MINIMAL.replace("points: 5", "points:   5")).source_hash == base.source_hash
    assert parse_rubric(MINIMAL + "similarity: {threshold: 0.8}\n").source_hash == base.source_hash
    assert parse_rubric(MINIMAL.replace("points: 5", "points: 6")).source_hash != base.source_hash
