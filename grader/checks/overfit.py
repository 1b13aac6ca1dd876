"""overfit: the student's ``overfit_single_example(model, image, target, epochs)`` trains their SegNet on ONE
training example; judged from the logits the trained net produces on it (pixel accuracy and cross-entropy
computed here) together with the returned loss history (below the bound within the epochs, no NaN).

The net is evaluated in train and eval mode; ``prediction_mode: either`` counts the better one, because a
BatchNorm net's running statistics trail its weights after a few high-LR steps.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from grader.core import metrics
from grader.checks.base import CheckKind, CheckSpec, View
from grader.checks.nets import NetStart, build_model, for_evaluation, losses_of, parameter_digest
from grader.checks.verdict import JudgeContext, Judged, StageResult, problem_or_crash, result, stage_problem
from grader.core.lazy import LazyModule
from grader.core.lazy import numpy as np
from grader.core.lazy import torch
from grader.core.outputs import OutputError

__all__ = ["KIND", "OverfitSpec", "cross_entropy", "probe_parameters"]

PROBE_SEED_OFFSET = 7919  # the probes' noise and permutations: derived from the check's seed (same grade)
PROBE_NUDGE = 1e-4  # relative size of the nudge
_NUDGE_LOSS = 0.10  # a nudge may cost an honest net at most this much pixel accuracy
_OBJECT_RECALL = 0.5  # scrambled parameters still labelling this share of the object pixels: not learnt

voc = LazyModule("grader.core.voc")  # IGNORE_INDEX (numpy and PIL: loaded on first use)


@dataclass(frozen=True)
class OverfitSpec(CheckSpec):
    seed: int = 0  # seeds the net's initialisation (the student's loop is theirs)
    epochs: int = 40
    loss_bound: float = 0.05  # a loss below this within the epochs
    min_pixel_accuracy: float = 0.95  # on the example, computed by the host
    prediction_mode: Literal["train", "eval", "either"] = "either"  # which mode's logits count
    image_size: int = 128  # the example is resized to this (stride-8/16 encoders need room)
    example_index: int = 0  # which training image

    def net_sizes(self, rubric: Any) -> tuple[tuple[int, int], ...]:
        """The (H, W) this check feeds the net: what it needs of a required model_shapes (grader.batch.pipeline)."""
        return ((self.image_size, self.image_size),)


def inputs(spec: OverfitSpec, job: Any) -> tuple[dict, dict]:
    images, masks = job.split(job.rubric.dataset.train_split, size=spec.image_size)
    image, target = images[spec.example_index], masks[spec.example_index]
    unseen, unseen_target = unseen_example(job, size=spec.image_size)
    config = {"seed": spec.seed, "num_classes": job.rubric.num_classes, "epochs": spec.epochs,
              "image": job.save(f"{spec.id}/image.npy", image), "target": job.save(f"{spec.id}/target.npy", target),
              "unseen": job.save(f"{spec.id}/unseen.npy", unseen)}
    return config, {"image": image, "target": target, "unseen_target": unseen_target, "unseen_image": unseen}


def unseen_example(job: Any, *, size: int) -> tuple[Any, Any]:
    """The contrast's unseen image and its mask (the lecture's 2x2: seen vs unseen, overfit vs fully trained): the
    first image of the PUBLIC validation split (``dataset.public_split``), which neither net trains on and whose
    labels may be shown; never an image of the keyed evaluation split. Its mask stays on the host all the same."""
    images, labels = job.split(job.rubric.dataset.public_split, size=size)
    return images[0], labels[0]


def predict_label_map(model: Any, image: Any, device: str) -> Any:
    """(H, W) uint8 argmax of the net on one (3, H, W) uint8 image, in the net's current mode."""
    x = torch.from_numpy(np.asarray(image)).float().div(255).unsqueeze(0).to(device)
    with torch.no_grad():
        return model(x)[0].argmax(0).to(torch.uint8).cpu()


