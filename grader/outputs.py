"""Reading what the sandbox wrote: untrusted input, parsed defensively.

Only ``<stage>.json`` and the ``.npy`` files it names are ever opened; each is size-limited, must be a
regular file inside the out folder (no symlinks), and arrays are loaded with ``allow_pickle=False`` and
must have a plain numeric dtype. Anything else in the folder is ignored. A problem is an ``OutputError``
that the judge turns into a failed check with a message — it never crashes the grader.
"""
from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OutputError", "StageOutputs", "read_stage"]

MAX_JSON_BYTES = 8 * 1024 * 1024
MAX_ARRAY_BYTES = 256 * 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}\.npy$")


class OutputError(ValueError):
    """An output is missing, malformed, too large or not plain data."""


@dataclass(frozen=True)
class StageOutputs:
    out_dir: Path
    records: dict[str, Any]  # key -> record dict, as written by the runner (untrusted)

    def record(self, key: str) -> dict[str, Any] | None:
        rec = self.records.get(key)
        return rec if isinstance(rec, dict) else None

    def array(self, key: str) -> np.ndarray:
        rec = self.record(key)
        name = rec.get("file") if rec else None
        if not isinstance(name, str) or not _NAME.match(name):
            raise OutputError(f"output {key!r} names no valid array file")
        return _load_array(self.out_dir / name)

    def number(self, key: str) -> float:
        rec = self.record(key) or {}
        value = rec.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OutputError(f"output {key!r} is not a number")
        return float(value)


def _open_regular(path: Path, limit: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise OutputError(f"{path.name}: cannot be opened ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OutputError(f"{path.name}: not a regular file")
        if info.st_size > limit:
            raise OutputError(f"{path.name}: {info.st_size} bytes, over the {limit}-byte limit")
        return f.read(limit + 1)


def _load_array(path: Path) -> np.ndarray:
    import io

    data = _open_regular(path, MAX_ARRAY_BYTES)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure of untrusted bytes is an OutputError
        raise OutputError(f"{path.name}: not a valid .npy array ({type(exc).__name__})") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise OutputError(f"{path.name}: not a plain numeric array")
    return arr


def read_stage(out_dir: Path, stage: str) -> StageOutputs:
    """The stage's records; an empty record set when the stage wrote nothing (crash before output)."""
    path = out_dir / f"{stage}.json"
    if not path.exists() and not path.is_symlink():
        return StageOutputs(out_dir, {})
    try:
        data = json.loads(_open_regular(path, MAX_JSON_BYTES))
    except (OutputError, ValueError) as exc:
        raise OutputError(f"{stage}.json is unreadable: {exc}") from exc
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, dict):
        raise OutputError(f"{stage}.json has no records mapping")
    return StageOutputs(out_dir, records)
