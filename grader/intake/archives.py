"""Safe unpacking of the .zip archives students and LMS exports hand in (notebooks: ``notebooks``).

Every entry is checked before anything is written (zip-slip, absolute paths, symlink entries,
encryption, declared sizes, compression ratio, entry count), and the size limits are enforced again
while bytes are written, because a zip's headers are written by whoever made it and can lie. Nothing
is ever written outside the destination folder. A problem raises ``UnpackError`` whose text is the
reason shown to the student; the caller turns it into a rejection of that one submission.

A class archive (an LMS export of many students) is unpacked one top-level entry at a time, each
with its own budget, so one student's bomb rejects that student only.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "UnpackError", "Budget", "ClassArchive", "is_junk", "entry_parts", "read_listing",
    "extract_zip", "extract_class_zip", "reraise_disk_full",
]

MIB = 1024 * 1024
# A high compression ratio only signals a bomb when the data is big: 100 KB of zeros compresses
# 1000:1 and is harmless, so ratios are checked on entries (and totals) of at least this size.
RATIO_MIN_BYTES = 1 * MIB
# Folders per entry name: mkdir, os.walk and rmtree recurse once per level, so a name 1,500 folders deep
# (3 KB, within PATH_MAX) would be a RecursionError on the host instead of a rejection.
MAX_ENTRY_DEPTH = 32
JUNK_DIRS = frozenset({"__MACOSX", "__pycache__", ".ipynb_checkpoints", ".git"})
JUNK_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
_CHUNK = 64 * 1024
# What zipfile and zlib raise on damaged or exotic archives (bad CRC, truncated data, unknown
# compression, encryption); all mean "cannot be unpacked", never a grader crash.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError,
               RuntimeError, ValueError)


class UnpackError(Exception):
    """A zip or notebook that must not (or cannot) be unpacked; ``str(exc)`` is the reason for the student."""


class Budget:
    """What one submission may still unpack, shared across nested archives.

    Mutable on purpose: a nested zip draws from the same budget as the archive that held it.
    """

    def __init__(self, *, max_file_bytes: int, max_total_bytes: int, max_files: int,
                 max_ratio: float) -> None:
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self.max_files = max_files
        self.max_ratio = max_ratio
        self.files = 0
        self.bytes = 0

    def take_file(self, name: str) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise UnpackError(f"more than {self.max_files} files (limit reached at {name!r})")

    def take_bytes(self, name: str, n: int, file_so_far: int) -> None:
        self.bytes += n
        if file_so_far > self.max_file_bytes:
            raise UnpackError(f"{name!r} unpacks to more than {_mb(self.max_file_bytes)} "
                              "(the limit per file)")
        if self.bytes > self.max_total_bytes:
            raise UnpackError(f"the archive unpacks to more than {_mb(self.max_total_bytes)} in total "
                              f"(limit reached at {name!r}; a zip bomb?)")


@dataclass(frozen=True)
class ClassArchive:
    """A class export unpacked entry by entry: ``poisoned`` maps a top-level entry to why it was
    not unpacked; ``stray`` lists problems that belong to no entry (e.g. a top-level '../x')."""

    root: Path
    poisoned: dict[str, str]
    stray: tuple[str, ...]


def _mb(n: float) -> str:
    return f"{n / MIB:g} MB"


def is_junk(parts: Sequence[str]) -> bool:
    """Whether a relative path (as parts) is OS or tool litter that is never part of a submission."""
    if any(p in JUNK_DIRS for p in parts):
        return True
    last = parts[-1] if parts else ""
    # "._name" files are macOS AppleDouble metadata, binary, never Python.
    return last in JUNK_FILES or last.endswith((".pyc", ".pyo")) or last.startswith("._")


def entry_parts(raw: str) -> tuple[str, ...]:
    """Split a zip entry name into safe path parts, or raise for absolute and escaping names."""
    name = raw.replace("\\", "/")  # zips made on Windows may use backslashes
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise UnpackError(f"entry {raw!r} has an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnpackError(f"entry {raw!r} points outside the archive ('..', a zip-slip attack)")
    if len(parts) > MAX_ENTRY_DEPTH:
        raise UnpackError(f"entry {raw[:60]!r}... is nested more than {MAX_ENTRY_DEPTH} folders deep; "
                          "zip a shallow folder")
    return parts


def read_listing(path: Path) -> list[zipfile.ZipInfo]:
    """The entries of a zip (nothing unpacked), or ``UnpackError`` if it cannot be read."""
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.infolist()
    except (OSError, *_ZIP_ERRORS) as exc:
        raise UnpackError(f"{path.name} is not a readable zip archive ({exc})") from None


def _check_entry(info: zipfile.ZipInfo, budget: Budget) -> None:
    """Reject one entry by its header alone: links, encryption, declared size, ratio."""
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnpackError(f"entry {info.filename!r} is a symbolic link; links are not accepted")
    if info.flag_bits & 0x1:
        raise UnpackError(f"entry {info.filename!r} is encrypted; submit a zip without a password")
    if info.file_size > budget.max_file_bytes:
        raise UnpackError(f"{info.filename!r} is {_mb(info.file_size)}, over the "
                          f"{_mb(budget.max_file_bytes)} limit per file")
    if info.file_size >= RATIO_MIN_BYTES and info.file_size > budget.max_ratio * max(info.compress_size, 1):
        raise UnpackError(f"{info.filename!r} is compressed more than {budget.max_ratio:g}:1 "
                          "(a zip bomb?)")


def _plan(infos: Sequence[zipfile.ZipInfo], budget: Budget) -> list[tuple[tuple[str, ...], zipfile.ZipInfo]]:
    """Check every entry and the archive's declared totals; return the entries worth unpacking."""
    keep, declared, compressed = [], 0, 0
    seen: dict[tuple[str, ...], str] = {}
    for info in infos:
        parts = entry_parts(info.filename)
        _check_entry(info, budget)
        if not parts or is_junk(parts):
            continue
        if not info.is_dir():  # two members, one file: which one is graded must never be the archive's order
            key = tuple(unicodedata.normalize("NFC", p) for p in parts)
            if key in seen:
                raise UnpackError(f"the archive holds two files that unpack to the same path: {seen[key]!r} and "
                                  f"{info.filename!r}; zip the folder again so that each file is in it once")
            seen[key] = info.filename
        keep.append((parts, info))
        declared += info.file_size
        compressed += info.compress_size
    n_files = sum(not info.is_dir() for _, info in keep)
    if budget.files + n_files > budget.max_files:
        raise UnpackError(f"the archive holds {n_files} files; at most {budget.max_files} are accepted")
    if budget.bytes + declared > budget.max_total_bytes:
        raise UnpackError(f"the archive declares {_mb(declared)} of content; at most "
                          f"{_mb(budget.max_total_bytes)} in total are accepted")
    if declared >= RATIO_MIN_BYTES and declared > budget.max_ratio * max(compressed, 1):
        raise UnpackError(f"the archive is compressed more than {budget.max_ratio:g}:1 (a zip bomb?)")
    return keep


