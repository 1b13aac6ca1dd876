"""A static scan of a submission's source for ways around the forbidden-operation recorder: staff review only.

The recorder (``grader.checks.forbidden``) watches a guarded call from inside the student's process; this scan
reads the submitted text on the host (``ast`` and plain text, never imported or run) and names what deserves a
human look: the forbidden operations' names inside the guarded functions (``transpose_conv2d`` and the
module-level functions it calls, also when the name is built from pieces such as ``"conv_" + "transpose"``),
and anywhere in the module ``torch._C``, ``torch.ops`` (operators called by name), switching torch's modes or
hooks off, threads / processes / ctypes, and reading the interpreter's frames or heap. The class summary lists
the flagged submissions (``grader.report.summary``). A finding NEVER changes a score: honest code may import
threading, and a by-hand solution may mention conv_transpose2d in a comment-free docstring check.

Stdlib only; hostile input: any text gives a list of findings, never an exception (a source that does not
parse, or nests too deep for ``ast``, is scanned as text only).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from grader.checks.forbidden import DEFAULT_TRANSPOSE_CONV, matches

__all__ = ["Finding", "GUARDED", "scan_source", "scan_folder"]

GUARDED = ("transpose_conv2d",)  # the functions the rubric guards by default
MAX_CHARS = 2_000_000  # a source past this is scanned as text up to it
MAX_FILES = 50
_MODULE_WIDE = {  # a name (identifier, attribute or string) -> why staff should look
    "_C": "torch._C (torch's internals)", "ops": "torch.ops (operators called by name)",
    "_disable_current_modes": "switches torch's recording modes off", "_pop_mode": "pops a torch mode",
    "_pop_mode_temporarily": "pops a torch mode", "DisableTorchFunction": "switches torch function modes off",
    "DisableTorchFunctionSubclass": "switches torch function modes off",
    "_DisableTorchDispatch": "switches torch dispatch off", "ExcludeDispatchKeyGuard": "excludes a dispatch key",
    "_ExcludeDispatchKeyGuard": "excludes a dispatch key", "_python_dispatch": "torch's dispatch-mode internals",
    "TorchDispatchMode": "defines or uses a torch dispatch mode", "TorchFunctionMode": "defines or uses a torch mode",
    "_global_forward_pre_hooks": "touches torch's global module hooks",
    "_pop_torch_function_stack": "pops a torch mode", "_pop_torch_dispatch_stack": "pops a torch mode",
    "threading": "threads", "_thread": "threads", "multiprocessing": "processes", "concurrent": "threads or processes",
    "subprocess": "processes", "fork": "processes", "ctypes": "ctypes (native calls)",
    "_getframe": "reads the interpreter's frames", "f_back": "reads the interpreter's frames",
    "f_locals": "reads the interpreter's frames", "currentframe": "reads the interpreter's frames",
    "get_objects": "searches the interpreter's heap", "get_referrers": "searches the interpreter's heap",
}
_NEEDS_TORCH_BEFORE = {"_C", "ops"}  # only as ``torch._C`` / ``torch.ops``


@dataclass(frozen=True)
class Finding:
    what: str  # "conv_transpose2d in transpose_conv2d" / "torch._C (torch's internals)"
    line: int  # 1-based line of the source (0: not located)
    file: str = ""


def scan_folder(folder: Path) -> list[Finding]:
    """Findings of every .py file under ``folder`` (links not followed, bounded), each with its file name."""
    found: list[Finding] = []
    try:
        files = sorted(p for p in Path(folder).rglob("*.py") if p.is_file() and not p.is_symlink())[:MAX_FILES]
    except OSError:
        return []
    for path in files:
        try:
            with path.open(encoding="utf-8", errors="replace") as f:
                text = f.read(MAX_CHARS)
        except OSError:
            continue
        found += [Finding(x.what, x.line, str(path.relative_to(folder))) for x in scan_source(text)]
    return found


def scan_source(source: str, *, guarded: tuple[str, ...] = GUARDED,
                patterns: tuple[str, ...] = DEFAULT_TRANSPOSE_CONV) -> list[Finding]:
    """What in ``source`` deserves a look, first occurrence of each, in line order."""
    source = source[:MAX_CHARS]
    try:
        tree = ast.parse(source)
        found = _module_wide(tree) + _in_guarded(tree, guarded, patterns)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        found = _text_only(source)
    seen: dict[str, Finding] = {}
    for f in sorted(found, key=lambda f: f.line):
        seen.setdefault(f.what, f)
    return list(seen.values())


def _names(node: ast.AST) -> list[tuple[str, int, str | None]]:
    """(name, line, the name before it in a dotted chain) of identifiers, attributes, imports and strings."""
    out: list[tuple[str, int, str | None]] = []
    for n in ast.walk(node):
        line = getattr(n, "lineno", 0)
        if isinstance(n, ast.Attribute):
            value = n.value
            before = value.id if isinstance(value, ast.Name) else value.attr if isinstance(value, ast.Attribute) else None
            out.append((n.attr, line, before))
        elif isinstance(n, ast.Name):
            out.append((n.id, line, None))
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            module = getattr(n, "module", None) or ""
            parts = module.split(".") + [p for a in n.names for p in a.name.split(".")]
            out += [(p, line, prev) for prev, p in zip([None, *parts], parts)]
        elif _word(n):
            parts = n.value.split(".")
            out += [(p, line, prev) for prev, p in zip([None, *parts], parts)]
    return out


def _word(node: ast.AST) -> bool:
    """A string constant that could be (a piece of) a name: short, no whitespace."""
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 200 \
        and not any(c.isspace() for c in node.value)


def _module_wide(tree: ast.AST) -> list[Finding]:
    found = [Finding("reads /proc or /dev/fd (the process's own files and memory)", getattr(n, "lineno", 0))
             for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and ("/proc/" in n.value or "/dev/fd" in n.value)]
    for name, line, before in _names(tree):
        why = _MODULE_WIDE.get(name)
        if why and (name not in _NEEDS_TORCH_BEFORE or before == "torch"):
            found.append(Finding(why, line))
    return found


def _in_guarded(tree: ast.Module, guarded: tuple[str, ...], patterns: tuple[str, ...]) -> list[Finding]:
    """Forbidden names in the guarded functions and the module-level functions they call (transitively)."""
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    todo, done, found = [g for g in guarded if g in functions], set(), []
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        body = functions[name]
        for ident, line, _ in _names(body):
            if ident in functions and ident not in done:
                todo.append(ident)
            found += [Finding(f"{ident} in {name}", line) for p in patterns if matches(p, ident)][:1]
        doc = body.body[0].value if body.body and isinstance(body.body[0], ast.Expr) else None
        joined = "".join(n.value for n in ast.walk(body) if _word(n) and n is not doc)  # "conv_" + "transpose"
        # + str(2) + "d" -> "conv_transposed"; prose (a message with spaces, the template's TODO) is not a name
        for p in patterns:
            if matches(p, joined) and not any(f.what.endswith(f" in {name}") for f in found):
                found.append(Finding(f"a forbidden name ({p}) built from pieces in {name}", body.lineno))
    return found


def _text_only(source: str) -> list[Finding]:
    """A source ``ast`` refused (it cannot have run either): torch's internals named anywhere, by line."""
    return [Finding("torch._C or torch.ops (torch's internals)", number)
            for number, line in enumerate(source.splitlines()[:50_000], 1) if "torch._C" in line or "torch.ops" in line]
