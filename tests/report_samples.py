"""A realistic grading output folder for the report and export tests, written under a tmp_path.

Students are named by their expected outcome (Otter-style). Strings that must NEVER reach a student's
page before release are marked with SECRET_* so a test can search for them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from grader.core.results import CheckResult, SubmissionResult, write_result
from grader.data.dataset import VOC_CLASSES

__all__ = [
    "RUBRIC", "XSS", "SECRET_HIDDEN", "SECRET_AFTER_DUE", "SECRET_HIDDEN_DETAIL", "STUDENTS", "BROKEN",
    "build_samples", "sample_result",
]

# (id, name, max_score, visibility), in rubric order
RUBRIC = (
    ("transpose_conv", "Transpose convolution", 15.0, "visible"),
    ("bilinear_kernel", "Bilinear upsampling kernel", 5.0, "visible"),
    ("confusion_matrix", "Confusion matrix", 5.0, "visible"),
    ("mean_iou", "Mean IoU", 5.0, "visible"),
    ("pixel_accuracy", "Pixel accuracy", 5.0, "visible"),
    ("model_shapes", "SegNet output shapes", 10.0, "visible"),
    ("overfit", "Overfit one example", 15.0, "visible"),
    ("full_training", "Full training (mIoU)", 30.0, "after_due_date"),
    ("metrics_hidden", "Metrics on hidden edge cases", 10.0, "hidden"),
)
KIND_OF = {"metrics_hidden": "mean_iou"}  # the others are named after their kind
XSS = "<script>alert(1)</script>"
SECRET_HIDDEN = "SECRET-HIDDEN-MESSAGE all-void image gave nan"
SECRET_HIDDEN_DETAIL = "SECRET-HIDDEN-ARG"
SECRET_AFTER_DUE = "SECRET-AFTER-DUE-MESSAGE mIoU below the bar"
PASSING, FAILING_UNIT, ERROR, TIMEOUT = ("alice_passes_all", "bob_fails_transpose_conv",
                                         "carol_overfit_error", "dave_training_timeout")
UNGRADABLE, INFRA, BROKEN = "erin_ungradable", "frank_infrastructure_error", "gina_broken_result"
STUDENTS = (PASSING, FAILING_UNIT, ERROR, TIMEOUT, UNGRADABLE, INFRA)
TRACEBACK = ('Traceback (most recent call last):\n  File "student/train.py", line 41, in overfit_one\n'
             '    loss = criterion(logits, target)\nRuntimeError: Expected target size [1, 64, 64], got [1, 1, 64, 64]')
TIMEOUT_TRACE = ('Stage "train" killed after 120 s (budget 120 s). Last frames:\n  File "student/train.py", '
                 'line 77, in train\n    for images, targets in loader:')


def _provenance(seed: int) -> dict:
    return {
        "grader_version": "0.1.0", "torch_version": "2.14.1", "python_version": "3.11.2", "device": "cpu",
        "sandbox": {"engine": "local", "isolation": "rlimits, own process group, unshare(net)"},
        "seeds": {"torch": 0, "numpy": 0, "data": seed}, "rubric_hash": "ab12" * 16,
        "submission_hash": f"{seed:04d}" * 16, "dataset_hash": "cd34" * 16,
        "durations_s": {"import": 0.8, "unit": 3.2, "model_shapes": 1.1, "overfit": 14.5, "full_training": 61.0},
        "graded_at": "2025-11-27T12:00:00+00:00",
    }


def _unit_details(passed: bool) -> dict:
    if passed:
        return {"cases": 24, "failed": 0, "smallest_failure": None, "hint": ""}
    return {
        "cases": 24, "failed": 7,
        "smallest_failure": {
            "case": "stride2_pad1_outpad1", "args": {"stride": 2, "padding": 1, "output_padding": 1,
                                                     "note": XSS},
            "shapes": {"x": [1, 2, 3, 3], "weight": [2, 3, 4, 4]}, "max_abs_error": 0.8125,
            "expected": "tensor shape (1, 3, 6, 6)", "got": "tensor shape (1, 3, 5, 5)", "error": None,
        },
        "hint": "output size is (H - 1) * stride - 2 * padding + kernel + output_padding: check the crop.",
    }


def _losses(n: int, start: float, end: float, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    curve = np.geomspace(start, end, n) * np.exp(rng.normal(0, 0.08, n))
    return [float(v) for v in curve]


def _training_details(miou: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    confusion = rng.integers(0, 40, size=(21, 21)) + np.diag(rng.integers(2000, 9000, size=21))
    confusion[18] = 0  # a class absent from the evaluation set: its IoU is null, its row blank
    per_class = {name: (None if i == 18 else float(np.clip(miou + rng.normal(0, 0.08), 0, 1)))
                 for i, name in enumerate(VOC_CLASSES)}
    return {"losses": _losses(300, 3.0, 0.15, seed), "miou": miou, "pixel_accuracy": 0.93,
            "per_class_iou": per_class, "confusion": confusion.tolist(), "class_names": list(VOC_CLASSES),
            "floor": 0.3, "bar": 0.8}


def _overfit_details(bound_met: bool) -> dict:
    losses = _losses(60, 3.1, 0.02 if bound_met else 0.9, 3)
    return {"losses": losses, "epochs": 60, "loss_bound": 0.05, "first_epoch_below": 41 if bound_met else None,
            "pixel_accuracy": {"train_mode": 0.995, "eval_mode": 0.981}, "counted_mode": "eval",
            "host_cross_entropy": 0.021}


def _model_details() -> dict:
    return {"inputs": [[2, 3, 64, 64], [1, 3, 96, 128], [1, 3, 65, 67]],
            "outputs": [[2, 21, 64, 64], [1, 21, 96, 128], [1, 21, 65, 67]], "parameters": 1_234_567, "problems": []}


def _check(index: int, status: str, score: float | None = None, message: str = "", details: dict | None = None
           ) -> CheckResult:
    check_id, name, max_score, visibility = RUBRIC[index]
    score = max_score if score is None and status == "passed" else (score or 0.0)
    return CheckResult(id=check_id, name=name, score=score, max_score=max_score, status=status,
                       visibility=visibility, message=message, details=details or {},
                       kind=KIND_OF.get(check_id, check_id))


def _checks_for(student: str) -> tuple[CheckResult, ...]:
    passed_units = [_check(i, "passed", message="All 24 cases match the reference.", details=_unit_details(True))
                    for i in range(1, 5)]
    model = _check(5, "passed", message="Output (N, 21, H, W) for every input size.", details=_model_details())
    good_overfit = _check(6, "passed", message="Loss fell below 0.05 at epoch 41.", details=_overfit_details(True))
    hidden_ok = _check(8, "passed", message="hidden cases all pass", details={"cases": 9, "failed": 0})
    if student == PASSING:
        return (_check(0, "passed", message="All 24 cases match.", details=_unit_details(True)), *passed_units,
                model, good_overfit,
                _check(7, "passed", message="mIoU 0.912 is above the bar 0.8.", details=_training_details(0.912, 1)),
                hidden_ok)
    if student == FAILING_UNIT:
        return (_check(0, "failed", message=f"7 of 24 cases differ from the reference. {XSS}",
                       details=_unit_details(False)), *passed_units, model, good_overfit,
                _check(7, "failed", 12.0, SECRET_AFTER_DUE, _training_details(0.62, 2)),
                _check(8, "failed", 4.0, SECRET_HIDDEN,
                       {"cases": 9, "failed": 3, "smallest_failure": {"case": "all_void", "args": {"x": SECRET_HIDDEN_DETAIL}},
                        "hint": "nan-mean"}))
    if student == ERROR:
        return (_check(0, "passed", message="All 24 cases match.", details=_unit_details(True)), *passed_units, model,
                _check(6, "error", message="Your training loop raised RuntimeError.", details={"traceback": TRACEBACK}),
                _check(7, "skipped", message="Skipped: the overfit stage failed."), hidden_ok)
    if student == TIMEOUT:
        return (_check(0, "passed", message="All 24 cases match.", details=_unit_details(True)), *passed_units, model,
                good_overfit,
                _check(7, "timeout", message="Training did not finish within 120 s.",
                       details={"traceback": TIMEOUT_TRACE}), hidden_ok)
    return ()


def sample_result(student: str) -> SubmissionResult:
    """The SubmissionResult the folder of ``student`` holds."""
    checks = _checks_for(student)
    max_score = sum(r[2] for r in RUBRIC)
    status = {UNGRADABLE: "ungradable", INFRA: "infrastructure_error"}.get(student, "graded")
    message = {UNGRADABLE: "SyntaxError: invalid syntax (segnet.py, line 12). Nothing could be imported.",
               INFRA: "Docker Engine not reachable: Error while fetching server API version."}.get(student, "")
    seed = STUDENTS.index(student) + 1
    provenance = _provenance(seed)
    if status != "graded":  # nothing past intake ran
        provenance["durations_s"] = {"intake": 0.4} if status == "ungradable" else {"intake": 0.3, "import": 2.0}
    return SubmissionResult(student=student, status=status, score=sum(c.score for c in checks),
                            max_score=max_score, checks=checks, message=message, provenance=provenance)


def _shapes_mask(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for label in rng.choice(np.arange(1, 21), size=2, replace=False):
        cy, cx, r = rng.integers(14, size - 14, size=2).tolist() + [int(rng.integers(7, 13))]
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        border = inside & ((yy - cy) ** 2 + (xx - cx) ** 2 > (r - 2) ** 2)
        mask[inside] = label
        mask[border] = 255  # VOC-style void outline
    return mask


def _noisy(mask: np.ndarray, rng: np.random.Generator, flip: float) -> np.ndarray:
    pred = np.where(mask == 255, 0, mask).astype(np.uint8)
    wrong = rng.random(mask.shape) < flip
    pred[wrong] = rng.integers(0, 21, size=int(wrong.sum()), dtype=np.uint8)
    return pred


def _image(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    base = rng.integers(0, 255, size=(3, 1, 1), dtype=np.uint8).astype(int)
    noise = rng.integers(0, 60, size=(3, *mask.shape))
    tint = (mask.astype(int)[None] * np.array([37, 91, 53])[:, None, None]) % 200
    return np.clip(base // 2 + noise + tint, 0, 255).astype(np.uint8)


def _write_artifacts(student_dir: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder = student_dir / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    target = _shapes_mask(rng)
    np.savez(folder / "overfit.overfit.npz", image=_image(target, rng), target=target, pred=_noisy(target, rng, 0.02))
    targets = np.stack([_shapes_mask(rng) for _ in range(8)])
    np.savez(folder / "full_training.train_eval.npz", images=np.stack([_image(t, rng) for t in targets]), targets=targets,
             preds=np.stack([_noisy(t, rng, f) for t, f in zip(targets, np.linspace(0.01, 0.5, 8))]),
             per_image_miou=np.linspace(0.95, 0.2, 8))


def build_samples(root: Path) -> Path:
    """Write the sample grading output under ``root``/out and return that folder."""
    out = Path(root) / "out"
    for student in STUDENTS:
        write_result(out / student, sample_result(student))
        if student in (PASSING, FAILING_UNIT):
            _write_artifacts(out / student, STUDENTS.index(student))
    (out / BROKEN).mkdir(parents=True)
    (out / BROKEN / "result.json").write_text("{not json", encoding="utf-8")
    summary = {"schema": 1, "students": [{"student": s} for s in (*STUDENTS, BROKEN)], "rubric": {r[0]: r[2] for r in RUBRIC}}
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return out
