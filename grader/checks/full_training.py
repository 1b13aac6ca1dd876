"""full_training: the student's ``train(model, loader, epochs)`` on the training split within the budget;
the trained net then labels the evaluation IMAGES inside the sandbox (their labels never enter it), and the
host scores those label maps: validation mIoU and pixel accuracy.

Points: ``grading: band`` (default) gives 0 at or below ``floor`` (None: the mIoU of the all-background
predictor on the same images, computed here) and full points at or above ``bar``, linear between;
``grading: threshold`` is all-or-nothing at ``threshold``. ``passed`` means at or above the bar.

A second chance near the bar (``retry_margin`` > 0): one training is one draw of the seed, and honest designs
spread by a few hundredths over seeds (``grader calibrate`` measures it). A run whose mIoU lies below the bar
by at most the margin is retrained ONCE, in stage ``<id>.retry``, with a seed derived from the check's
(``retry_seed``: same submission, same grade), and the better of the two runs counts; a retry that times
out or crashes leaves the first run's verdict. The message and ``details["retry"]`` say so.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from grader.core import metrics
from grader.checks.base import CheckKind, CheckSpec, Retry, RubricError, View
from grader.checks.nets import NetStart, build_model, for_evaluation, losses_of
from grader.checks.overfit import contrast_cell, contrast_pred, predict_label_map, unseen_example
from grader.checks.verdict import JudgeContext, Judged, StageResult, oneline, problem_or_crash, result
from grader.core.lazy import LazyModule
from grader.core.lazy import numpy as np
from grader.core.lazy import torch
from grader.core.outputs import OutputError

__all__ = ["KIND", "FullTrainingSpec", "RETRY_SEED_OFFSET", "band_score", "retry_seed", "trivial_floor"]

voc = LazyModule("grader.core.voc")  # the loader and the class names (numpy, PIL, torch: loaded on first use)
RETRY_SEED_OFFSET = 1000  # the retry's seed: the check's + this (derived, fixed: the same submission, the same grade)
_EPS = 1e-9  # 0.5 - 0.03 is 0.47000000000000003: a run at exactly the margin's edge is inside it


@dataclass(frozen=True)
class FullTrainingSpec(CheckSpec):
    seed: int = 0  # seeds the net's initialisation and the loader's order
    epochs: int = 40
    batch_size: int = 16
    grading: Literal["threshold", "band"] = "band"
    threshold: float = 0.5  # grading: threshold
    floor: float | None = None  # band: 0 points at or below; None = mIoU of the all-background predictor
    bar: float = 0.5  # band: full points at or above
    retry_margin: float = 0.0  # > 0: a mIoU below the bar by at most this is retrained once; the better counts

    def net_sizes(self, rubric: Any) -> tuple[tuple[int, int], ...]:
        """The (H, W) this check feeds the net: what it needs of a required model_shapes (grader.batch.pipeline)."""
        return ((rubric.dataset.size, rubric.dataset.size),)


def _bar(spec: FullTrainingSpec) -> float:
    return spec.threshold if spec.grading == "threshold" else spec.bar


def retry_seed(spec: FullTrainingSpec) -> int:
    """The seed of the second run (stage ``<id>.retry``): derived from the check's, recorded in the result."""
    return spec.seed + RETRY_SEED_OFFSET


def validate(spec: FullTrainingSpec, where: str) -> None:
    if spec.floor is not None and spec.floor >= spec.bar:
        raise RubricError(f"{where}.floor: must be below bar ({spec.bar})")
    if not 0.0 <= spec.retry_margin < _bar(spec):
        raise RubricError(f"{where}.retry_margin: must be at least 0 (0: no retry) and below the bar "
                          f"({_bar(spec)}), e.g. 0.05: the seed spread `grader calibrate` measures")


