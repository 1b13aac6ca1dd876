"""How far colour alone gets on the embedded dataset: the best per-pixel colour rule vs the all-background floor.

Generates the rubric's embedded dataset (its sizes and seed; the evaluation split drawn from a fresh random key,
as a grader's is), fits the per-pixel colour rules of ``grader.data.colourrule`` on the training pixels
(``majority``: each colour cell predicts its most frequent class; ``balanced``: the class most over-represented
in the cell) at several cell sizes, and prints their validation mIoU beside the floor. The dataset needs a
trained net when every rule stays within 0.05 of the floor (tests/test_dataset.py asserts it on a smaller set).

    .venv/bin/python bench/colour_baseline.py [--rubric rubric.yaml] [--bins 8,16,32] [--keys 3]
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path

from grader.data.colourrule import colour_rule_scores
from grader.data.dataset import GENERATOR_VERSION, generate_embedded_voc, load_split
from grader.rubric import load_rubric

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rubric", type=Path, default=Path("rubric.yaml"))
    parser.add_argument("--bins", default="8,16,32", help="colour cells per channel, comma-separated")
    parser.add_argument("--keys", type=int, default=3, help="evaluation splits (random keys) to measure")
    args = parser.parse_args(argv)
    ds = load_rubric(args.rubric).dataset
    print(f"generator v{GENERATOR_VERSION}, {args.rubric}: n_train={ds.n_train} n_val={ds.n_val} size={ds.size} "
          f"seed={ds.seed}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    worst = 0.0
    for k in range(args.keys):
        with tempfile.TemporaryDirectory() as tmp:
            root = generate_embedded_voc(Path(tmp), n_train=ds.n_train, n_val=ds.n_val, size=ds.size, seed=ds.seed,
                                         secret=secrets.token_bytes(32))
            train, val = load_split(root, "train"), load_split(root, "val")
            for bins in (int(b) for b in args.bins.split(",")):
                got = colour_rule_scores(train, val, bins=bins)
                gap = max(got.majority, got.balanced) - got.floor
                worst = max(worst, gap)
                print(f"key {k} bins {bins:3d}: floor {got.floor:.4f}  majority {got.majority:.4f}  "
                      f"balanced {got.balanced:.4f}  (best rule - floor {gap:+.4f})")
    print(f"largest gap of a colour rule over the floor: {worst:+.4f} (goal: at most +0.05)")
    return 0 if worst <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
