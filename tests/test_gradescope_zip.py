"""The Gradescope autograder as staff build it (``gradescope/make_zip.sh``) and Gradescope prepares it
(``setup.sh`` -> ``gradescope/prepare.sh``): a course checkpoint the rubric allows travels in the zip, is added to
the image's cache at build time, and a submission that loads it is graded offline with ``--gradescope``.

Real scripts, the real grader CLI, a checkpoint the test generates (tests/test_weights.py); only the apt/venv
lines of setup.sh are Gradescope's own and not run here.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from test_weights import TV_FILE, course_entry, generate_checkpoint
from test_weights_grading import EVE, SHAPES_ONLY

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv the tests run in: its `grader` and `python`

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (REPO / ".git").exists(), reason="make_zip.sh archives the git checkout")]


def _run(args: list[str], env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=cwd, env={**os.environ, **env})


def test_the_zip_carries_the_course_checkpoint_and_gradescope_grades_with_it_offline(tmp_path: Path) -> None:
    checkpoint = generate_checkpoint(tmp_path)
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text(SHAPES_ONLY + f"pretrained: {course_entry(checkpoint)}\n")
    staff = {"RUBRIC": str(rubric), "CACHE_DIR": str(tmp_path / "staff-cache"), "GRADER": str(BIN / "grader"),
             "TORCH_HOME": str(tmp_path / "no-torch-home")}
    out = tmp_path / "autograder.zip"

    never_added = _run(["bash", "gradescope/make_zip.sh", str(out)], staff)
    assert never_added.returncode == 3 and not out.exists(), never_added.stderr
    assert f"grader weights add {TV_FILE}" in never_added.stderr  # what to do

    added = _run([str(BIN / "grader"), "weights", "add", str(checkpoint[0]), "--rubric", str(rubric),
                  "--cache-dir", staff["CACHE_DIR"]], staff)
    assert added.returncode == 0, added.stderr
    built = _run(["bash", "gradescope/make_zip.sh", str(out)], staff)
    assert built.returncode == 0, built.stderr
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        assert {"setup.sh", "run_autograder", "rubric.yaml", "gradescope/prepare.sh", "reference/segmentation.py",
                f"weights/{TV_FILE}"} <= names
        assert zf.read(f"weights/{TV_FILE}") == checkpoint[0].read_bytes()
        assert zf.read("rubric.yaml") == rubric.read_bytes()
        assert (zf.getinfo("run_autograder").external_attr >> 16) & stat.S_IXUSR  # Gradescope executes it
        root = tmp_path / "autograder"
        zf.extractall(root / "source")

    gradescope = {"SEG_GRADER_CACHE": str(tmp_path / "gradescope-cache"), "PATH": f"{BIN}:{os.environ['PATH']}",
                  "TORCH_HOME": str(tmp_path / "no-torch-home")}
    prepared = _run(["bash", str(root / "source" / "gradescope" / "prepare.sh"), str(root / "source")], gradescope)
    assert prepared.returncode == 0, prepared.stderr
    listed = _run([str(BIN / "grader"), "weights", "list", "--rubric", str(root / "source" / "rubric.yaml")],
                  gradescope)
    assert f"{TV_FILE}: present" in listed.stdout, listed.stdout

    (root / "submission").mkdir()
    shutil.copy(EVE, root / "submission" / "segmentation.py")  # resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
    graded = _run([str(BIN / "grader"), "grade", "--gradescope", "--gradescope-root", str(root), "--rubric",
                   str(root / "source" / "rubric.yaml")], gradescope, cwd=root / "source")
    assert graded.returncode == 0, graded.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 10, results  # her net is built from the course's file, without network