def inputs(spec: FullTrainingSpec, job: Any) -> tuple[dict, dict]:
    ds = job.rubric.dataset
    train_images, train_masks = job.split(ds.train_split, size=ds.size)
    eval_images, eval_labels = job.split(ds.eval_split, size=ds.size)
    train_images, train_masks = train_images[:ds.max_train_images], train_masks[:ds.max_train_images]
    eval_images, eval_labels = eval_images[:ds.max_eval_images], eval_labels[:ds.max_eval_images]
    config = {"seed": spec.seed, "num_classes": job.rubric.num_classes, "epochs": spec.epochs,
              "batch_size": spec.batch_size, "train_images": job.save(f"{spec.id}/train_images.npy", train_images),
              "train_masks": job.save(f"{spec.id}/train_masks.npy", train_masks),
              "eval_images": job.save(f"{spec.id}/eval_images.npy", eval_images)}
    host = {"eval_images": eval_images, "eval_labels": eval_labels}
    # The contrast (each net at the size it trained at): the public validation image neither net saw, and, with an
    # overfit check, the example the overfit net memorised (a training image: this net saw it among the others).
    unseen, host["unseen_target"] = unseen_example(job, size=ds.size)
    config["unseen"], host["unseen_image"] = job.save(f"{spec.id}/unseen.npy", unseen), unseen
    overfit = next((c for c in job.rubric.checks if c.kind == "overfit"), None)
    if overfit is not None:
        images, masks = job.split(ds.train_split, size=ds.size)
        seen, host["seen_target"] = images[overfit.example_index], masks[overfit.example_index]
        config["seen"], host["seen_image"] = job.save(f"{spec.id}/seen.npy", seen), seen
    return config, host


def retry_config(spec: FullTrainingSpec, config: dict) -> dict | None:
    """The retry stage's config: the same arrays and budget, the derived seed; None when retries are off."""
    return {**config, "seed": retry_seed(spec)} if spec.retry_margin > 0 else None


def run(student: Any, config: dict, job: Path, writer: Any, device: str) -> None:
    def load(name: str) -> Any:
        return np.load(job / config[name], allow_pickle=False)

    loader = voc.make_loader(load("train_images"), load("train_masks"), batch_size=config["batch_size"],
                             seed=config["seed"])
    model = build_model(student, config, device)
    net = NetStart.of(model)
    start = time.perf_counter()
    losses = student.train(model, loader, config["epochs"])
    writer.record("losses", {"ok": True, "losses": [float(v) for v in losses],
                             "seconds": time.perf_counter() - start})
    for_evaluation(model, net)  # evaluated as its class computes it: no hook of the student's training function
    images, _ = voc.to_tensors(load("eval_images"), None)
    model.eval()
    preds = []
    with torch.no_grad():
        for batch in images.split(config["batch_size"]):
            preds.append(model(batch.to(device)).argmax(1).to(torch.uint8).cpu())
    writer.record("predictions", {"ok": True, "file": writer.array("predictions", torch.cat(preds))})
    for cell in ("seen", "unseen"):  # the contrast's cells (never fail the check)
        if cell in config:
            try:
                writer.record(cell, {"ok": True, "file": writer.array(cell, predict_label_map(model, load(cell),
                                                                                              device))})
            except Exception as exc:  # noqa: BLE001 - the student's net on another size: no picture, no penalty
                writer.error(cell, exc)


def band_score(spec: FullTrainingSpec, miou: float, floor: float) -> float:
    if spec.grading == "threshold":
        return spec.points if miou >= spec.threshold else 0.0
    return spec.points * float(np.clip((miou - floor) / (spec.bar - floor), 0.0, 1.0))


def trivial_floor(labels: Any, num_classes: int) -> float:
    """mIoU of predicting background everywhere on the evaluation images: the band's zero point."""
    return metrics.mean_iou(metrics.confusion(labels, np.zeros_like(labels), num_classes))


