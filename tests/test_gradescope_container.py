"""Gradescope mode in a container whose defaults refuse namespaces (Docker drops CAP_SYS_ADMIN): the upload is
graded, its stage as its own uid, and only the staff-side provenance says it was not isolated. A staff batch
in the same place fails closed (tests/test_confinement.py)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from venvs import UNIT_RUBRIC, without_sys_admin

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(os.getuid() != 0, reason="drops a capability from root's bounding set")
def test_gradescope_mode_grades_where_the_container_refuses_namespaces(tmp_path: Path) -> None:
    root = tmp_path / "autograder"
    (root / "submission").mkdir(parents=True)
    shutil.copy(REPO / "reference" / "segmentation.py", root / "submission")
    (tmp_path / "unit.yaml").write_text(UNIT_RUBRIC)
    proc = subprocess.run([sys.executable, "-m", "grader", "grade", "--gradescope", "--gradescope-root", str(root),
                           "--rubric", str(tmp_path / "unit.yaml"), "--cache-dir", str(tmp_path / "cache"), "-q"],
                          preexec_fn=without_sys_admin, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((root / "results" / "results.json").read_text())
    assert data["score"] == 2
    assert "isolat" not in data.get("output", "")  # the student's output says nothing of the grader's sandbox
    [result] = [json.loads(p.read_text()) for p in (root / "grader-out").glob("*/result.json")]
    isolation = result["provenance"]["sandbox"]["isolation"]
    assert "NOT isolated" in isolation and "ran as its submission's own uid" in isolation, isolation
