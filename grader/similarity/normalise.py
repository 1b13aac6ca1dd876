"""A submission's code in the form the similarity comparison compares: comments and docstrings gone first, then
a cap on tokens, then fingerprints that renaming, reordering and loop rewriting do not change.

``strip`` drops every comment and every docstring (any statement that is only a string) with Python's own
tokenizer, before any size cut; the cut is then on significant tokens (``MAX_TOKENS``), never on characters,
so kilobytes of comment lines in front of a copy hide nothing. ``features`` parses what is left with ``ast``
and fingerprints every statement and expression of at least ``MIN_SUBTREE`` nodes, bottom-up, with every
name, argument and attribute replaced by its kind, ``for``/``while`` as one loop kind, ``x += e`` as
``x = x + e``, ``a > b`` as ``b < a``, the operands of ``+``, ``*``, ``==``, ``and`` in a fixed order,
annotations and no-op statements dropped. A submission is the *set* of its fingerprints: order
does not count (reordered functions), and merging a temporary into the expression that uses it keeps the
fingerprints of both parts. Text that does not parse (a notebook cell with a syntax error, a binary file) is
parsed per top-level block, and a block that still fails is fingerprinted as k-grams of its normalised tokens.

The parser is the standard library's (``ast``, ``tokenize``): the one well-kept Python parser there is. The
AST comparers on the package index (pycode-similar, last released 2020) diff function dumps pair by pair.

Fingerprints are 64-bit BLAKE2 digests (never ``hash()``, salted per process): the same code gives the same
set in every process. Every step is linear in the input and iterative (no recursion on student nesting).
Student code is only read as text here: never imported, never run.
"""
from __future__ import annotations

import ast
import builtins
import hashlib
import io
import itertools
import keyword
import re
import tokenize
from dataclasses import dataclass

__all__ = ["MAX_TOKENS", "MIN_SUBTREE", "KGRAM", "Stripped", "strip", "features"]

