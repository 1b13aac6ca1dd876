"""Label maps for the three metric kinds: crafted edge cases (void, absent classes, all-void) and random
ones over 21 classes, seeded by the check. ``confusion_matrix`` gets (pred, target); ``mean_iou`` and
``pixel_accuracy`` get the confusion matrix of the same maps, computed here by trusted code, so a wrong
confusion matrix costs only its own check."""
from __future__ import annotations

from typing import Any

from grader.checks.unit import UnitCase
from grader.heavy import numpy as np

__all__ = ["VOID", "label_map_pairs", "confusion_cases"]

VOID = 255


def _label_maps(rng: Any, shape: tuple[int, ...], classes: int, void: float) -> Any:
    target = rng.integers(0, classes, size=shape)
    target[rng.random(shape) < void] = VOID
    return target


def label_map_pairs(spec: Any) -> list[tuple[str, Any, Any]]:
    """(label, pred, target) triples over 21 classes, deterministic in ``spec.seed``."""
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
        shape = (int(rng.integers(1, 3)), int(rng.integers(4, 24)), int(rng.integers(4, 24)))
        target = _label_maps(rng, shape, int(rng.integers(2, 22)), void=0.1)
        pred = np.where(rng.random(shape) < 0.6, np.where(target == VOID, 0, target), rng.integers(0, 21, shape))
        maps.append((f"random #{i}", pred, target))
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
