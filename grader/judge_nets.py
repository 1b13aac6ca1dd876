"""Judging the network stages: SegNet's shapes, overfitting one example, full training.

Scores come from arrays the host reads back (logits, label maps) and host-side metrics against labels
the sandbox never saw. The loss history is the student's own report: it is checked for the bound and
for NaN, but it never earns points alone.
"""
from __future__ import annotations

import math

import numpy as np

from grader import metrics
from grader.dataset import IGNORE_INDEX, VOC_CLASSES
from grader.judge import JudgeContext, Judged, StageResult, _result, crashed, judge_unit, stage_problem
from grader.outputs import OutputError
from grader.rubric import CheckSpec

__all__ = ["JUDGES", "judge_model", "judge_overfit", "judge_training", "cross_entropy"]


def _problem_or_crash(spec: CheckSpec, stage: StageResult) -> Judged:
    return Judged(stage_problem(spec, stage) or crashed(spec, stage))


def judge_model(spec: CheckSpec, stage: StageResult, ctx: JudgeContext) -> Judged:
    model = stage.outputs.record("model")
    if model is None:
        return _problem_or_crash(spec, stage)
    problems, outputs = [], []
    for i, (n, h, w) in enumerate(spec.input_sizes):
        want = (n, ctx.num_classes, h, w)
        rec = stage.outputs.record(f"forward_{i}")
        try:
            if rec is None or not rec.get("ok"):
                raise OutputError(str((rec or {}).get("error", "no output (the stage stopped)")).splitlines()[0])
            y = stage.outputs.array(f"forward_{i}")
        except OutputError as exc:
            problems.append(f"input {[n, 3, h, w]}: {exc}")
            outputs.append(None)
            continue
        outputs.append(list(y.shape))
        if y.shape != want:
            problems.append(f"input {[n, 3, h, w]} gave {list(y.shape)}, expected {list(want)}")
        elif not np.isfinite(y).all():
            problems.append(f"input {[n, 3, h, w]} gave non-finite logits (NaN or inf)")
    params = model.get("parameters")
    if not isinstance(params, int) or not spec.min_parameters <= params <= spec.max_parameters:
        problems.append(f"{params} parameters, outside the allowed {spec.min_parameters:,}-{spec.max_parameters:,}")
    details = dict(inputs=[[n, 3, h, w] for n, h, w in spec.input_sizes], outputs=outputs, parameters=params,
                   problems=problems)
    if problems:
        return Judged(_result(spec, "failed", 0.0, "SegNet: " + "; ".join(problems[:3]) + ".", **details))
    return Judged(_result(spec, "passed", spec.points, f"Logits (N, {ctx.num_classes}, H, W) for every input "
                          f"size; {params:,} parameters.", **details))


def _finite_losses(rec: dict | None) -> list[float] | None:
    losses = (rec or {}).get("losses")
    if not isinstance(losses, list) or not all(isinstance(v, (int, float)) for v in losses):
        return None
    return [float(v) for v in losses]


def cross_entropy(logits: np.ndarray, target: np.ndarray, *, ignore_index: int = IGNORE_INDEX) -> float:
    """Mean cross-entropy of (N, C, H, W) logits against (N, H, W) labels over the pixels whose label is not
    ``ignore_index``, in float64: ``F.cross_entropy(logits.double(), target, ignore_index=255)`` in numpy (the
    grader's process does not import torch). nan when every pixel is void, as torch gives."""
    z = np.moveaxis(np.asarray(logits, dtype=np.float64), 1, -1)  # (N, H, W, C)
    labels = np.asarray(target, dtype=np.int64)
    keep = labels != ignore_index
    z, labels = z[keep], labels[keep]  # (P, C), (P,)
    if labels.size == 0:
        return float("nan")
    top = z.max(axis=1, keepdims=True)  # log-sum-exp shifted by the max: no overflow for large logits
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(labels.size), labels]))


