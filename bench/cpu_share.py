"""The local engine's CPU share per stage (grader/sandbox/cpushare.py): at -j 2, does a greedy submission (its
`train` spins one busy process per core, ignoring `threads`) slow an honest neighbour's training?

Usage: python bench/cpu_share.py [--rounds 3] [--epochs 3]
Each round grades, with the local sandbox and `threads: 1`:
  alone     — the honest submission (the reference) by itself, -j 1;
  neighbour — the honest one and the greedy one together, -j 2.
The figure is the honest submission's training stage time (provenance.durations_s), median over rounds,
neighbour / alone (goal <= 1.10). Run on an otherwise idle machine with at least 2 cores; the stages'
isolation line says whether the share held ("CPU capped at 1 core (cgroup v1|v2)") or why not.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from common import REPO, grader_command, machine, run_grader, write_rubric  # noqa: I001 (bench/ on sys.path)

RUBRIC = """\
assignment: "benchmark: training only"
num_classes: 21
threads: 1
dataset: {{kind: embedded, size: 64, n_train: 96, n_val: 24, seed: 0}}
budgets:
  import: {{timeout_s: 120, memory_mb: 4096}}
  model: {{timeout_s: 120, memory_mb: 4096}}
  train: {{timeout_s: 900, memory_mb: 4096}}
checks:
  - {{id: model_shapes, kind: model_shapes, name: "SegNet output shapes", points: 10, seed: 5}}
  - {{id: full_training, kind: full_training, name: "Full training", points: 20, requires: [model_shapes], seed: 7,
     epochs: {epochs}, batch_size: 16, grading: band, bar: 0.15}}
"""
GREEDY = '''

_honest_train = train


def train(*args, **kwargs):  # ignores `threads`: one busy process per core while it trains
    import os
    spinners = []
    for _ in range(os.cpu_count() or 2):
        pid = os.fork()
        if pid == 0:
            while True:
                pass
        spinners.append(pid)
    try:
        return _honest_train(*args, **kwargs)
    finally:
        for pid in spinners:
            os.kill(pid, 9)
'''


def _train_seconds(out: Path, student: str) -> tuple[float, str]:
    result = json.loads((out / student / "result.json").read_text())
    return result["provenance"]["durations_s"]["full_training"], result["provenance"]["sandbox"]["isolation"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    reference = (REPO / "reference" / "segmentation.py").read_text()
    alone, beside, greedy = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        work = Path(tmp)
        rubric = write_rubric(work / "rubric.yaml", RUBRIC.format(epochs=args.epochs))
        cache = work / "cache"
        for i in range(args.rounds):
            honest, greedy_dir = work / f"r{i}" / "honest", work / f"r{i}" / "greedy"
            honest.mkdir(parents=True)
            greedy_dir.mkdir()
            (honest / "segmentation.py").write_text(reference + f"\n# round {i}\n")
            (greedy_dir / "segmentation.py").write_text(reference + GREEDY + f"\n# round {i}\n")
            solo = grader_command(honest, out=work / f"out-solo{i}", rubric=rubric, cache=cache, jobs=1)
            pair = grader_command(honest, out=work / f"out-pair{i}", rubric=rubric, cache=cache, jobs=2)
            run_grader(solo)
            run_grader(pair[:4] + [str(greedy_dir)] + pair[4:])  # two paths: two students
            seconds, isolation = _train_seconds(work / f"out-solo{i}", "honest")
            alone.append(seconds)
            beside.append(_train_seconds(work / f"out-pair{i}", "honest")[0])
            greedy.append(_train_seconds(work / f"out-pair{i}", "greedy")[0])
            print(f"round {i}: honest alone {alone[-1]:.1f} s, beside the greedy one {beside[-1]:.1f} s "
                  f"(greedy's own training {greedy[-1]:.1f} s)", flush=True)
    share = [part for part in isolation.split("; ") if part.startswith("CPU")]
    print(f"machine: {machine()}")
    print(f"CPU share: {share[0] if share else 'not reported'}")
    ratio = statistics.median(beside) / statistics.median(alone)
    print(f"honest training beside a greedy neighbour / alone (median of {args.rounds}): {ratio:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
