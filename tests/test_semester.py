"""A TA's semester, scripted end to end with the real grader (local sandbox, unit checks of the test rubric):
grade a Canvas bulk download, override two checks with comments, record submission times, one late student
with an extension and one without, change the rubric and regrade, export to Canvas against a roster, release
each student's page; the released pages are then read in headless Chromium.
"""
from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from fixture_submissions import materialize
from grader import api
from grader.cli import main
from grader.core.results import SubmissionResult, read_result

SMALL = Path(__file__).parent / "rubric_small.yaml"
UNIT_KINDS = {"transpose_conv", "bilinear_kernel", "confusion_matrix", "mean_iou", "pixel_accuracy"}
LATE = {"due": "2026-12-01 23:59", "timezone": "America/New_York", "grace_minutes": 10, "penalty_percent": 10,
        "per": "day", "max_penalty_percent": 50}
# Canvas bulk download names: lastfirst[_LATE]_userid_submissionid_file; each from a fixture submission
CLASS = {"lovelaceada_1001_5001_segmentation.py": "passes_all",
         "babbagecharles_LATE_1002_5002_segmentation.py": "fails_bilinear_kernel",
         "hoppergrace_LATE_1003_5003_segmentation.py": "fails_transpose_conv_padding",
         "nobody_1099_5099_segmentation.py": "template"}
OVERRIDES = ("student,check,points,adjust,comment,by\n"
             "babbagecharles,bilinear_kernel,8,,Only the tent width is off by one: most of the credit,TA Kim\n"
             "1003,transpose_conv,,+5,Regrade request: padding is right in the notebook you submitted,TA Lee\n")
ROSTER = ("Student,ID,SIS User ID,SIS Login ID,Section,Assignment 4 (12344),Current Score\n"
          "    Points Possible,,,,,10,(read only)\n"
          '"Lovelace, Ada",1001,S1001,ada,Sec 1,10,100\n'
          '"Babbage, Charles",1002,S1002,cbabbage,Sec 1,7,70\n'
          '"Hopper, Grace",1003,S1003,ghopper,Sec 2,9,90\n'
          '"Lee, Cy",1005,S1005,clee,Sec 2,,0\n')


def rubric_file(path: Path, *, bilinear_points: int) -> Path:
    data = yaml.safe_load(SMALL.read_text())
    data["checks"] = [c for c in data["checks"] if c["kind"] in UNIT_KINDS]
    for check in data["checks"]:
        if check["id"] == "bilinear_kernel":
            check["points"] = bilinear_points
    data["late"] = LATE
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def grades(out: Path) -> dict[str, dict[str, str]]:
    with (out / "grades.csv").open(newline="", encoding="utf-8") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


@dataclass(frozen=True)
class Semester:
    out: Path
    first: dict[str, dict[str, str]]  # grades.csv after the first grading, no layers
    layered: dict[str, dict[str, str]]  # with overrides and times
    regraded: dict[str, dict[str, str]]  # after the rubric change and the regrade
    results: dict[str, SubmissionResult]  # after the regrade
    first_hash: str
    graded_at: tuple[dict[str, str], dict[str, str]]  # each result's graded_at before and after `grader report`
    canvas: Path
    unmatched: tuple[tuple[str, str], ...]
    export_stderr: str
    released: Path


@pytest.fixture(scope="module")
def semester(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Semester:
    root = tmp_path_factory.mktemp("semester")
    download, out = root / "download", root / "out"
    download.mkdir()
    for name, fixture in CLASS.items():
        shutil.copyfile(materialize(fixture, root / "fixtures") / "segmentation.py", download / name)
    v1 = rubric_file(root / "rubric_v1.yaml", bilinear_points=10)
    api.grade([download], rubric=v1, out_dir=out, cache_dir=cache_dir, jobs=2)
    first = grades(out)
    stamps = {s: read_result(out / s / "result.json").provenance["graded_at"] for s in first}
    first_hash = read_result(out / "lovelaceada" / "result.json").provenance["rubric_hash"]
    # the TA's files, in the output folder: two overrides with comments, Canvas's submission times, an extension
    (out / "overrides.csv").write_text(OVERRIDES)
    (out / "submission_times.csv").write_text("student,submitted_at\n1001,2026-12-01 20:00\n"
                                              "1002,2026-12-03 10:00\n1003,2026-12-03 10:00\n")
    (out / "extensions.csv").write_text("student,due\nhoppergrace,2026-12-04 23:59\n")
    assert main(["report", str(out)]) == 0  # no regrade: the layers only
    layered = grades(out)
    restamps = {s: read_result(out / s / "result.json").provenance["graded_at"] for s in layered}
    # the instructor changes the rubric (bilinear kernel worth 20) and the class is graded again
    v2 = rubric_file(root / "rubric_v2.yaml", bilinear_points=20)
    api.grade([download], rubric=v2, out_dir=out, cache_dir=cache_dir, regrade=True, jobs=2)
    regraded = grades(out)
    results = {s: read_result(out / s / "result.json") for s in regraded}
    (root / "gradebook.csv").write_text(ROSTER)
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["export", "canvas", str(out), "--assignment", "Assignment 5 (12345)",
                     "--roster", str(root / "gradebook.csv"), "--out", str(root / "canvas.csv")]) == 0
    unmatched = tuple(tuple(r) for r in csv.reader((root / "canvas.unmatched.csv").open()))[1:]
    assert main(["release", str(out), "--out", str(root / "released")]) == 0
    return Semester(out, first, layered, regraded, results, first_hash, (stamps, restamps), root / "canvas.csv",
                    unmatched, err.getvalue(), root / "released")


