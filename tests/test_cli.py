"""The CLI as TAs and students run it: selftest, check, Gradescope mode, report, exit codes."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_export import spec_errors

REPO = Path(__file__).resolve().parent.parent
UNIT_ONLY = """
assignment: unit checks only
threads: 1
budgets: {import: {timeout_s: 60}, unit: {timeout_s: 60}}
checks:
  - {id: transpose_conv, kind: transpose_conv, name: Transpose conv, points: 6, cases: 5}
  - {id: bilinear_kernel, kind: bilinear_kernel, name: Bilinear kernel, points: 2}
  - {id: mean_iou, kind: mean_iou, name: Mean IoU, points: 2, visibility: hidden, cases: 3}
"""


def _grader(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture()
def unit_rubric(tmp_path: Path) -> Path:
    path = tmp_path / "unit.yaml"
    path.write_text(UNIT_ONLY)
    return path


def test_selftest_passes_on_the_test_rubric(tmp_path: Path, cache_dir: Path) -> None:
    proc = _grader("selftest", "--rubric", str(REPO / "tests" / "rubric_small.yaml"), "-j", "2", "-q",
                   "--cache-dir", str(cache_dir), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "selftest passed: reference 100.0/100.0, template 0.0/100.0" in proc.stdout


def test_check_shows_only_public_checks(tmp_path: Path, unit_rubric: Path) -> None:
    sub = tmp_path / "me"
    sub.mkdir()
    shutil.copy(REPO / "student_template" / "segmentation.py", sub)
    proc = _grader("check", str(sub), "--rubric", str(unit_rubric), "-q", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "0 / 8 points on the public checks" in proc.stdout
    assert "Transpose conv" in proc.stdout and "hint:" in proc.stdout
    assert "Mean IoU" not in proc.stdout  # hidden checks are not part of a self-check
    assert (tmp_path / "out" / "me" / "report.html").exists()


def test_gradescope_mode_writes_results_json(tmp_path: Path, unit_rubric: Path) -> None:
    root = tmp_path / "autograder"
    (root / "submission").mkdir(parents=True)
    shutil.copy(REPO / "reference" / "segmentation.py", root / "submission")
    proc = _grader("grade", "--gradescope", "--gradescope-root", str(root), "--rubric", str(unit_rubric), "-q")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((root / "results" / "results.json").read_text())
    assert spec_errors(data) == []
    assert data["score"] == 10
    assert {t["name"] for t in data["tests"]} >= {"Transpose conv", "Bilinear kernel"}


def test_grade_writes_results_summary_reports_and_gradebook(tmp_path: Path, unit_rubric: Path) -> None:
    klass = tmp_path / "class"
    for name, src in (("ana", "reference"), ("bo", "student_template")):
        (klass / name).mkdir(parents=True)
        shutil.copy(REPO / src / "segmentation.py", klass / name)
    (klass / "cy.zip").write_bytes(b"not a zip at all")
    out = tmp_path / "out"
    proc = _grader("grade", str(klass), "--out", str(out), "--rubric", str(unit_rubric), "-j", "2", "-q")
    assert proc.returncode == 0, proc.stderr  # students failing is never the grader failing
    scores = {s["student"]: (s["status"], s["score"]) for s in json.loads((out / "summary.json").read_text())["students"]}
    assert scores == {"ana": ("graded", 10), "bo": ("graded", 0), "cy": ("ungradable", 0)}
    for path in ("index.html", "grades.csv", "ana/report.html", "cy/report.html"):
        assert (out / path).exists(), path
    assert _grader("report", str(out)).returncode == 0  # re-render from result.json alone
