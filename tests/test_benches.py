"""Benches that cannot rot: every bench/*.py still starts (``--help`` runs its imports and its argument
parser in a fresh interpreter), every grader name a bench imports or names in code it runs (function-level
imports and the code strings it hands a child interpreter included) still exists, and the shell benches parse.
A rename in grader/ that breaks a bench fails here, not on the day someone measures."""
from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHES = sorted(p for p in (REPO / "bench").glob("*.py") if p.name != "common.py")
DOTTED = re.compile(r"\b(?:grader|tests)(?:\.[A-Za-z_]\w*)+")


def _resolves(dotted: str) -> bool:
    """Whether ``dotted`` names a module, or an attribute reached from the longest importable prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def _imported_names(tree: ast.AST) -> set[str]:
    """``module.name`` of every grader (and tests) import, at any depth of the file."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("grader", "tests"):
            names |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.split(".")[0] in ("grader", "tests")}
    return names


def _code_names(tree: ast.AST) -> set[str]:
    """Dotted grader names inside string constants (code a bench runs in a child interpreter), docstrings
    excluded: prose may name a module loosely."""
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return {m for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings for m in DOTTED.findall(n.value)}


@pytest.mark.parametrize("bench", BENCHES, ids=lambda p: p.name)
def test_every_grader_name_a_bench_uses_still_exists(bench: Path) -> None:
    tree = ast.parse(bench.read_text(encoding="utf-8"), filename=str(bench))
    sys.path.insert(0, str(REPO))  # `from tests.x import ...` as the bench does from the checkout
    try:
        missing = sorted(n for n in _imported_names(tree) | _code_names(tree) if not _resolves(n))
    finally:
        sys.path.remove(str(REPO))
    assert not missing, f"{bench.name} uses names grader no longer has: {missing}"


@pytest.mark.parametrize("bench", BENCHES, ids=lambda p: p.name)
def test_every_bench_starts(bench: Path) -> None:
    done = subprocess.run([sys.executable, str(bench), "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"{bench.name} --help failed:\n{done.stderr[-2000:]}"
    assert "usage" in done.stdout.lower(), done.stdout[-500:]


@pytest.mark.parametrize("script", sorted((REPO / "bench").glob("*.sh")), ids=lambda p: p.name)
def test_every_shell_bench_parses(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_the_name_check_can_fail() -> None:
    tree = ast.parse("from grader.job.cache import reference_dir\ncode = 'import grader.batch.pipeline.Batch'\n")
    assert _imported_names(tree) == {"grader.job.cache.reference_dir"}
    assert _code_names(tree) == {"grader.batch.pipeline.Batch"}
    assert not _resolves("grader.job.cache.reference_dir") and not _resolves("grader.batch.pipeline.Batch")
    assert _resolves("grader.batch.pipeline.BatchSetup") and _resolves("grader.notebooks") is False