def test_the_class_is_graded_with_canvas_ids_and_no_layers(semester: Semester) -> None:
    first = semester.first
    assert sorted(first) == ["babbagecharles", "hoppergrace", "lovelaceada", "nobody"]
    assert first["lovelaceada"]["auto"] == first["lovelaceada"]["final"] == first["lovelaceada"]["max"] == "55"
    assert first["babbagecharles"]["bilinear_kernel"] == "0" and first["hoppergrace"]["transpose_conv"] != "15"
    assert all(r["adjustment"] == "0" and r["late_penalty"] == "0" for r in first.values())
    assert first["lovelaceada"]["lms_id"] == "1001"


def test_overrides_apply_and_lateness_with_and_without_extension(semester: Semester) -> None:
    rows = semester.layered
    babbage, hopper, ada = rows["babbagecharles"], rows["hoppergrace"], rows["lovelaceada"]
    assert babbage["auto"] == semester.first["babbagecharles"]["auto"]  # the autograded fact is unchanged
    assert semester.graded_at[0] == semester.graded_at[1]  # `grader report` applied the layers, graded nothing
    assert float(babbage["adjustment"]) == 8.0  # bilinear_kernel 0 -> 8
    # 34 hours late: two started days, 20 % of the score after the adjustment
    assert float(babbage["late_penalty"]) == pytest.approx(0.2 * (float(babbage["auto"]) + 8), abs=0.01)
    assert float(babbage["final"]) == pytest.approx(0.8 * (float(babbage["auto"]) + 8), abs=0.01)
    assert float(hopper["adjustment"]) == 5.0 and hopper["late_penalty"] == "0"  # same time, but an extension
    assert ada["late_penalty"] == "0" and ada["final"] == ada["auto"]
    assert rows["nobody"]["late_penalty"] == "0"  # no time known: never late


def test_a_rubric_change_and_regrade_moves_auto_scores_and_keeps_the_overrides(semester: Semester) -> None:
    before, after = semester.layered, semester.regraded
    assert semester.results["lovelaceada"].provenance["rubric_hash"] != semester.first_hash  # really regraded
    assert after["lovelaceada"]["auto"] == after["lovelaceada"]["max"] == "65"  # bilinear_kernel now worth 20
    assert float(after["hoppergrace"]["auto"]) == float(before["hoppergrace"]["auto"]) + 10
    assert float(after["babbagecharles"]["auto"]) == float(before["babbagecharles"]["auto"])  # still 0 there
    assert float(after["babbagecharles"]["adjustment"]) == 8.0 and float(after["hoppergrace"]["adjustment"]) == 5.0
    assert float(after["babbagecharles"]["late_penalty"]) == pytest.approx(
        0.2 * (float(after["babbagecharles"]["auto"]) + 8), abs=0.01)
    assert (semester.out / "overrides.csv").read_text() == OVERRIDES  # the grader never writes the staff's file


def test_canvas_csv_follows_the_importer_rules_and_round_trips_with_the_roster(semester: Semester) -> None:
    rows = list(csv.reader(semester.canvas.open(newline="", encoding="utf-8")))
    header = rows[0]
    assert header[0] == "Student" and header[1] == "ID" and header[4] == "Section"
    assert header == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Assignment 5 (12345)"]
    assert rows[1][0].strip() == "Points Possible" and rows[1][5] == "65"
    by_id = {r[1]: r for r in rows[2:]}
    roster = {r[1]: r[:5] for r in csv.reader(ROSTER.splitlines()) if r[1].isdigit()}
    assert {i: r[:5] for i, r in by_id.items()} == roster  # names, SIS ids and sections are the roster's
    assert by_id["1005"][5] == ""  # submitted nothing: blank, never 0
    assert float(by_id["1002"][5]) == float(semester.regraded["babbagecharles"]["final"])
    assert float(by_id["1003"][5]) == float(semester.regraded["hoppergrace"]["final"])


