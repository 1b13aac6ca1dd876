"""The grader's one atomic write and its one digest of a folder tree.

``write_atomic``: a temp file in the same folder, flushed to disk, then renamed over the target: a grader
killed mid-write leaves the old file or the new one, never a torn one. ``update_tree``: what the job cache,
the report renderer and the kit hash when they ask "has this source changed?".
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic", "update_tree"]


def write_atomic(path: Path, data: str | bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` (text as UTF-8, newlines as given) to ``path`` atomically. The file is owner-only
    (mkstemp's 0600) unless ``mode`` says otherwise (a report others read: 0o644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def update_tree(digest: "hashlib._Hash", root: Path, suffixes: tuple[str, ...] | None = None) -> None:
    """Feed ``digest`` every file under ``root`` (those whose suffix is in ``suffixes``; None: all), in path
    order, each as its relative path, size and bytes; ``__pycache__`` is skipped (it is not the source)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.relative_to(root).parts
                   and (suffixes is None or p.suffix in suffixes))
    for path in files:
        digest.update(f"{path.relative_to(root)}\0{path.stat().st_size}\0".encode() + path.read_bytes())