def contrast_cell(target: Any, pred: Any, num_classes: int) -> dict[str, float]:
    """Pixel accuracy and mIoU of one prediction of the contrast (host; void ignored)."""
    conf = metrics.confusion(target, pred, num_classes)
    return {"pixel_accuracy": metrics.pixel_accuracy(conf), "miou": metrics.mean_iou(conf)}


def run(student: Any, config: dict, job: Path, writer: Any, device: str) -> None:
    image = torch.from_numpy(np.load(job / config["image"], allow_pickle=False)).float().div(255).unsqueeze(0)
    target = torch.from_numpy(np.load(job / config["target"], allow_pickle=False)).long().unsqueeze(0)
    image, target = image.to(device), target.to(device)
    model = build_model(student, config, device)
    model.train()
    net = NetStart.of(model)  # before the student's loop: the seeded parameters, the classes' own forward
    start = time.perf_counter()
    losses = student.overfit_single_example(model, image, target, config["epochs"])
    writer.record("losses", {"ok": True, "losses": [float(v) for v in losses],
                             "seconds": time.perf_counter() - start})
    undone = for_evaluation(model, net)  # the net is evaluated as its class computes it: no hook of the loop's
    writer.record("trained", {"ok": True, "parameters_changed": parameter_digest(model) != net.digest,
                              "undone": undone})
    for mode in ("train", "eval"):
        model.train(mode == "train")
        with torch.no_grad():
            writer.record(f"logits_{mode}", {"ok": True, "file": writer.array(f"logits_{mode}", model(image).float())})
    probe_parameters(model, image, writer, seed=config["seed"] + PROBE_SEED_OFFSET)
    if "unseen" in config:  # the contrast: the memorising net on an image it never saw (never fails the check)
        unseen = np.load(job / config["unseen"], allow_pickle=False)
        for mode in ("train", "eval"):
            model.train(mode == "train")
            try:
                pred = writer.array(f"unseen_{mode}", predict_label_map(model, unseen, device))
                writer.record(f"unseen_{mode}", {"ok": True, "file": pred})
            except Exception as exc:  # noqa: BLE001 - the student's net on another size: no picture, no penalty
                writer.error(f"unseen_{mode}", exc)


def probe_parameters(model: Any, image: Any, writer: Any, *, seed: int) -> None:
    """Where the trained net's labels come from, asked of the net (never of the student's word): its label maps of
    the example with its parameters SCRAMBLED (each tensor's values permuted: the same values, the learnt layout
    gone) and NUDGED (each value times 1 + 1e-4 noise: an honest net barely moves), in train and eval mode, each
    from the trained state. The host judges them (``_provenance``). torch.nn.Module's own methods throughout: a
    class that overrides ``parameters`` or ``load_state_dict`` changes nothing here."""
    module = torch.nn.Module
    params = [p for _, p in module.named_parameters(model)]
    buffers = [b for _, b in module.named_buffers(model)]
    saved_params, saved_buffers = [p.detach().clone() for p in params], [b.detach().clone() for b in buffers]
    generator = torch.Generator().manual_seed(seed)
    changes = {"scrambled": lambda v: v.reshape(-1)[torch.randperm(v.numel(), generator=generator).to(v.device)]
               .reshape(v.shape),
               "nudged": lambda v: v * (1 + PROBE_NUDGE * torch.randn(v.shape, generator=generator).to(v.device))}
    try:
        for name, change in changes.items():
            changed = [change(v) if v.is_floating_point() else v for v in saved_params]
            for mode in ("train", "eval"):
                with torch.no_grad():
                    for target, value in (*zip(params, changed), *zip(buffers, saved_buffers)):
                        target.copy_(value)  # every forward starts from the trained state (BN's statistics too)
                    model.train(mode == "train")
                    labels = model(image)[0].argmax(0).to(torch.uint8)
                writer.record(f"{name}_{mode}", {"ok": True, "file": writer.array(f"{name}_{mode}", labels)})
    except Exception as exc:  # noqa: BLE001 - the host fails a net it could not ask (``_provenance``)
        writer.error("probes", exc)
    finally:
        with torch.no_grad():
            for target, value in (*zip(params, saved_params), *zip(buffers, saved_buffers)):
                target.copy_(value)


