"""Figures for the reports: matplotlib (Agg, no pyplot state) rendered to PNG ``data:`` URIs.

Every function returns a string that goes straight into an ``<img src=...>``: the pages stay ONE
self-contained file each, with no request leaving the page. Figures are built on ``Figure`` objects with
an Agg canvas rather than through ``pyplot``, so rendering never touches global state or a display.
"""
from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from grader.data.dataset import IGNORE_INDEX, VOC_CLASSES, voc_palette

__all__ = [
    "png_data_uri", "colorize_mask", "loss_curve", "segmentation_rows", "confusion_heatmap",
    "histogram", "pass_rate_bars",
]

_VOID_RGB = (224, 224, 192)  # VOC's own colour for 255, drawn with a hatch so it never reads as a class
_DPI = 110


def png_data_uri(fig: Figure) -> str:
    """Render ``fig`` with Agg to a base64 PNG ``data:`` URI (no timestamp: same input, same bytes)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def colorize_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) uint8 labels -> (H, W, 3) uint8 RGB in the VOC palette; void is (224, 224, 192)."""
    return voc_palette()[np.asarray(mask, dtype=np.uint8)]


def _finite_positive(values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray([v if v is not None else math.nan for v in values], dtype=float)
    x = np.arange(1, len(y) + 1)
    keep = np.isfinite(y) & (y > 0)  # a log axis cannot show 0, NaN or inf; the caption says so
    return x[keep], y[keep]


def loss_curve(losses: Sequence[float], *, bound: float | None = None, xlabel: str = "epoch",
               title: str = "training loss") -> str:
    """Loss per epoch/step on a log y-axis, with the rubric's ``bound`` as a dashed line."""
    fig = Figure(figsize=(5.6, 3.0))
    ax = fig.add_subplot()
    x, y = _finite_positive(losses)
    ax.plot(x, y, color="#1f6feb", linewidth=1.6, label="loss")
    if bound is not None and bound > 0:
        ax.axhline(bound, color="#cf222e", linestyle="--", linewidth=1.2, label=f"bound {bound:g}")
    dropped = len(losses) - len(y)
    if dropped:
        ax.text(0.99, 0.97, f"{dropped} non-finite or non-positive value(s) not drawn",
                transform=ax.transAxes, ha="right", va="top", fontsize=7, color="#cf222e")
    if len(y):
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel="loss (log scale)", title=title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower left")
    return png_data_uri(fig)


def _legend_handles(masks: Sequence[np.ndarray], class_names: Sequence[str]) -> list[Patch]:
    present = sorted(set(np.unique(np.concatenate([np.ravel(m) for m in masks])).tolist()))
    palette = voc_palette() / 255.0
    handles = []
    for label in present:
        if label == IGNORE_INDEX:
            handles.append(Patch(facecolor=np.array(_VOID_RGB) / 255.0, edgecolor="#555555",
                                 hatch="////", label="void (255, ignored)"))
        elif label < len(class_names):
            handles.append(Patch(facecolor=palette[label], edgecolor="#555555",
                                 label=f"{label} {class_names[label]}"))
        else:
            handles.append(Patch(facecolor=palette[label], edgecolor="#555555", label=f"{label} (unknown)"))
    return handles


def _show_mask(ax: Axes, mask: np.ndarray) -> None:
    ax.imshow(colorize_mask(mask), interpolation="nearest")
    void = np.asarray(mask) == IGNORE_INDEX
    if void.any():  # hatch over void so it is visibly "not a class", even in greyscale print
        ax.contourf(void.astype(float), levels=[0.5, 1.5], colors="none", hatches=["////"])


def segmentation_rows(rows: Sequence[tuple[np.ndarray, np.ndarray | None, np.ndarray, str]], *,
                      class_names: Sequence[str] = VOC_CLASSES) -> str:
    """One row per example: image | ground truth | prediction, masks in the VOC palette, one legend.

    ``rows`` holds (image uint8 (3, H, W), target (H, W), pred (H, W), row caption). A target None (an evaluation
    image: its labels never leave the host) draws image | prediction only.
    """
    n = len(rows)
    truth = all(row[1] is not None for row in rows)
    handles = _legend_handles([m for row in rows for m in ((row[1], row[2]) if truth else (row[2],))], class_names)
    columns = 5
    legend_in = 0.2 * math.ceil(len(handles) / columns) + 0.15  # inches reserved under the images
    height = 2.2 * n + 0.35 + legend_in
    fig = Figure(figsize=(7.2, height))
    heads = ("image", "ground truth", "prediction") if truth else ("image", "prediction")
    axes = fig.subplots(n, len(heads), squeeze=False)
    for r, (image, target, pred, caption) in enumerate(rows):
        axes[r, 0].imshow(np.transpose(np.asarray(image, dtype=np.uint8), (1, 2, 0)), interpolation="nearest")
        if truth:
            _show_mask(axes[r, 1], target)
        _show_mask(axes[r, len(heads) - 1], pred)
        for c, head in enumerate(heads):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:  # column heads once, captions name each row
                axes[r, c].set_title(head, fontsize=9)
        axes[r, 0].set_ylabel(caption, fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.98, top=1 - 0.3 / height, bottom=legend_in / height,
                        hspace=0.12, wspace=0.06)
    fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 0.0), handlelength=1.4, columnspacing=1.0)
    return png_data_uri(fig)


