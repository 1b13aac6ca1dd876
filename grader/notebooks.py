"""A Jupyter notebook submission -> one Python script: its code cells in order, with IPython magics and
shell escapes (``%...``, ``!...``) commented out, since plain Python cannot import them.
"""
from __future__ import annotations

import io
import json
import tokenize

from grader.archives import UnpackError

__all__ = ["notebook_to_script", "PYTHON_CELL_MAGICS"]

# Cell magics whose body is still Python: only the %% line is commented out. Any other (%%bash,
# %%writefile, ...) holds something else, so the whole cell is.
PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug"})


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


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _source(src: object) -> str:
    """A cell's source: a string, or a list of strings (nbformat); anything else is not a notebook."""
    if isinstance(src, str):
        return src
    if isinstance(src, list) and all(isinstance(line, str) for line in src):
        return "".join(src)
    raise UnpackError("a code cell's source is neither text nor a list of lines")


def _code_cells(nb: object) -> list[str]:
    if not isinstance(nb, dict):
        raise UnpackError("it is not a JSON object")
    cells = nb.get("cells")
    if cells is None:  # nbformat 3 kept cells in worksheets, with 'input' for the source
        cells = [c for ws in _list(nb.get("worksheets")) if isinstance(ws, dict) for c in _list(ws.get("cells"))]
    return [_source(cell.get("source", cell.get("input", ""))) for cell in _list(cells)
            if isinstance(cell, dict) and cell.get("cell_type") == "code"]


def notebook_to_script(raw: bytes, *, name: str) -> tuple[str, list[str]]:
    """The code cells of a notebook as one Python script, and notes on what was changed."""
    try:
        cells = _code_cells(json.loads(raw.decode("utf-8")))
    except RecursionError:  # json recurses per level: '[[[[...' is not a notebook
        raise UnpackError(f"{name} is not a valid Jupyter notebook (nested too deeply)") from None
    except (UnicodeDecodeError, json.JSONDecodeError, UnpackError) as exc:
        raise UnpackError(f"{name} is not a valid Jupyter notebook ({exc})") from None
    if not cells:
        raise UnpackError(f"{name} has no code cells")
    parts, magics = [f"# Code cells of {name}, in order, joined by the grader.\n"], []
    for i, src in enumerate(cells, start=1):
        script, hits = _cell_script(src)
        parts.append(f"# %% [cell {i}]\n{script}\n")
        magics += hits
    notes = [f"{name}: {len(cells)} code cells joined into segmentation.py; every cell runs on import"]
    if magics:
        notes.append(f"{len(magics)} IPython magic/shell line(s) commented out (first: {magics[0]!r})")
    return "\n".join(parts), notes
