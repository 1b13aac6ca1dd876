"""Same submission, same grade, measured: one submission graded N times, how many distinct scores come out
(goal: 1, for the total and for every check).

Usage: python bench/reproducibility.py [--repeats 10] [--rubric rubric.yaml] [--submission reference]
                                       [--sandbox local|docker|both]
Each repetition grades the submission from scratch (a fresh output folder, so nothing is reused as already
graded) through ``grade_all``, as ``grader grade`` does; the prepared job is shared (the same rubric makes the
same job). ``--sandbox both`` (default) grades with the local sandbox and, where a Docker Engine answers,
with the Docker test image too, and compares the two engines' scores as well. Besides the points, the
full-training mIoU is compared (a band score can hide a drifting mIoU only when it is clipped).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import REPO, Clock, machine  # noqa: I001 (bench/ on sys.path)

from grader.batch.batch import GradeOptions, grade_all
from grader.rubric import load_rubric
from grader.sandbox.base import InfrastructureError
from grader.sandbox.factory import SandboxSpec

__all__ = ["grade_repeatedly", "main"]


def grade_repeatedly(submission: Path, *, rubric_path: Path, sandbox: SandboxSpec, repeats: int,
                     work: Path, cache: Path) -> list[dict]:
    """One row per repetition: total, per-check scores, the full-training mIoU (None without one), seconds.
    Each repetition builds its own engine (a fresh fork server, fresh containers): nothing warm is shared."""
    rubric, rows = load_rubric(rubric_path), []
    for i in range(repeats):
        with Clock() as clock:
            [result] = grade_all([submission], rubric=rubric, sandbox=sandbox,
                                 options=GradeOptions(out_dir=work / f"out{i}", cache_dir=cache))
        mious = [c.details.get("miou") for c in result.checks if "miou" in c.details]
        rows.append({"total": result.score, "checks": {c.id: c.score for c in result.checks},
                     "statuses": {c.id: c.status for c in result.checks}, "miou": mious[0] if mious else None,
                     "seconds": clock.seconds})
        print(f"  #{i}: {result.score:g}/{result.max_score:g} in {clock.seconds:.1f} s"
              + (f", mIoU {rows[-1]['miou']:.6f}" if rows[-1]["miou"] is not None else ""), flush=True)
    return rows


def _summary(name: str, rows: list[dict]) -> int:
    totals = sorted({r["total"] for r in rows})
    varying = {cid: sorted({r["checks"][cid] for r in rows}) for cid in rows[0]["checks"]}
    varying = {cid: v for cid, v in varying.items() if len(v) > 1}
    mious = {r["miou"] for r in rows if r["miou"] is not None}
    print(f"{name}: {len(rows)} gradings, {len(totals)} distinct total score(s) {totals}; "
          f"{len(mious)} distinct mIoU value(s)" + (f"; checks that varied: {varying}" if varying else ""))
    return len(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rubric", type=Path, default=REPO / "rubric.yaml")
    parser.add_argument("--submission", type=Path, default=REPO / "reference",
                        help="a submission folder (default: reference/)")
    parser.add_argument("--sandbox", choices=("local", "docker", "both"), default="both")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"submission {args.submission}, rubric {args.rubric}, {args.repeats} repetitions")
    engines = ("local", "docker") if args.sandbox == "both" else (args.sandbox,)
    all_rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-repro-") as tmp:
        for kind in engines:
            print(f"{kind}:")
            spec = SandboxSpec(kind=kind, image="test" if kind == "docker" else None)
            try:
                all_rows[kind] = grade_repeatedly(args.submission.resolve(), rubric_path=args.rubric,
                                                  sandbox=spec, repeats=args.repeats, work=Path(tmp) / kind,
                                                  cache=Path(tmp) / "cache")  # one evaluation key for all
            except (InfrastructureError, ImportError) as exc:  # no Docker Engine here: say so, measure the rest
                print(f"  not available: {str(exc).splitlines()[0][:200]}")
    for kind, rows in all_rows.items():
        _summary(kind, rows)
    if len(all_rows) > 1:
        _summary("all engines together", [r for rows in all_rows.values() for r in rows])


if __name__ == "__main__":
    main()
