"""Similar submissions at class scale: every pair of 300 submissions compared in one run (goal: under 60 s and
under 1 GB on 2 cores).

Usage: python bench/similarity.py [--n 300] [--seed 0]
Writes a graded folder of ``n`` generated submissions (variants of the four examples: each function taken from
its own example or, one time in four, the same function of another example; about half the identifiers
renamed; definitions shuffled; comments rewritten), with the result.json and code copy a batch leaves, then
times ``grader similarity OUT --force`` in a fresh interpreter that prints its own peak RSS. Most pairs share
whole functions, so this is near the worst case for the comparison (every pair is above the floor).
"""
from __future__ import annotations

import argparse
import ast
import builtins
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, Clock, machine  # noqa: I001

from grader.intake.notebooks import notebook_to_script
from grader.core.results import SubmissionResult, write_result
from grader.similarity.compare import CODE_DIR, store_code

__all__ = ["variant", "write_graded_class", "main"]

_WRAPPER = ("import atexit, resource, runpy, sys\n"
            "atexit.register(lambda: print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
            " file=sys.stderr))\n"
            "sys.argv[0] = 'grader'\n"
            "runpy.run_module('grader', run_name='__main__')\n")


def _examples() -> dict[str, ast.Module]:
    base = REPO / "examples" / "submissions"
    sources = {name: (base / name / "segmentation.py").read_text() for name in ("ada", "ben", "dan")}
    sources["cleo"] = notebook_to_script((base / "cleo.ipynb").read_bytes(), name="cleo.ipynb")[0]
    return {name: ast.parse(text) for name, text in sources.items()}


def variant(examples: dict[str, ast.Module], rng: random.Random) -> str:
    """One generated submission (see the module's docstring)."""
    own = rng.choice(sorted(examples))
    defs = {n.name: n for tree in [examples[own]] for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    body = []
    for node in examples[own].body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            others = [n for name in sorted(examples) if name != own for n in examples[name].body
                      if isinstance(n, type(node)) and n.name == node.name]
            body.append(rng.choice(others) if others and rng.random() < 0.25 else defs[node.name])
        else:
            body.append(node)
    tree = ast.parse(ast.unparse(ast.Module(body=body, type_ignores=[])))  # a fresh copy to rename
    keep = set(dir(builtins)) | {"self", "torch", "nn", "F", "np", "math"}
    renamed: dict[str, str] = {}

    def new(name: str) -> str:
        if name in keep or name.startswith("__"):
            return name
        return renamed.setdefault(name, f"{name}_{rng.randrange(10**6)}" if rng.random() < 0.5 else name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            node.id = new(node.id)
        elif isinstance(node, ast.arg):
            node.arg = new(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            node.name = new(node.name)
    heads = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    rest = [n for n in tree.body if n not in heads]
    rng.shuffle(rest)
    return "\n\n".join(f"# part {i} ({rng.random():.4f})\n{ast.unparse(n)}" for i, n in enumerate(heads + rest)) + "\n"


def write_graded_class(out: Path, n: int, seed: int) -> None:
    """``n`` students as a batch leaves them: result.json (graded, a content hash) and the code copy."""
    examples, rng = _examples(), random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            student, clean = f"student{i:03d}", Path(tmp) / f"s{i}"
            clean.mkdir()
            (clean / "segmentation.py").write_text(variant(examples, rng))
            digest = f"bench-{seed}-{i}"
            write_result(out / student, SubmissionResult(student, "graded", 1.0, 1.0, (),
                                                         provenance={"submission_hash": digest}))
            store_code(out / student, clean, digest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="seg-bench-similarity-") as tmp:
        out = Path(tmp) / "out"
        write_graded_class(out, args.n, args.seed)
        lines = sum(len((out / f"student{i:03d}" / CODE_DIR / "segmentation.py").read_text().splitlines())
                    for i in range(args.n))
        print(f"machine: {machine()}")
        print(f"{args.n} submissions, {lines / args.n:.0f} lines each on average, "
              f"{args.n * (args.n - 1) // 2} pairs")
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        with Clock() as clock:
            run = subprocess.run([sys.executable, "-c", _WRAPPER, "similarity", str(out), "--force"],
                                 cwd=REPO, capture_output=True, text=True)
        if run.returncode != 0:
            print(run.stdout, run.stderr, file=sys.stderr)
            return 1
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
        peak_kb = int(next(line.split()[1] for line in run.stderr.splitlines() if line.startswith("PEAK_RSS_KB")))
        print(run.stdout.strip())
        pages = len(list((out / "similarity").glob("*.html")))
        print(f"wall time {clock.seconds:.1f} s (goal < 60 s; CPU time {cpu_s:.1f} s, one process), peak RSS {peak_kb / 1024:.0f} MB (goal < 1024 MB), "
              f"{pages} side-by-side pages drawn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
