"""Check details (free-form JSON in result.json) turned into small typed views for the templates.

Every key is optional: a builder takes what is there and leaves the rest None. A builder that meets a
value of the wrong type raises TypeError/ValueError, and the caller falls back to showing the raw JSON,
so an odd detail never stops a report.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from grader.report.artifacts import OverfitArtifact, TrainEvalArtifact
from grader.data.dataset import NUM_CLASSES, VOC_CLASSES

__all__ = [
    "UnitView", "ModelView", "OverfitView", "IoURow", "TrainingView",
    "unit_view", "model_view", "overfit_view", "training_view", "json_text", "fmt",
]

_MAX_TEXT = 600  # one argument or value shown in a table cell; the rest is cut with a marker


def json_text(value: Any, *, limit: int = _MAX_TEXT) -> str:
    """Compact JSON for a table cell, cut at ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "), default=str)
    return text if len(text) <= limit else text[:limit] + f" … ({len(text) - limit} more characters)"


def fmt(value: Any, digits: int = 4) -> str:
    """A number for people: ``None``/NaN as an em dash, floats to ``digits`` significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class UnitView:  # how many cases failed is in the check's message
    case: str | None  # name of the smallest failing case
    args: tuple[tuple[str, str], ...]
    shapes: tuple[tuple[str, str], ...]
    max_abs_error: str | None
    expected: str | None
    got: str | None
    error: str | None
    hint: str | None


def unit_view(details: dict[str, Any]) -> UnitView:
    failure = details.get("smallest_failure") or {}
    if not isinstance(failure, dict):
        raise TypeError("smallest_failure is not an object")
    args = tuple((str(k), json_text(v)) for k, v in (failure.get("args") or {}).items())
    shapes = tuple((str(k), json_text(v)) for k, v in (failure.get("shapes") or {}).items())
    error = failure.get("max_abs_error")
    return UnitView(
        case=failure.get("case"),
        args=args, shapes=shapes, max_abs_error=None if error is None else fmt(float(error)),
        expected=_opt_text(failure.get("expected")), got=_opt_text(failure.get("got")),
        error=_opt_text(failure.get("error")), hint=_opt_text(details.get("hint")),
    )


def _opt_text(value: Any) -> str | None:
    return None if value is None or value == "" else json_text(value, limit=4000)


@dataclass(frozen=True)
class ModelView:
    rows: tuple[tuple[str, str, bool], ...]  # (input shape, output shape or "no output", ok)
    parameters: str | None
    problems: tuple[str, ...]


def model_view(details: dict[str, Any]) -> ModelView:
    inputs = list(details.get("inputs") or [])
    outputs = list(details.get("outputs") or [])
    rows = []
    for index, shape in enumerate(inputs):
        out = outputs[index] if index < len(outputs) else None
        expected = [shape[0], NUM_CLASSES, *shape[2:]] if isinstance(shape, list) and len(shape) == 4 else None
        rows.append((_shape(shape), "no output" if out is None else _shape(out), out == expected))
    parameters = details.get("parameters")
    return ModelView(rows=tuple(rows), parameters=None if parameters is None else f"{int(parameters):,}",
                     problems=tuple(str(p) for p in details.get("problems") or []))


def _shape(shape: Any) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")" if isinstance(shape, list) else json_text(shape)


@dataclass(frozen=True)
class OverfitView:
    loss_png: str | None
    images_png: str | None
    epochs: int | None
    loss_bound: str | None
    first_epoch_below: int | None
    final_loss: str | None
    pa_train: str | None
    pa_eval: str | None
    counted_mode: str | None
    host_cross_entropy: str | None


def overfit_view(details: dict[str, Any], artifact: OverfitArtifact | None) -> OverfitView:
    from grader.report import plots  # matplotlib, imported only when something is drawn

    losses = [_float(v) for v in details.get("losses") or []]
    bound = _float(details.get("loss_bound"))
    accuracy = details.get("pixel_accuracy") or {}
    images = None
    if artifact is not None:
        images = plots.segmentation_rows([(artifact.image, artifact.target, artifact.pred, "")])
    return OverfitView(
        loss_png=plots.loss_curve(losses, bound=bound, title="overfitting one example") if losses else None,
        images_png=images, epochs=details.get("epochs"), loss_bound=fmt(bound),
        first_epoch_below=details.get("first_epoch_below"),
        final_loss=fmt(losses[-1]) if losses else None,
        pa_train=_percent(accuracy.get("train_mode")), pa_eval=_percent(accuracy.get("eval_mode")),
        counted_mode=details.get("counted_mode"), host_cross_entropy=fmt(_float(details.get("host_cross_entropy"))),
    )


def _percent(value: Any) -> str | None:
    return None if value is None else f"{100 * float(value):.1f} %"


@dataclass(frozen=True)
class IoURow:
    name: str
    iou: str  # "0.873" or "absent"
    width: int  # bar width in percent, 0..100


@dataclass(frozen=True)
class TrainingView:
    loss_png: str | None
    miou: float | None
    pixel_accuracy: str | None
    floor: float | None
    bar: float | None
    per_class: tuple[IoURow, ...]
    confusion_png: str | None
    worst_png: str | None
    best_png: str | None


def training_view(details: dict[str, Any], artifact: TrainEvalArtifact | None) -> TrainingView:
    from grader.report import plots  # matplotlib, imported only when something is drawn

    names = [str(n) for n in details.get("class_names") or VOC_CLASSES]
    losses = [_float(v) for v in details.get("losses") or []]
    confusion = details.get("confusion")
    worst, best = _extremes(artifact, names)
    return TrainingView(
        loss_png=plots.loss_curve(losses, xlabel="step", title="full training") if losses else None,
        miou=_float(details.get("miou")), pixel_accuracy=_percent(details.get("pixel_accuracy")),
        floor=_float(details.get("floor")), bar=_float(details.get("bar")),
        per_class=_iou_rows(details.get("per_class_iou") or {}),
        confusion_png=plots.confusion_heatmap(confusion, names) if confusion else None,
        worst_png=worst, best_png=best,
    )


def _iou_rows(per_class: dict[str, Any]) -> tuple[IoURow, ...]:
    rows = []
    for name, value in per_class.items():
        if value is None:
            rows.append(IoURow(str(name), "absent", 0))
        else:
            rows.append(IoURow(str(name), f"{float(value):.3f}", round(100 * min(max(float(value), 0.0), 1.0))))
    return tuple(rows)


def _extremes(artifact: TrainEvalArtifact | None, names: list[str]) -> tuple[str | None, str | None]:
    from grader.report import plots  # matplotlib, imported only when something is drawn

    if artifact is None:
        return None, None
    miou = np.where(np.isfinite(artifact.per_image_miou), artifact.per_image_miou, -1.0)
    order = np.argsort(miou, kind="stable")
    k = min(3, len(order))

    def rows(indices: np.ndarray) -> list[tuple[np.ndarray, None, np.ndarray, str]]:
        # evaluation images: the prediction only; their labels stay on the host (a class pooling released
        # reports would otherwise rebuild the evaluation split's masks)
        return [(artifact.images[i], None, artifact.preds[i],
                 f"#{i}  mIoU {fmt(float(artifact.per_image_miou[i]), 3)}") for i in indices]

    worst = plots.segmentation_rows(rows(order[:k]), class_names=names)
    best = plots.segmentation_rows(rows(order[::-1][:k]), class_names=names)
    return worst, best
