"""The lecture's 2x2 (overfit / fully-trained net x the overfit example / an unseen image of the PUBLIC validation
split, each with its ground truth): computed on the host from the label maps the sandbox returns, drawn on each
report under the visibility policy, class medians on index.html.

The real batch (conftest's ``local_batch``: the fixture class graded with tests/rubric_small.yaml) gives the
numbers; the pages are checked as HTML and in a real headless Chromium (tests/test_browser.py's client).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from grader.core.results import CheckResult, SubmissionResult, write_result
from grader.report import render_all
from grader.report.contrast import class_medians, contrast_view

CELLS = ("seen", "unseen")


def _check(cid: str, kind: str, visibility: str, seen: float, unseen: float) -> CheckResult:
    contrast = {c: {"pixel_accuracy": v, "miou": v / 2} for c, v in zip(CELLS, (seen, unseen))}
    return CheckResult(id=cid, name=cid, score=1.0, max_score=1.0, status="passed", visibility=visibility,
                       message="ok", details={"contrast": contrast}, kind=kind)


def _student(out: Path, name: str, trained_visibility: str = "after_due_date") -> Path:
    """A graded student with both checks' contrast numbers and the artefacts they draw (what the judges save)."""
    rng = np.random.default_rng(len(name))
    image = rng.integers(0, 255, (3, 16, 16), dtype=np.uint8)
    mask = rng.integers(0, 3, (16, 16), dtype=np.uint8)
    folder = out / name
    (folder / "artifacts").mkdir(parents=True)
    np.savez(folder / "artifacts" / "overfit.overfit.npz", image=image, target=mask, pred=mask,
             unseen_image=image, unseen_target=mask, unseen_pred=np.zeros_like(mask))
    np.savez(folder / "artifacts" / "full_training.train_eval.npz", images=image[None], targets=mask[None],
             preds=mask[None], per_image_miou=np.array([0.5]), seen_image=image, seen_target=mask, seen_pred=mask,
             unseen_image=image, unseen_target=mask, unseen_pred=mask)
    checks = [_check("overfit", "overfit", "visible", 0.99, 0.31),
              _check("full_training", "full_training", trained_visibility, 0.83, 0.79)]
    write_result(folder, SubmissionResult(student=name, status="graded", score=2.0, max_score=2.0, message="",
                                          checks=checks, provenance={}))
    return folder


def test_before_release_the_overfit_nets_row_after_release_both(tmp_path: Path) -> None:
    folder = _student(tmp_path, "ann")
    from grader.core.results import read_result

    result = read_result(folder / "result.json")
    before = contrast_view(result, folder, released=False)
    assert before is not None and [title for title, _ in before.rows] == ["overfit net"]
    [(_, (seen, unseen))] = before.rows  # the unseen image is public: shown with the overfit net at once
    assert seen.pixel_accuracy == "99.0 %" and seen.png and unseen.pixel_accuracy == "31.0 %" and unseen.png
    assert before.note == "The fully-trained net row appears when its results are released."
    after = contrast_view(result, folder, released=True)
    assert [title for title, _ in after.rows] == ["overfit net", "fully-trained net"]
    cells = [cell for _, row in after.rows for cell in row]
    assert [c.miou for c in cells] == ["0.495", "0.155", "0.415", "0.395"]
    assert all(c.png and c.png.startswith("data:image/png;base64,") for c in cells) and after.note is None
    hidden = contrast_view(read_result(_student(tmp_path, "bo", "hidden") / "result.json"), tmp_path / "bo",
                           released=True)
    assert [title for title, _ in hidden.rows] == ["overfit net"] and hidden.note is None  # never a word of it


def test_every_cell_draws_image_ground_truth_and_prediction(tmp_path: Path) -> None:
    """Both columns are public images: each picture is three panels (the unseen one too, with its labels)."""
    import base64
    import io

    from PIL import Image

    from grader.core.results import read_result

    folder = _student(tmp_path, "ann")
    view = contrast_view(read_result(folder / "result.json"), folder, released=True)
    widths = [Image.open(io.BytesIO(base64.b64decode(c.png.split(",", 1)[1]))).size[0]
              for _, row in view.rows for c in row]
    assert len(widths) == 4 and len(set(widths)) == 1  # the same three-panel layout in every cell


def test_the_report_page_holds_the_2x2_only_as_the_policy_allows(tmp_path: Path) -> None:
    _student(tmp_path, "ann")
    render_all(tmp_path)
    page = (tmp_path / "ann" / "report.html").read_text()
    section = page.split('id="contrast"', 1)[1].split("</section>", 1)[0]
    assert "<th>overfit net</th>" in section and "<th>fully-trained net</th>" not in section
    assert section.count("<img") == 2 and "31.0 %" in section  # the overfit net on both public images
    assert "83.0 %" not in page and "79.0 %" not in page  # nothing of the fully-trained net before release
    render_all(tmp_path, released=True)
    section = (tmp_path / "ann" / "report.html").read_text().split('id="contrast"', 1)[1].split("</section>", 1)[0]
    assert section.count("<img") == 4 and "<th>fully-trained net</th>" in section
    assert re.findall(r"pixel accuracy <b>([^<]+)</b>", section) == ["99.0 %", "31.0 %", "83.0 %", "79.0 %"]


