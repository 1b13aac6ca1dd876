"""A Jupyter notebook submission -> ``segmentation.py`` that runs its code cells one by one, as Jupyter does.

Each code cell becomes a file of its own (``notebook_cells/cell_NN.py``, IPython magics and shell escapes
(``%...``, ``!...``) commented out, since plain Python cannot run them), and ``segmentation.py`` is a small
prelude written by the grader: on import it compiles and executes every cell in the module's namespace, in
order, and a cell that raises (a student's exploratory cell reading data from their laptop, a plot of a
missing file, even a syntax error) is recorded and skipped, not fatal: the functions the other cells define
are graded. The cells stay real code in real files, so tracebacks name the cell and line, and staff's
similarity comparison reads them as code. The prelude runs inside the sandbox like any student code; what it
records (``__grader_notebook__``, read by the runner's import stage) reaches the student as a warning and is
never scored (``failed_cells_message`` reads it as untrusted data). Notebooks are read with nbformat
(v3 worksheets and v4 cells); any reading error is "not a valid notebook" for that student alone.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import tokenize
import warnings
from pathlib import Path
from typing import Any, Iterator

from grader.intake.archives import UnpackError
from grader.core.lazy import LazyModule

nbformat = LazyModule("nbformat")  # the maintained reader (v3 and v4), loaded when a notebook is read
__all__ = ["CELLS_DIR", "PYTHON_CELL_MAGICS", "RECORD", "failed_cells_message", "notebook_to_files",
           "write_notebook_files"]

# Cell magics whose body is still Python: only the %% line is commented out. Any other (%%bash,
# %%writefile, ...) holds something else, so the whole cell is.
PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug"})
CELLS_DIR = "notebook_cells"
RECORD = "__grader_notebook__"  # the module attribute the prelude records failed cells in (grader.runner reads it)
_MAX_SHOWN = 10  # failed cells named in a message; more are counted


def _statement_rows(source: str) -> set[int] | None:
    """Rows (1-based) where a statement starts, so '%' continuing an expression is left alone.

    None when the tokenizer gives up; then every line starting with % or ! counts as a magic.
    """
    rows: set[int] = set()
    at_start = True
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.NEWLINE:
                at_start = True
            elif tok.type not in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT,
                                  tokenize.ENDMARKER) and at_start:
                rows.add(tok.start[0])
                at_start = False
    except (tokenize.TokenError, SyntaxError, ValueError):  # ValueError: e.g. a NUL byte
        return None
    return rows


def _comment_out(line: str) -> str:
    code = line.lstrip()
    indent = line[: len(line) - len(code)]
    # Inside a block a bare comment could leave the block empty; 'pass' keeps it valid Python.
    return f"{indent}pass  # {code}" if indent else f"# {code}"


def _cell_script(source: str) -> tuple[str, list[str]]:
    """One code cell with its magics commented out, and the lines that were."""
    lines = source.split("\n")
    head = lines[0].strip()
    if head.startswith("%%"):
        magic = head[2:].split(maxsplit=1)[0] if head[2:].strip() else ""
        if magic not in PYTHON_CELL_MAGICS:
            return "\n".join(f"# {ln}" for ln in lines), [head]
        lines[0] = f"# {head}"
    rows = _statement_rows("\n".join(lines) + "\n")
    out, hits = [], []
    for row, line in enumerate(lines, start=1):
        is_magic = line.lstrip().startswith(("%", "!")) and (rows is None or row in rows)
        out.append(_comment_out(line) if is_magic else line)
        hits += [line.strip()] if is_magic else []
    return "\n".join(out), ([head] if head.startswith("%%") else []) + hits


def _code_cells(text: str) -> list[str]:
    """The code cells' sources, read by nbformat (v3 worksheets and v4 cells, converted to v4). nbformat reads
    a JSON without a version as an ancient format and drops what it cannot convert, so the version is checked
    first: a student's code is never silently lost."""
    version = json.loads(text).get("nbformat") if text.lstrip().startswith("{") else None
    if version not in (3, 4) or isinstance(version, bool):
        raise UnpackError(f"its nbformat version is {version!r}, not 3 or 4 (save it again from Jupyter)")
    with warnings.catch_warnings(), _quiet(nbformat_logger()):  # a schema complaint is not the student's problem
        warnings.simplefilter("ignore")
        nb = nbformat.reads(text, as_version=4)
    cells = [cell for cell in nb.get("cells", []) if isinstance(cell, dict) and cell.get("cell_type") == "code"]
    sources = [cell.get("source", "") for cell in cells]
    if not all(isinstance(src, str) for src in sources):
        raise UnpackError("a code cell's source is neither text nor a list of lines")
    return sources


