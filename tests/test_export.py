"""grades.csv and Gradescope's results.json, checked against what a spreadsheet and the spec expect."""
from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from grader.report.export import (
    GradescopeInfrastructureError, gradescope_results, write_gradescope_results, write_grades_csv,
)
from grader.core.results import write_result
from report_samples import (
    BROKEN, ERROR, FAILING_UNIT, INFRA, PASSING, RUBRIC, SECRET_HIDDEN, SECRET_HIDDEN_DETAIL, STUDENTS, UNGRADABLE,
    build_samples, sample_result,
)

# The Gradescope autograder specification ("Autograder Specifications", results.json), field by field.
VISIBILITIES = {"hidden", "after_due_date", "after_published", "visible"}
FORMATS = {"text", "html", "simple_format", "md", "ansi"}
TOP_FIELDS = {"score": (int, float), "execution_time": int, "output": str, "output_format": str,
              "test_output_format": str, "test_name_format": str, "visibility": str, "stdout_visibility": str,
              "extra_data": dict, "tests": list, "leaderboard": list}
TEST_FIELDS = {"score": (int, float), "max_score": (int, float), "status": str, "name": str, "name_format": str,
               "number": str, "output": str, "output_format": str, "tags": list, "visibility": str,
               "extra_data": dict}
LEADERBOARD_FIELDS = {"name": str, "value": (int, float, str), "order": str}


def _typed(obj: dict[str, Any], fields: dict[str, Any], where: str) -> list[str]:
    errors = [f"{where}: unknown field {k!r}" for k in obj if k not in fields]
    for key, kind in fields.items():
        if key in obj and (not isinstance(obj[key], kind) or isinstance(obj[key], bool)):
            errors.append(f"{where}.{key}: {type(obj[key]).__name__} is not {kind}")
    return errors


def spec_errors(data: dict[str, Any]) -> list[str]:
    """Every way ``data`` departs from the specification (empty when it conforms)."""
    errors = _typed(data, TOP_FIELDS, "results")
    errors += [f"results.{k} = {data[k]!r}" for k in ("visibility", "stdout_visibility")
               if k in data and data[k] not in VISIBILITIES]
    errors += [f"results.{k} = {data[k]!r}" for k in ("output_format", "test_output_format", "test_name_format")
               if k in data and data[k] not in FORMATS]
    tests = data.get("tests", [])
    if "score" not in data and any("score" not in t for t in tests):
        errors.append("score is required at the top level or on every test")
    for i, test in enumerate(tests):
        errors += _typed(test, TEST_FIELDS, f"tests[{i}]")
        if test.get("status", "passed") not in ("passed", "failed"):
            errors.append(f"tests[{i}].status = {test['status']!r}")
        if test.get("visibility", "visible") not in VISIBILITIES:
            errors.append(f"tests[{i}].visibility = {test['visibility']!r}")
    for i, entry in enumerate(data.get("leaderboard", [])):
        errors += _typed(entry, LEADERBOARD_FIELDS, f"leaderboard[{i}]")
        if not {"name", "value"} <= set(entry):
            errors.append(f"leaderboard[{i}] needs name and value")
        if entry.get("order", "desc") not in ("asc", "desc"):
            errors.append(f"leaderboard[{i}].order = {entry['order']!r}")
    return errors


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_samples(tmp_path_factory.mktemp("export"))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_grades_csv_has_one_row_per_student_in_rubric_column_order(out: Path) -> None:
    path = write_grades_csv(out)
    assert path == out / "grades.csv"
    with path.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert header == ["student", "source", "lms_id", "status", "auto", "adjustment", "late_penalty", "final", "max",
                      *(r[0] for r in RUBRIC), "miou"]
    rows = {r["student"]: r for r in read_csv(path)}
    assert sorted(rows) == sorted([*STUDENTS, BROKEN])
    expected = {"status": "graded", "auto": "100", "final": "100", "max": "100", "transpose_conv": "15", "full_training": "30",
                "miou": "0.912"}
    assert {k: rows[PASSING][k] for k in expected} == expected
    assert rows[FAILING_UNIT]["transpose_conv"] == "0" and rows[FAILING_UNIT]["metrics_hidden"] == "4"
    assert rows[ERROR]["miou"] == "" and rows[ERROR]["overfit"] == "0"


def test_grades_csv_marks_ungradable_zero_infrastructure_blank_and_broken_unreadable(out: Path) -> None:
    rows = {r["student"]: r for r in read_csv(write_grades_csv(out))}
    assert (rows[UNGRADABLE]["status"], rows[UNGRADABLE]["auto"]) == ("ungradable", "0")
    assert (rows[INFRA]["status"], rows[INFRA]["final"]) == ("infrastructure_error", "")
    assert rows[BROKEN]["status"] == "unreadable" and rows[BROKEN]["final"] == ""


def test_grades_csv_defuses_spreadsheet_formulas_in_student_ids(tmp_path: Path) -> None:
    write_result(tmp_path / "evil", replace(sample_result(PASSING), student='=HYPERLINK("x","y")'))
    rows = read_csv(write_grades_csv(tmp_path))
    assert rows[0]["student"] == "'=HYPERLINK(\"x\",\"y\")"


