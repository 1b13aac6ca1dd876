"""The fixture batch's own reports: every outcome renders, markup from student code stays text, and the pages
load cleanly in headless Chromium (screenshots kept as test artefacts)."""
from __future__ import annotations

from pathlib import Path

import pytest

from fixture_submissions import fixture_names

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rendered(local_batch) -> Path:
    from grader.report.export import write_grades_csv
    from grader.report import render_all

    out, _ = local_batch
    render_all(out, released=True)
    write_grades_csv(out)
    return out


def test_every_outcome_renders(rendered: Path, local_batch) -> None:
    _, results = local_batch
    seen = set()
    for name in fixture_names():
        html = (rendered / name / "report.html").read_text()
        assert name in html
        seen |= {c.status for c in results[name].checks} | {results[name].status}
    assert seen >= {"passed", "failed", "ungradable", "timeout", "error", "skipped"}
    assert "infinite_loop" in (rendered / "index.html").read_text()


def test_student_markup_is_escaped(rendered: Path) -> None:
    html = (rendered / "import_raises" / "report.html").read_text()
    assert "&lt;script&gt;alert(" in html
    assert "<script>alert(" not in html


def test_gradebook_has_every_fixture(rendered: Path) -> None:
    rows = (rendered / "grades.csv").read_text().splitlines()
    assert {r.split(",")[0] for r in rows[1:]} == set(fixture_names())


@pytest.mark.browser
@pytest.mark.parametrize("page", ["index.html", "passes_all/report.html", "infinite_loop/report.html",
                                  "syntax_error/report.html"])
def test_pages_load_cleanly_in_chromium(rendered: Path, tmp_path: Path, page: str) -> None:
    from test_browser import CHROMIUM, Chromium, _keep, problems

    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed (bash .ci/browser-setup.sh installs it)")
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open((rendered / page).as_uri())
        shot = browser.screenshot(tmp_path / f"fixture-{page.replace('/', '-')}.png")
        _keep(shot)
        assert problems(browser.events) == []
        assert browser.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    finally:
        browser.close()