def judge(spec: FullTrainingSpec, stage: StageResult, ctx: JudgeContext) -> Judged:
    losses = losses_of(stage.outputs.record("losses"))
    host = ctx.plan.host[spec.id]
    labels = host["eval_labels"]
    try:
        if losses is None or stage.outputs.record("predictions") is None:
            raise OutputError("no predictions")
        preds = stage.outputs.array("predictions")
        if preds.shape != labels.shape:
            raise OutputError(f"predictions of shape {list(preds.shape)}, expected {list(labels.shape)}")
    except OutputError:
        return problem_or_crash(spec, stage)
    conf = metrics.confusion(labels, preds, ctx.num_classes)
    miou, acc = metrics.mean_iou(conf), metrics.pixel_accuracy(conf)
    floor = spec.floor if spec.floor is not None else trivial_floor(labels, ctx.num_classes)
    bar = _bar(spec)
    score = band_score(spec, miou if math.isfinite(miou) else 0.0, floor)
    per_image = np.array([metrics.mean_iou(metrics.confusion(t, p, ctx.num_classes)) for t, p in zip(labels, preds)])
    iou = metrics.per_class_iou(conf)
    names = voc.VOC_CLASSES
    details = dict(losses=losses, miou=miou, pixel_accuracy=acc, floor=floor, bar=bar, confusion=conf.tolist(),
                   class_names=list(names), per_class_iou={names[c]: None if math.isnan(v) else float(v)
                                                           for c, v in enumerate(iou)})
    cells = {cell: contrast_pred(stage, cell, host.get(f"{cell}_target"), ctx.num_classes)  # None: no picture
             for cell in ("seen", "unseen")}
    art = {"train_eval": {"images": host["eval_images"], "targets": labels, "preds": preds.astype(np.uint8),
                          "per_image_miou": per_image,
                          **{f"{cell}_{what}": array for cell, pred in cells.items() if pred is not None
                             for what, array in (("image", host[f"{cell}_image"]), ("target", host[f"{cell}_target"]),
                                                 ("pred", pred))}}}
    details["contrast"] = {cell: None if pred is None else contrast_cell(host[f"{cell}_target"], pred, ctx.num_classes)
                           for cell, pred in cells.items()}
    verdict = "passed" if miou >= bar else "failed"
    message = (f"Validation mIoU {miou:.3f} (pixel accuracy {acc:.1%}); full points at {bar:.3f}"
               + ("" if spec.grading == "threshold" else f", none at or below {floor:.3f} (all-background)") + ".")
    return Judged(result(spec, verdict, score, message, **details), art)


def wants_retry(spec: FullTrainingSpec, first: Judged) -> bool:
    """True when the first run's mIoU lies below the bar by at most ``retry_margin`` (0: never)."""
    miou = first.result.details.get("miou")
    if spec.retry_margin <= 0 or not isinstance(miou, float) or not math.isfinite(miou):
        return False  # no mIoU (timeout, crash, unreadable output): nothing near the bar to retry
    return _bar(spec) - spec.retry_margin - _EPS <= miou < _bar(spec)


def _miou_of(judged: Judged) -> float | None:
    """The run's mIoU when it produced one (NaN counts as the worst), None when it ended without a result."""
    miou = judged.result.details.get("miou")
    if not isinstance(miou, float):
        return None
    return miou if math.isfinite(miou) else -math.inf


def better_of_two(spec: FullTrainingSpec, first: Judged, second: Judged) -> Judged:
    """The run that counts: the retrained one when its mIoU is higher, else the first (also when the retry
    timed out or crashed); its message and ``details["retry"]`` say that the check was retrained and why."""
    first_miou, second_miou, seed = first.result.details["miou"], _miou_of(second), retry_seed(spec)
    why = (f"Retrained once with seed {seed} because {first_miou:.3f} was within {spec.retry_margin:g} of the "
           f"bar ({_bar(spec):.3f})")
    if second_miou is None:
        kept, note = first, (f"{why}, but that run ended without a result ({second.result.status}: "
                             f"{oneline(second.result.message)}); the first run counts.")
    else:
        kept = second if second_miou > first_miou else first
        shown = f"{second_miou:.3f}" if math.isfinite(second_miou) else "nan"
        note = f"{why}; the better run counts (first {first_miou:.3f}, retrained {shown})."
    record = {"seed": seed, "first_seed": spec.seed, "margin": spec.retry_margin, "first_miou": first_miou,
              "retry_miou": second.result.details.get("miou") if second_miou is not None else None,
              "retry_status": second.result.status, "counted": "retry" if kept is second else "first"}
    counted = kept.result
    return Judged(replace(counted, message=f"{counted.message} {note}", details={**counted.details, "retry": record}),
                  kept.artifacts)


KIND = CheckKind(name="full_training", spec=FullTrainingSpec, budget="train", functions=("SegNet", "train"),
                 inputs=inputs, run=run, judge=judge, validate=validate,
                 retry=Retry(config=retry_config, wanted=wants_retry, combine=better_of_two),
                 view=View(section="training", artifact="train_eval", metric="miou", metric_lines=("floor", "bar")))
