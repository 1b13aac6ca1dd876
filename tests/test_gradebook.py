"""The semester's layers on their own: overrides, the late policy, final grades, Canvas and generic exports.

Results are written as result.json files under tmp_path (no grading); tests/test_semester.py grades a class.
"""
from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grader.batch.scoring import final_grade
from grader.checks.base import RubricError
from grader.cli import main
from grader.core.results import CheckResult, SubmissionResult, write_result
from grader.gradebook.book import Layers, load_gradebook, save_policy
from grader.gradebook.canvas import POINTS_POSSIBLE, write_canvas
from grader.gradebook.csvfile import GradebookError
from grader.gradebook.generic import write_generic
from grader.gradebook.late import LatePolicy, lateness, parse_moment
from grader.gradebook.overrides import read_overrides
from grader.gradebook.release import file_name

UTC = timezone.utc
CHECKS = (("transpose_conv", 15.0), ("bilinear_kernel", 10.0), ("full_training", 20.0))


def result(student: str, scores: tuple[float, ...] = (15.0, 5.0, 10.0), *, status: str = "graded",
           **provenance: object) -> SubmissionResult:
    checks = tuple(CheckResult(cid, cid.replace("_", " "), s, top, "passed" if s == top else "failed", "visible", "")
                   for (cid, top), s in zip(CHECKS, scores))
    total = sum(scores) if status == "graded" else 0.0
    return SubmissionResult(student, status, total, 45.0, checks, provenance=dict(provenance))


def write_class(out: Path, *results: SubmissionResult) -> Path:
    for r in results:
        write_result(out / r.student, r)
    return out


def canvas_result(student: str, uid: str, scores: tuple[float, ...] = (15.0, 5.0, 10.0), **extra: object):
    return result(student, scores, source=f"download/{student}_{uid}_5501_segmentation.py", lms_id=uid, **extra)


def policy(**kw: object) -> LatePolicy:
    return LatePolicy(**{"due": "2026-12-01T23:59:00-05:00", "penalty_percent": 10.0, **kw})


# ------------------------------------------------------------------------------------------- overrides
def test_overrides_apply_on_top_of_the_autograded_score(tmp_path: Path) -> None:
    out = write_class(tmp_path, result("ada"), result("ben", (0.0, 10.0, 20.0)))
    (out / "overrides.csv").write_text(
        "student,check,points,adjust,comment,by\n"
        "ada,transpose_conv,,-5,Used conv_transpose2d in a helper,TA Kim\n"
        "ada,bilinear_kernel,10,,Regrade request: the kernel is right,TA Kim\n"
        "ben,total,,+50,Bonus beyond the maximum is capped,Prof\n")
    book = load_gradebook(out)
    ada, ben = book.grades["ada"], book.grades["ben"]
    assert (ada.auto, ada.adjustment, ada.late_penalty, ada.final) == (30.0, 0.0, 0.0, 30.0)  # -5 +5
    assert [(a.check, a.auto, a.after, a.comment) for a in ada.adjustments] == [
        ("transpose_conv", 15.0, 10.0, "Used conv_transpose2d in a helper"),
        ("bilinear_kernel", 5.0, 10.0, "Regrade request: the kernel is right")]
    assert (ben.auto, ben.adjustment, ben.final) == (30.0, 15.0, 45.0)  # an adjust is capped at the maximum
    assert book.results["ada"].score == 30.0  # the result itself is never changed


