"""Per-student reports and the class summary: what they show, what they withhold, and that they are safe."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grader.report import render_all, render_class_summary, render_student_report
from grader.report.artifacts import load_overfit, load_train_eval
from grader.core.results import write_result
from report_samples import (
    BROKEN, ERROR, FAILING_UNIT, INFRA, PASSING, SECRET_AFTER_DUE, SECRET_HIDDEN, SECRET_HIDDEN_DETAIL,
    STUDENTS, TIMEOUT, UNGRADABLE, XSS, build_samples, sample_result,
)

ESCAPED_XSS = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = build_samples(tmp_path_factory.mktemp("before"))
    return out, render_all(out, released=False)


@pytest.fixture(scope="module")
def before(rendered: tuple[Path, list[Path]]) -> Path:
    return rendered[0]


@pytest.fixture(scope="module")
def after(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = build_samples(tmp_path_factory.mktemp("after"))
    render_all(out, released=True)
    return out


def page(out: Path, student: str) -> str:
    return (out / student / "report.html").read_text(encoding="utf-8")


def all_pages(out: Path) -> dict[str, str]:
    pages = {s: page(out, s) for s in STUDENTS}
    pages["index"] = (out / "index.html").read_text(encoding="utf-8")
    return pages


def test_render_all_writes_every_readable_student_and_the_summary(rendered: tuple[Path, list[Path]]) -> None:
    out, written = rendered
    assert written[-1] == out / "index.html"
    assert sorted(p.parent.name for p in written[:-1]) == sorted(STUDENTS)
    assert not (out / BROKEN / "report.html").exists()


def test_status_texts_are_shown(before: Path) -> None:
    assert "failed" in page(before, FAILING_UNIT) and "passed" in page(before, FAILING_UNIT)
    carol = page(before, ERROR)
    assert '<span class="pill error">error</span>' in carol
    assert re.search(r"<pre>Traceback \(most recent call last\):.*RuntimeError: Expected target size", carol, re.S)
    assert "timed out" not in page(before, TIMEOUT)  # the training check is after_due_date: withheld


def test_timeout_and_error_show_their_trimmed_traceback_after_release(after: Path) -> None:
    dave = page(after, TIMEOUT)
    assert "timed out" in dave
    assert "<pre>Stage &#34;train&#34; killed after 120 s" in dave
    assert "Skipped: the overfit stage failed." in page(after, ERROR)


def test_ungradable_and_infrastructure_error_get_a_prominent_box_with_what_to_do(before: Path) -> None:
    erin = page(before, UNGRADABLE)
    assert 'class="banner ungradable" role="alert"' in erin
    assert "SyntaxError: invalid syntax (segnet.py, line 12)" in erin and "resubmit" in erin
    frank = page(before, INFRA)
    assert 'class="banner infrastructure_error"' in frank
    assert "Docker Engine not reachable" in frank and "not your fault" in frank and "regrade" in frank


def test_withheld_checks_show_only_their_name_before_release(before: Path) -> None:
    bob = page(before, FAILING_UNIT)
    for secret in (SECRET_HIDDEN, SECRET_HIDDEN_DETAIL, SECRET_AFTER_DUE, "12 / 30", "4 / 10", "nan-mean"):
        assert secret not in bob
    assert "Full training (mIoU)" in bob and "Metrics on hidden edge cases" in bob
    assert bob.count("graded after the deadline") >= 4  # two pills + two messages
    assert "IoU per class" not in bob and "worst evaluation" not in bob  # no after-due-date details at all
    assert "45 <small>/ 60 points" in bob and "40 more points are graded after the deadline" in bob


def test_after_release_due_date_checks_show_everything_and_hidden_ones_name_and_score(after: Path) -> None:
    bob = page(after, FAILING_UNIT)
    assert SECRET_AFTER_DUE in bob and "12 / 30" in bob and "Confusion matrix" in bob
    assert "4 / 10" in bob and "Metrics on hidden edge cases" in bob
    assert SECRET_HIDDEN not in bob and SECRET_HIDDEN_DETAIL not in bob and "nan-mean" not in bob
    assert "61 <small>/ 100 points" in bob and "graded after the deadline" not in bob


def test_failing_unit_check_shows_the_smallest_case_and_the_hint(before: Path) -> None:
    bob = page(before, FAILING_UNIT)
    for text in ("stride2_pad1_outpad1", "output_padding", "[2, 3, 4, 4]", "0.8125", "tensor shape (1, 3, 6, 6)",
                 "tensor shape (1, 3, 5, 5)", "check the crop", "7 of 24 cases differ"):
        assert text in bob
    assert "cases failed" not in bob  # the count is said once per place (the table and the section's message)


@pytest.mark.parametrize("which", ["before", "after"])
def test_script_in_a_message_is_escaped_never_raw(which: str, request: pytest.FixtureRequest) -> None:
    pages = all_pages(request.getfixturevalue(which))
    assert ESCAPED_XSS in pages[FAILING_UNIT]
    for name, html in pages.items():
        assert XSS not in html, name
        assert html.count("<script") == (1 if name == "index" else 0), name  # only the summary's own sort


@pytest.mark.parametrize("which", ["before", "after"])
def test_pages_are_self_contained(which: str, request: pytest.FixtureRequest) -> None:
    for name, html in all_pages(request.getfixturevalue(which)).items():
        assert 'src="http' not in html and 'href="http' not in html and "url(http" not in html, name
        assert "<link rel=\"stylesheet\"" not in html and "<style>" in html, name
        for src in re.findall(r'<img[^>]*\ssrc="([^"]*)"', html):
            assert src.startswith("data:image/png;base64,"), name
            Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()


def test_overfit_and_training_figures_are_embedded(before: Path, after: Path) -> None:
    images = lambda html: len(re.findall(r"<img ", html))  # noqa: E731 -- a one-line counter
    assert images(page(before, PASSING)) == 2  # overfit: loss curve, image | GT | prediction
    assert images(page(after, PASSING)) == 2 + 4  # + training loss, confusion, 3 worst, 3 best
    assert "void (255" not in page(after, PASSING)  # the legend is inside the PNG, not the HTML
    assert "IoU per class" in page(after, PASSING) and "absent" in page(after, PASSING)
    assert "The 3 worst evaluation images" in page(after, PASSING)


def test_what_ran_lists_durations_device_versions_seeds_and_isolation(before: Path) -> None:
    alice = page(before, PASSING)
    for text in ("What ran", "overfit", "14.5 s", "19.6 s", "cpu", "2.14.1", "3.11.2", "unshare(net)", "Seeds"):
        assert text in alice
    assert "61.0 s" not in alice  # full training's stage: after the due date (test_hidden_cases.py)


def test_summary_lists_problems_first_and_links_reports_relatively(before: Path) -> None:
    index = (before / "index.html").read_text(encoding="utf-8")
    problems, students = index.index('id="problems"'), index.index('id="students"')
    for student in (INFRA, BROKEN, UNGRADABLE):
        assert problems < index.index(student) < students
    assert "JSONDecodeError" in index and "Docker Engine not reachable" in index
    assert f'href="{PASSING}/report.html"' in index and 'href="/' not in index
    assert "Pass rate per check" in index and "Metrics on hidden edge cases" in index
    assert index.count('data-type="number"') == 3  # score, %, mIoU sort numerically
    assert 'data-sort="0.912"' in index


def test_one_broken_folder_does_not_stop_the_others(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_result(out / INFRA, sample_result(INFRA))
    (out / BROKEN).mkdir()
    (out / BROKEN / "result.json").write_text('{"schema": 1, "student": 3}')  # JSON, but not a result
    odd = sample_result(PASSING)
    checks = tuple(replace(c, details={"losses": "not a list", "loss_bound": "x"}) if c.id == "overfit" else c
                   for c in odd.checks)
    write_result(out / "odd_details", replace(odd, student="odd_details", checks=checks))
    (out / "summary.json").write_text(json.dumps({"schema": 1, "students": ["ghost", "odd_details"]}))
    written = render_all(out)
    assert (out / "odd_details" / "report.html") in written
    assert "details not drawn" in page(out, "odd_details")
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "ghost" in index and "result.json is missing" in index
    assert BROKEN in index and INFRA in index and "ValueError" in index  # read_result: malformed -> ValueError


def test_render_student_report_raises_on_a_missing_result(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        render_student_report(tmp_path)


def test_summary_of_an_empty_folder_still_renders(tmp_path: Path) -> None:
    html = render_class_summary(tmp_path).read_text(encoding="utf-8")
    assert "Every submission was graded." in html and "No graded submission yet." in html


def test_malformed_artifacts_are_ignored_not_unpickled(tmp_path: Path) -> None:
    folder = tmp_path / "artifacts"
    folder.mkdir()
    np.savez(folder / "overfit.npz", image=np.array([object()], dtype=object), target=np.zeros((4, 4), np.uint8),
             pred=np.zeros((4, 4), np.uint8))
    np.savez(folder / "train_eval.npz", images=np.zeros((2, 3, 4, 4), np.float32))  # wrong dtype, missing keys
    assert load_overfit(folder / "overfit.npz") is None and load_train_eval(folder / "train_eval.npz") is None
    (folder / "overfit.npz").write_bytes(b"not a zip")
    assert load_overfit(folder / "overfit.npz") is None


def test_only_changed_skips_reports_whose_inputs_did_not_change(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for student in (PASSING, INFRA):
        write_result(out / student, sample_result(student))
    assert len(render_all(out, only_changed=True)) == 3  # two reports and the summary
    summary_written = (out / "index.html").stat().st_mtime_ns
    assert render_all(out, only_changed=True) == []  # nothing changed: nothing drawn, not even the summary
    assert (out / "index.html").stat().st_mtime_ns == summary_written
    write_result(out / INFRA, replace(sample_result(INFRA), message="regraded"))
    assert render_all(out, only_changed=True) == [out / INFRA / "report.html", out / "index.html"]
    assert len(render_all(out, released=True, only_changed=True)) == 3  # the release flag changes every page
    (out / "summary.json").write_text('{"students": []}')  # what grade_all writes: the summary is redrawn
    assert render_all(out, released=True, only_changed=True) == [out / "index.html"]


def test_a_change_of_the_renderer_redraws_every_page_of_an_unchanged_class(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A grader upgrade that changes a template must not leave old pages behind a regrade that skips every
    submission: the renderer's source is one of each page's inputs."""
    from grader.report import folder

    copy = tmp_path / "report-package"
    shutil.copytree(Path(folder.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = folder.renderer_digest.__wrapped__(copy)
    assert before == folder.renderer_digest.__wrapped__(copy) == folder.renderer_digest()
    template = copy / "templates" / "checks.html.j2"
    template.write_text(template.read_text() + "\n")
    assert folder.renderer_digest.__wrapped__(copy) != before
    out = tmp_path / "out"
    for student in (PASSING, INFRA):
        write_result(out / student, sample_result(student))
    render_all(out, only_changed=True)
    assert render_all(out, only_changed=True) == []
    changed = folder.renderer_digest.__wrapped__(copy)
    monkeypatch.setattr(folder, "renderer_digest", lambda: changed)
    assert len(render_all(out, only_changed=True)) == 3  # both reports and the summary
