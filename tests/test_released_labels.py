"""Evaluation labels stay on the host: a released report shows predictions on evaluation images, never their
ground-truth masks (issue 22). Public images (the overfit example, a training image) keep their labels.

A graded student is written as the judges write one (result.json, the artefacts with the evaluation targets the
host kept), the pages are drawn by the real renderer, and every picture embedded in the released HTML (and any
image file beside it) is decoded and searched for the colour of a class that only the evaluation labels hold.
"""
from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from grader.core.results import CheckResult, SubmissionResult, write_result
from grader.core.voc import voc_palette
from grader.report import render_all

# tvmonitor: only in the evaluation labels; aeroplane and bird: public labels (the overfit example, the public
# validation image of the 2x2)
EVAL_ONLY, PUBLIC, PUBLIC_VAL, PREDICTED = 20, 1, 3, 15
SIZE = 24


def _mask(cls: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[4:20, 4:20] = cls
    mask[3, 3:21] = 255  # a void border, as the generator draws
    return mask


def _student(out: Path) -> Path:
    image = np.full((3, SIZE, SIZE), 90, dtype=np.uint8)  # grey: no palette colour in the pictures themselves
    public, public_val, secret, pred = _mask(PUBLIC), _mask(PUBLIC_VAL), _mask(EVAL_ONLY), _mask(PREDICTED)
    folder = out / "ann"
    (folder / "artifacts").mkdir(parents=True)
    np.savez(folder / "artifacts" / "overfit.overfit.npz", image=image, target=public, pred=public,
             unseen_image=image, unseen_target=public_val, unseen_pred=pred)
    n = 6
    np.savez(folder / "artifacts" / "full_training.train_eval.npz", images=np.stack([image] * n),
             targets=np.stack([secret] * n), preds=np.stack([pred] * n), per_image_miou=np.linspace(0.1, 0.6, n),
             seen_image=image, seen_target=public, seen_pred=public, unseen_image=image, unseen_target=public_val,
             unseen_pred=pred)
    contrast = {"seen": {"pixel_accuracy": 0.99, "miou": 0.98}, "unseen": {"pixel_accuracy": 0.4, "miou": 0.2}}
    names = [f"class{i}" for i in range(21)]
    confusion = np.eye(21, dtype=int).tolist()
    training = dict(losses=[2.0, 1.0, 0.5], miou=0.3, pixel_accuracy=0.8, floor=0.11, bar=0.17, confusion=confusion,
                    class_names=names, per_class_iou={names[0]: 0.8, names[EVAL_ONLY]: 0.1}, contrast=contrast)
    checks = [
        CheckResult(id="overfit", name="Overfit", score=15, max_score=15, status="passed", visibility="visible",
                    message="ok", details={"contrast": contrast, "pixel_accuracy": 0.99}, kind="overfit"),
        CheckResult(id="full_training", name="Full training", score=15, max_score=15, status="passed",
                    visibility="after_due_date", message="ok", details=training, kind="full_training")]
    write_result(folder, SubmissionResult(student="ann", status="graded", score=30, max_score=30, message="",
                                          checks=checks, provenance={}))
    return folder


def _pictures(folder: Path) -> list[np.ndarray]:
    """Every picture of the student's page: the data: URIs in report.html and any image file in the folder."""
    html = (folder / "report.html").read_text()
    found = [Image.open(io.BytesIO(base64.b64decode(b64)))
             for b64 in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]
    found += [Image.open(p) for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif")]
    return [np.asarray(p.convert("RGB")) for p in found]


def _holds(picture: np.ndarray, cls: int) -> bool:
    return bool((picture == voc_palette()[cls]).all(-1).any())


def test_a_released_report_shows_no_evaluation_ground_truth(tmp_path: Path) -> None:
    folder = _student(tmp_path)
    render_all(tmp_path, released=True)
    page = (folder / "report.html").read_text()
    pictures = _pictures(folder)
    assert "fully-trained net" in page and len(pictures) >= 5  # the training section and the 2x2 are drawn
    assert any(_holds(p, PREDICTED) for p in pictures)  # predictions on evaluation images are shown
    assert any(_holds(p, PUBLIC) for p in pictures)  # labels of public images too: the search sees label colours
    assert any(_holds(p, PUBLIC_VAL) for p in pictures)  # the 2x2's public validation image, with its labels
    leaked = [i for i, p in enumerate(pictures) if _holds(p, EVAL_ONLY)]
    assert not leaked, f"pictures {leaked} of the released report draw an evaluation ground-truth mask"