MAX_TOKENS = 100_000  # significant tokens kept per submission (a full solution has about 3,000)
MIN_SUBTREE = 5  # nodes: smaller subtrees (``x.shape[0]``) are idioms every solution shares
KGRAM = 10  # tokens per fingerprint of text that does not parse
_BLANK_OR_COMMENT_LINES = re.compile(r"^[ \t\f]*(?:#[^\r\n]*)?(?:\r?\n)", re.MULTILINE)
_WORD = re.compile(r"[^\W\d]\w*|\d[\w.]*|\S")
_SKIP = {tokenize.NL, tokenize.COMMENT}
_STATEMENT_START = {None, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
_KEEP_WORDS = frozenset(keyword.kwlist) | frozenset(dir(builtins))


@dataclass(frozen=True)
class Stripped:
    code: str  # the text without comments and docstrings, cut after ``MAX_TOKENS`` tokens (what pages show)
    tokens: int  # significant tokens in ``code``
    cut: bool  # True: the budget ran out before the end of the text


def _tokens(text: str, budget: int) -> tuple[list[tuple[int, int, int]], bool]:
    """(type, start, end) character offsets of ``text``'s tokens, up to the end of the logical line where the
    budget of significant tokens runs out; stops quietly at a tokenizer error. Returns (tokens, cut)."""
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    out: list[tuple[int, int, int]] = []
    significant = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.ENDMARKER:
                break
            (r0, c0), (r1, c1) = tok.start, tok.end
            out.append((tok.type, starts[r0 - 1] + c0, starts[r1 - 1] + c1))
            if tok.type not in _SKIP and tok.type not in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                significant += 1
            if significant >= budget and (tok.type == tokenize.NEWLINE or significant >= 2 * budget):
                return out, True
            if len(out) >= 8 * budget:  # brackets full of line breaks: bounded all the same
                return out, True
    except (tokenize.TokenError, SyntaxError, ValueError):  # unterminated string or bracket, bad dedent
        pass
    return out, False


def _next(toks: list[tuple[int, int, int]], i: int) -> int:
    while i < len(toks) and toks[i][0] in _SKIP:
        i += 1
    return i


def _string_statements(toks: list[tuple[int, int, int]]) -> tuple[set[int], set[int]]:
    """Indices of STRING tokens that form a statement of their own (docstrings, no-op strings), and the
    indices among them where a lone docstring must become ``...`` (it was its block's only statement)."""
    drop: set[int] = set()
    ellipsis: set[int] = set()
    prev = None
    i = 0
    while i < len(toks):
        kind = toks[i][0]
        if kind == tokenize.STRING and prev in _STATEMENT_START:
            run = [i]
            j = _next(toks, i + 1)
            while j < len(toks) and toks[j][0] == tokenize.STRING:
                run.append(j)
                j = _next(toks, j + 1)
            if j >= len(toks) or toks[j][0] == tokenize.NEWLINE:
                drop.update(run)
                after = _next(toks, j + 1)
                if prev == tokenize.INDENT and (after >= len(toks) or toks[after][0] == tokenize.DEDENT):
                    ellipsis.add(run[0])
            prev = toks[run[-1]][0]
            i = run[-1] + 1
            continue
        if kind not in _SKIP:
            prev = kind
        i += 1
    return drop, ellipsis


def strip(text: str, budget: int = MAX_TOKENS) -> Stripped:
    """``text`` without comments and docstrings, cut after ``budget`` significant tokens (see the module)."""
    text = _BLANK_OR_COMMENT_LINES.sub("", text.replace("\x00", "") + "\n")  # fast, before the tokenizer
    toks, cut = _tokens(text, budget)
    drop, ellipsis = _string_statements(toks)
    parts, pos, count = [], 0, 0
    for i, (kind, start, end) in enumerate(toks):
        if kind == tokenize.COMMENT or i in drop:
            parts.append(text[pos:start])
            if i in ellipsis:
                parts.append("...")
            pos = end
        elif kind not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            count += 1
    end = toks[-1][2] if toks else 0
    parts.append(text[pos:end])
    if not cut and text[end:].strip():  # the tokenizer gave up: the rest as it is, as many words as are left
        rest, left = text[end:], max(0, budget - count)
        words = list(itertools.islice(re.finditer(r"\S+", rest), left + 1))
        cut = len(words) > left
        parts.append(rest[:words[left - 1].end()] if cut and left else "" if cut else rest)
        count += min(len(words), left)
    return Stripped("".join(parts).rstrip() + "\n" if parts else "", count, cut)


def _digest(*parts: bytes) -> bytes:
    return hashlib.blake2b(b"\x1f".join(parts), digest_size=8).digest()


def _children(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, (ast.Name, ast.Constant, ast.arg, ast.alias)):
        return []  # names, values and annotations are not compared
    kids = []
    for field, value in ast.iter_fields(node):
        if field in ("returns", "annotation", "type_comment", "ctx"):
            continue
        for child in value if isinstance(value, list) else [value]:
            if not isinstance(child, ast.AST) or isinstance(child, ast.expr_context):
                continue
            if isinstance(child, ast.Expr) and isinstance(child.value, ast.Constant):
                continue  # a docstring, a lone string or ``...``: a statement that does nothing
            kids.append(child)
    return kids


def _label(node: ast.AST) -> bytes:
    if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
        return b"Loop"
    if isinstance(node, ast.Name):
        return b"N"
    if isinstance(node, ast.arg):
        return b"A"
    if isinstance(node, ast.Constant):
        return b"S" if isinstance(node.value, (str, bytes)) else repr(node.value)[:40].encode()
    if isinstance(node, ast.Attribute):
        return b"Attr"  # a renamed ``self.conv1`` is still an attribute
    if isinstance(node, ast.AnnAssign):
        return b"Assign"
    return type(node).__name__.encode()


_COMMUTATIVE = (ast.Add, ast.Mult, ast.BitOr, ast.BitAnd, ast.BitXor)
_SYMMETRIC = (ast.Eq, ast.NotEq, ast.Is, ast.IsNot)
_MIRROR = {ast.Gt: b"Lt", ast.GtE: b"LtE"}  # a > b is b < a


def _canonical(node: ast.AST, kids: list[tuple[bytes, int]]) -> tuple[bytes, list[tuple[bytes, int]]]:
    """The label and children ``node`` is fingerprinted with: operands of commutative operators and symmetric
    comparisons in digest order, ``a > b`` as ``b < a``, ``x += e`` as ``x = x + e``, methods in any order."""
    if isinstance(node, ast.AugAssign):
        target, op, value = kids
        left, right = sorted((target, value)) if isinstance(node.op, _COMMUTATIVE) else (target, value)
        return b"Assign", [target, (_digest(b"BinOp", left[0], op[0], right[0]), 1 + left[1] + op[1] + right[1])]
    if isinstance(node, ast.BinOp) and isinstance(node.op, _COMMUTATIVE):
        left, op, right = kids
        return b"BinOp", [*sorted((left, right))[:1], op, *sorted((left, right))[1:]]
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        left, op, right = kids
        if isinstance(node.ops[0], _SYMMETRIC):
            return b"Compare", [min(left, right), op, max(left, right)]
        if type(node.ops[0]) in _MIRROR:
            return b"Compare", [right, (_digest(_MIRROR[type(node.ops[0])]), 1), left]
    if isinstance(node, (ast.BoolOp, ast.ClassDef)):
        return _label(node), sorted(kids)
    return _label(node), kids


def _subtrees(tree: ast.AST, found: set[int]) -> None:
    """Add the fingerprint of every statement and expression of ``tree`` with >= MIN_SUBTREE nodes (iterative)."""
    done: dict[int, tuple[bytes, int]] = {}
    stack: list[tuple[ast.AST, list[ast.AST] | None]] = [(tree, None)]
    while stack:
        node, children = stack.pop()
        if children is None:
            children = _children(node)
            stack.append((node, children))
            stack.extend((child, None) for child in children if id(child) not in done)
            continue
        label, kids = _canonical(node, [done[id(child)] for child in children])
        if isinstance(node, ast.AugAssign):
            _keep(kids[1], found)  # the x + e of x = x + e
        mine = (_digest(label, *(d for d, _ in kids)), 1 + sum(s for _, s in kids))
        done[id(node)] = mine
        if isinstance(node, (ast.stmt, ast.expr)):
            _keep(mine, found)


def _keep(item: tuple[bytes, int], found: set[int]) -> None:
    if item[1] >= MIN_SUBTREE:
        found.add(int.from_bytes(item[0], "little"))


def _token_grams(text: str, found: set[int]) -> None:
    words = [w if w in _KEEP_WORDS or not (w[0].isalpha() or w[0] == "_") else "N"
             for w in _WORD.findall(text[:64 * MAX_TOKENS])[:MAX_TOKENS]]
    for i in range(len(words) - KGRAM + 1):
        found.add(int.from_bytes(_digest(b"t", " ".join(words[i:i + KGRAM]).encode()), "little"))


def _parse(text: str) -> ast.AST | None:
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None  # not Python, or nested deeper than the parser goes


def features(code: str) -> set[int]:
    """The fingerprints of one file's stripped code (see the module's docstring)."""
    found: set[int] = set()
    tree = _parse(code)
    if tree is not None:
        _subtrees(tree, found)
        return found
    blocks = re.split(r"\n(?=[^\s#)\]}])", code)  # top-level statements: a line that starts in column 0
    for block in blocks:
        tree = _parse(block) if len(blocks) > 1 else None
        if tree is not None:
            _subtrees(tree, found)
        else:
            _token_grams(block, found)
    return found
