"""The ``grader`` package has no import cycles, counting imports inside functions (a late import that breaks
a cycle at run time still ties the two modules into one knot), and its light host core imports no heavy
library at module level.

The graph is read from the source with ``ast``: every ``import`` / ``from ... import`` of a grader module, at
any depth of the file. ``from grader.x import name`` is an edge to ``grader.x.name`` when that is a module,
else to ``grader.x``; ``from grader import x`` likewise. A package's ``__init__`` is the package's node.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "grader"
LIGHT_CORE = ("grader.rubric", "grader.intake.discover", "grader.core.results", "grader.batch.scoring", "grader.report.export", "grader.api")
HEAVY = ("torch", "torchvision", "numpy", "jinja2")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The grader module ``name`` refers to: itself, or its closest enclosing module (``a.b.func`` -> ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .y import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "grader" or target.startswith("grader."):
                resolved = _resolve(target, modules)
                if resolved and resolved != module:
                    found.add(resolved)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the package's ~100 modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_closed_path(graph, set(c)) for c in components]


def _closed_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, for a readable failure message."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return sorted(component)


def test_the_cycle_finder_finds_a_late_import_cycle(tmp_path: Path) -> None:
    """The check can fail: two modules that import each other, one of them inside a function."""
    (tmp_path / "grader").mkdir()
    (tmp_path / "grader" / "__init__.py").write_text("")
    (tmp_path / "grader" / "a.py").write_text("from grader.b import thing\n")
    (tmp_path / "grader" / "b.py").write_text("def thing():\n    from grader import a\n    return a\n")
    (tmp_path / "grader" / "c.py").write_text("import grader.a\n")
    modules = {"grader": tmp_path / "grader" / "__init__.py", "grader.a": tmp_path / "grader" / "a.py",
               "grader.b": tmp_path / "grader" / "b.py", "grader.c": tmp_path / "grader" / "c.py"}
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["grader.b"] == {"grader.a"} and graph["grader.c"] == {"grader.a"}
    assert find_cycles(graph) == [["grader.a", "grader.b", "grader.a"]]


def test_the_graph_sees_the_package_s_imports() -> None:
    graph = import_graph()
    assert "grader.batch.grading" in graph["grader.batch.batch"]  # the seam: a function-local import, counted
    assert "grader.batch.batch" in graph["grader.api"] and "grader.api" in graph["grader.cli"]


def test_no_import_cycles_in_the_grader_package() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", LIGHT_CORE)
def test_the_light_core_imports_no_heavy_library_at_module_level(module: str) -> None:
    """Module level = statements of the module body, including under ``if`` / ``try`` (not in functions)."""
    tree = ast.parse(_modules()[module].read_text())
    heavy = []
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.If, ast.Try)):
            pending += [*node.body, *node.orelse, *getattr(node, "finalbody", []),
                        *(s for h in getattr(node, "handlers", []) for s in h.body)]
        elif isinstance(node, ast.Import):
            heavy += [a.name for a in node.names if a.name.split(".")[0] in HEAVY]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in HEAVY:
            heavy.append(node.module)
    assert not heavy, f"{module} imports {heavy} at module level"


def _closure(start: str, graph: dict[str, set[str]]) -> set[str]:
    """Every grader module ``start`` can reach, imports inside functions included, plus the packages that hold
    them (importing ``grader.a.b`` runs ``grader.a``'s ``__init__``)."""
    seen, pending = set(), [start]
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))] + sorted(graph.get(module, ()))
    return seen


def _outside_allow_list(modules: set[str]) -> list[str]:
    from grader.sandbox.confine import SANDBOX_PACKAGES

    return sorted(m for m in modules if m != "grader" and m.split(".")[1] not in SANDBOX_PACKAGES)


@pytest.mark.parametrize("entry", ["grader.runner", "grader.sandbox.forkserver", "grader.checks"])
def test_what_runs_in_the_sandbox_imports_only_what_the_sandbox_shows(entry: str) -> None:
    """The runner, the fork server and every check kind (with their function-local imports) stay inside
    confine.SANDBOX_VISIBLE: a module outside it would be missing inside a stage, and an honest check would fail."""
    graph = import_graph()
    closure = _closure(entry, graph) | (set().union(*(_closure(m, graph) for m in graph if m.startswith("grader.checks.")))
                                        if entry == "grader.checks" else set())
    assert not _outside_allow_list(closure), f"{entry} reaches host-only modules {_outside_allow_list(closure)}"


def test_the_allow_list_check_can_fail() -> None:
    graph = {"grader.runner": {"grader.checks.x"}, "grader.checks.x": {"grader.job.cache"}, "grader.job.cache": set()}
    assert _outside_allow_list(_closure("grader.runner", graph)) == ["grader.job", "grader.job.cache"]


def test_the_sandbox_is_shown_the_allow_list_and_nothing_else(tmp_path: Path) -> None:
    from grader.sandbox.confine import SANDBOX_VISIBLE, visible_package

    shown = {Path(p).name for p in visible_package(str(PACKAGE))}
    assert {"runner.py", "core", "checks", "sandbox", "__init__.py"} <= shown
    hidden = {p.name for p in PACKAGE.iterdir()} - set(SANDBOX_VISIBLE) - {"__pycache__"}
    assert {"data", "job", "batch", "intake", "kit", "similarity", "report", "rubric.py", "api.py", "cli.py"} <= hidden
    assert not shown & hidden