def test_a_student_missing_from_the_roster_is_reported(semester: Semester) -> None:
    assert semester.unmatched == (("nobody", f"Canvas user id 1099 is not in the roster "
                                              f"{semester.canvas.parent / 'gradebook.csv'}"),)
    assert "NOT exported: nobody" in semester.export_stderr


def test_release_names_pages_by_canvas_id_with_a_manifest(semester: Semester) -> None:
    manifest = list(csv.DictReader((semester.released / "manifest.csv").open(newline="", encoding="utf-8")))
    assert {r["file"]: r["student"] for r in manifest} == {
        "1001.html": "lovelaceada", "1002.html": "babbagecharles", "1003.html": "hoppergrace", "1099.html": "nobody"}
    page = (semester.released / "1002.html").read_text()
    assert "Only the tent width is off by one" in page and "20 % of the score" in page
    assert "<script" not in page and 'src="http' not in page


@pytest.mark.browser
def test_released_pages_in_chromium_show_comments_and_penalty_and_nothing_hidden(
        semester: Semester, tmp_path: Path) -> None:
    from test_browser import CHROMIUM, Chromium, problems

    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent: run .ci/browser-setup.sh")
    hidden = {c.message for r in semester.results.values() for c in r.checks
              if c.visibility == "hidden" and c.message}
    assert hidden  # the test rubric's hidden check said something to hide
    browser = Chromium(tmp_path / "profile")
    try:
        texts = {}
        for name in ("1002.html", "1003.html"):
            browser.open((semester.released / name).as_uri())
            texts[name] = browser.evaluate("document.body.innerText")
            assert problems(browser.events) == []
    finally:
        browser.close()
    assert "Only the tent width is off by one: most of the credit" in texts["1002.html"]
    assert "20 % of the score" in texts["1002.html"] and "TA Kim" in texts["1002.html"]
    assert "padding is right in the notebook you submitted" in texts["1003.html"]
    assert "on time" in texts["1003.html"]  # the extension: not late
    for text in texts.values():
        assert "Transpose convolution (more cases)" in text  # the hidden check: its name and score ...
        assert not any(message in text for message in hidden)  # ... never its message


GRADESCOPE_YML = """\
submission_71:
  :submitters:
  - :name: Ada Lovelace
    :sid: 'S-111'
    :email: Ada@uni.edu
  :created_at: 2026-12-03 10:00:00.123456789 -05:00
submission_72:
  :submitters:
  - :name: Grace Hopper
    :sid: 'S-222'
    :email: grace@uni.edu
  :created_at: 2026-12-01 22:00:00.000000000 -05:00
"""


def test_gradescope_created_at_makes_a_submission_late_and_the_email_export_matches(
        tmp_path: Path, cache_dir: Path) -> None:
    export, out = tmp_path / "export", tmp_path / "out"
    export.mkdir()
    (export / "submission_metadata.yml").write_text(GRADESCOPE_YML)
    for folder in ("submission_71", "submission_72"):
        shutil.copytree(materialize("passes_all", tmp_path / folder), export / folder)
    rubric = rubric_file(tmp_path / "rubric.yaml", bilinear_points=10)
    api.grade([export], rubric=rubric, out_dir=out, cache_dir=cache_dir, jobs=2)
    rows = grades(out)
    assert rows["S-111"]["late_penalty"] == "11" and rows["S-111"]["final"] == "44"  # 2 started days: 20 % of 55
    assert rows["S-222"]["late_penalty"] == "0" and rows["S-222"]["final"] == "55"
    (tmp_path / "roster.csv").write_text("Name,Email,SID\nAda Lovelace,ada@uni.edu,S-111\n"
                                         "Grace Hopper,grace@uni.edu,S-222\nAlan Turing,alan@uni.edu,S-333\n")
    assert main(["export", "generic", str(out), "--key", "email", "--roster", str(tmp_path / "roster.csv")]) == 0
    exported = list(csv.reader((out / "grades_email.csv").open(newline="", encoding="utf-8")))
    assert exported == [["Name", "Email", "SID", "Score", "Max Points"], ["Ada Lovelace", "ada@uni.edu", "S-111", "44", "55"],
                        ["Grace Hopper", "grace@uni.edu", "S-222", "55", "55"], ["Alan Turing", "alan@uni.edu", "S-333", "", "55"]]
    manifest = api.release(out, out=tmp_path / "released")
    assert sorted(p.name for p in manifest.folder.glob("*.html")) == ["S-111.html", "S-222.html"]  # by SID