def nbformat_logger() -> logging.Logger:
    return logging.getLogger("traitlets")  # where nbformat reports a notebook that fails its schema


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


# The prelude: trusted text written by the grader, run inside the sandbox as the submission's module. Cells
# run in the module's namespace (``globals()``), so what they define is the module's, as in a kernel.
# The notebook's file name is the student's text: it appears only as a repr() literal (a file name may hold
# quotes, backslashes or newlines), never inside the docstring or a comment, where it would be code.
_PRELUDE = '''"""segmentation.py written by the grader from a notebook (its name: {record}["source"]): its {count}
code cells, run one by one as Jupyter runs them (each is a file in {cells}/). A cell that raises is recorded and skipped; the next cells still run.
To see why a cell failed, run the notebook top to bottom in Jupyter."""
import sys as _grader_sys
from pathlib import Path as _GraderPath

{record} = {{"source": {name!r}, "cells": {count}, "failed_cells": []}}


def _grader_run_cells() -> None:
    folder = _GraderPath(__file__).resolve().parent / {cells!r}
    for number, first_line in {listing!r}:
        path = folder / f"cell_{{number:02d}}.py"
        try:
            code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
            exec(code, globals())
        except (Exception, SystemExit) as exc:
            said = (f"{{type(exc).__name__}}: {{exc}}".strip().splitlines() or [""])[0][:300]
            {record}["failed_cells"].append({{"cell": number, "first_line": first_line, "error": said}})
            print(f"[grader] code cell {{number}} ({{first_line}}) raised {{said}}; skipped",
                  file=_grader_sys.stderr)


_grader_run_cells()
del _grader_run_cells
'''


def _first_line(source: str) -> str:
    """The cell's first line of code, to name it to the student (cell numbers are hard to count)."""
    for line in source.split("\n"):
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()[:80]
    return "(only comments)"


def notebook_to_files(raw: bytes, *, name: str) -> tuple[dict[str, str], list[str]]:
    """The files a notebook becomes (relative path -> text: ``segmentation.py``, the prelude, and one file
    per code cell), and notes on what was changed."""
    try:
        cells = _code_cells(raw.decode("utf-8"))
    except RecursionError:  # json recurses per level: '[[[[...' is not a notebook
        raise UnpackError(f"{name} is not a valid Jupyter notebook (nested too deeply)") from None
    except UnpackError as exc:
        raise UnpackError(f"{name} is not a valid Jupyter notebook ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - nbformat's errors on hostile JSON are many kinds: all mean "not a notebook"
        raise UnpackError(f"{name} is not a valid Jupyter notebook ({type(exc).__name__}: "
                          f"{(str(exc).splitlines() or [''])[0][:200]})") from None
    if not cells:
        raise UnpackError(f"{name} has no code cells")
    files: dict[str, str] = {}
    magics: list[str] = []
    listing: list[tuple[int, str]] = []
    for number, src in enumerate(cells, start=1):
        script, hits = _cell_script(src)
        files[f"{CELLS_DIR}/cell_{number:02d}.py"] = f"# code cell {number} of {name!r}\n{script}\n"
        listing.append((number, _first_line(script)))
        magics += hits
    files["segmentation.py"] = _PRELUDE.format(name=name, count=len(cells), cells=CELLS_DIR, record=RECORD,
                                               listing=tuple(listing))
    notes = [f"{name}: {len(cells)} code cells, run one by one on import (a cell that raises is skipped)"]
    if magics:
        notes.append(f"{len(magics)} IPython magic/shell line(s) commented out (first: {magics[0]!r})")
    return files, notes


def write_notebook_files(folder: Path, files: dict[str, str]) -> None:
    """Write what ``notebook_to_files`` made into ``folder`` (the names are the grader's, never the student's)."""
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def failed_cells_message(names_record: Any) -> str:
    """A warning naming the notebook cells that raised and were skipped, from the import stage's ``names``
    record (written inside the sandbox: untrusted, so only well-formed entries are shown, bounded); "" when
    none."""
    info = names_record.get("notebook") if isinstance(names_record, dict) else None
    failed = info.get("failed_cells") if isinstance(info, dict) else None
    if not isinstance(failed, list) or not failed:
        return ""
    shown = [f"code cell {e['cell']} ({str(e.get('first_line', ''))[:80]}): {str(e.get('error', ''))[:200]}"
             for e in failed[:_MAX_SHOWN] if isinstance(e, dict) and isinstance(e.get("cell"), int)]
    more = f"; and {len(failed) - len(shown)} more" if len(failed) > len(shown) else ""
    return (f"Warning: {len(failed)} notebook cell(s) raised and were skipped (the other cells were graded): "
            + "; ".join(shown) + more + ".")
