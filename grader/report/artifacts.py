"""The arrays saved beside result.json, loaded without pickle and checked before anything draws them.

A missing or malformed artefact is not an error of the report: the page says "no pictures" and goes on.
The pipeline saves a check's arrays as ``artifacts/<check id>.<name>.npz`` (``artifact_path``); a folder graded
before that holds ``artifacts/<name>.npz`` (one per kind), read for a result that carries no kind.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["OverfitArtifact", "TrainEvalArtifact", "artifact_path", "load_overfit", "load_train_eval"]

_MAX_BYTES = 64 * 1024 * 1024  # a report never needs more; a bigger file is not drawn


@dataclass(frozen=True)
class OverfitArtifact:
    image: np.ndarray  # uint8 (3, H, W)
    target: np.ndarray  # uint8 (H, W), 255 = void
    pred: np.ndarray  # uint8 (H, W)


@dataclass(frozen=True)
class TrainEvalArtifact:
    images: np.ndarray  # uint8 (M, 3, H, W)
    targets: np.ndarray  # uint8 (M, H, W)
    preds: np.ndarray  # uint8 (M, H, W)
    per_image_miou: np.ndarray  # float (M,)


def artifact_path(student_dir: Path, check_id: str, name: str, *, legacy: bool = False) -> Path:
    """Where check ``check_id``'s arrays ``name`` are saved (``grader.batch.pipeline``); ``legacy``: a result
    written before artefacts were keyed by check id falls back to the kind-wide ``<name>.npz``."""
    folder = Path(student_dir) / "artifacts"
    path = folder / f"{check_id}.{name}.npz"
    return folder / f"{name}.npz" if legacy and not path.exists() else path


def _arrays(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    if not path.is_file() or path.stat().st_size > _MAX_BYTES:
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not all(name in npz.files for name in names):
                return None
            return {name: np.asarray(npz[name]) for name in names}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None


def _is_u8(array: np.ndarray, ndim: int) -> bool:
    return array.dtype == np.uint8 and array.ndim == ndim


def load_overfit(path: Path) -> OverfitArtifact | None:
    """An overfit check's arrays (``artifact_path``), or None when absent or not the documented shapes and dtypes."""
    data = _arrays(Path(path), ("image", "target", "pred"))
    if data is None:
        return None
    image, target, pred = data["image"], data["target"], data["pred"]
    ok = (_is_u8(image, 3) and image.shape[0] == 3 and _is_u8(target, 2) and _is_u8(pred, 2)
          and image.shape[1:] == target.shape == pred.shape)
    return OverfitArtifact(image, target, pred) if ok else None


def load_train_eval(path: Path) -> TrainEvalArtifact | None:
    """A training check's evaluation arrays (``artifact_path``), or None when absent or not the documented
    shapes and dtypes."""
    names = ("images", "targets", "preds", "per_image_miou")
    data = _arrays(Path(path), names)
    if data is None:
        return None
    images, targets, preds, miou = (data[n] for n in names)
    ok = (_is_u8(images, 4) and images.shape[1] == 3 and _is_u8(targets, 3) and _is_u8(preds, 3)
          and images.shape[2:] == targets.shape[1:] == preds.shape[1:]
          and len(images) == len(targets) == len(preds) == len(miou) > 0
          and miou.ndim == 1 and np.issubdtype(miou.dtype, np.floating))
    return TrainEvalArtifact(images, targets, preds, miou.astype(float)) if ok else None