def _write_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: Budget) -> None:
    """Stream one entry to disk, counting real bytes: headers may understate the content."""
    budget.take_file(info.filename)
    target.parent.mkdir(parents=True, exist_ok=True)
    # O_NOFOLLOW: never write through a link, even though this module never creates one.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    written = 0
    with zf.open(info) as src, os.fdopen(fd, "wb") as dst:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise UnpackError(f"{info.filename!r} unpacks to more bytes than its header declares "
                                  "(a forged zip?)")
            budget.take_bytes(info.filename, len(chunk), written)
            dst.write(chunk)


def _extract(zf: zipfile.ZipFile, plan: Sequence[tuple[tuple[str, ...], zipfile.ZipInfo]], dest: Path,
             budget: Budget, strip: int = 0) -> None:
    root = dest.resolve()
    for parts, info in plan:
        rel = parts[strip:]
        if not rel:
            continue
        target = dest.joinpath(*rel)
        if not target.resolve().is_relative_to(root):  # defence in depth; entry_parts already forbids it
            raise UnpackError(f"entry {info.filename!r} would be written outside the archive folder")
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            _write_entry(zf, info, target, budget)


def reraise_disk_full(exc: BaseException) -> None:
    """A full disk is the grader's problem, not the student's: let it propagate (the batch stops, is rerun)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise exc


def extract_zip(path: Path, dest: Path, *, budget: Budget) -> None:
    """Unpack the zip at ``path`` into the existing folder ``dest``, within ``budget``."""
    try:
        with zipfile.ZipFile(path) as zf:
            _extract(zf, _plan(zf.infolist(), budget), dest, budget)
    except _ZIP_ERRORS as exc:
        raise UnpackError(f"{path.name} is corrupt or unreadable ({exc})") from None
    except OSError as exc:
        reraise_disk_full(exc)
        raise UnpackError(f"{path.name} could not be unpacked ({exc.strerror or exc})") from None


def _group_entries(infos: Sequence[zipfile.ZipInfo]) -> tuple[int, dict[str, list[zipfile.ZipInfo]]]:
    """Group a class archive's entries by top-level name, below one shared wrapper folder if any."""
    raw = [(i, i.filename.replace("\\", "/").lstrip("/").split("/")) for i in infos]
    raw = [(i, [p for p in parts if p not in ("", ".")]) for i, parts in raw]
    useful = [parts for i, parts in raw if parts and parts[0] != ".." and not is_junk(parts) and not i.is_dir()]
    firsts = {parts[0] for parts in useful}
    # "assignment_123_export/..." or "class/...": one folder wrapping everything is not a student.
    strip = int(len(firsts) == 1 and all(len(p) > 1 for p in useful))
    groups: dict[str, list[zipfile.ZipInfo]] = {}
    for info, parts in raw:
        if len(parts) > strip and not is_junk(parts):
            groups.setdefault(parts[strip], []).append(info)
    return strip, groups


def _extract_group(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], dest: Path, strip: int,
                   budget: Budget) -> None:
    try:
        _extract(zf, _plan(infos, budget), dest, budget, strip)
    except _ZIP_ERRORS as exc:
        raise UnpackError(f"corrupt or unreadable entry ({exc})") from None
    except OSError as exc:
        reraise_disk_full(exc)
        raise UnpackError(f"could not be unpacked ({exc.strerror or exc})") from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def extract_class_zip(path: Path, dest: Path, *, new_budget: Callable[[], Budget]) -> ClassArchive:
    """Unpack a class export into ``dest``, each top-level entry within its own fresh budget."""
    infos = read_listing(path)
    strip, groups = _group_entries(infos)
    poisoned: dict[str, str] = {}
    stray: list[str] = []
    with zipfile.ZipFile(path) as zf:
        for name, members in sorted(groups.items()):
            if name == ".." or re.match(r"^[A-Za-z]:$", name):
                stray.append(f"entry {members[0].filename!r} points outside the archive; skipped")
                continue
            try:
                _extract_group(zf, members, dest, strip, new_budget())
            except UnpackError as exc:
                poisoned[name] = str(exc)
                _remove(dest / name)  # a half-unpacked entry must not look like a submission
    return ClassArchive(root=dest, poisoned=poisoned, stray=tuple(stray))