def test_class_medians_of_the_four_numbers(tmp_path: Path) -> None:
    from grader.core.results import read_result

    results = [read_result(_student(tmp_path, n) / "result.json") for n in ("ann", "bo", "cy")]
    medians = class_medians(results)
    assert medians is not None
    assert [(title, [pa for pa, _, _ in cols]) for title, cols in medians.cells] == [
        ("overfit net", ["99.0 %", "31.0 %"]), ("fully-trained net", ["83.0 %", "79.0 %"])]
    assert all(n == 3 for _, cols in medians.cells for _, _, n in cols)
    render_all(tmp_path)
    index = (tmp_path / "index.html").read_text().split('id="contrast"', 1)[1].split("</section>", 1)[0]
    assert "pixel accuracy 99.0 % · mIoU 0.495" in index and "pixel accuracy 79.0 % · mIoU 0.395" in index


@pytest.mark.slow
def test_the_real_batch_computes_the_four_cells_on_the_host(local_batch) -> None:
    """The reference (passes_all): the overfit net memorised its example and labels the unseen image worse; the
    fully-trained net labels both; every number recomputes from the saved label maps."""
    out, results = local_batch
    ref = {c.id: c for c in results["passes_all"].checks}
    over, trained = ref["overfit"].details["contrast"], ref["full_training"].details["contrast"]
    assert over["seen"]["pixel_accuracy"] >= 0.95
    assert over["unseen"]["miou"] < over["seen"]["miou"]
    assert trained["seen"] is not None and trained["unseen"] is not None
    for check, name in (("overfit", "overfit"), ("full_training", "train_eval")):
        with np.load(out / "passes_all" / "artifacts" / f"{check}.{name}.npz", allow_pickle=False) as arrays:
            for cell in ("seen", "unseen"):
                names = ("image", "target", "pred") if (check, cell) == ("overfit", "seen") else \
                    tuple(f"{cell}_{n}" for n in ("image", "target", "pred"))
                image, target, pred = (arrays[n] for n in names)
                keep = target != 255
                assert image.shape[1:] == target.shape == pred.shape
                assert ref[check].details["contrast"][cell]["pixel_accuracy"] == pytest.approx(
                    float((target[keep] == pred[keep]).mean())), (check, cell)


@pytest.mark.slow
def test_the_unseen_image_is_the_public_validation_splits_first(local_batch, test_rubric, cache_dir: Path) -> None:
    """The unseen column is the embedded set's public_val[0] (drawn from the seed alone), never an evaluation
    image: its ground truth may be shown because anyone can regenerate it, and no keyed label is."""
    from grader.data.shapes import PUBLIC_VAL_IMAGES, generate_embedded_voc
    from grader.job.folder import data_root
    from grader.data.dataset import load_split

    out, _ = local_batch
    ds = test_rubric.dataset
    public = generate_embedded_voc(Path(out).parent / "public-again", n_train=1, n_val=1, size=ds.size, seed=ds.seed)
    images, masks = load_split(public, "public_val", size=ds.size)
    assert len(images) == PUBLIC_VAL_IMAGES
    with np.load(out / "passes_all" / "artifacts" / "full_training.train_eval.npz", allow_pickle=False) as arrays:
        assert np.array_equal(arrays["unseen_image"], images[0]) and np.array_equal(arrays["unseen_target"], masks[0])
        evaluation = arrays["images"]
    assert not any(np.array_equal(e, images[0]) for e in evaluation)
    keyed, _ = load_split(data_root(test_rubric, cache_dir=cache_dir), ds.eval_split, size=ds.size)
    assert not any(np.array_equal(k, images[0]) for k in keyed)


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium is absent")
def test_the_2x2_and_the_medians_in_chromium(local_batch, tmp_path: Path) -> None:
    from test_browser import Chromium, problems

    out = tmp_path / "site"
    shutil.copytree(local_batch[0], out)
    render_all(out, released=True)
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open((out / "passes_all" / "report.html").as_uri())
        assert problems(browser.events) == []
        assert browser.evaluate("document.querySelectorAll('#contrast tbody tr').length") == 2
        assert browser.evaluate("Array.from(document.querySelectorAll('#contrast img'))"
                                ".filter(i => i.complete && i.naturalWidth > 0).length") == 4
        widths = browser.evaluate("Array.from(document.querySelectorAll('#contrast img')).map(i => i.naturalWidth)")
        assert len(set(widths)) == 1  # four cells of three panels: image, ground truth, prediction
        cells = browser.evaluate("Array.from(document.querySelectorAll('#contrast td p')).map(p => p.innerText)")
        assert len(cells) == 4 and all(re.match(r"pixel accuracy \d+\.\d % · mIoU \d\.\d{3}", c) for c in cells)
        browser.open((out / "index.html").as_uri())
        assert problems(browser.events) == []
        medians = browser.evaluate("Array.from(document.querySelectorAll('#contrast td')).map(td => td.innerText)")
        assert len(medians) == 4 and all(m.startswith("pixel accuracy ") and "mIoU" in m for m in medians)
    finally:
        browser.close()