@pytest.mark.parametrize(("row", "says"), [
    ("zed,transpose_conv,3,,,", "line 2: unknown student 'zed'"),
    ("ada,no_such_check,3,,,", "line 2: unknown check 'no_such_check'"),
    ("ada,transpose_conv,16,,,", "line 2: points 16 is outside 0..15"),
    ("ada,total,46,,,", "line 2: points 46 is outside 0..45"),
    ("ada,transpose_conv,3,1,,", "line 2: give points (a new score) or adjust"),
    ("ada,transpose_conv,,,,", "line 2: give points (a new score) or adjust"),
    ("ada,transpose_conv,three,,,", "line 2: points 'three' is not a number"),
    ("ada,transpose_conv,nan,,,", "line 2: points 'nan' is not a finite number"),
    ("ada,transpose_conv,3,,,\nada,transpose_conv,,1,,", "line 3: ada / transpose_conv is already overridden on line 2"),
])
def test_a_bad_override_is_an_error_naming_its_line(tmp_path: Path, row: str, says: str) -> None:
    out = write_class(tmp_path, result("ada"))
    (out / "overrides.csv").write_text("student,check,points,adjust,comment,by\n" + row + "\n")
    with pytest.raises(GradebookError, match=says.replace("(", r"\(").replace(")", r"\)")):
        load_gradebook(out)


def test_a_bad_overrides_file_makes_grader_report_exit_2_naming_the_line(tmp_path: Path, capsys) -> None:
    out = write_class(tmp_path, result("ada"))
    (out / "overrides.csv").write_text("student,check,points\nada,transpose_conv,99\n")
    assert main(["report", str(out)]) == 2
    assert "overrides.csv: line 2: points 99 is outside 0..15" in capsys.readouterr().err
    assert not (out / "grades.csv").exists()  # refused before anything was drawn


