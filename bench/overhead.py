"""What the sandbox costs: grading the reference end to end (local sandbox: a confined fork of the warm fork
server per stage) vs running the same stages on the reference directly in this process, with the same job,
threads and seeds, judged the same way (goal: end to end <= 1.10x direct).

Usage: python bench/overhead.py [--rubric rubric.yaml]
Both sides share what is built once per batch, not per submission: the job folder, the expected outputs
and, for the sandbox, its fork server with torch imported (this process imported torch too). The
difference is what each submission pays for its isolation: a fork and a confinement per stage, the
submission imported per stage, and the outputs written as files and read back by the host. The in-process
side runs once before it is timed, so that torch's one-time warm-up (which every forked stage pays again) is
counted against the sandbox only. The server's
start (once per batch, overlapping the job's preparation) is measured and printed on its own.
"""
from __future__ import annotations

import argparse
import json
import statistics
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
from grader.sandbox.base import SandboxRequest, SandboxRun
from grader.sandbox.docker import docker_sandbox_for_cli
from grader.sandbox.local import LocalSandbox

__all__ = ["end_to_end", "direct", "main"]

_IN_PROCESS = SandboxRun(exit_code=0, timed_out=False, out_of_memory=False, duration_s=0.0, stdout="", stderr="",
                         output_truncated=False, isolation="none: in-process benchmark")


def _trivial_stage(sandbox: LocalSandbox, threads: int, work: Path) -> None:
    """A stage that does nothing: returns once the fork server has started and imported torch."""
    folder = work / "trivial"
    folder.mkdir(parents=True, exist_ok=True)
    sandbox.run_argv(["/bin/true"], SandboxRequest(submission_dir=folder, job_dir=folder, out_dir=folder / "out",
                                                   stage="import", timeout_s=120, memory_mb=4096, threads=threads))


def server_start(threads: int, work: Path) -> float:
    """Seconds from nothing to a warm fork server (paid once per batch)."""
    sandbox = LocalSandbox()
    try:
        with Clock() as clock:
            sandbox.warm_up(threads)
            _trivial_stage(sandbox, threads, work)
        return clock.seconds
    finally:
        sandbox.close()


def end_to_end(batch: Batch, work: Path) -> tuple[float, dict[str, float], dict[str, float]]:
    """(seconds, check -> score, stage -> seconds) for the reference through the local sandbox."""
    sub = prepare_submission(REPO / "reference", student="reference", workdir=work / "intake")
    if isinstance(batch.sandbox, LocalSandbox):  # the batch's server is warm, as in a batch
        _trivial_stage(batch.sandbox, batch.rubric.threads, work)
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
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median ratio is the figure")
    parser.add_argument("--sandbox", choices=("local", "docker"), default="local",
                        help="docker: the test image (one container per submission, started inside the clock)")
    args = parser.parse_args()
    rubric = load_rubric(args.rubric)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        work = Path(tmp)
        cache = (args.cache_dir or work / "cache").resolve()
        sandbox = LocalSandbox() if args.sandbox == "local" else docker_sandbox_for_cli(image="test")
        batch = prepare_batch(rubric, sandbox=sandbox, scratch=work, cache_dir=cache)
        direct(batch, work / "warm-up")  # discarded: in-process pays torch's one-time warm-up here, not below
        for r in range(args.rounds):  # alternating, so that a drift of the machine hits both sides alike
            rounds.append((end_to_end(batch, work / f"round-{r}"), direct(batch, work / f"round-{r}")))
        if args.sandbox == "local":
            batch.sandbox.close()
            started = server_start(rubric.threads, work)
    print(f"machine: {machine()}; rubric {args.rubric} (threads {rubric.threads}); sandbox {args.sandbox}")
    for (sandboxed, sandboxed_scores, sandboxed_stages), (in_process, direct_scores, direct_stages) in rounds:
        assert sandboxed_scores == direct_scores, f"the two paths disagree: {sandboxed_scores} vs {direct_scores}"
        print(f"reference {sum(sandboxed_scores.values()):g}/{rubric.max_score:g} both ways; end to end "
              f"{sandboxed:.2f} s vs in-process {in_process:.2f} s: ratio {sandboxed / in_process:.3f}")
        print("  " + "  ".join(f"{stage} {sandboxed_stages.get(stage, float('nan')):.2f}/{seconds:.2f} s"
                               for stage, seconds in direct_stages.items()) + "  (sandboxed/in-process)")
    ratio = statistics.median(s[0] / d[0] for s, d in rounds)
    in_process = statistics.median(d[0] for _, d in rounds)
    print(f"median ratio over {len(rounds)} rounds: {ratio:.3f}  (goal <= "
          f"{'1.10' if args.sandbox == 'local' else '1.15'})")
    if args.sandbox == "docker":
        return
    print(f"once per batch: the fork server's start and torch import {started:.2f} s (overlaps the job's "
          f"preparation); a batch of ONE submission that waited for it all: ratio "
          f"{ratio + started / in_process:.3f}")


if __name__ == "__main__":
    main()
