"""The static scan (issue 22): the submitted source of every recorder-bypass fixture is flagged for staff review,
honest code (the reference, zero insertion, the template, the example class) is not; any text is scanned without
an exception. A flag never changes a score."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixture_submissions import materialize
from grader.intake.scan import scan_folder, scan_source

REPO = Path(__file__).resolve().parent.parent
BYPASSES = {"fails_transpose_conv_aten_variant": "torch.ops", "fails_transpose_conv_other_thread": "threads",
            "fails_transpose_conv_modes_off": "switches torch's recording modes off",
            "fails_transpose_conv_precomputed_at_import": "frames",
            "fails_transpose_conv_getattr_builtin": "built from pieces in transpose_conv2d",
            "fails_transpose_conv_calls_builtin": "conv_transpose2d in transpose_conv2d",
            "fails_transpose_conv_builds_module": "ConvTranspose2d in transpose_conv2d"}
HONEST = ["passes_all", "passes_transpose_conv_zero_insertion", "template", "fails_transpose_conv_padding"]


@pytest.mark.parametrize("name", sorted(BYPASSES))
def test_every_bypass_fixture_is_flagged(tmp_path: Path, name: str) -> None:
    folder = materialize(name, tmp_path)
    found = scan_folder(folder)
    assert any(BYPASSES[name] in f.what for f in found), found
    assert all(f.file == "segmentation.py" and f.line > 0 for f in found)


@pytest.mark.parametrize("name", HONEST)
def test_honest_code_is_not_flagged(tmp_path: Path, name: str) -> None:
    assert scan_folder(materialize(name, tmp_path)) == []


def test_the_example_class_is_not_flagged() -> None:
    folders = [p for p in (REPO / "examples" / "submissions").iterdir() if p.is_dir()]
    assert folders and {p.name: scan_folder(p) for p in folders} == {p.name: [] for p in folders}


def test_segnet_may_use_the_builtins_only_transpose_conv2d_may_not() -> None:
    segnet = "import torch.nn as nn\nclass SegNet(nn.Module):\n    def __init__(self):\n" \
             "        self.up = nn.ConvTranspose2d(4, 4, 2)\n" \
             "def transpose_conv2d(x, w):\n    return helper(x, w)\n" \
             "def helper(x, w):\n    return x.new_zeros(1)\n"
    assert scan_source(segnet) == []
    sneaky = segnet.replace("return x.new_zeros(1)", "return torch.nn.functional.conv_transpose2d(x, w)")
    assert [f.what for f in scan_source(sneaky)] == ["conv_transpose2d in helper"]  # reached through a helper
    assert "reads /proc" in scan_source("import os\nfds = os.listdir('/proc/self/fd')\n")[0].what


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=2000))
def test_any_text_is_scanned_without_an_exception(text: str) -> None:
    assert isinstance(scan_source(text), list)


def test_sources_that_ast_refuses_are_scanned_as_text() -> None:
    assert scan_source("x = " + "(" * 200_000) == []  # too deep for the parser: text only, no exception
    assert [f.line for f in scan_source("def f(:\n  torch._C._foo()\n")] == [2]


def test_the_summary_page_flags_submissions_for_review_and_changes_no_score(tmp_path: Path) -> None:
    import dataclasses
    import json

    from report_samples import FAILING_UNIT, PASSING, TIMEOUT, build_samples, sample_result

    from grader.core.results import write_result
    from grader.report import render_class_summary

    out = build_samples(tmp_path / "graded")
    for student, fixture in ((PASSING, "fails_transpose_conv_modes_off"), (TIMEOUT, "passes_all")):
        (out / student / "code").mkdir()  # the staff copy of the code a batch keeps (similarity)
        source = materialize(fixture, tmp_path / "src" / student) / "segmentation.py"
        (out / student / "code" / "segmentation.py").write_text(source.read_text())
    result = sample_result(FAILING_UNIT)
    flagged = tuple(dataclasses.replace(c, details={**c.details, "review": True,
                                                    "import_detected": ["aten:conv_transpose2d"]})
                    if c.id == "transpose_conv" else c for c in result.checks)
    write_result(out / FAILING_UNIT, dataclasses.replace(result, checks=flagged))
    scores = {s: json.loads((out / s / "result.json").read_text())["score"] for s in (PASSING, TIMEOUT, FAILING_UNIT)}
    html = render_class_summary(out).read_text(encoding="utf-8")
    review = html.split('id="review"', 1)[1].split("</section>", 1)[0]
    assert PASSING in review and "switches torch&#39;s recording modes off (segmentation.py:" in review
    assert FAILING_UNIT in review and "torch work while the module was imported (aten:conv_transpose2d)" in review
    assert TIMEOUT not in review  # the reference's code: nothing to look at
    assert scores == {s: json.loads((out / s / "result.json").read_text())["score"] for s in scores}