def _mode_scores(logits: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(pixel accuracy, cross-entropy ignoring void) of (1, C, H, W) logits against an (H, W) mask."""
    pred = logits[0].argmax(0)
    acc = metrics.pixel_accuracy(metrics.confusion(target, pred, logits.shape[1]))
    return acc, cross_entropy(logits, target[None])


def judge_overfit(spec: CheckSpec, stage: StageResult, ctx: JudgeContext) -> Judged:
    losses = _finite_losses(stage.outputs.record("losses"))
    if losses is None:
        return _problem_or_crash(spec, stage)
    target, scores, logits = ctx.plan.overfit_target, {}, {}
    for mode in ("train", "eval"):
        try:
            logits[mode] = stage.outputs.array(f"logits_{mode}")
            if logits[mode].shape != (1, ctx.num_classes, *target.shape):
                raise OutputError(f"logits of shape {list(logits[mode].shape)}")
            scores[mode] = _mode_scores(logits[mode], target)
        except OutputError as exc:
            return Judged(stage_problem(spec, stage) or _result(spec, "error", 0.0, f"No usable logits: {exc}."))
    below = next((i + 1 for i, v in enumerate(losses) if v < spec.loss_bound), None)
    acc = {m: scores[m][0] for m in scores}
    counted = max(acc, key=acc.get) if spec.prediction_mode == "either" else spec.prediction_mode
    details = dict(losses=losses, epochs=spec.epochs, loss_bound=spec.loss_bound, first_epoch_below=below,
                   pixel_accuracy={f"{m}_mode": acc[m] for m in acc}, counted_mode=counted,
                   host_cross_entropy=scores[counted][1])
    problems = []
    if not losses or len(losses) > spec.epochs or not all(map(math.isfinite, losses)):
        problems.append(f"the loss history has {len(losses)} entries for {spec.epochs} epochs or contains NaN/inf")
    if below is None:
        problems.append(f"the loss never fell below {spec.loss_bound:g} within {spec.epochs} epochs "
                        f"(lowest {min(losses, default=float('nan')):.3g})")
    if not acc[counted] >= spec.min_pixel_accuracy:
        problems.append(f"the trained net labels {acc[counted]:.1%} of the example's pixels correctly "
                        f"({counted} mode), below {spec.min_pixel_accuracy:.0%}")
    art = {"overfit": {"image": ctx.plan.overfit_image, "target": target,
                       "pred": logits[counted][0].argmax(0).astype(np.uint8)}}
    if problems:
        return Judged(_result(spec, "failed", 0.0, "Did not overfit: " + "; ".join(problems) + ".", **details), art)
    return Judged(_result(spec, "passed", spec.points, f"Loss below {spec.loss_bound:g} at epoch {below}; "
                          f"{acc[counted]:.1%} of pixels right ({counted} mode).", **details), art)


def band_score(spec: CheckSpec, miou: float, floor: float) -> float:
    if spec.grading == "threshold":
        return spec.points if miou >= spec.threshold else 0.0
    return spec.points * float(np.clip((miou - floor) / (spec.bar - floor), 0.0, 1.0))


def judge_training(spec: CheckSpec, stage: StageResult, ctx: JudgeContext) -> Judged:
    losses = _finite_losses(stage.outputs.record("losses"))
    labels = ctx.plan.eval_labels
    try:
        if losses is None or stage.outputs.record("predictions") is None:
            raise OutputError("no predictions")
        preds = stage.outputs.array("predictions")
        if preds.shape != labels.shape:
            raise OutputError(f"predictions of shape {list(preds.shape)}, expected {list(labels.shape)}")
    except OutputError:
        return _problem_or_crash(spec, stage)
    conf = metrics.confusion(labels, preds, ctx.num_classes)
    miou, acc = metrics.mean_iou(conf), metrics.pixel_accuracy(conf)
    floor = spec.floor if spec.floor is not None else trivial_floor(labels, ctx.num_classes)
    bar = spec.threshold if spec.grading == "threshold" else spec.bar
    score = band_score(spec, miou if math.isfinite(miou) else 0.0, floor)
    per_image = np.array([metrics.mean_iou(metrics.confusion(t, p, ctx.num_classes)) for t, p in zip(labels, preds)])
    iou = metrics.per_class_iou(conf)
    details = dict(losses=losses, miou=miou, pixel_accuracy=acc, floor=floor, bar=bar, confusion=conf.tolist(),
                   class_names=list(VOC_CLASSES), per_class_iou={VOC_CLASSES[c]: None if math.isnan(v) else float(v)
                                                                 for c, v in enumerate(iou)})
    art = {"train_eval": {"images": ctx.plan.eval_images, "targets": labels, "preds": preds.astype(np.uint8),
                          "per_image_miou": per_image}}
    verdict = "passed" if miou >= bar else "failed"
    message = (f"Validation mIoU {miou:.3f} (pixel accuracy {acc:.1%}); full points at {bar:.3f}"
               + ("" if spec.grading == "threshold" else f", none at or below {floor:.3f} (all-background)") + ".")
    return Judged(_result(spec, verdict, score, message, **details), art)


def trivial_floor(labels: np.ndarray, num_classes: int) -> float:
    """mIoU of predicting background everywhere on the evaluation images: the band's zero point."""
    return metrics.mean_iou(metrics.confusion(labels, np.zeros_like(labels), num_classes))


JUDGES = {"model_shapes": judge_model, "overfit": judge_overfit, "full_training": judge_training,
          **{k: judge_unit for k in ("transpose_conv", "bilinear_kernel", "confusion_matrix", "mean_iou",
                                     "pixel_accuracy")}}