def test_overrides_file_header_is_checked_and_excel_bom_accepted(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text("student,check,score\nada,total,3\n")
    with pytest.raises(GradebookError, match="line 1: unknown column"):
        read_overrides(path)
    path.write_bytes("\ufeffStudent,Check,Points\r\nada,total,3\r\n\r\n".encode())
    assert [(o.student, o.check, o.points) for o in read_overrides(path)] == [("ada", "total", 3.0)]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_any_overrides_file_is_read_or_refused_with_a_gradebook_error(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overrides.csv"
        path.write_bytes(b"student,check,points,adjust,comment,by\n" + data)
        try:
            rows = read_overrides(path)
        except GradebookError as exc:
            assert str(path) in str(exc)
        else:
            assert all((o.points is None) != (o.adjust is None) for o in rows)


def test_infrastructure_error_has_no_grade_and_ungradable_can_be_graded_by_hand(tmp_path: Path) -> None:
    out = write_class(tmp_path, result("ada", status="infrastructure_error"), result("ben", status="ungradable"))
    (out / "overrides.csv").write_text("student,check,points,comment\nben,total,20,graded by hand\n")
    book = load_gradebook(out)
    assert (book.grades["ada"].auto, book.grades["ada"].final) == (None, None)
    assert (book.grades["ben"].auto, book.grades["ben"].final) == (0.0, 20.0)


# ------------------------------------------------------------------------------------------ late policy
NY = "America/New_York"


def at(text: str) -> datetime:
    return parse_moment(text, zone=None, where="test")


@pytest.mark.parametrize(("submitted", "percent"), [
    ("2026-12-01T23:59:00-05:00", 0.0),  # on the dot
    ("2026-12-02T00:09:00-05:00", 0.0),  # within 15 minutes' grace
    ("2026-12-02T00:20:00-05:00", 10.0),  # a started day counts whole
    ("2026-12-03T00:00:00-05:00", 20.0),
    ("2026-12-30T00:00:00-05:00", 50.0),  # capped
])
def test_penalty_per_started_day_with_grace_and_cap(submitted: str, percent: float) -> None:
    late = lateness(policy(grace_minutes=15, max_penalty_percent=50), at(submitted))
    assert late.percent == percent and late.late == (percent > 0)


def test_per_hour_penalty_hard_deadline_and_extension() -> None:
    rule = policy(per="hour", penalty_percent=5, hard_deadline="2026-12-03T23:59:00-05:00")
    assert lateness(rule, at("2026-12-02T01:30:00-05:00")).percent == 10.0  # 1.5 h: two started hours
    assert lateness(rule, at("2026-12-04T00:00:00-05:00")).percent == 100.0  # after the hard deadline
    extended = at("2026-12-04T23:59:00-05:00")
    on_time = lateness(rule, at("2026-12-04T00:00:00-05:00"), extension=extended)
    assert (on_time.percent, on_time.extended, on_time.due) == (0.0, True, "2026-12-04T23:59-05:00")
    # the extension moved the hard deadline by the same three days
    moved = lateness(rule, at("2026-12-07T00:00:00-05:00"), extension=extended)
    assert moved.percent == 100.0 and "hard deadline 2026-12-06T23:59-05:00" in moved.note
    assert lateness(rule, at("2026-12-05T01:00:00-05:00"), extension=extended).percent == 10.0


def test_no_submission_time_is_never_late_and_says_so() -> None:
    late = lateness(policy(), None, lms_late=True)
    assert late.percent == 0.0 and not late.late
    assert "No submission time is known" in late.note and "submission_times.csv" in late.note


def test_due_date_in_a_named_zone_follows_daylight_saving() -> None:
    summer = LatePolicy(due="2026-07-01 23:59", timezone=NY)
    winter = LatePolicy(due="2026-12-01 23:59", timezone=NY)
    assert summer.due.utcoffset() == timedelta(hours=-4) and winter.due.utcoffset() == timedelta(hours=-5)


def test_gradescope_created_at_with_nanoseconds_and_spaced_zone_is_read() -> None:
    when = at("2026-12-02 09:30:00.123456789 -0800")
    assert when == datetime(2026, 12, 2, 17, 30, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(("late", "says"), [
    ({"due": "2026-12-01 23:59"}, "late.due: .* has no time zone"),
    ({"due": "soon"}, "late.due: 'soon' is not a date"),
    ({"due": "2026-12-01T23:59Z", "timezone": "Mars/Olympus"}, "late.timezone: 'Mars/Olympus' is not a time zone"),
    ({"due": "2026-12-01T23:59Z", "penalty_percent": 120.0}, "late.penalty_percent"),
    ({"due": "2026-12-01T23:59Z", "hard_deadline": "2026-11-01T00:00Z"}, "late.hard_deadline: is before"),
])
def test_a_bad_late_policy_is_a_rubric_error_naming_the_key(late: dict, says: str) -> None:
    with pytest.raises(RubricError, match=says):
        LatePolicy(**late)


def test_the_penalty_is_a_share_of_the_score_after_overrides_and_never_changes_auto(tmp_path: Path) -> None:
    out = write_class(tmp_path, result("ada", submitted_at="2026-12-03T12:00:00-05:00"), result("ben"))
    save_policy(out, policy())
    (out / "overrides.csv").write_text("student,check,adjust,comment\nada,total,10,\n")
    (out / "extensions.csv").write_text("student,due\nada,2026-12-02T23:59:00-05:00\n")
    ada = load_gradebook(out).grades["ada"]
    assert (ada.auto, ada.adjustment, ada.late_penalty, ada.final) == (30.0, 10.0, 4.0, 36.0)  # 1 day: 10 % of 40
    ben = load_gradebook(out).grades["ben"]
    assert ben.late_penalty == 0.0 and "No submission time" in ben.late.note


def test_submission_times_csv_and_unknown_students_in_it(tmp_path: Path) -> None:
    out = write_class(tmp_path, canvas_result("smithada", "1001"))
    save_policy(out, policy(timezone=NY))
    (out / "submission_times.csv").write_text("student,submitted_at\n1001,2026-12-02 10:00\n")  # by Canvas id
    assert load_gradebook(out).grades["smithada"].late_penalty == 3.0
    (out / "submission_times.csv").write_text("student,submitted_at\nnobody,2026-12-02 10:00\n")
    with pytest.raises(GradebookError, match="submission_times.csv: line 2: unknown student 'nobody'"):
        load_gradebook(out)


# --------------------------------------------------------------------------------------------- Canvas
def read(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


ROSTER = ('Student,ID,SIS User ID,SIS Login ID,Section,Assignment 4 (12344),Current Score,Final Score\n'
          '    Points Possible,,,,,10,(read only),(read only)\n'
          '"Smith, Ada",1001,S1,asmith,Sec A,9,90,90\n'
          '"Jones, Ben",1002,S2,bjones,Sec B,8,80,80\n'
          '"Lee, Cy",1003,S3,clee,Sec A,,0,0\n')


def test_canvas_csv_follows_the_importer_rules_and_round_trips_with_the_roster(tmp_path: Path) -> None:
    out = write_class(tmp_path / "out", canvas_result("smithada", "1001"),
                      canvas_result("jonesben", "1002", (0.0, 0.0, 0.0)), canvas_result("ghost", "9999"),
                      result("plainfolder"))
    roster = tmp_path / "gradebook.csv"
    roster.write_text(ROSTER)
    done = write_canvas(load_gradebook(out), assignment="Assignment 5 (12345)", out=tmp_path / "c.csv", roster=roster)
    rows = read(done.path)
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Assignment 5 (12345)"]
    assert rows[0][:2] == ["Student", "ID"] and rows[0][4] == "Section"  # the last identity column
    assert rows[1] == [POINTS_POSSIBLE, "", "", "", "", "45"]
    assert rows[2:] == [["Smith, Ada", "1001", "S1", "asmith", "Sec A", "30"],
                        ["Jones, Ben", "1002", "S2", "bjones", "Sec B", "0"],
                        ["Lee, Cy", "1003", "S3", "clee", "Sec A", ""]]  # submitted nothing: blank, never 0
    assert not any("Score" in h for h in rows[0])  # no totals
    # round trip: the identity cells are the roster's, student for student
    roster_rows = {r[1]: r[:5] for r in read(roster)[2:]}
    assert {r[1]: r[:5] for r in rows[2:]} == roster_rows
    assert dict(done.unmatched) == {"ghost": "Canvas user id 9999 is not in the roster " + str(roster),
                                    "plainfolder": "no Canvas user id (not graded from a Canvas bulk download)"}
    assert {r[0] for r in read(done.unmatched_path)[1:]} == {"ghost", "plainfolder"}


def test_canvas_missing_zero_and_bad_assignment_title(tmp_path: Path) -> None:
    out = write_class(tmp_path / "out", canvas_result("smithada", "1001"))
    (tmp_path / "r.csv").write_text(ROSTER)
    done = write_canvas(load_gradebook(out), assignment="A5 (7)", out=tmp_path / "c.csv", roster=tmp_path / "r.csv",
                        missing="zero", points_possible=False)
    assert [r[5] for r in read(done.path)] == ["A5 (7)", "30", "0", "0"]
    with pytest.raises(GradebookError, match=r'"Title \(id\)"'):
        write_canvas(load_gradebook(out), assignment="Assignment 5", out=tmp_path / "x.csv")


def test_cli_export_canvas_lists_unmatched_on_stderr(tmp_path: Path, capsys) -> None:
    out = write_class(tmp_path / "out", canvas_result("smithada", "1001"), result("=cmd|x"))
    assert main(["export", "canvas", str(out), "--assignment", "Assignment 5 (12345)"]) == 0
    captured = capsys.readouterr()
    assert "NOT exported: =cmd|x: no Canvas user id" in captured.err and "unmatched.csv" in captured.err
    rows = read(out / "canvas.csv")
    assert rows[2] == ["smithada", "1001", "", "", "", "30"]
    assert read(out / "canvas.unmatched.csv")[1][0] == "'=cmd|x"  # a formula is defused


def test_generic_export_keyed_by_email_with_a_roster(tmp_path: Path) -> None:
    out = write_class(tmp_path / "out", result("s1", lms_id="111", email="Ada@Uni.edu", source="gs/submission_1"),
                      result("s2", (1.0, 0.0, 0.0)))
    (tmp_path / "roster.csv").write_text("Name,Email,SID\nAda,ada@uni.edu,111\nBen,ben@uni.edu,222\n")
    done = write_generic(load_gradebook(out), key="email", out=tmp_path / "g.csv", roster=tmp_path / "roster.csv")
    assert read(done.path) == [["Name", "Email", "SID", "Score", "Max Points"], ["Ada", "ada@uni.edu", "111", "30", "45"],
                               ["Ben", "ben@uni.edu", "222", "", "45"]]
    assert [s for s, _ in done.unmatched] == ["s2"]


def test_release_file_names_are_plain_ids_or_hashed(tmp_path: Path) -> None:
    assert file_name("1001") == "1001.html" and file_name("ada@uni.edu") == "ada@uni.edu.html"
    odd = file_name("../../etc/passwd")
    assert "/" not in odd and odd.endswith(".html") and odd != file_name("..__etc_passwd")


def test_layers_given_elsewhere_than_the_output_folder(tmp_path: Path) -> None:
    out = write_class(tmp_path / "out", result("ada"))
    staff = tmp_path / "staff.csv"
    staff.write_text("student,check,points,comment\nada,total,1,\n")
    assert load_gradebook(out, layers=Layers(overrides=staff)).grades["ada"].final == 1.0
    with pytest.raises(GradebookError, match="no such file"):
        load_gradebook(out, layers=Layers(overrides=tmp_path / "missing.csv"))


def test_final_grade_without_layers_is_the_autograded_score() -> None:
    grade = final_grade(result("ada"))
    assert (grade.auto, grade.adjustment, grade.late_penalty, grade.final) == (30.0, 0.0, 0.0, 30.0)


def test_the_report_shows_adjustments_under_the_visibility_policy(tmp_path: Path) -> None:
    from dataclasses import replace

    from grader import api

    base = result("ada", submitted_at="2026-12-02T12:00:00-05:00")
    checks = (base.checks[0], replace(base.checks[1], visibility="hidden"), base.checks[2])
    out = write_class(tmp_path, replace(base, checks=checks))
    save_policy(out, policy())
    (out / "overrides.csv").write_text("student,check,adjust,comment\nada,transpose_conv,-1,VISIBLE-NOTE\n"
                                       "ada,bilinear_kernel,+2,HIDDEN-NOTE\n")
    api.report(out)
    before = (out / "ada" / "report.html").read_text()
    assert "VISIBLE-NOTE" in before and "HIDDEN-NOTE" not in before
    assert "10 % of the score" in before and "shown when all results are released" in before
    assert "final</th>" not in before  # the final score is derived from the withheld check
    api.report(out, released=True)
    after = (out / "ada" / "report.html").read_text()
    assert "VISIBLE-NOTE" in after and "HIDDEN-NOTE" in after and "final</th>" in after
    (out / "overrides.csv").unlink()
    save_policy(out, None)
    api.report(out, released=True)  # no layer left: no grade.json, no Grade card
    assert not (out / "ada" / "grade.json").exists()
    assert 'class="card grade"' not in (out / "ada" / "report.html").read_text()


def test_a_grader_fault_is_exported_blank_and_named(tmp_path: Path, capsys) -> None:
    out = write_class(tmp_path / "out", canvas_result("smithada", "1001", status="infrastructure_error"))
    assert main(["export", "canvas", str(out), "--assignment", "A (1)"]) == 0
    assert "smithada: left blank, no grade yet" in capsys.readouterr().err
    assert read(out / "canvas.csv")[2] == ["smithada", "1001", "", "", "", ""]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.sampled_from([None, "Europe/Berlin"]))
def test_any_time_text_is_an_aware_time_or_a_value_error_naming_where(text: str, zone: str | None) -> None:
    try:
        when = parse_moment(text, zone=zone, where="extensions.csv: line 7")
    except ValueError as exc:
        assert str(exc).startswith("extensions.csv: line 7")
    else:
        assert when.tzinfo is not None and when.utcoffset() is not None


def test_report_with_a_rubric_records_its_late_policy_and_one_without_removes_it(tmp_path: Path) -> None:
    small = Path(__file__).parent / "rubric_small.yaml"
    out = write_class(tmp_path / "out", result("ada", submitted_at="2026-12-02T12:00:00Z"))
    late = tmp_path / "late.yaml"
    late.write_text(small.read_text() + "late: {due: '2026-12-01T23:59:00Z', penalty_percent: 25}\n")
    assert main(["report", str(out), "--rubric", str(late)]) == 0
    assert (out / "late_policy.json").exists() and load_gradebook(out).grades["ada"].late_penalty == 7.5
    assert main(["report", str(out)]) == 0 and load_gradebook(out).grades["ada"].late_penalty == 7.5  # recorded
    assert main(["report", str(out), "--rubric", str(small)]) == 0
    assert not (out / "late_policy.json").exists() and load_gradebook(out).grades["ada"].late_penalty == 0.0


def test_a_date_alone_means_the_end_of_that_day() -> None:
    assert parse_moment("2026-12-04", zone="UTC", where="x") == datetime(2026, 12, 4, 23, 59, 59, tzinfo=UTC)


def test_canvas_late_flag_without_a_time_is_not_penalised_but_said(tmp_path: Path) -> None:
    out = write_class(tmp_path, canvas_result("smithada", "1001", intake_notes=["Canvas marked this submission late"]))
    save_policy(out, policy())
    late = load_gradebook(out).grades["smithada"].late
    assert late.percent == 0.0 and "The LMS marked it late" in late.note


def test_the_class_index_shows_the_final_score_beside_the_autograded_one(tmp_path: Path) -> None:
    """The staff's index: a `final` column (after overrides and the late policy) once any layer applies; a folder
    without staff files keeps the page as it was."""
    out = write_class(tmp_path, result("ada"), result("ben", (0.0, 10.0, 20.0)))
    assert main(["report", str(out)]) == 0
    assert ">final<" not in (out / "index.html").read_text()
    (out / "overrides.csv").write_text("student,check,points,adjust,comment,by\n"
                                       "ben,total,,+7.5,Regrade,TA Kim\n")
    assert main(["report", str(out)]) == 0
    page = (out / "index.html").read_text()
    table = page.split('id="students"', 1)[1].split("</table>", 1)[0]
    rows = {r.split('data-sort="', 1)[1].split('"', 1)[0]: r for r in table.split("<tr>")[2:]}
    assert ">final<" in table and "30 / 45 *" not in rows["ada"] and "30 / 45</td>" in rows["ada"]
    assert "37.5 / 45 *" in rows["ben"] and 'data-sort="37.5"' in rows["ben"]


def test_grader_grade_takes_the_staff_files_as_report_does(tmp_path: Path, capsys) -> None:
    """`grader grade --overrides F` applies F to grades.csv and the pages of the batch it just graded; a file that
    is not there is said before any grading."""
    from venvs import UNIT_RUBRIC

    rubric = tmp_path / "rubric.yaml"
    rubric.write_text(UNIT_RUBRIC)
    for student in ("ada", "ben"):  # a class: a folder of per-student folders
        (tmp_path / "class" / student).mkdir(parents=True)
        (tmp_path / "class" / student / "segmentation.py").write_text("def bilinear_kernel(factor):\n    return None\n")
    out = tmp_path / "out"
    assert main(["grade", str(tmp_path / "class"), "--out", str(out), "--rubric", str(rubric),
                 "--overrides", str(tmp_path / "nowhere.csv")]) == 2
    assert "no such file: --overrides" in capsys.readouterr().err and not out.exists()
    staff = tmp_path / "staff-overrides.csv"
    staff.write_text("student,check,points,adjust,comment,by\nada,bilinear_kernel,1.5,,Partly right by hand,TA Kim\n")
    assert main(["grade", str(tmp_path / "class"), "--out", str(out), "--rubric", str(rubric),
                 "--overrides", str(staff)]) == 0
    with open(out / "grades.csv", newline="") as f:
        [row] = [r for r in csv.DictReader(f) if r["student"] == "ada"]
    assert (float(row["auto"]), float(row["final"])) == (0.0, 1.5)
    assert "Partly right by hand" in (out / "ada" / "report.html").read_text()
