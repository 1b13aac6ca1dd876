"""Trusted segmentation metrics (numpy) used by the host to score predictions.

Independent of ``reference/`` on purpose: the tests check both against each other. Policy (documented
in the README): pixels whose target is ``ignore_index`` are dropped; IoU of a class is TP/(TP+FP+FN);
the mean is taken over classes whose union is non-empty (nan when none is).
"""
from __future__ import annotations

from grader.core.lazy import numpy as np  # loaded on first use (grader.checks imports this module)

__all__ = ["confusion", "per_class_iou", "mean_iou", "pixel_accuracy"]


def confusion(target: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(num_classes, num_classes) int64, rows = ground truth, columns = prediction."""
    keep = target != ignore_index
    t, p = target[keep].astype(np.int64), pred[keep].astype(np.int64)
    p = np.where((p >= 0) & (p < num_classes), p, 0)  # out-of-range predictions count as background
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def per_class_iou(conf: np.ndarray) -> np.ndarray:
    """IoU per class; nan where the class is absent from both target and prediction."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(conf: np.ndarray) -> float:
    iou = per_class_iou(conf)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(conf: np.ndarray) -> float:
    total = conf.sum()
    return float(np.trace(conf) / total) if total else float("nan")
