"""GPU throughput: one class graded at K = 1, 2, 4, 8 jobs per GPU on one GPU (goal: K = 4 >= 3x K = 1, same scores).

Usage: python bench/gpu_throughput.py [--gpu 0] [--n 8] [--ks 1,2,4,8] [--rubric rubrics/voc_scale.yaml]
                                      [--scale 1.0] [--designs ben,eve] [--budget-s 0]
The class: N copies, in turn of ``reference/`` and of each example design (``--designs``: names under
examples/submissions or paths; a comment makes each copy's content hash its own), graded with the local sandbox, ``--gpus GPU --jobs-per-gpu K`` for each K,
regraded afresh every time. The embedded dataset is generated and the job prepared for the GPU once, before
any clock (both are cached, as for every batch after a rubric's first). ``--scale`` shrinks the rubric's splits
(n_train, n_val) for a short run: 1.0 is the VOC-sized workload. Printed per K: submissions per hour (whole
batch and worker phase), the ratio to K = 1, the GPU memory peak per job (nvidia-smi's per-process samples,
so CUDA's context included) and the GPU utilisation samples, and whether every check's score equals K = 1's.
``--budget-s``: skip the K values that would start after that many seconds (0: no limit). With ``eve`` (a
ResNet-18 encoder loading ``ResNet18_Weights.IMAGENET1K_V1``) among the designs, the rubric provides that weight:
a generated stand-in (bench/pretrained.py), or ``--weights resnet18-f37072fd.pth``, the real file.
Exit codes: 0 measured and every score equal; 1 a score differs or a submission was not graded; 2 no GPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, Clock, machine  # noqa: I001 (bench/ on sys.path)

__all__ = ["GpuSampler", "main", "write_class"]

SAMPLE_S = 0.5  # nvidia-smi every half second: a train stage lasts tens of seconds


def _smi(*args: str) -> str:
    return subprocess.run(["nvidia-smi", *args], check=True, capture_output=True, text=True, timeout=30).stdout


def require_gpu(gpu: str, python: str) -> str:
    """The GPU's name, or exit 2 at once (before any dataset is generated) saying what is missing."""
    try:
        name = _smi("--query-gpu=name,memory.total", "--format=csv,noheader", "-i", gpu).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        sys.exit(_no_gpu(f"nvidia-smi cannot show GPU {gpu} ({type(exc).__name__}: {str(exc)[:200]})"))
    probe = subprocess.run([python, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True,
                           text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": gpu})
    if probe.stdout.strip() != "True":
        sys.exit(_no_gpu(f"torch in {python} cannot use GPU {gpu} (a CPU-only wheel?): "
                         f"{(probe.stdout + probe.stderr).strip()[-300:]}"))
    return name


def _no_gpu(why: str) -> int:
    print(f"gpu_throughput: no usable GPU: {why}. This benchmark measures jobs sharing a GPU; run it on a GPU "
          "machine (bench/gpu_check.sh).", file=sys.stderr)
    return 2


class GpuSampler:
    """nvidia-smi sampled in a thread: the GPU's utilisation (%) and each compute process's memory (MiB)."""

    def __init__(self, gpu: str) -> None:
        self.gpu, self.utilisation, self.peak_by_pid = gpu, [], {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "GpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        uuid = _smi("--query-gpu=uuid", "--format=csv,noheader", "-i", self.gpu).strip()
        while not self._stop.wait(SAMPLE_S):
            try:
                self.utilisation.append(int(_smi("--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                                  "-i", self.gpu).strip()))
                apps = _smi("--query-compute-apps=gpu_uuid,pid,used_memory", "--format=csv,noheader,nounits")
            except (OSError, ValueError, subprocess.SubprocessError):
                continue  # a missed sample
            for line in apps.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 3 and parts[0] == uuid and parts[2].isdigit():
                    self.peak_by_pid[parts[1]] = max(self.peak_by_pid.get(parts[1], 0), int(parts[2]))


def design_path(design: str) -> Path:
    """An example design by name (examples/submissions/<name>) or a folder holding segmentation.py."""
    path = Path(design) if "/" in design else REPO / "examples" / "submissions" / design
    if not (path / "segmentation.py").is_file():
        sys.exit(f"gpu_throughput: no {path}/segmentation.py (--designs takes names under examples/submissions)")
    return path


def write_class(root: Path, n: int, designs: list[Path]) -> Path:
    """``n`` submissions, in turn the reference and each of ``designs``, each copy's content hash its own."""
    bases = (REPO / "reference", *designs)
    for i in range(n):
        folder = root / f"student{i:03d}"
        folder.mkdir(parents=True)
        (folder / "segmentation.py").write_text((bases[i % len(bases)] / "segmentation.py").read_text() +
                                                f"\n# copy {i}\n")
    return root


def grade_at(klass: Path, *, rubric: object, gpu: str, k: int, out: Path, cache: Path) -> dict:
    from grader.batch.batch import GradeOptions, grade_all
    from grader.sandbox.local import LocalSandbox

    begun, finished = [], []
    options = GradeOptions(out_dir=out, gpus=(gpu,), jobs_per_gpu=k, regrade=True, cache_dir=cache,
                           on_begin=lambda student: begun.append(time.perf_counter()),
                           progress=lambda student, result: finished.append(time.perf_counter()))
    with GpuSampler(gpu) as sampler, Clock() as clock:
        results = grade_all([klass], rubric=rubric, sandbox=LocalSandbox(), options=options)
    return {"wall": clock.seconds, "phase": max(finished) - min(begun) if begun else clock.seconds,
            "statuses": {r.student: r.status for r in results},
            "scores": {r.student: {c.id: c.score for c in r.checks} for r in results},
            "totals": {r.student: r.score for r in results},
            "util": sampler.utilisation, "peaks": sorted(sampler.peak_by_pid.values())}


def _report(k: int, run: dict, base: dict | None, n: int) -> bool:
    """Print one K's line; True when every score equals K = 1's and every submission was graded."""
    per_hour, phase_per_hour = n / run["wall"] * 3600, n / run["phase"] * 3600
    ratio = f"{base['wall'] / run['wall']:.2f}x" if base else "1.00x"
    util = run["util"] or [0]
    peaks = run["peaks"] or [0]
    graded = all(s == "graded" for s in run["statuses"].values())
    same = base is None or run["scores"] == base["scores"]
    worst = max((abs(run["totals"][s] - base["totals"].get(s, float("nan"))) for s in run["totals"]), default=0.0) \
        if base else 0.0
    print(f"  K={k}: {run['wall']:7.1f} s, {per_hour:7.0f} submissions/h ({phase_per_hour:.0f}/h in the worker "
          f"phase), {ratio} of K=1; GPU memory peak per job {max(peaks)} MiB (median of {len(peaks)} processes "
          f"{statistics.median(peaks):.0f}); GPU utilisation {len(util)} samples: mean {statistics.mean(util):.0f} %, "
          f"median {statistics.median(util):.0f} %, max {max(util)} %")
    print(f"        scores equal to K=1: {'yes' if same else 'NO'} (largest total difference {worst:g}); "
          f"all graded: {'yes' if graded else 'NO: ' + str(run['statuses'])}")
    return same and graded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="0")
    parser.add_argument("--n", type=int, default=8, help="submissions in the class (the reference and the designs "
                                                          "in turn)")
    parser.add_argument("--ks", default="1,2,4,8", help="jobs per GPU to measure; the first is the baseline")
    parser.add_argument("--rubric", type=Path, default=REPO / "rubrics" / "voc_scale.yaml")
    parser.add_argument("--scale", type=float, default=1.0, help="share of the rubric's n_train / n_val")
    parser.add_argument("--designs", default="ben", help="example designs beside the reference, comma-separated")
    parser.add_argument("--weights", type=Path, default=None, help="the real resnet18-f37072fd.pth for eve "
                                                                   "(else a generated stand-in)")
    parser.add_argument("--budget-s", type=float, default=0.0, help="skip K values starting after this (0: none)")
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    started = time.perf_counter()
    name = require_gpu(args.gpu, sys.executable)

    from grader.job.folder import data_root
    from grader.job.prepare import prepare_job
    from grader.rubric import load_rubric

    designs = [design_path(d.strip()) for d in args.designs.split(",") if d.strip()]
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    cache = work / "cache"
    if any(d.name == "eve" for d in designs):  # a ResNet-18 encoder: the course provides its weight
        from pretrained import with_resnet18

        rubric, _ = with_resnet18(args.rubric.read_text(), work, cache, args.weights)
    else:
        rubric = load_rubric(args.rubric)
    if args.scale != 1.0:
        ds = rubric.dataset
        rubric = dataclasses.replace(rubric, dataset=dataclasses.replace(
            ds, n_train=max(1, round(ds.n_train * args.scale)), n_val=max(1, round(ds.n_val * args.scale))))
    try:
        klass = write_class(work / "class", args.n, designs)
        with Clock() as first:
            data_root(rubric, cache_dir=cache)
            prepare_job(rubric, job_dir=work / "first" / "job", host_dir=work / "first" / "host", cache_dir=cache,
                        device="cuda")
        ds = rubric.dataset
        print(f"machine: {machine()}; GPU {args.gpu}: {name}")
        print(f"class of {args.n} (the reference, {', '.join(d.name for d in designs)} in turn); {args.rubric.name}"
              f": {ds.n_train} train / {ds.n_val} val at {ds.size} px (scale {args.scale:g}); dataset and job "
              f"prepared before the clocks in {first.seconds:.1f} s")
        runs: dict[int, dict] = {}
        ok = True
        for k in ks:
            if args.budget_s and time.perf_counter() - started > args.budget_s:
                print(f"  K={k}: not measured (past --budget-s {args.budget_s:g} s)")
                continue
            runs[k] = grade_at(klass, rubric=rubric, gpu=args.gpu, k=k, out=work / f"out-k{k}", cache=cache)
            ok = _report(k, runs[k], runs.get(ks[0]) if k != ks[0] else None, args.n) and ok
        if 4 in runs and ks[0] in runs:
            ratio = runs[ks[0]]["wall"] / runs[4]["wall"]
            print(f"goal K=4 >= 3x K={ks[0]}: {ratio:.2f}x {'met' if ratio >= 3 else 'MISSED'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
