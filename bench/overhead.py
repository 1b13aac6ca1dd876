"""What the sandbox costs: grading the reference end to end (local sandbox, one process per stage) vs running
the same stages on the reference directly in this process, with the same job, threads and seeds, judged the
same way (goal: end to end <= 1.10x direct).

Usage: python bench/overhead.py [--rubric rubric.yaml]
Both sides share the batch's job folder and expected outputs (built once per batch, not per submission);
the difference is what each submission pays for its isolation: a confined interpreter per stage that
imports torch and the submission, and the outputs written as files and read back by the host.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import REPO, Clock, machine  # noqa: I001 (bench/ on sys.path)

import torch

from grader.batch import prepare_batch
from grader.expected import reference_module
from grader.intake import prepare_submission
from grader.judge import StageResult, judge_check
from grader.outputs import read_stage
from grader.pipeline import Batch, grade_submission
from grader.rubric import STAGE_OF_KIND, Rubric, load_rubric
from grader.runner import STAGES, StageWriter
from grader.sandbox.base import SandboxRun
from grader.sandbox.local import LocalSandbox

__all__ = ["end_to_end", "direct", "main"]

_IN_PROCESS = SandboxRun(exit_code=0, timed_out=False, out_of_memory=False, duration_s=0.0, stdout="", stderr="",
                         output_truncated=False, isolation="none: in-process benchmark")


def end_to_end(batch: Batch, work: Path) -> tuple[float, dict[str, float], dict[str, float]]:
    """(seconds, check -> score, stage -> seconds) for the reference through the local sandbox."""
    sub = prepare_submission(REPO / "reference", student="reference", workdir=work / "intake")
    with Clock() as clock:
        result, _ = grade_submission(batch, sub)
    return clock.seconds, {c.id: c.score for c in result.checks}, result.provenance["durations_s"]


def _stages(rubric: Rubric) -> list[str]:
    order = ["import", "unit", "model", "overfit", "train"]
    wanted = {"import"} | {STAGE_OF_KIND[c.kind] for c in rubric.checks}
    return [s for s in order if s in wanted]


def _run_stage(stage: str, batch: Batch, student: object, out: Path) -> StageResult:
    job = batch.ctx.plan.job_dir
    spec = json.loads((job / "job.json").read_text())["stages"].get(stage, {})
    out.mkdir(parents=True)
    writer = StageWriter(out, stage)
    if stage in ("import", "unit"):
        STAGES[stage](student, spec, job, writer)
    else:
        STAGES[stage](student, spec, job, writer, batch.device)
    return StageResult(stage, _IN_PROCESS, read_stage(out, stage), batch.rubric.budgets.of(stage))


def direct(batch: Batch, work: Path) -> tuple[float, dict[str, float], dict[str, float]]:
    """The same stages on the reference module in this process, judged by the same judge."""
    student, stages, seconds = reference_module(), {}, {}
    torch.set_num_threads(batch.rubric.threads)
    with Clock() as clock:
        for stage in _stages(batch.rubric):
            with Clock() as stage_clock:
                stages[stage] = _run_stage(stage, batch, student, work / "direct" / stage)
            seconds[stage] = round(stage_clock.seconds, 3)
        scores = {c.id: judge_check(c, stages[STAGE_OF_KIND[c.kind]], batch.ctx).result.score
                  for c in batch.rubric.checks}
    return clock.seconds, scores, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rubric", type=Path, default=REPO / "rubric.yaml")
    parser.add_argument("--cache-dir", type=Path, default=None, help="dataset cache (default: a temp folder)")
    args = parser.parse_args()
    rubric = load_rubric(args.rubric)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        work = Path(tmp)
        cache = (args.cache_dir or work / "cache").resolve()
        batch = prepare_batch(rubric, sandbox=LocalSandbox(), scratch=work, cache_dir=cache)
        sandboxed, sandboxed_scores, sandboxed_stages = end_to_end(batch, work)
        in_process, direct_scores, direct_stages = direct(batch, work)
    assert sandboxed_scores == direct_scores, f"the two paths disagree: {sandboxed_scores} vs {direct_scores}"
    print(f"machine: {machine()}; rubric {args.rubric} (threads {rubric.threads})")
    print(f"reference, {sum(sandboxed_scores.values()):g}/{rubric.max_score:g} both ways")
    for stage in direct_stages:
        print(f"  {stage:8s} sandboxed {sandboxed_stages.get(stage, float('nan')):7.2f} s   "
              f"in-process {direct_stages[stage]:7.2f} s")
    print(f"end to end {sandboxed:.1f} s vs in-process {in_process:.1f} s: "
          f"ratio {sandboxed / in_process:.3f}  (goal <= 1.10)")


if __name__ == "__main__":
    main()