def cross_entropy(logits: Any, target: Any, *, ignore_index: int = 255) -> float:
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


def _mode_scores(logits: Any, target: Any) -> tuple[float, float]:
    """(pixel accuracy, cross-entropy ignoring void) of (1, C, H, W) logits against an (H, W) mask."""
    pred = logits[0].argmax(0)
    acc = metrics.pixel_accuracy(metrics.confusion(target, pred, logits.shape[1]))
    return acc, cross_entropy(logits, target[None], ignore_index=voc.IGNORE_INDEX)


def judge(spec: OverfitSpec, stage: StageResult, ctx: JudgeContext) -> Judged:
    losses = losses_of(stage.outputs.record("losses"))
    if losses is None:
        return problem_or_crash(spec, stage)
    host = ctx.plan.host[spec.id]
    target, scores, logits = host["target"], {}, {}
    for mode in ("train", "eval"):
        try:
            logits[mode] = stage.outputs.array(f"logits_{mode}")
            if logits[mode].shape != (1, ctx.num_classes, *target.shape):
                raise OutputError(f"logits of shape {list(logits[mode].shape)}")
            scores[mode] = _mode_scores(logits[mode], target)
        except OutputError as exc:
            return Judged(stage_problem(spec, stage) or result(spec, "error", 0.0, f"No usable logits: {exc}."))
    below = next((i + 1 for i, v in enumerate(losses) if v < spec.loss_bound), None)
    acc = {m: scores[m][0] for m in scores}
    counted = max(acc, key=acc.get) if spec.prediction_mode == "either" else spec.prediction_mode
    details = dict(losses=losses, epochs=spec.epochs, loss_bound=spec.loss_bound, first_epoch_below=below,
                   pixel_accuracy={f"{m}_mode": acc[m] for m in acc}, counted_mode=counted,
                   host_cross_entropy=scores[counted][1])
    problems = []
    trained = stage.outputs.record("trained")
    trained = trained if isinstance(trained, dict) else {}  # written in the student's process: any JSON
    undone = [str(u)[:120] for u in trained.get("undone", [])[:10]] if isinstance(trained.get("undone"), list) else []
    if trained.get("parameters_changed") is False:
        problems.append("the net's parameters are exactly as the grader initialised them: `overfit_single_example` "
                        "must train the model it is given (an optimizer over `model.parameters()`, `loss.backward()`, "
                        "`optimizer.step()` each epoch); the losses it returns are not evidence of training")
    if undone:
        details["undone_before_evaluation"] = undone
    if not losses or len(losses) > spec.epochs or not all(map(math.isfinite, losses)):
        problems.append(f"the loss history has {len(losses)} entries for {spec.epochs} epochs or contains NaN/inf")
    if below is None:
        problems.append(f"the loss never fell below {spec.loss_bound:g} within {spec.epochs} epochs "
                        f"(lowest {min(losses, default=float('nan')):.3g})")
    if not acc[counted] >= spec.min_pixel_accuracy:
        problems.append(f"the trained net labels {acc[counted]:.1%} of the example's pixels correctly "
                        f"({counted} mode), below {spec.min_pixel_accuracy:.0%}")
    elif not problems:  # it labels the example: do its trained parameters make it so?
        problems += _provenance(stage, target, counted, acc[counted], spec, details)
    art = {"overfit": {"image": host["image"], "target": target,
                       "pred": logits[counted][0].argmax(0).astype(np.uint8), **_unseen(stage, host, counted, ctx.num_classes)}}
    details["contrast"] = {"seen": contrast_cell(target, art["overfit"]["pred"], ctx.num_classes),
                           "unseen": contrast_cell(host["unseen_target"], art["overfit"]["unseen_pred"],
                                                   ctx.num_classes) if "unseen_pred" in art["overfit"] else None}
    if problems:
        said = "Did not overfit: " + "; ".join(problems) + "."
        if undone:
            said += (f" Before the evaluation the grader removed what the training function added ({'; '.join(undone)}):"
                     " the net is evaluated with its own forward, without hooks.")
        return Judged(result(spec, "failed", 0.0, said, **details), art)
    return Judged(result(spec, "passed", spec.points, f"Loss below {spec.loss_bound:g} at epoch {below}; "
                         f"{acc[counted]:.1%} of pixels right ({counted} mode).", **details), art)


