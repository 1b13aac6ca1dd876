"""Staff CSV files (overrides, extensions, submission times, an LMS roster) read as hostile input.

A file a TA edited in a spreadsheet: a UTF-8 byte-order mark, CRLF line ends, blank lines and header case
are accepted; a file too large, not UTF-8, without the columns asked for, or with a row longer than its
header is refused with a ``GradebookError`` that names the file and the line, and says what to do.
Written cells that a spreadsheet would run as a formula are defused (``safe_cell``).
"""
from __future__ import annotations

import csv
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["GradebookError", "Row", "read_rows", "write_rows", "safe_cell", "MAX_CSV_BYTES"]

MAX_CSV_BYTES = 32 * 1024 * 1024  # a Canvas gradebook of 5000 students with 100 assignments is a few MB
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class GradebookError(ValueError):
    """A staff file (or its use) is wrong; the message names the file, the line and what to fix."""


@dataclass(frozen=True)
class Row:
    line: int  # the line number the TA sees in an editor (header = 1)
    cells: dict[str, str]  # lower-cased header -> stripped cell

    def get(self, name: str) -> str:
        return self.cells.get(name, "")


def _read_text(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise GradebookError(f"{path}: cannot be read ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise GradebookError(f"{path}: not a regular file")
        data = f.read(MAX_CSV_BYTES + 1)
    if len(data) > MAX_CSV_BYTES:
        raise GradebookError(f"{path}: larger than {MAX_CSV_BYTES // 2**20} MB; is it the right file?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GradebookError(f"{path}: not UTF-8 (byte {exc.start}); save it as 'CSV UTF-8' and retry") from None


def read_rows(path: Path, *, required: Sequence[str], optional: Sequence[str] = (),
              extra_ok: bool = False) -> list[Row]:
    """The data rows of ``path``: every ``required`` column must be in the header; a column that is neither
    required nor ``optional`` is refused unless ``extra_ok`` (a roster carries one column per assignment)."""
    path = Path(path)
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise GradebookError(f"{path}: empty; the first line must be the header {','.join(required)}")
        names = [h.strip().lower() for h in header]
        missing = [c for c in required if c not in names]
        if missing:
            raise GradebookError(f"{path}: line 1: missing column(s) {', '.join(missing)}; the header must hold "
                                 f"{','.join([*required, *optional])}")
        unknown = [n for n in names if n not in (*required, *optional)]
        if unknown and not extra_ok:
            raise GradebookError(f"{path}: line 1: unknown column(s) {', '.join(unknown)}; allowed: "
                                 f"{','.join([*required, *optional])}")
        rows = []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue  # a blank line a spreadsheet left
            if len(cells) > len(names):
                raise GradebookError(f"{path}: line {reader.line_num}: {len(cells)} cells for {len(names)} "
                                     "columns; quote a cell that holds a comma")
            rows.append(Row(reader.line_num, {n: c.strip() for n, c in zip(names, cells)}))
        return rows
    except csv.Error as exc:
        raise GradebookError(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from None


def safe_cell(value: object) -> str:
    """A cell a spreadsheet shows as text: a leading = + - @ would make it a live formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_rows(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    """Write a CSV (CRLF, as spreadsheets and LMS importers expect) with every cell through ``safe_cell``."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([safe_cell(h) for h in header])
    writer.writerows([safe_cell(c) for c in row] for row in rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    os.replace(tmp, path)
    return path
