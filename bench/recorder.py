"""What issue 22's defences cost: the forbidden-operation recorder around each guarded call (its guards
installed), the seal of the unit cases before the import (memfd copy + Landlock), and the static scan.

Usage: python bench/recorder.py [--rubric rubric.yaml] [--rounds 5]
The reference's transpose_conv2d runs on every case of the rubric's guarded checks in this process, bare and
inside an OpRecorder (median of alternating rounds); the seal is timed on the same job's unit folder in a
child process (Landlock cannot be lifted); the scan on the example class.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, machine  # noqa: I001 (bench/ on sys.path)

SEAL = """
import sys, time, json
from pathlib import Path
from grader.runner import seal_cases
job = Path(sys.argv[1]); stages = json.loads((job / "job.json").read_text())["stages"]
start = time.perf_counter(); fd, seal = seal_cases(job, stages, "unit"); print(time.perf_counter() - start, seal)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rubric", type=Path, default=REPO / "rubric.yaml")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import torch

    from grader.checks.forbidden import OpRecorder, install_guards
    from grader.intake.scan import scan_folder
    from grader.job.expected import reference_module
    from grader.job.folder import build_job
    from grader.rubric import load_rubric

    torch.set_num_threads(1)
    rubric = load_rubric(args.rubric)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        guarded = [c for c in rubric.checks if getattr(c, "forbidden", ())]
        plan = build_job(rubric.__class__(**{**rubric.__dict__, "checks": tuple(guarded)}), job_dir=Path(tmp) / "job",
                         cache_dir=cache)
        cases = [c for cs in plan.cases.values() for c in cs]
        ref = reference_module()
        install_guards()

        def run(recorded: bool) -> float:
            start = time.perf_counter()
            for case in cases:
                args_ = [torch.from_numpy(a) for a in case.arrays.values()]
                if recorded:
                    with OpRecorder():
                        ref.transpose_conv2d(*args_, **case.kwargs)
                else:
                    ref.transpose_conv2d(*args_, **case.kwargs)
            return time.perf_counter() - start

        run(False), run(True)  # warm-up
        bare, recorded = [], []
        for _ in range(args.rounds):
            bare.append(run(False))
            recorded.append(run(True))
        done = subprocess.run([sys.executable, "-c", SEAL, str(plan.job_dir)], capture_output=True, text=True,
                              cwd=REPO, check=True)
        seal_s, seal = done.stdout.split(" ", 1)
        start = time.perf_counter()
        folders = [p for p in (REPO / "examples" / "submissions").iterdir() if p.is_dir()]
        flagged = sum(bool(scan_folder(p)) for p in folders)
        scan_s = (time.perf_counter() - start) / len(folders)
    b, r = statistics.median(bare), statistics.median(recorded)
    print(f"machine: {machine()}")
    print(f"guarded calls: {len(cases)} cases; bare {b * 1e3:.1f} ms, recorded {r * 1e3:.1f} ms: "
          f"x{r / b:.2f}, +{(r - b) / len(cases) * 1e3:.2f} ms per call")
    print(f"seal (memfd copy + Landlock) of the unit cases: {float(seal_s) * 1e3:.1f} ms, {seal.strip()}")
    print(f"static scan: {scan_s * 1e3:.1f} ms per submission, {flagged} of {len(folders)} examples flagged")


if __name__ == "__main__":
    main()
