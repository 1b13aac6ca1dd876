"""Expected outputs, computed on the HOST from ``reference/`` (trusted code), never written to a job folder.

Computed once per batch (the cases depend only on the rubric) by the trusted preparation process
(``grader.job.prepare``), which saves them as one .npy per case into the batch's host-only folder; the
grader's own process loads them back with ``np.load(allow_pickle=False)`` and never imports torch.

A student kit has no reference: ``grader handout`` computed the public cases' outputs with it and shipped them
(``grader.kit.checkout``); there ``shipped_expected`` loads them instead (``grader.job.prepare`` chooses).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np


__all__ = ["Expected", "expected_outputs", "reference_module", "save_expected", "load_expected",
           "shipped_expected"]


@dataclass(frozen=True)
class Expected:
    value: np.ndarray | float  # array for tensor results, float for metrics (nan allowed)


def reference_module() -> ModuleType:
    """The reference solution, imported only in a trusted host process (never the sandbox): the checkout's
    ``reference/`` beside the ``grader`` package, found by path (the installable package never holds it)."""
    import importlib
    import sys

    from grader.kit.checkout import reference_dir

    folder = reference_dir()
    if folder is None:
        raise RuntimeError("reference/ is not beside the grader package: staff commands run from the "
                           "repository checkout")
    if str(folder.parent) not in sys.path:
        sys.path.insert(0, str(folder.parent))
    return importlib.import_module("reference.segmentation")


def expected_outputs(cases: dict[str, list]) -> dict[str, Expected]:
    """case id -> Expected, for every unit case of the batch (imports torch and the reference)."""
    import torch

    ref = reference_module()
    out = {}
    with torch.no_grad():
        for case_list in cases.values():
            for case in case_list:
                args = [torch.from_numpy(a) for a in case.arrays.values()]
                value = getattr(ref, case.function)(*args, *case.args, **case.kwargs)
                out[case.id] = Expected(_plain(value))
    return out


def _plain(value: object) -> np.ndarray | float:
    import torch

    if isinstance(value, torch.Tensor) and value.ndim > 0:
        return value.double().numpy() if value.dtype.is_floating_point else value.numpy()
    return float(value)


def _path(folder: Path, case_id: str) -> Path:
    if not case_id or case_id.startswith(".") or any(c in case_id for c in "/\\\0"):
        raise ValueError(f"case id {case_id!r} cannot name a file")  # ids come from the rubric's check ids
    return folder / f"{case_id}.npy"


def save_expected(folder: Path, expected: dict[str, Expected]) -> None:
    """One .npy per case id; a number is saved as a 0-d float64 array (nan kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    for case_id, exp in expected.items():
        value = exp.value if isinstance(exp.value, np.ndarray) else np.float64(exp.value)
        np.save(_path(folder, case_id), np.asarray(value), allow_pickle=False)


def load_expected(folder: Path, case_ids: list[str]) -> dict[str, Expected]:
    """The saved expected value of every case id (a 0-d array becomes a float again)."""
    out = {}
    for case_id in case_ids:
        value = np.load(_path(folder, case_id), allow_pickle=False)
        out[case_id] = Expected(float(value) if value.ndim == 0 else value)
    return out


def shipped_expected(cases: dict[str, list], folder: Path) -> dict[str, Expected]:
    """case id -> Expected, loaded from a kit's shipped outputs (``folder``) for every unit case of the batch.
    A case the kit has no output for (its rubric was edited) is a ValueError that says so."""
    ids = [case.id for case_list in cases.values() for case in case_list]
    missing = [case_id for case_id in ids if not _path(folder, case_id).is_file()]
    if missing:
        raise ValueError(f"this kit ships no expected output for {len(missing)} unit case(s) (first: {missing[0]}): "
                         "its rubric was changed; a kit checks the rubric it was handed out with")
    return load_expected(folder, ids)