def confusion_heatmap(confusion: Sequence[Sequence[int]], class_names: Sequence[str]) -> str:
    """Row-normalised confusion matrix (rows = ground truth) on a log colour scale, annotated."""
    counts = np.asarray(confusion, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(totals > 0, counts / totals, np.nan)  # absent classes stay blank, not 0
    k = counts.shape[0]
    size = max(4.0, 0.32 * k + 1.5)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.add_subplot()
    shown = np.where(rates > 0, rates, np.nan)  # LogNorm cannot place 0: empty cells stay background
    image = ax.imshow(shown, cmap="viridis", norm=LogNorm(vmin=1e-3, vmax=1.0), interpolation="nearest")
    ax.set_facecolor("#f3f3f3")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the row (log)")
    names = [str(n) for n in class_names][:k] + [str(i) for i in range(len(class_names), k)]
    ax.set_xticks(range(k), names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="ground truth", title="confusion matrix (row-normalised)")
    for i in range(k):
        for j in range(k):
            if np.isfinite(rates[i, j]) and rates[i, j] >= 0.01:
                ax.text(j, i, f"{100 * rates[i, j]:.0f}", ha="center", va="center", fontsize=6,
                        color="black" if rates[i, j] > 0.3 else "white")
    return png_data_uri(fig)


def histogram(values: Sequence[float], *, xlabel: str, title: str, bins: int = 20,
              value_range: tuple[float, float] | None = None,
              lines: Sequence[tuple[float, str, str]] = ()) -> str:
    """Histogram of ``values`` with labelled vertical ``lines`` (value, label, colour)."""
    fig = Figure(figsize=(5.6, 2.8))
    ax = fig.add_subplot()
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    ax.hist(data, bins=bins, range=value_range, color="#1f6feb", edgecolor="white")
    for value, label, colour in lines:
        ax.axvline(value, color=colour, linestyle="--", linewidth=1.3, label=f"{label} {value:g}")
    if lines:
        ax.legend(fontsize=8)
    ax.set(xlabel=xlabel, ylabel="students", title=f"{title} (n = {len(data)})")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, axis="y", alpha=0.25)
    return png_data_uri(fig)


def pass_rate_bars(names: Sequence[str], rates: Sequence[float]) -> str:
    """Horizontal bars: the fraction of graded students that passed each check."""
    fig = Figure(figsize=(5.6, 0.35 * len(names) + 1.0))
    ax = fig.add_subplot()
    y = np.arange(len(names))
    ax.barh(y, [100 * r for r in rates], color="#2da44e")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()  # rubric order top to bottom, like the table beside it
    ax.set_xlim(0, 100)
    ax.set(xlabel="passed (% of graded submissions)", title="pass rate per check")
    ax.grid(True, axis="x", alpha=0.25)
    return png_data_uri(fig)
