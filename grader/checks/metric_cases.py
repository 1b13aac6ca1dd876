"""Label maps for the three metric kinds: crafted edge cases (void, absent classes, all-void) and random
ones over 21 classes, seeded by the check: mostly VOC-like (objects with void borders, few classes per
image), a quarter dense. ``confusion_matrix`` gets (pred, target); ``mean_iou`` and
``pixel_accuracy`` get the confusion matrix of the same maps, computed here by trusted code, so a wrong
confusion matrix costs only its own check."""
from __future__ import annotations

from typing import Any

from grader.checks.unit import UnitCase
from grader.core.lazy import numpy as np

__all__ = ["VOID", "label_map_pairs", "confusion_cases"]

VOID = 255


def _dense(rng: Any, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """Uniform labels over up to 21 classes with salt-like void (10 %), a prediction 60 % right."""
    target = rng.integers(0, int(rng.integers(2, 22)), size=shape)
    target[rng.random(shape) < 0.1] = VOID
    pred = np.where(rng.random(shape) < 0.6, np.where(target == VOID, 0, target), rng.integers(0, 21, shape))
    return pred, target


def _voc_like(rng: Any, shape: tuple[int, ...], spurious: bool) -> tuple[Any, Any]:
    """A VOC-like pair: background and 1-3 rectangular objects per image, a 1-pixel void border around
    every region (as VOC's annotators draw), and a prediction with the errors of a net: noise among the
    image's own classes, and (``spurious``) a blob of a class the target does not hold."""
    n, h, w = shape
    labels = np.zeros(shape, dtype=np.int64)
    for img in range(n):
        for _ in range(int(rng.integers(1, 4))):
            top, left = int(rng.integers(0, h - 2)), int(rng.integers(0, w - 2))
            bottom, right = int(rng.integers(top + 2, h)), int(rng.integers(left + 2, w))  # never the whole image
            labels[img, top:bottom, left:right] = int(rng.integers(1, 21))
    border = np.zeros(shape, dtype=bool)
    border[:, 1:, :] |= labels[:, 1:, :] != labels[:, :-1, :]
    border[:, :, 1:] |= labels[:, :, 1:] != labels[:, :, :-1]
    target = np.where(border, VOID, labels)
    present = np.unique(labels)
    pred = np.where(rng.random(shape) < 0.1, rng.choice(present, size=shape), labels)
    if spurious:
        absent = np.setdiff1d(np.arange(21), present)
        top, left = int(rng.integers(0, h - 1)), int(rng.integers(0, w - 1))
        pred[int(rng.integers(0, n)), top:top + 3, left:left + 3] = int(rng.choice(absent))
    return pred, target


def label_map_pairs(spec: Any) -> list[tuple[str, Any, Any]]:
    """(label, pred, target) triples over 21 classes, deterministic in ``spec.seed``.

    Random case i is VOC-like (void borders; few classes, so most of the 21 are absent) unless
    ``i % 4 == 3`` (dense: many classes, salt-like void); VOC-like cases with even i also hold a predicted
    class absent from the target. These schedules fix the shares the metric kinds' docstrings state."""
    rng = np.random.default_rng(spec.seed)
    maps = []
    if spec.edge_cases:
        t = rng.integers(0, 3, size=(1, 8, 8))
        maps.append(("perfect prediction", t.copy(), t))
        voided = t.copy()
        voided[:, :, :3] = VOID
        maps.append(("void pixels in the target (must be ignored)", rng.integers(0, 3, size=(1, 8, 8)), voided))
        maps.append(("classes absent from both prediction and target", rng.integers(1, 3, size=(2, 6, 6)),
                     rng.integers(1, 3, size=(2, 6, 6))))
        maps.append(("all-void image", rng.integers(0, 21, size=(1, 5, 5)), np.full((1, 5, 5), VOID)))
    for i in range(spec.cases):
        shape = (int(rng.integers(1, 3)), int(rng.integers(6, 24)), int(rng.integers(6, 24)))
        if i % 4 == 3:
            pred, target = _dense(rng, shape)
            maps.append((f"random #{i} (dense labels, scattered void)", pred, target))
        else:
            pred, target = _voc_like(rng, shape, spurious=i % 2 == 0)
            maps.append((f"random #{i} (objects with void borders"
                         + (", a class only predicted)" if i % 2 == 0 else ")"), pred, target))
    return maps


def confusion_cases(spec: Any, function: str) -> list[UnitCase]:
    """Cases of a metric over confusion matrices (rows: target, columns: prediction; void dropped)."""
    cases = []
    for i, (label, pred, target) in enumerate(label_map_pairs(spec)):
        keep = target != VOID
        conf = np.zeros((21, 21), dtype=np.int64)
        np.add.at(conf, (target[keep], pred[keep]), 1)
        cases.append(UnitCase(id=f"{spec.id}-{i}", function=function, label=label, arrays={"conf": conf}))
    return cases
