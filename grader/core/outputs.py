"""Reading what the sandbox wrote: untrusted input, parsed defensively.

Only ``<stage>.json`` and the ``.npy`` files it names are ever opened. Each is opened without following a
link and without blocking (``O_NOFOLLOW | O_NONBLOCK``: a FIFO where a file is expected must not hang the
grader), must be a regular file by ``fstat`` before a byte is read, and is size-limited. JSON is checked for
nesting depth before it is parsed (the parser recurses) and for numbers: ``NaN``/``Infinity`` are kept as
floats, because the runner writes them for honest results (a diverging loss, the nan mIoU of an all-void
image), but a literal too large for a float, or an integer beyond ``MAX_JSON_INT``, makes the file
unreadable. An array's ``.npy`` header is read first: a plain numeric dtype, at most ``MAX_ARRAY_NDIM``
dimensions and exactly as many data bytes as the shape says, so nothing is allocated from a lying header and
nothing is unpickled. Anything else in the folder is ignored.

Every problem is an ``OutputError`` (``read_stage`` and the accessors raise nothing else, whatever the
content) that the judge turns into a failed check with a message: it never crashes the grader.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.core.lazy import numpy as np  # loaded on first use: the light core imports this module

__all__ = [
    "OutputError", "StageOutputs", "read_stage",
    "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "MAX_JSON_INT", "MAX_ARRAY_BYTES", "MAX_ARRAY_NDIM",
]

MAX_JSON_BYTES = 8 * 1024 * 1024
MAX_JSON_DEPTH = 32  # the runner writes 4 levels (stage, records, record, list); room to spare
MAX_JSON_INT = 2**63 - 1  # fits an int64 and a float; a parameter count is far below
MAX_ARRAY_BYTES = 256 * 1024 * 1024  # the whole .npy file
MAX_ARRAY_NDIM = 8  # logits are 4-d
_MAX_NPY_HEADER = 10_000  # numpy's own default limit on the header's text
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}\.npy$")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class OutputError(ValueError):
    """An output is missing, malformed, too large or not plain data."""


@dataclass(frozen=True)
class StageOutputs:
    out_dir: Path
    records: dict[str, Any]  # key -> record dict, as written by the runner (untrusted)

    def record(self, key: str) -> dict[str, Any] | None:
        rec = self.records.get(key) if isinstance(self.records, dict) else None
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
        if isinstance(value, int) and abs(value) > MAX_JSON_INT:
            raise OutputError(f"output {key!r} is an integer too large to compare")
        return float(value)


def read_stage(out_dir: Path, stage: str) -> StageOutputs:
    """The stage's records; an empty record set when the stage wrote nothing (crash before output)."""
    data = _read_regular(out_dir / f"{stage}.json", MAX_JSON_BYTES, missing_ok=True)
    if data is None:
        return StageOutputs(out_dir, {})
    try:
        parsed = _parse_json(data)
    except OutputError as exc:
        raise OutputError(f"{stage}.json is unreadable: {exc}") from None
    records = parsed.get("records") if isinstance(parsed, dict) else None
    if not isinstance(records, dict):
        raise OutputError(f"{stage}.json has no records mapping")
    return StageOutputs(out_dir, records)


