"""The kit's ``segmentation.ipynb``, made from ``segmentation.py`` and the assignment's text (never by hand).

The module is cut at its top-level functions and classes: one code cell for what comes before the first
(docstring, imports, constants), then one per function or class, each after a markdown cell with the
assignment's words about it (the row of ``student_template/README.md``'s table that names it). Joined, the
code cells are the template itself, so the notebook and the .py are graded alike (``grader.intake.notebooks`` runs a
notebook's cells one by one). Any module can be cut this way: the tests make a notebook of a solution.
"""
from __future__ import annotations

import ast
import re

__all__ = ["code_chunks", "notebook_of", "readme_sections"]

_ROW = re.compile(r"^\|\s*(?P<names>`[^|]+`)\s*\|\s*(?P<text>.+?)\s*\|\s*$")


def readme_sections(guide: str) -> tuple[str, dict[str, str]]:
    """(the guide up to its "Check your work" section, name -> the table row's text about that name)."""
    what = guide.split("\n## Check your work", 1)[0]
    rows: dict[str, str] = {}
    for line in what.splitlines():
        match = _ROW.match(line)
        if match:
            for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", match["names"]):
                rows.setdefault(name, match["text"])
    return what, rows


def code_chunks(source: str) -> list[tuple[str | None, str]]:
    """(name of the function/class or None for the module's head, its source), in order; joined, the source."""
    lines = source.splitlines(keepends=True)
    starts = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            while first > 0 and lines[first - 1].lstrip().startswith("#"):  # its comment belongs to it
                first -= 1
            starts.append((first, node.name))
    bounds = [(0, None)] + starts
    chunks = []
    for i, (begin, name) in enumerate(bounds):
        end = bounds[i + 1][0] if i + 1 < len(bounds) else len(lines)
        text = "".join(lines[begin:end])
        if text.strip():
            chunks.append((name, text))
    return chunks


def _cell(kind: str, text: str) -> dict:
    cell = {"cell_type": kind, "metadata": {}, "source": text.rstrip("\n").splitlines(keepends=True)}
    return {**cell, "execution_count": None, "outputs": []} if kind == "code" else cell


def notebook_of(source: str, guide: str, *, title: str) -> dict:
    """An nbformat-4 notebook (as JSON data) of ``source``, with the assignment's text from ``guide``."""
    what, rows = readme_sections(guide)
    intro = what.split("\n|", 1)[0].split("\n", 1)[-1].strip()  # the guide's words before its table
    cells = [_cell("markdown", f"# {title}\n\n{intro}\n\nRun every cell, then check your work (last cell).")]
    said: set[str] = set()
    for name, text in code_chunks(source):
        if name is not None:
            row = rows.get(name, "")
            words = f"## `{name}`\n\n{row}" if row and row not in said else f"## `{name}`"
            said.add(row)
            cells.append(_cell("markdown", words))
        cells.append(_cell("code", text))
    cells.append(_cell("markdown", "## Check your work\n\nIn a terminal, in this folder: `grader check "
                                   "segmentation.ipynb` (install the kit first: see its README). A cell that "
                                   "raises is skipped and named in the report; the others are checked."))
    return {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                         "name": "python3"},
                                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 4}