@pytest.mark.parametrize("student", [PASSING, FAILING_UNIT, ERROR, "dave_training_timeout", UNGRADABLE])
def test_gradescope_results_follow_the_specification(student: str) -> None:
    data = gradescope_results(sample_result(student))
    assert spec_errors(data) == []
    json.dumps(data, allow_nan=False)  # what Gradescope parses: strict JSON


def test_gradescope_graded_submission_maps_every_check() -> None:
    result = sample_result(FAILING_UNIT)
    data = gradescope_results(result)
    assert data["score"] == result.score == 61
    assert data["visibility"] == "after_published" and "execution_time" not in data  # hidden points: see below
    assert [t["name"] for t in data["tests"]] == [r[1] for r in RUBRIC]
    by_name = {t["name"]: t for t in data["tests"]}
    assert by_name["Transpose convolution"]["status"] == "failed" and by_name["Mean IoU"]["status"] == "passed"
    assert by_name["Full training (mIoU)"]["visibility"] == "after_due_date"
    hidden = by_name["Metrics on hidden edge cases"]
    assert hidden["visibility"] == "after_published" and hidden["score"] == 4
    assert SECRET_HIDDEN not in json.dumps(data) and SECRET_HIDDEN_DETAIL not in json.dumps(data)
    assert sum(t["score"] for t in data["tests"]) == data["score"]


def test_gradescope_leaderboard_holds_miou_only_when_training_is_visible() -> None:
    result = sample_result(PASSING)
    assert gradescope_results(result)["leaderboard"] == []  # after_due_date in this rubric: no leak
    visible = replace(result, checks=tuple(replace(c, visibility="visible") if c.id == "full_training" else c
                                           for c in result.checks))
    assert gradescope_results(visible)["leaderboard"] == [{"name": "mIoU", "value": 0.912, "order": "desc"}]
    assert "leaderboard" not in gradescope_results(visible, leaderboard=False)


def test_gradescope_ungradable_scores_zero_with_the_reason() -> None:
    data = gradescope_results(sample_result(UNGRADABLE))
    assert data["score"] == 0 and data["tests"] == []
    assert "SyntaxError: invalid syntax (segnet.py, line 12)" in data["output"]


def test_gradescope_infrastructure_error_raises_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(GradescopeInfrastructureError, match="Docker Engine not reachable"):
        write_gradescope_results(sample_result(INFRA), tmp_path / "results.json")
    assert not (tmp_path / "results.json").exists()


def test_write_gradescope_results_writes_the_json(tmp_path: Path) -> None:
    path = write_gradescope_results(sample_result(PASSING), tmp_path / "results" / "results.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert spec_errors(data) == [] and data["score"] == 100


def test_the_spec_validator_rejects_what_gradescope_would() -> None:
    bad = {"score": "10", "visibility": "public", "tests": [{"name": 1, "status": "ok", "max_score": True}],
           "leaderboard": [{"name": "mIoU", "order": "up"}], "colour": "red"}
    errors = spec_errors(bad)
    for fragment in ("results.score", "results.visibility", "tests[0].name", "tests[0].status", "tests[0].max_score",
                     "leaderboard[0] needs name and value", "leaderboard[0].order", "unknown field 'colour'"):
        assert any(fragment in e for e in errors), fragment


def _what_a_student_sees_before_release(data: dict) -> str:
    """Everything of a results.json Gradescope shows a student before grades are published: the top-level
    score only when its visibility is "visible", the output, the visible tests, the leaderboard."""
    seen = [data.get("output", ""), json.dumps(data.get("leaderboard", []))]
    if data.get("visibility", "visible") == "visible":
        seen += [str(data["score"]), str(data.get("execution_time", ""))]
    seen += [json.dumps(t) for t in data["tests"] if t.get("visibility", data.get("visibility")) == "visible"]
    return "\n".join(seen)


@pytest.mark.parametrize("student", [PASSING, FAILING_UNIT, ERROR, "dave_training_timeout"])
def test_before_release_a_gradescope_student_sees_only_the_visible_checks(student: str) -> None:
    """Issue 21: the visible output said 'Autograder score: 75 / 100' while the visible checks added to 50."""
    result = sample_result(student)
    data = gradescope_results(result)
    seen = _what_a_student_sees_before_release(data)
    visible = [c for c in result.checks if c.visibility == "visible"]
    withheld = [c for c in result.checks if c.visibility != "visible"]
    assert withheld and data["visibility"] == "after_published"
    assert f"Visible checks: {sum(c.score for c in visible):g} / {sum(c.max_score for c in visible):g}" in seen
    assert f"{result.score:g} / {result.max_score:g}" not in seen and "Autograder score" not in seen
    for check in withheld:
        assert check.name not in seen
    assert sum(t["score"] for t in data["tests"]) == data["score"]  # the grade Gradescope records is whole


def test_with_every_check_visible_the_total_and_time_are_shown() -> None:
    result = sample_result(FAILING_UNIT)
    everything = replace(result, checks=tuple(replace(c, visibility="visible") for c in result.checks))
    data = gradescope_results(everything)
    assert data["visibility"] == "visible" and data["execution_time"] == 81  # 80.6 s of stages
    assert f"Autograder score: {result.score:g} / {result.max_score:g}" in data["output"]
