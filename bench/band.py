"""Measure the full-training band: what honest designs reach within the rubric's budget, and the floor.

For the rubric's full_training settings (dataset, epochs, batch size, budgets) this grades, through the
REAL grader (`python -m grader grade`, local sandbox, -j 1 so the timings are one job's), the reference
at several full_training seeds and the honest example designs (examples/submissions/ada: a plain U-Net
with Adam; ben: an FCN with SGD + momentum) at the rubric's seed plus two more. Each run uses a
temporary rubric holding only the model_shapes and full_training checks with the seed changed.

It prints one row per run (design, seed, mIoU, train-stage seconds, floor) and proposes a bar: the
minimum over all honest runs minus a margin, never above what any honest run reached.

    .venv/bin/python bench/band.py                       # production rubric.yaml (about 30-45 min on 2 cores)
    .venv/bin/python bench/band.py --rubric tests/rubric_small.yaml --reference-seeds 0 1 --extra-seeds 0
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["BandRun", "band_rubric", "grade_seed", "propose_bar", "main"]

REPO = Path(__file__).resolve().parent.parent
HONEST = {"reference": REPO / "reference", "ada": REPO / "examples/submissions/ada",
          "ben": REPO / "examples/submissions/ben"}


@dataclass(frozen=True)
class BandRun:
    design: str
    seed: int
    miou: float | None  # None when the check produced no mIoU (timeout, crash)
    floor: float | None
    train_s: float | None  # the train stage's wall clock as the grader measured it
    status: str
    message: str


def band_rubric(rubric: dict, *, seed: int) -> dict:
    """The rubric reduced to its model_shapes and full_training checks, full_training seeded ``seed``."""
    out = copy.deepcopy(rubric)
    checks = [c for c in out["checks"] if c["kind"] in ("model_shapes", "full_training")]
    for c in checks:
        c["requires"] = [r for r in c.get("requires", []) if r in {k["id"] for k in checks}]
        if c["kind"] == "full_training":
            c["seed"] = seed
    out["checks"] = checks
    out["budgets"] = {k: v for k, v in out.get("budgets", {}).items() if k in ("import", "model", "train")}
    return out


def grade_seed(rubric: dict, *, seed: int, designs: list[str], work: Path, cache_dir: Path) -> list[BandRun]:
    """Grade ``designs`` with the band rubric at ``seed`` in one `grader grade` call (-j 1)."""
    path = work / f"rubric-seed{seed}.yaml"
    path.write_text(yaml.safe_dump(band_rubric(rubric, seed=seed), sort_keys=False))
    out = work / f"seed{seed}"
    cmd = [sys.executable, "-m", "grader", "grade", *(str(HONEST[d]) for d in designs), "--out", str(out),
           "--rubric", str(path), "-j", "1", "--cache-dir", str(cache_dir), "-q", "--regrade"]
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return [_read_run(out / HONEST[d].name / "result.json", design=d, seed=seed) for d in designs]


def _read_run(path: Path, *, design: str, seed: int) -> BandRun:
    data = json.loads(path.read_text())
    check = next(c for c in data["checks"] if c["id"] == "full_training")
    details = check.get("details", {})
    return BandRun(design=design, seed=seed, miou=details.get("miou"), floor=details.get("floor"),
                   train_s=data["provenance"].get("durations_s", {}).get("full_training"), status=check["status"],
                   message=check["message"])


def propose_bar(runs: list[BandRun], *, margin: float = 0.05, step: float = 0.05) -> float:
    """min over honest runs minus ``margin``, rounded DOWN to ``step``: no honest run ever misses it."""
    reached = [r.miou if r.miou is not None else 0.0 for r in runs]
    return round(int((min(reached) - margin) / step) * step, 4)


def _table(runs: list[BandRun]) -> str:
    rows = [f"{'design':10s} {'seed':>4s} {'mIoU':>7s} {'train_s':>8s} {'floor':>7s}  status"]
    for r in runs:
        miou = f"{r.miou:.4f}" if r.miou is not None else "-"
        secs = f"{r.train_s:.1f}" if r.train_s is not None else "-"
        floor = f"{r.floor:.4f}" if r.floor is not None else "-"
        rows.append(f"{r.design:10s} {r.seed:4d} {miou:>7s} {secs:>8s} {floor:>7s}  {r.status}")
    return "\n".join(rows)


def _summary(runs: list[BandRun], rubric: dict, *, margin: float) -> str:
    train = next(c for c in rubric["checks"] if c["kind"] == "full_training")
    timeout = rubric.get("budgets", {}).get("train", {}).get("timeout_s", 600)
    secs = [r.train_s for r in runs if r.train_s is not None]
    lines = [f"rubric: epochs={train.get('epochs')} batch_size={train.get('batch_size')} "
             f"bar={train.get('bar')} train timeout={timeout}s dataset={rubric.get('dataset')}"]
    for design in dict.fromkeys(r.design for r in runs):
        got = [r.miou or 0.0 for r in runs if r.design == design]
        lines.append(f"{design:10s} mIoU min {min(got):.4f} max {max(got):.4f} over {len(got)} seed(s)")
    lines.append(f"train stage: max {max(secs, default=0):.1f}s of the {timeout}s budget "
                 f"({max(secs, default=0) / timeout:.0%}); load average at the end {os.getloadavg()[0]:.2f}")
    lines.append(f"proposed bar (min honest mIoU - {margin}, rounded down to 0.05): "
                 f"{propose_bar(runs, margin=margin)}")
    missed = [r for r in runs if r.miou is None or r.miou < float(train.get("bar", 0.5))]
    lines.append(f"runs below the CURRENT bar {train.get('bar')}: "
                 + (", ".join(f"{r.design}@{r.seed}" for r in missed) or "none"))
    return "\n".join(lines)


def _plan(args: argparse.Namespace, rubric_seed: int) -> dict[int, list[str]]:
    """seed -> designs graded at it (one grader call per seed)."""
    plan: dict[int, list[str]] = {}
    for seed in args.reference_seeds:
        plan.setdefault(seed, []).append("reference")
    for seed in dict.fromkeys([rubric_seed, *args.other_seeds[:args.extra_seeds]]):
        plan.setdefault(seed, []).extend(d for d in args.designs if d != "reference")
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rubric", type=Path, default=REPO / "rubric.yaml")
    parser.add_argument("--designs", nargs="+", default=["ada", "ben"], choices=["ada", "ben"])
    parser.add_argument("--reference-seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--other-seeds", nargs="*", type=int, default=[0, 1],
                        help="seeds for ada/ben besides the rubric's (0 and 1 share calls with the reference)")
    parser.add_argument("--extra-seeds", type=int, default=2, help="how many of --other-seeds to use")
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--work", type=Path, default=None, help="keep the graded runs here (default: temp)")
    args = parser.parse_args(argv)
    rubric = yaml.safe_load(args.rubric.read_text())
    rubric_seed = next(c for c in rubric["checks"] if c["kind"] == "full_training").get("seed", 0)
    work = args.work or Path(tempfile.mkdtemp(prefix="band-"))
    work.mkdir(parents=True, exist_ok=True)
    runs: list[BandRun] = []
    for seed, designs in _plan(args, rubric_seed).items():
        runs += grade_seed(rubric, seed=seed, designs=designs, work=work, cache_dir=work / "cache")
        print(_table([r for r in runs if r.seed == seed]).split("\n", 1)[1], flush=True)
    print("\n" + _table(runs) + "\n\n" + _summary(runs, rubric, margin=args.margin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
