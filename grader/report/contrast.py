"""The lecture's 2x2 (Assignment 5's four pictures): memorising vs generalising, on the student's report and as
class medians on the index.

Rows: the overfit net (trained on ONE example) and the fully-trained net, each at the size it trained at;
columns: that example (seen by the overfit net) and the first image of the PUBLIC validation split
(``dataset.public_split``: seen by neither in training, its labels public, never an image of the keyed evaluation
split). Each cell: image | ground truth | prediction, pixel accuracy and mIoU, all computed on the host from label
maps the sandbox returned (``grader.checks.overfit`` / ``full_training`` store them in ``details["contrast"]`` and
their artefacts).

Visibility, as for the checks themselves: a row is shown only when its check is (``visible``, or
``after_due_date`` once released; never ``hidden``); before release the note says when the other row comes.
"""
from __future__ import annotations

import math
import statistics
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from grader.core.results import CheckResult, SubmissionResult
from grader.report.artifacts import artifact_path
from grader.report.collect import kind_of

__all__ = ["Cell", "ContrastView", "ContrastMedians", "contrast_view", "class_medians"]

ROWS = (("overfit", "overfit net", "overfit"), ("full_training", "fully-trained net", "train_eval"))
COLUMNS = ("seen", "unseen")  # the overfit example, the public validation image
_ARRAYS = {("overfit", "seen"): ("image", "target", "pred"),
           ("overfit", "unseen"): ("unseen_image", "unseen_target", "unseen_pred"),
           ("full_training", "seen"): ("seen_image", "seen_target", "seen_pred"),
           ("full_training", "unseen"): ("unseen_image", "unseen_target", "unseen_pred")}
_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Cell:
    pixel_accuracy: str
    miou: str
    png: str | None  # image | ground truth | prediction, a data: URI


@dataclass(frozen=True)
class ContrastView:
    rows: tuple[tuple[str, tuple[Cell | None, ...]], ...]  # (row title, (seen cell, unseen cell)); None: not shown
    note: str | None


def _visible(check: CheckResult, released: bool) -> bool:
    return check.visibility == "visible" or (released and check.visibility == "after_due_date")


def _first(result: SubmissionResult, kind: str) -> CheckResult | None:
    return next((c for c in result.checks if (k := kind_of(c)) is not None and k.name == kind), None)


def _numbers(check: CheckResult, column: str) -> dict[str, float] | None:
    cell = ((check.details or {}).get("contrast") or {}).get(column)
    if not isinstance(cell, dict):
        return None
    values = {k: cell.get(k) for k in ("pixel_accuracy", "miou")}
    return values if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()) else None


def _load(path: Path, names: Sequence[str]) -> dict[str, np.ndarray] | None:
    if not path.is_file() or path.stat().st_size > _MAX_BYTES:
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {n: np.asarray(npz[n]) for n in names} if all(n in npz.files for n in names) else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None


def _triple(arrays: dict[str, np.ndarray] | None, names: Sequence[str]) -> tuple | None:
    """(image (3, H, W), target, pred) uint8 for one cell, from the check's artefact; None when not valid."""
    if arrays is None:
        return None
    triple = tuple(arrays.get(n) for n in names)
    if any(a is None or a.dtype != np.uint8 for a in triple):
        return None
    image, target, pred = triple
    ok = image.ndim == 3 and image.shape[0] == 3 and target.ndim == 2 and image.shape[1:] == target.shape == pred.shape
    return triple if ok else None


def _cell(check: CheckResult, kind: str, artifact: str, column: str, student_dir: Path) -> Cell | None:
    numbers = _numbers(check, column)
    if numbers is None:
        return None
    names = _ARRAYS[(kind, column)]
    triple = _triple(_load(artifact_path(student_dir, check.id, artifact), names), names)
    png = None
    if triple is not None:
        from grader.report import plots  # matplotlib, imported only when something is drawn

        png = plots.segmentation_rows([(*triple, "")])  # both images are public: each with its ground truth
    return Cell(pixel_accuracy=_percent(numbers["pixel_accuracy"]), miou=_fmt(numbers["miou"]), png=png)


def contrast_view(result: SubmissionResult, student_dir: Path, *, released: bool) -> ContrastView | None:
    """The 2x2 as the student may see it, or None when no row can be shown."""
    rows, withheld = [], []
    for kind, title, artifact in ROWS:
        check = _first(result, kind)
        if check is None or check.visibility == "hidden":
            continue
        if not _visible(check, released):
            withheld.append(title)
            continue
        cells = tuple(_cell(check, kind, artifact, col, student_dir) for col in COLUMNS)
        if any(cells):
            rows.append((title, cells))
    if not rows:
        return None
    note = (f"The {' and '.join(withheld)} {'rows appear' if len(withheld) > 1 else 'row appears'} when "
            "its results are released." if withheld else None)
    return ContrastView(rows=tuple(rows), note=note)


@dataclass(frozen=True)
class ContrastMedians:
    """Class medians of the four cells' pixel accuracy and mIoU: ``cells[row][column] = (pa, miou)`` as text."""

    cells: tuple[tuple[str, tuple[tuple[str, str, int], ...]], ...]  # (row title, ((pa, miou, n) per column))


def class_medians(results: Sequence[SubmissionResult]) -> ContrastMedians | None:
    """The class's medians of the four numbers (staff's index: everything, whatever the visibility)."""
    rows = []
    for kind, title, _ in ROWS:
        columns = []
        for column in COLUMNS:
            found = [n for r in results if (c := _first(r, kind)) is not None and (n := _numbers(c, column))]
            pa = [v["pixel_accuracy"] for v in found if math.isfinite(v["pixel_accuracy"])]
            miou = [v["miou"] for v in found if math.isfinite(v["miou"])]
            columns.append((_percent(statistics.median(pa)) if pa else "—",
                            _fmt(statistics.median(miou)) if miou else "—", len(found)))
        rows.append((title, tuple(columns)))
    return ContrastMedians(cells=tuple(rows)) if any(n for _, cols in rows for _, _, n in cols) else None


def _fmt(value: Any) -> str:
    return "—" if value is None or not math.isfinite(float(value)) else f"{float(value):.3f}"


def _percent(value: Any) -> str:
    return "—" if value is None or not math.isfinite(float(value)) else f"{100 * float(value):.1f} %"
