"""Notebooks graded the way students write them: cells run one by one, a raising cell is recorded and skipped.

The in-process tests exec the grader's own prelude on notebooks this file writes (our code, not a student's);
the graded test runs a notebook through intake, the local sandbox and the judges like any submission.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from grader.intake.discover import Submission, prepare_submission
from grader.kit.notebook import notebook_of
from grader.intake.notebooks import RECORD, failed_cells_message, notebook_to_files
from grader.rubric import Rubric

REPO = Path(__file__).resolve().parent.parent
FAILING_CELL = "images = sorted(open('/home/student/VOC/ImageSets/Segmentation/train.txt').read().split())\n"


def _notebook(*cells: str) -> bytes:
    code = [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
             "source": src.splitlines(keepends=True)} for src in cells]
    return json.dumps({"cells": code, "metadata": {}, "nbformat": 4, "nbformat_minor": 4}).encode()


def _run_prelude(tmp_path: Path, raw: bytes) -> dict:
    """Intake the notebook, then import its segmentation.py the way the runner does (our test code)."""
    src = tmp_path / "hw.ipynb"
    src.write_bytes(raw)
    sub = prepare_submission(src, student="nb", workdir=tmp_path / "work")
    assert isinstance(sub, Submission), sub
    namespace: dict = {"__file__": str(sub.path / "segmentation.py"), "__name__": "segmentation"}
    exec(compile((sub.path / "segmentation.py").read_text(), "segmentation.py", "exec"), namespace)
    return namespace


def test_a_raising_cell_is_recorded_and_the_next_cells_still_run(tmp_path: Path, capsys) -> None:
    ns = _run_prelude(tmp_path, _notebook("def f():\n    return 1\n", FAILING_CELL, "def g():\n    return f() + 1\n",
                                          "this is not python(\n", "import sys\nsys.exit(3)\n", "DONE = g()\n"))
    assert ns["f"]() == 1 and ns["g"]() == 2 and ns["DONE"] == 2  # cells after the failures ran, in order
    failed = ns[RECORD]["failed_cells"]
    assert [c["cell"] for c in failed] == [2, 4, 5]
    assert failed[0]["error"].startswith("FileNotFoundError:") and "/home/student/VOC" in failed[0]["error"]
    assert failed[0]["first_line"].startswith("images = sorted(open(")
    assert failed[1]["error"].startswith("SyntaxError") and failed[2]["error"].startswith("SystemExit")
    assert "[grader] code cell 2" in capsys.readouterr().err


def test_cells_keep_their_own_file_so_tracebacks_name_them(tmp_path: Path) -> None:
    files, notes = notebook_to_files(_notebook("%matplotlib inline\nx = 1\n", "!pip install torch\n"), name="a.ipynb")
    assert sorted(files) == ["notebook_cells/cell_01.py", "notebook_cells/cell_02.py", "segmentation.py"]
    assert "# %matplotlib inline" in files["notebook_cells/cell_01.py"]
    assert "# !pip install torch" in files["notebook_cells/cell_02.py"]
    assert any("commented out" in n for n in notes) and any("run one by one" in n for n in notes)


def test_the_warning_names_the_cells_and_survives_a_forged_record() -> None:
    record = {"present": [], "notebook": {"failed_cells": [
        {"cell": 2, "first_line": "images = load('/home/student/VOC')", "error": "FileNotFoundError: no such file"}]}}
    said = failed_cells_message(record)
    assert "code cell 2" in said and "FileNotFoundError" in said and "/home/student/VOC" in said
    assert failed_cells_message({"present": [], "notebook": None}) == ""  # a .py submission
    for forged in (None, [], {"notebook": "x"}, {"notebook": {"failed_cells": "all"}}):
        assert failed_cells_message(forged) == ""
    many = {"notebook": {"failed_cells": [{"cell": i, "first_line": "x" * 999, "error": "E" * 9999}
                                          for i in range(500)] + ["junk", {"cell": "1"}]}}
    said = failed_cells_message(many)
    assert len(said) < 4000 and "and 492 more" in said


def _unit_rubric(rubric: Rubric) -> Rubric:
    from grader.checks import KINDS

    return dataclasses.replace(rubric, checks=tuple(c for c in rubric.checks if KINDS[c.kind].cases is not None))


def test_a_notebook_with_a_failing_cell_scores_as_its_py(tmp_path: Path, test_rubric: Rubric, cache_dir: Path) -> None:
    from grader import api

    source = (REPO / "reference" / "segmentation.py").read_text()
    guide = (REPO / "student_template" / "README.md").read_text()
    nb = notebook_of(source, guide, title="hw")
    first_code = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code")
    nb["cells"].insert(first_code + 1, {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                                        "source": [FAILING_CELL]})  # the notebook's second code cell
    subs = tmp_path / "class"
    subs.mkdir()
    (subs / "nb_student.ipynb").write_text(json.dumps(nb))
    (subs / "py_student.py").write_text(source)
    rubric = _unit_rubric(test_rubric)
    results = {r.student: r for r in api.grade([subs], rubric=rubric, out_dir=tmp_path / "out", cache_dir=cache_dir,
                                               render=False)}
    nb_result, py_result = results["nb_student"], results["py_student"]
    assert py_result.score == py_result.max_score == rubric.max_score
    assert nb_result.score == py_result.score
    assert [c.status for c in nb_result.checks] == ["passed"] * len(rubric.checks)
    assert "code cell 2" in nb_result.message and "FileNotFoundError" in nb_result.message
    assert "/home/student/VOC" in nb_result.message and py_result.message == ""


@pytest.mark.parametrize("magic", ["%matplotlib inline", "!pip install torch"])
def test_magics_never_fail_a_cell(tmp_path: Path, magic: str) -> None:
    ns = _run_prelude(tmp_path, _notebook(f"{magic}\nA = 1\n"))
    assert ns["A"] == 1 and ns[RECORD]["failed_cells"] == []


def test_nbformat_reads_version_3_and_4_alike() -> None:
    from grader.intake.notebooks import notebook_to_files

    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"cells": [
        {"cell_type": "markdown", "source": ["# text"]},
        {"cell_type": "code", "language": "python", "input": ["def f():\n", "    return 1\n"], "outputs": []}]}]}
    v4 = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "markdown", "id": "a", "metadata": {}, "source": "# text"},
        {"cell_type": "code", "id": "b", "metadata": {}, "execution_count": None, "outputs": [],
         "source": ["def f():\n", "    return 1\n"]}]}
    files3, _ = notebook_to_files(json.dumps(v3).encode(), name="v3.ipynb")
    files4, _ = notebook_to_files(json.dumps(v4).encode(), name="v4.ipynb")
    cell = "notebook_cells/cell_01.py"
    assert "def f():\n    return 1" in files3[cell] and files3[cell].split("\n", 1)[1] == files4[cell].split("\n", 1)[1]
