"""A generated corpus for the similarity comparison: disguised copies of each example submission and of the
reference, as a student hiding a copy writes them.

``disguise`` does what the red team did by hand (issue 22): every identifier the grader does not call by name
renamed (helpers, locals, arguments, classes' attributes), docstrings and comments dropped and new comments
written, top-level definitions and methods reordered, ``for`` loops rewritten as ``while`` loops, single-use
temporaries merged into the expression that uses them (and a returned expression split into a temporary),
``x += e`` written ``x = x + e``, ``a < b`` as ``b > a`` and ``a + b`` as ``b + a``. ``pad`` hides a verbatim copy behind comment lines. ``corpus`` makes the
whole set, and says which documents come from the same solution; the truly independent solutions are the
examples ada, ben, cleo.ipynb, dan and the reference. Used by tests/test_similarity.py and bench/similarity.py.
"""
from __future__ import annotations

import ast
import builtins
import copy
import random
from pathlib import Path

__all__ = ["REPO", "TEMPLATE", "SOURCES", "solutions", "disguise", "pad", "corpus"]

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "student_template" / "segmentation.py"
SOURCES = ("ada", "ben", "cleo", "dan", "reference")
_API = {"transpose_conv2d", "bilinear_kernel", "confusion_matrix", "mean_iou", "pixel_accuracy", "SegNet",
        "overfit_single_example", "train", "forward", "IGNORE_INDEX"}  # what the grader and torch call by name
_WORDS = ("now", "the", "loop", "over", "pixels", "then", "update", "weights", "check", "shape", "here", "we")


def solutions() -> dict[str, str]:
    """The independent solutions' code: the examples (cleo's notebook as its code cells) and the reference."""
    from grader.intake.notebooks import CELLS_DIR, notebook_to_files

    base = REPO / "examples" / "submissions"
    texts = {name: (base / name / "segmentation.py").read_text() for name in ("ada", "ben", "dan")}
    files, _ = notebook_to_files((base / "cleo.ipynb").read_bytes(), name="cleo.ipynb")
    texts["cleo"] = "".join(files[k] for k in sorted(files) if k.startswith(CELLS_DIR + "/"))
    texts["reference"] = (REPO / "reference" / "segmentation.py").read_text()
    return texts


def _uses(tree: ast.AST, name: str) -> int:
    return sum(isinstance(n, ast.Name) and n.id == name for n in ast.walk(tree))