def _provenance(stage: StageResult, target: Any, mode: str, trained_acc: float, spec: OverfitSpec,
                details: dict) -> list[str]:
    """What the parameter probes (``probe_parameters``) say of a net that labels the example: nothing when its
    labels come from its trained parameters; else the problem, in words. A net that could not be asked fails."""
    labelled = target != voc.IGNORE_INDEX
    objects = labelled & (target != 0)
    found = {}
    for probe in ("scrambled", "nudged"):
        try:
            pred = stage.outputs.array(f"{probe}_{mode}")
            if pred.shape != target.shape or not np.issubdtype(pred.dtype, np.integer):
                raise OutputError(f"a label map of shape {list(pred.shape)}")
        except OutputError as exc:
            said = stage.outputs.record("probes") or {}
            why = str(said.get("error") or exc)[:200]
            return [f"the grader could not run the trained net with its parameters changed ({why}); it asks every "
                    "net so, to see that its labels come from what it learnt"]
        right = pred == target
        found[probe] = {"pixel_accuracy": float(right[labelled].mean()) if labelled.any() else float("nan"),
                        "object_recall": float(right[objects].mean()) if objects.any() else float("nan")}
    details["parameter_probes"] = {"mode": mode, **found}
    scrambled, nudged = found["scrambled"], found["nudged"]
    if scrambled["pixel_accuracy"] >= spec.min_pixel_accuracy and scrambled["object_recall"] >= _OBJECT_RECALL:
        return [f"with its parameters scrambled (each tensor's values permuted) the net still labels "
                f"{scrambled['pixel_accuracy']:.1%} of the example's pixels and {scrambled['object_recall']:.0%} of "
                "its objects right: its labels do not come from what it learnt (an example or its labels kept "
                "somewhere and looked up?); the overfit net must learn the example in its parameters"]
    if nudged["pixel_accuracy"] < trained_acc - _NUDGE_LOSS:
        return [f"changing each parameter by 1/10,000 of itself drops the labelled pixels from {trained_acc:.1%} to "
                f"{nudged['pixel_accuracy']:.1%}: an honest trained net barely moves, so its labels hang on the "
                "exact parameter values, not on what it learnt"]
    return []


def _unseen(stage: StageResult, host: dict, mode: str, num_classes: int) -> dict[str, Any]:
    """The memorising net's label map of the unseen image (the contrast's arrays), when it made a valid one."""
    pred = contrast_pred(stage, f"unseen_{mode}", host.get("unseen_target"), num_classes)
    if pred is None:
        return {}
    return {"unseen_image": host["unseen_image"], "unseen_target": host["unseen_target"], "unseen_pred": pred}


def contrast_pred(stage: StageResult, name: str, target: Any, num_classes: int) -> Any:
    """The stage's label map ``name`` of a contrast image as uint8, or None when there is no ``target`` (a job
    prepared without that image) or the sandbox returned nothing valid: (H, W) as the target, class ids only."""
    if target is None:
        return None
    try:
        pred = stage.outputs.array(name)
    except OutputError:
        return None
    if pred.shape != target.shape or not np.issubdtype(pred.dtype, np.integer) or \
            pred.min() < 0 or pred.max() >= num_classes:
        return None
    return pred.astype(np.uint8)


KIND = CheckKind(name="overfit", spec=OverfitSpec, budget="overfit", functions=("SegNet", "overfit_single_example"),
                 inputs=inputs, run=run, judge=judge, view=View(section="overfit", artifact="overfit"))
