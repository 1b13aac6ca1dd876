"""Shared by the class-scale benchmarks: quick rubrics, classes of copies, the grader as a command, a clock.

The benchmarks grade copies of ``reference/`` and ``student_template/`` (a comment makes each copy's
content hash its own, so nothing is skipped as already graded). Every figure is measured in one run and
printed with the machine it ran on: compare ratios only between runs on the same, otherwise idle, machine.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

__all__ = ["REPO", "TINY_RUBRIC", "MODERATE_RUBRIC", "write_class", "write_rubric", "grader_command",
           "run_grader", "machine", "Clock"]

REPO = Path(__file__).resolve().parents[1]

# Unit checks only: two sandbox processes (import, unit) per submission, a few seconds each.
TINY_RUBRIC = """\
assignment: "benchmark: unit checks only"
num_classes: 21
threads: 1
budgets:
  import: {timeout_s: 120, memory_mb: 4096}
  unit: {timeout_s: 120, memory_mb: 4096}
checks:
  - {id: transpose_conv, kind: transpose_conv, name: "Transpose convolution", points: 10, seed: 1, cases: 4}
  - {id: bilinear_kernel, kind: bilinear_kernel, name: "Bilinear kernel", points: 5}
  - {id: mean_iou, kind: mean_iou, name: "Mean IoU", points: 5, seed: 3, cases: 4}
"""

# Every stage but full training, small: four sandbox processes per submission, one torch thread each.
MODERATE_RUBRIC = """\
assignment: "benchmark: unit, model and overfit checks"
num_classes: 21
threads: 1
dataset: {kind: embedded, size: 64, n_train: 32, n_val: 8, seed: 0}
budgets:
  import: {timeout_s: 120, memory_mb: 4096}
  unit: {timeout_s: 120, memory_mb: 4096}
  model: {timeout_s: 120, memory_mb: 4096}
  overfit: {timeout_s: 300, memory_mb: 4096}
checks:
  - {id: transpose_conv, kind: transpose_conv, name: "Transpose convolution", points: 15, seed: 1, cases: 12}
  - {id: bilinear_kernel, kind: bilinear_kernel, name: "Bilinear kernel", points: 10}
  - {id: confusion_matrix, kind: confusion_matrix, name: "Confusion matrix", points: 10, seed: 2, cases: 6}
  - {id: mean_iou, kind: mean_iou, name: "Mean IoU", points: 10, seed: 3, cases: 6}
  - {id: model_shapes, kind: model_shapes, name: "SegNet output shapes", points: 10, seed: 5}
  - {id: overfit, kind: overfit, name: "Overfit one example", points: 15, requires: [model_shapes], seed: 6,
     epochs: 20, loss_bound: 0.05, min_pixel_accuracy: 0.95, image_size: 64}
"""


def write_rubric(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def write_class(root: Path, n: int) -> Path:
    """``n`` submissions, alternately the reference (full marks) and the template (zero)."""
    bases = (REPO / "reference" / "segmentation.py", REPO / "student_template" / "segmentation.py")
    for i in range(n):
        folder = root / f"student{i:03d}"
        folder.mkdir(parents=True)
        (folder / "segmentation.py").write_text(bases[i % 2].read_text() + f"\n# copy {i}\n")
    return root


def grader_command(klass: Path, *, out: Path, rubric: Path, cache: Path, jobs: int = 1) -> list[str]:
    return [sys.executable, "-m", "grader", "grade", str(klass), "--out", str(out), "--rubric", str(rubric),
            "--cache-dir", str(cache), "-j", str(jobs), "-q"]


def run_grader(argv: list[str]) -> float:
    """Seconds the whole ``grader`` command took (interpreter start, imports, grading, reports)."""
    started = time.perf_counter()
    subprocess.run(argv, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs "
            f"(this process may use {len(os.sched_getaffinity(0))}), load average {load}")


class Clock:
    """``with Clock() as c: ...`` then ``c.seconds``."""

    def __enter__(self) -> "Clock":
        self.started, self.seconds = time.perf_counter(), 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
