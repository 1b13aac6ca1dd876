"""Nothing a student submits decides another student's row (issue 21, items 4, 5 and 7).

One path on the command line is one student; a zip given alone is a class only as an LMS export; an id never
changes owner, within a batch or across batches; grades.csv says where each row came from; two zip members of
one path and notebook file names are data, never a choice the archive's order or the name's text makes.
"""
from __future__ import annotations

import csv
import json
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grader.batch.batch import known_owners
from grader.core.results import SubmissionResult, write_result
from grader.intake.discover import Rejected, Submission, discover
from grader.intake.notebooks import RECORD, notebook_to_files
from grader.report.export import write_grades_csv

ALICE = "def transpose_conv2d(x, w):\n    return 'alice'\n"
BOB = "def transpose_conv2d(x, w):\n    return 'bob'\n"
PLANTED = "def transpose_conv2d(x, w):\n    return 'planted by alice'\n"


def _zip(path: Path, files: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def _code(entry: Submission | Rejected) -> str:
    assert isinstance(entry, Submission), entry
    return (entry.path / "segmentation.py").read_text()


def _by_id(entries: list) -> dict:
    return {e.student: e for e in entries}


def test_two_uploaded_zips_are_two_students_whatever_they_hold(tmp_path: Path) -> None:
    """alice.zip holds folders alice/ and bob/: it is Alice's (one submission, rejected as ambiguous), never
    a class whose bob/ takes Bob's row."""
    alice = _zip(tmp_path / "uploads" / "alice.zip", {"alice/segmentation.py": ALICE, "bob/segmentation.py": PLANTED})
    bob = _zip(tmp_path / "uploads" / "bob.zip", {"segmentation.py": BOB})
    found = _by_id(discover([alice, bob], workdir=tmp_path / "w"))
    assert sorted(found) == ["alice", "bob"]
    assert _code(found["bob"]) == BOB and found["bob"].source == str(bob)
    assert isinstance(found["alice"], Rejected) and "several folders" in found["alice"].reason


def test_a_zip_given_alone_is_a_class_only_as_an_lms_export(tmp_path: Path) -> None:
    plain = _zip(tmp_path / "alice.zip", {"alice/segmentation.py": ALICE, "bob/segmentation.py": PLANTED})
    assert [e.student for e in discover([plain], workdir=tmp_path / "w1")] == ["alice"]
    canvas = _zip(tmp_path / "class.zip", {"smithjohn_111_5_segmentation.py": ALICE, "doejane_222_6_seg.py": BOB})
    found = _by_id(discover([canvas], workdir=tmp_path / "w2"))
    assert sorted(found) == ["doejane", "smithjohn"] and found["smithjohn"].lms_id == "111"
    gradescope = _zip(tmp_path / "export.zip", {
        "export/submission_metadata.yml": "submission_1:\n  :submitters:\n  - :name: Ann\n    :sid: '42'\n"
                                          "    :email: ann@uni.edu\n  :created_at: 2026-03-02 09:30:00 -08:00\n",
        "export/submission_1/segmentation.py": ALICE})
    (ann,) = discover([gradescope], workdir=tmp_path / "w3")
    assert (ann.student, ann.lms_id, ann.email, ann.lms) == ("42", "42", "ann@uni.edu", "gradescope")
    assert ann.submitted_at == "2026-03-02T09:30:00-08:00"


def test_jose_jose_accented_and_jose_2_each_keep_their_own_id(tmp_path: Path) -> None:
    cls = tmp_path / "cls"
    for name, text in (("Jose", "jose = 1\n"), ("José", "jose_accent = 1\n"), ("Jose-2", "jose_two = 1\n")):
        (cls / name).mkdir(parents=True)
        (cls / name / "segmentation.py").write_text(text)
    found = _by_id(discover([cls], workdir=tmp_path / "w"))
    assert _code(found["Jose"]) == "jose = 1\n" and _code(found["Jose-2"]) == "jose_two = 1\n"
    (accented,) = [e for e in found.values() if e.source.endswith("José")]
    assert accented.student not in ("Jose", "Jose-2") and _code(accented) == "jose_accent = 1\n"
    assert any("belongs to another student" in n for n in accented.notes)


def test_two_canvas_users_of_one_name_are_told_apart_by_their_user_ids(tmp_path: Path) -> None:
    cls = tmp_path / "canvas"
    cls.mkdir()
    (cls / "smithjohn_900_1_segmentation.py").write_text(ALICE)
    (cls / "smithjohn_100_2_segmentation.py").write_text(BOB)
    found = discover([cls], workdir=tmp_path / "w")
    assert {(e.student, e.lms_id) for e in found} == {("smithjohn-900", "900"), ("smithjohn-100", "100")}
    assert _code(_by_id(found)["smithjohn-900"]) == ALICE  # the id names the user, not the file order


def test_an_id_never_changes_owner_across_batches(tmp_path: Path) -> None:
    """Week 1: José alone gets 'Jose'. Week 2 a Jose arrives: José keeps 'Jose', the newcomer gets a new id."""
    out = tmp_path / "out"
    week1 = tmp_path / "week1"
    for name in ("José", "Zed"):  # two students: a folder holding one would be that one's submission
        (week1 / name).mkdir(parents=True)
        (week1 / name / "segmentation.py").write_text("accent = 1\n")
    first, _ = discover([week1], workdir=tmp_path / "w1")
    assert first.student == "Jose"
    _record(out, first)
    week2 = tmp_path / "week2"
    for name, text in (("José", "accent = 2\n"), ("Jose", "plain = 1\n")):
        (week2 / name).mkdir(parents=True)
        (week2 / name / "segmentation.py").write_text(text)
    found = _by_id(discover([week2], workdir=tmp_path / "w2", known=known_owners(out)))
    assert _code(found["Jose"]) == "accent = 2\n"
    (newcomer,) = [e for e in found.values() if e.student != "Jose"]
    assert _code(newcomer) == "plain = 1\n" and newcomer.student.startswith("Jose-")


def test_a_result_from_before_owners_were_recorded_keeps_its_folder_name(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_result(out / "alice", SubmissionResult(student="alice", status="graded", score=1, max_score=1, checks=()))
    assert known_owners(out) == {"alice": "name:alice"}


def _record(out: Path, entry: Submission) -> None:
    write_result(out / entry.student, SubmissionResult(
        student=entry.student, status="graded", score=1.0, max_score=1.0, checks=(),
        provenance={"identity": entry.identity()}))


def test_grades_csv_says_where_each_row_came_from(tmp_path: Path) -> None:
    cls = tmp_path / "canvas"
    cls.mkdir()
    (cls / "smithjohn_900_1_segmentation.py").write_text(ALICE)
    (cls / "doejane_LATE_222_6_segmentation.py").write_text(BOB)
    out = tmp_path / "out"
    for entry in discover([cls], workdir=tmp_path / "w"):
        _record(out, entry)
    with (write_grades_csv(out)).open(newline="", encoding="utf-8") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert rows["smithjohn"]["lms_id"] == "900" and rows["doejane"]["lms_id"] == "222"
    assert rows["smithjohn"]["source"].endswith("smithjohn_900_1_segmentation.py")


@pytest.mark.parametrize(("first", "second"), [("segmentation.py", "./segmentation.py"),
                                               ("segmentation.py", "segmentation.py"),
                                               ("a/segmentation.py", "a\\segmentation.py"),
                                               ("s\u00e9g.py", "se\u0301g.py")])
def test_two_members_of_one_path_reject_the_zip_naming_both(tmp_path: Path, first: str, second: str) -> None:
    path = tmp_path / "alice.zip"
    with zipfile.ZipFile(path, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name: that is the point here
        zf.writestr(first, ALICE)
        zf.writestr(second, PLANTED)
    (entry,) = discover([path], workdir=tmp_path / "w")
    assert isinstance(entry, Rejected), entry
    assert repr(first) in entry.reason and repr(second) in entry.reason


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=40))
def test_a_notebook_name_is_data_never_code(name: str) -> None:
    """Names holding triple quotes, \\N, newlines or anything else: the prelude compiles, records the name
    as it is, and no cell file gains a line from it."""
    raw = json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                      "cells": [{"cell_type": "code", "source": "x = 1\n", "metadata": {}, "outputs": [],
                                 "execution_count": None, "id": "a"}]}).encode()
    files, _ = notebook_to_files(raw, name=name)
    namespace: dict = {}
    prelude = files["segmentation.py"]
    compile(prelude, "segmentation.py", "exec")
    header = prelude.split("\n_grader_run_cells()")[0].split("def _grader_run_cells")[0]
    exec(compile(header, "prelude", "exec"), namespace)  # the record only (no cells run)
    assert namespace[RECORD]["source"] == name
    (cell,) = [text for rel, text in files.items() if rel != "segmentation.py"]
    assert cell.split("\n")[1:] == ["x = 1", "", ""] or cell.endswith("x = 1\n\n")
    assert cell.count("\n") == "x = 1\n".count("\n") + 2


@pytest.mark.parametrize("name", ['evil""".ipynb', "back\\Nslash.ipynb", "new\nline.ipynb"])
def test_the_names_that_broke_the_prelude_now_grade(tmp_path: Path, name: str) -> None:
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
          "cells": [{"cell_type": "code", "source": ALICE, "metadata": {}, "outputs": [], "execution_count": None,
                     "id": "a"}]}
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / name
    path.write_text(json.dumps(nb))
    (entry,) = discover([path], workdir=tmp_path / "w")
    assert isinstance(entry, Submission), entry
    compile((entry.path / "segmentation.py").read_text(), "segmentation.py", "exec")
