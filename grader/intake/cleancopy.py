"""The clean copy of a submission under the workdir, and its content hash (what resume keys results by).

Only regular files are copied, read without following links and without blocking; links, FIFOs and OS litter
are skipped (and listed in the notes); the submission's limits (files, bytes, folder depth) are held while
walking, so a hostile tree is a rejection (``UnpackError``, its text for the student), never a crash.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from grader.intake.archives import MIB, Budget, UnpackError, is_junk

__all__ = ["MAX_TREE_DEPTH", "list_files", "hash_folder", "clean_copy"]

MAX_TREE_DEPTH = 32  # folders inside a submitted folder (os.walk, mkdir and rmtree recurse per level)
_UNLIMITED = dict(max_file_bytes=2**62, max_total_bytes=2**62, max_files=2**62, max_ratio=float("inf"))


def list_files(root: Path, budget: Budget, notes: list[str]) -> list[tuple[str, Path]]:
    """Regular files under ``root`` by sorted relative path; links and litter skipped; limits held."""
    found: list[tuple[str, Path]] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):  # os.walk never descends into linked dirs
        base = Path(dirpath)
        if dirnames and len(base.relative_to(root).parts) >= MAX_TREE_DEPTH:
            raise UnpackError(f"the submission has folders nested more than {MAX_TREE_DEPTH} deep; "
                              "keep segmentation.py and its helpers in a shallow folder")
        for name in sorted(dirnames + filenames):
            path, rel = base / name, (base / name).relative_to(root).as_posix()
            if is_junk((name,)) or (name in dirnames and not path.is_symlink()):
                continue
            mode = os.lstat(path).st_mode
            if not stat.S_ISREG(mode):
                notes.append(f"skipped {rel}: {'a symbolic link' if stat.S_ISLNK(mode) else 'not a file'}")
                continue
            size = os.lstat(path).st_size
            total += size
            found.append((rel, path))
            if size > budget.max_file_bytes:
                raise UnpackError(f"{rel} is {size / MIB:.1f} MB, over the {budget.max_file_bytes / MIB:g} MB limit")
            if len(found) > budget.max_files or total > budget.max_total_bytes:
                raise UnpackError(f"the submission holds more than {budget.max_files} files or "
                                  f"{budget.max_total_bytes / MIB:g} MB")
        dirnames[:] = [d for d in dirnames if not is_junk((d,))]
    return sorted(found)


def _read_nofollow(path: Path) -> bytes:
    """A regular file's bytes; a file swapped for a link or a FIFO since it was listed is refused."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise UnpackError(f"{path.name} changed into something that is not a file while it was read")
        return f.read()


def _digest(items: Sequence[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for rel, data in sorted(items):
        h.update(rel.encode("utf-8") + b"\0" + str(len(data)).encode() + b"\0")
        h.update(data)
    return h.hexdigest()


def hash_folder(folder: Path) -> str:
    """The content hash of a clean folder (what ``Submission.content_hash`` holds)."""
    files = list_files(folder, Budget(**_UNLIMITED), [])
    return _digest([(rel, _read_nofollow(p)) for rel, p in files])


def clean_copy(root: Path, *, student: str, workdir: Path, budget: Budget, notes: list[str]) -> tuple[Path, str]:
    """Copy what ``list_files`` keeps to ``workdir/<student>-<hash8>`` (atomically: a temp folder renamed)."""
    files = [(rel, _read_nofollow(p)) for rel, p in list_files(root, budget, notes)]
    digest = _digest(files)
    tmp = Path(tempfile.mkdtemp(prefix=f".{student}-", dir=workdir))
    try:
        for rel, data in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        final = workdir / f"{student}-{digest[:8]}"
        if final.exists():  # same student, same bytes (a rerun): replace with the fresh copy
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, digest