class _Loops(ast.NodeTransformer):
    """``for t in range(a, b)`` -> ``t = a; while t < b: ...; t = t + 1``; ``for t in xs`` -> an index loop."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.count = rng, 0

    def visit_For(self, node: ast.For) -> object:
        self.generic_visit(node)
        if node.orelse or any(isinstance(n, (ast.Continue, ast.Break)) for n in ast.walk(node)):
            return node
        self.count += 1
        it = node.iter
        is_range = (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"
                    and not it.keywords and 1 <= len(it.args) <= 2 and isinstance(node.target, ast.Name))
        if is_range:
            start, stop = (ast.Constant(0), it.args[0]) if len(it.args) == 1 else it.args
            index, pre, body = node.target.id, [], node.body
        else:
            seq, index = f"seq_{self.count}", f"k_{self.count}"
            pre = [ast.Assign([ast.Name(seq, ast.Store())], ast.Call(ast.Name("list", ast.Load()), [it], []))]
            stop = ast.Call(ast.Name("len", ast.Load()), [ast.Name(seq, ast.Load())], [])
            start = ast.Constant(0)
            body = [ast.Assign([node.target], ast.Subscript(ast.Name(seq, ast.Load()), ast.Name(index, ast.Load())))]
            body += node.body
        step = ast.Assign([ast.Name(index, ast.Store())],
                          ast.BinOp(ast.Name(index, ast.Load()), ast.Add(), ast.Constant(1)))
        loop = ast.While(ast.Compare(ast.Name(index, ast.Load()), [ast.Lt()], [stop]), body + [step], [])
        return pre + [ast.Assign([ast.Name(index, ast.Store())], start), loop]


class _Mirror(ast.NodeTransformer):
    """``a < b`` -> ``b > a``; ``a + b`` -> ``b + a`` (and ``*``): what a student reading the code aloud changes."""

    _FLIP = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE}

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if len(node.ops) == 1 and type(node.ops[0]) in self._FLIP:
            return ast.Compare(node.comparators[0], [self._FLIP[type(node.ops[0])]()], [node.left])
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, (ast.Add, ast.Mult)):
            node.left, node.right = node.right, node.left
        return node


class _Substitute(ast.NodeTransformer):
    def __init__(self, name: str, value: ast.expr) -> None:
        self.name, self.value = name, value

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return copy.deepcopy(self.value) if node.id == self.name else node


class _Merge(ast.NodeTransformer):
    """``t = e`` followed by a statement using ``t`` once (and ``t`` used nowhere else) -> that statement with ``e``;
    ``return <call>`` -> ``result = <call>; return result``; ``x += e`` -> ``x = x + e``."""

    def __init__(self, scope: ast.AST) -> None:
        self.scope = scope

    def visit_AugAssign(self, node: ast.AugAssign) -> object:
        self.generic_visit(node)
        if isinstance(node.target, ast.Name):
            return ast.Assign([ast.Name(node.target.id, ast.Store())],
                              ast.BinOp(ast.Name(node.target.id, ast.Load()), node.op, node.value))
        return node

    def _block(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in body:
            prev = out[-1] if out else None
            if (isinstance(prev, ast.Assign) and len(prev.targets) == 1 and isinstance(prev.targets[0], ast.Name)
                    and isinstance(stmt, (ast.Assign, ast.Return, ast.Expr))):
                name = prev.targets[0].id
                if _uses(stmt, name) == 1 and _uses(self.scope, name) == 2:
                    out[-1] = _Substitute(name, prev.value).visit(stmt)
                    continue
            if isinstance(stmt, ast.Return) and isinstance(stmt.value, (ast.Call, ast.BinOp)):
                out += [ast.Assign([ast.Name("result", ast.Store())], stmt.value),
                        ast.Return(ast.Name("result", ast.Load()))]
                continue
            out.append(stmt)
        return out

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            if isinstance(getattr(node, field, None), list) and getattr(node, field) and \
                    isinstance(getattr(node, field)[0], ast.stmt):
                setattr(node, field, self._block(getattr(node, field)))
        return node


def _rename(tree: ast.Module, rng: random.Random) -> None:
    imported = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree)
                if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    attrs = {t.attr for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets
             if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}
    api_args = {a.arg for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name in _API
                for a in n.args.args + n.args.kwonlyargs}  # the template fixes these: the grader may pass them
    keep = imported | set(dir(builtins)) | {"self"} | _API | api_args
    names: dict[str, str] = {}

    def new(name: str) -> str:
        if name in keep or name.startswith("__"):
            return name
        return names.setdefault(name, f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}{len(names)}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            node.id = new(node.id)
        elif isinstance(node, ast.arg):
            node.arg = new(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            node.name = new(node.name)
        elif isinstance(node, ast.Attribute) and node.attr in attrs:
            node.attr = new(node.attr)


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            kept = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
            node.body = kept or [ast.Pass()]


def disguise(source: str, seed: int = 0, *, loops: bool = True, merge: bool = True, mirror: bool = True) -> str:
    """``source`` disguised as described in the module's docstring (the same seed gives the same text)."""
    rng = random.Random(seed)
    tree = ast.parse(source)
    _strip_docstrings(tree)
    if loops:
        tree = _Loops(rng).visit(tree)
    if merge:
        for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            _Merge(fn).visit(fn)
    if mirror:
        tree = _Mirror().visit(tree)
    _rename(tree, rng)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            rng.shuffle(node.body)
    heads = [s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))]
    rest = [s for s in tree.body if s not in heads]
    defs = [s for s in rest if isinstance(s, (ast.FunctionDef, ast.ClassDef))]
    rng.shuffle(defs)
    order = heads + [s for s in rest if s not in defs] + defs
    lines = ast.unparse(ast.fix_missing_locations(ast.Module(order, []))).splitlines()
    out = []
    for line in lines:
        if line.strip() and rng.random() < 0.15:
            indent = line[:len(line) - len(line.lstrip())]
            out.append(f"{indent}# {' '.join(rng.choice(_WORDS) for _ in range(4))}")
        out.append(line)
    return "\n".join(out) + "\n"


def pad(source: str, kilobytes: int = 414) -> str:
    """A verbatim copy behind ``kilobytes`` KB of comment lines."""
    line = "# " + "padding " * 9 + "\n"
    return line * (kilobytes * 1000 // len(line) + 1) + source


def corpus(seeds: int = 3) -> dict[str, tuple[str, str]]:
    """Document name -> (the solution it comes from, its code): each solution, ``seeds`` disguised copies of it
    (with every rewrite, and one without loop rewrites) and a padded copy."""
    docs: dict[str, tuple[str, str]] = {}
    for i, (name, text) in enumerate(sorted(solutions().items())):
        docs[name] = (name, text)
        for seed in range(seeds):
            docs[f"{name}_disguised{seed}"] = (name, disguise(text, seed=100 * i + seed, loops=seed != 1))
        docs[f"{name}_padded"] = (name, pad(text))
    return docs
