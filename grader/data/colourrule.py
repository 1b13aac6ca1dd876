"""The best per-pixel colour rule, fitted on the training pixels: how far colour alone gets (staff measurement).

The embedded dataset must need a trained net: colour must not say the class. This fits, on the training
split's labelled pixels, a rule that looks at ONE pixel's colour and nothing else (no neighbours, no shape):

- ``majority``: the colour cube cut into ``bins`` ** 3 cells, each cell predicts the class most of its training
  pixels have (an unseen cell predicts background). With enough pixels per cell this is the Bayes rule for
  pixel accuracy: no per-pixel colour rule does better on average.
- ``balanced``: each cell predicts the class whose share in the cell most exceeds its share overall
  (p(class | cell) / p(class)): the rule that bets on the rare classes, which mIoU rewards.

Both are scored with the grader's metric (``grader.core.metrics``) on the evaluation images, beside the floor (the
all-background predictor). ``bench/colour_baseline.py`` prints the figures; tests/test_dataset.py asserts them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grader.core.metrics import confusion, mean_iou
from grader.core.voc import IGNORE_INDEX, NUM_CLASSES

__all__ = ["ColourRuleScores", "fit_colour_rule", "predict_colour_rule", "colour_rule_scores"]


@dataclass(frozen=True)
class ColourRuleScores:
    floor: float  # all background
    majority: float  # per colour cell, the most frequent class
    balanced: float  # per colour cell, the class most over-represented
    bins: int


def _cells(images: np.ndarray, bins: int) -> np.ndarray:
    """(N, 3, H, W) uint8 -> (N, H, W) int: the colour cell of each pixel."""
    q = (images.astype(np.int64) * bins) // 256
    return (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]


def fit_colour_rule(images: np.ndarray, masks: np.ndarray, *, bins: int = 16,
                    balanced: bool = False) -> np.ndarray:
    """The rule as a lookup table: cell -> class, fitted on (N, 3, H, W) uint8 images and (N, H, W) masks."""
    cells, labels = _cells(images, bins).ravel(), masks.astype(np.int64).ravel()
    kept = labels != IGNORE_INDEX
    counts = np.zeros((bins ** 3, NUM_CLASSES), dtype=np.float64)
    np.add.at(counts, (cells[kept], labels[kept]), 1.0)
    if balanced:
        prior = counts.sum(0)
        counts = np.where(prior > 0, counts / np.maximum(prior, 1.0), 0.0)
    table = counts.argmax(1)
    table[counts.sum(1) == 0] = 0  # a colour never seen in training: background
    return table


def predict_colour_rule(table: np.ndarray, images: np.ndarray) -> np.ndarray:
    bins = round(len(table) ** (1 / 3))
    return table[_cells(images, bins)]


def colour_rule_scores(train: tuple[np.ndarray, np.ndarray], evaluation: tuple[np.ndarray, np.ndarray], *,
                       bins: int = 16) -> ColourRuleScores:
    """mIoU on ``evaluation`` of the all-background floor and of both rules fitted on ``train``."""
    images, labels = evaluation

    def score(pred: np.ndarray) -> float:
        return mean_iou(confusion(labels, pred, NUM_CLASSES, IGNORE_INDEX))

    return ColourRuleScores(
        floor=score(np.zeros_like(labels, dtype=np.int64)),
        majority=score(predict_colour_rule(fit_colour_rule(*train, bins=bins), images)),
        balanced=score(predict_colour_rule(fit_colour_rule(*train, bins=bins, balanced=True), images)),
        bins=bins)