def _read_regular(path: Path, limit: int, *, missing_ok: bool = False) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes; never blocks, never follows
    a link (a socket cannot be opened at all: ENXIO)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError as exc:
        if missing_ok:
            return None
        raise OutputError(f"{path.name}: missing") from exc
    except OSError as exc:
        raise OutputError(f"{path.name}: cannot be opened ({exc.strerror or type(exc).__name__})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OutputError(f"{path.name}: not a regular file")
        if info.st_size > limit:
            raise OutputError(f"{path.name}: {info.st_size} bytes, over the {limit}-byte limit")
        chunks, total = [], 0
        while total <= limit:  # the size said by fstat is a hint: read to the end, one byte past the limit
            chunk = os.read(fd, min(limit + 1 - total, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise OutputError(f"{path.name}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    finally:
        os.close(fd)
    if total > limit:
        raise OutputError(f"{path.name}: over the {limit}-byte limit")
    return b"".join(chunks)


def _parse_json(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise OutputError("not UTF-8 text") from None
    if (depth := _nesting_depth(data)) > MAX_JSON_DEPTH:
        raise OutputError(f"nested {depth} levels deep, over the limit of {MAX_JSON_DEPTH}")
    try:
        value = json.loads(text, parse_int=_bounded_int, parse_float=_finite_float)
    except Exception as exc:  # noqa: BLE001 - any parse failure of untrusted text is an OutputError
        raise OutputError(f"not valid JSON ({_first_line(exc)})") from None
    return _valid_text(value)


def _nesting_depth(data: bytes) -> int:
    """The deepest bracket nesting outside strings, computed without recursion (the parser's own limit is
    the interpreter's stack) and in linear time, vectorised. A quote opens or closes a string unless an odd
    run of backslashes precedes it. Where the text is not valid JSON this count and the parser may part
    ways, but only after the first invalid byte, where the parser stops: up to there they agree."""
    raw = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(raw == ord('"'))
    plain = np.concatenate(([-1], np.flatnonzero(raw != ord("\\"))))  # positions that are no backslash
    before = plain[np.searchsorted(plain, quotes) - 1]  # the last one before each quote
    unescaped = quotes[(quotes - 1 - before) % 2 == 0]
    brackets = np.flatnonzero((raw == ord("[")) | (raw == ord("]")) | (raw == ord("{")) | (raw == ord("}")))
    outside = raw[brackets[np.searchsorted(unescaped, brackets) % 2 == 0]]
    if outside.size == 0:
        return 0
    return int(np.cumsum(np.where((outside == ord("[")) | (outside == ord("{")), 1, -1)).max())


def _bounded_int(literal: str) -> int:
    if len(literal) > 20:  # also spares int() a quadratic conversion of a huge literal
        raise ValueError(f"integer of {len(literal)} digits")
    value = int(literal)
    if abs(value) > MAX_JSON_INT:
        raise ValueError(f"integer {literal} out of range")
    return value


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # NaN/Infinity arrive as constants; this is a literal like 1e999
        raise ValueError(f"number {literal[:40]} too large for a float")
    return value


def _valid_text(value: Any) -> Any:
    """``value`` with every string (keys too) made encodable: a lone surrogate escape (``"\\ud800"``) is
    valid JSON but cannot be written to a UTF-8 report. Iterative: depth is bounded but no recursion is
    cheaper still."""
    if isinstance(value, str):
        return _text(value)
    stack = [value] if isinstance(value, (dict, list)) else []
    while stack:
        node = stack.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if isinstance(node, dict):
            node.clear()
        for key, item in items:
            if isinstance(item, str):
                item = _text(item)
            elif isinstance(item, (dict, list)):
                stack.append(item)
            node[_text(key) if isinstance(key, str) else key] = item
    return value


def _text(s: str) -> str:
    return s if s.isascii() else s.encode("utf-8", "replace").decode("utf-8")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def _load_array(path: Path) -> np.ndarray:
    data = _read_regular(path, MAX_ARRAY_BYTES) or b""  # never None: a missing file raised
    shape, fortran_order, dtype, offset = _npy_header(path.name, data)
    count = math.prod(shape)
    if len(data) - offset != count * dtype.itemsize:
        raise OutputError(f"{path.name}: {len(data) - offset} data bytes, the header says "
                          f"{count * dtype.itemsize}")
    if dtype.kind == "b":  # a bool byte other than 0/1 is not a bool: read bytes, compare
        flat = np.frombuffer(data, dtype=np.uint8, count=count, offset=offset) != 0
    else:
        flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset).astype(dtype.newbyteorder("="))
    return flat.reshape(shape, order="F" if fortran_order else "C")


def _npy_header(name: str, data: bytes) -> tuple[tuple[int, ...], bool, Any, int]:
    """(shape, fortran order, dtype, offset of the data) from a .npy header, checked before any data is
    touched: a plain numeric dtype, at most MAX_ARRAY_NDIM non-negative dimensions, a size within limits."""
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(buf, max_header_size=_MAX_NPY_HEADER)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(buf, max_header_size=_MAX_NPY_HEADER)
        else:
            raise OutputError(f"{name}: not a valid .npy array (format version {version} is not read)")
    except OutputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure of untrusted bytes is an OutputError
        raise OutputError(f"{name}: not a valid .npy array ({type(exc).__name__})") from None
    if dtype.kind not in "biuf" or dtype.names is not None or dtype.subdtype is not None or dtype.hasobject:
        raise OutputError(f"{name}: not a plain numeric array (dtype {str(dtype)[:60]})")
    if len(shape) > MAX_ARRAY_NDIM or any(d < 0 for d in shape):
        raise OutputError(f"{name}: shape {str(shape)[:80]} is not allowed (at most {MAX_ARRAY_NDIM} "
                          "non-negative dimensions)")
    if math.prod(shape) * dtype.itemsize > MAX_ARRAY_BYTES:
        raise OutputError(f"{name}: larger than {MAX_ARRAY_BYTES} bytes")
    return tuple(int(d) for d in shape), bool(fortran_order), dtype, buf.tell()
