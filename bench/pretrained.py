"""A ResNet-18-encoder design under the production rubric: overfit and full-training stage times and mIoU
(the figure in bench/README.md), through the REAL grader (local sandbox, -j 1: one job's timings).

It grades examples/submissions/eve (an FCN on torchvision's ResNet-18 loaded with ResNet18_Weights.IMAGENET1K_V1)
beside the reference, with rubric.yaml plus a ``pretrained:`` entry that provides the weight. Without network
there are no ImageNet weights here: by default a GENERATED checkpoint (a random ResNet-18 state_dict saved under
torchvision's file name, declared with its sha256) stands in, so the times are a real encoder's and the mIoU is
a random-init ResNet-18's (a floor for what ImageNet features give). ``--weights resnet18-f37072fd.pth`` uses
the real file (then checked by its name's sha256 prefix, as staff add it). It also times one training step of
each design, alternating in one child process (``seconds_per_step``): on a machine shared with other work, their
ratio is the figure that holds, the stage times are that machine's.

    .venv/bin/python bench/pretrained.py                       # rubric.yaml: about 10 min on 2 idle cores
    .venv/bin/python bench/pretrained.py --rubric tests/rubric_small.yaml
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bench.common import machine  # noqa: E402 - after the path line
from grader import api  # noqa: E402
from grader.rubric import load_rubric  # noqa: E402
from grader.weights import add, provide  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TV_FILE = "resnet18-f37072fd.pth"
_GENERATE = ("import sys, torch, torchvision; torch.manual_seed(0); "
             "torch.save(torchvision.models.resnet18().state_dict(), sys.argv[1])")
# One training step of each design, alternating, 2 threads, in one child (same load for both): the ratio says what
# a stage costs next to the reference's, whatever else the machine runs.
_STEPS = """\
import importlib.util, json, statistics, sys, time, torch, torch.nn.functional as F
torch.set_num_threads(2)
def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
nets = {n: load(p, n).SegNet(21) for n, p in (("eve", sys.argv[2]), ("reference", sys.argv[3]))}
g = torch.Generator().manual_seed(0)
shapes = {"train step (16 x 64x64)": (16, 64), "overfit step (1 x 128x128)": (1, 128)}
data = {k: (torch.rand(n, 3, s, s, generator=g), torch.randint(0, 21, (n, s, s), generator=g)) for k, (n, s) in shapes.items()}
opts = {k: torch.optim.Adam(net.parameters(), lr=1e-3) for k, net in nets.items()}
times = {k: {w: [] for w in data} for k in nets}
for _ in range(int(sys.argv[1])):
    for k, net in nets.items():
        for w, (x, y) in data.items():
            t = time.perf_counter()
            loss = F.cross_entropy(net(x), y, ignore_index=255)
            opts[k].zero_grad(); loss.backward(); opts[k].step()
            times[k][w].append(time.perf_counter() - t)
med = {k: {w: statistics.median(v[1:]) for w, v in d.items()} for k, d in times.items()}
print(json.dumps({**med, "eve / reference": {w: med["eve"][w] / med["reference"][w] for w in data}}))
"""


def _stand_in(folder: Path) -> tuple[Path, str]:
    """A random ResNet-18 under torchvision's name (made by a child: this process never imports torch)."""
    path = folder / TV_FILE
    subprocess.run([sys.executable, "-c", _GENERATE, str(path)], check=True, timeout=600)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def with_resnet18(rubric_text: str, work: Path, cache: Path, weights: Path | None = None) -> tuple[object, bool]:
    """(the rubric of ``rubric_text`` plus a ``pretrained:`` entry for ResNet-18, True when the weight is the
    generated stand-in), the weight added to ``cache``: the real file when given, else a generated one."""
    if weights:
        weight, entry, stand_in = weights, "[ResNet18_Weights.IMAGENET1K_V1]", False
    else:
        weight, digest = _stand_in(work)
        entry, stand_in = f"[{{file: {TV_FILE}, sha256: {digest}}}]", True
    rubric_path = work / "rubric.yaml"
    rubric_path.write_text(rubric_text + f"\npretrained: {entry}\n")
    rubric = load_rubric(rubric_path)
    add([weight], rubric=rubric, cache_dir=cache)
    return rubric, stand_in


def _step_times(rubric: object, cache: Path, work: Path, rounds: int) -> dict:
    """Seconds per training step of eve and the reference, measured together (their ratio is the figure)."""
    home = provide(rubric, cache_dir=cache, scratch=work)  # the torch home a stage sees: eve loads offline
    done = subprocess.run([sys.executable, "-c", _STEPS, str(rounds), str(REPO / "examples" / "submissions" / "eve" /
                           "segmentation.py"), str(REPO / "reference" / "segmentation.py")], check=True, timeout=3600,
                          capture_output=True, text=True, env={**os.environ, "TORCH_HOME": str(home)})
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(result: object, check_ids: list[str]) -> dict:
    durations = result.provenance.get("durations_s", {})
    checks = {c.id: c for c in result.checks}
    row = {"student": result.student, "score": result.score, "max": result.max_score}
    for cid in check_ids:
        check = checks.get(cid)
        row[cid] = {"status": check.status if check else None, "seconds": durations.get(cid),
                    "message": check.message[:160] if check else None,
                    "miou": (check.details or {}).get("miou") if check else None}
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/pretrained.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rubric", type=Path, default=REPO / "rubric.yaml")
    parser.add_argument("--weights", type=Path, default=None, help="the real resnet18-f37072fd.pth (else generated)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="the grader's cache (default: a fresh one)")
    parser.add_argument("--step-rounds", type=int, default=8, help="training steps per design for the step ratio")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="seg-bench-pretrained-"))
    os.environ["TORCH_HOME"] = str(work / "no-user-torch-cache")  # only what the rubric provides
    cache = (args.cache_dir or work / "cache").resolve()
    rubric, stand_in = with_resnet18(args.rubric.read_text(), work, cache, args.weights)
    steps = _step_times(rubric, cache, work, args.step_rounds)
    load_before = os.getloadavg()
    results = api.grade([REPO / "examples" / "submissions" / "eve", REPO / "reference"], rubric=rubric,
                        out_dir=work / "out", cache_dir=cache, jobs=1, render=False)
    ids = [c.id for c in rubric.checks if c.kind in ("overfit", "full_training")]
    report = {"machine": machine(), "rubric": str(args.rubric), "stand_in_weights": stand_in,
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "budgets_s": {cid: rubric.budget(cid).timeout_s for cid in ids},
              "seconds_per_step": steps, "runs": [_row(r, ids) for r in results]}
    print(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
