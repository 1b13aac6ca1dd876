"""Similar submissions: how well disguised copies are found (precision and recall on a generated corpus), and
every pair of a class of 300 compared in one run (goal: under 60 s and under 1 GB on 2 cores).

Usage: python bench/similarity.py [--seeds 3] [--n 300] [--seed 0]

1. The corpus (tests/similarity_corpus.py): the five independent solutions (the examples ada, ben, cleo's
   notebook cells, dan, and the reference), each with ``--seeds`` disguised copies (renamed identifiers,
   reordered functions and methods, ``for`` loops as ``while``, merged and split expressions, new comments)
   and a copy behind 414 KB of comment lines. Graded as a class (result.json and code copy, as a batch leaves
   them), compared with the real ``grader similarity OUT --force``; a pair is a copy when both documents come
   from the same solution. Prints precision and recall at the rubric's threshold, the lowest copy and the
   highest independent pair.
2. Class scale: ``--n`` generated submissions (variants of the solutions: each function taken from its own
   solution or, one time in four, the same function of another; about half the identifiers renamed;
   definitions shuffled; comments rewritten), timed in a fresh interpreter that prints its own peak RSS. Most
   pairs share whole functions, so this is near the worst case for the comparison.
"""
from __future__ import annotations

import argparse
import ast
import builtins
import csv
import random
import resource
import subprocess
import sys
import tempfile
from itertools import combinations
from pathlib import Path

from common import REPO, Clock, machine  # noqa: I001

from grader.core.results import SubmissionResult, write_result
from grader.rubric import load_rubric
from grader.similarity.compare import store_code
from tests.similarity_corpus import corpus, solutions

__all__ = ["variant", "write_graded_class", "main"]

_WRAPPER = ("import atexit, resource, runpy, sys\n"
            "atexit.register(lambda: print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
            " file=sys.stderr))\n"
            "sys.argv[0] = 'grader'\n"
            "runpy.run_module('grader', run_name='__main__')\n")


def variant(examples: dict[str, ast.Module], rng: random.Random) -> str:
    """One generated submission of the class-scale run (see the module's docstring)."""
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


def write_graded_class(out: Path, texts: dict[str, str]) -> None:
    """Students (name -> code) as a batch leaves them: result.json (graded, a content hash) and the code copy."""
    with tempfile.TemporaryDirectory() as tmp:
        for i, (student, text) in enumerate(sorted(texts.items())):
            clean = Path(tmp) / f"s{i}"
            clean.mkdir()
            (clean / "segmentation.py").write_text(text)
            digest = f"bench-{student}"
            write_result(out / student, SubmissionResult(student, "graded", 1.0, 1.0, (),
                                                         provenance={"submission_hash": digest}))
            store_code(out / student, clean, digest)


def _run(out: Path) -> tuple[float, float, int]:
    """``grader similarity OUT --force`` in a fresh interpreter: (wall s, CPU s, peak RSS KB)."""
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    with Clock() as clock:
        run = subprocess.run([sys.executable, "-c", _WRAPPER, "similarity", str(out), "--force"],
                             cwd=REPO, capture_output=True, text=True)
    if run.returncode != 0:
        print(run.stdout, run.stderr, file=sys.stderr)
        raise SystemExit(1)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kb = int(next(line.split()[1] for line in run.stderr.splitlines() if line.startswith("PEAK_RSS_KB")))
    return clock.seconds, after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime, peak_kb


def measure_corpus(out: Path, seeds: int, threshold: float) -> None:
    docs = corpus(seeds=seeds)
    write_graded_class(out, {name: text for name, (_, text) in docs.items()})
    wall, _, _ = _run(out)
    with open(out / "similarity.csv", newline="") as f:
        score = {(r["student_a"], r["student_b"]): float(r["similarity"]) for r in csv.DictReader(f)}
    copies, independent = [], []
    for a, b in combinations(sorted(docs), 2):
        (copies if docs[a][0] == docs[b][0] else independent).append((score.get((a, b), 0.0), a, b))
    tp = sum(v >= threshold for v, _, _ in copies)
    fp = sum(v >= threshold for v, _, _ in independent)
    print(f"corpus: {len(docs)} documents from {len(solutions())} independent solutions, {len(copies)} copy pairs, "
          f"{len(independent)} independent pairs; compared in {wall:.1f} s")
    print(f"  at the threshold {threshold}: precision {tp / max(1, tp + fp):.3f} ({tp}/{tp + fp}), "
          f"recall {tp / len(copies):.3f} ({tp}/{len(copies)})")
    print(f"  lowest copy pair {min(copies)[0]:.3f} {min(copies)[1:]}, "
          f"highest independent pair {max(independent)[0]:.3f} {max(independent)[1:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="disguised copies per solution in the corpus")
    parser.add_argument("--n", type=int, default=300, help="submissions in the class-scale run (0: skip it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rubric", type=Path, default=REPO / "rubric.yaml", help="its similarity.threshold")
    args = parser.parse_args(argv)
    threshold = load_rubric(args.rubric).similarity.threshold
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="seg-bench-similarity-") as tmp:
        measure_corpus(Path(tmp) / "corpus", args.seeds, threshold)
        if args.n <= 0:
            return 0
        out, rng = Path(tmp) / "class", random.Random(args.seed)
        examples = {name: ast.parse(text) for name, text in solutions().items()}
        write_graded_class(out, {f"student{i:03d}": variant(examples, rng) for i in range(args.n)})
        lines = sum(len((out / f"student{i:03d}" / "code" / "segmentation.py").read_text().splitlines())
                    for i in range(args.n))
        print(f"class: {args.n} submissions, {lines / args.n:.0f} lines each on average, "
              f"{args.n * (args.n - 1) // 2} pairs")
        wall, cpu_s, peak_kb = _run(out)
        pages = len(list((out / "similarity").glob("*.html")))
        print(f"  wall time {wall:.1f} s (goal < 60 s; CPU time {cpu_s:.1f} s, one process), "
              f"peak RSS {peak_kb / 1024:.0f} MB (goal < 1024 MB), {pages} side-by-side pages drawn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
