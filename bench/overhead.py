"""What the sandbox costs: grading the reference end to end (local sandbox: a confined fork of the warm fork
server per stage; docker: the submission's container) vs running the same stages on the reference directly in
one Python process, with the same job, threads and seeds, judged the same way (goal: end to end <= 1.10x direct
with the local sandbox, <= 1.15x with Docker).

Usage: python bench/overhead.py [--rubric rubric.yaml] [--rounds 3] [--sandbox local|docker] [--threads N]
Both sides share what is built once per batch, not per submission: the job folder, the expected outputs
and, for the sandbox, its fork server with torch imported. The difference is what each submission pays for
its isolation: a fork and a confinement per stage, the submission imported per stage, torch's per-process
warm-up per stage, and the outputs written as files and read back by the host. Two in-process baselines,
each round, judged by the same judge:
  fresh — the issue's definition: the checks run once in ONE new Python process that imported what the fork
          server preloads (torch, torchvision, the runner, the loader) and the reference before its clock (so
          it pays torch's first-use warm-up once, the sandbox once per stage);
  warm  — stricter: in this process, which already ran them once (no warm-up left at all).
The server's start (once per batch, overlapping the job's preparation) is measured and printed on its own.
``--threads N`` replaces the rubric's torch threads: with fewer threads than cores, what the sandbox runs
beside a stage (Docker's next spare container importing torch) has a core of its own, as on a machine with
more cores than a job's threads.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, Clock, machine  # noqa: I001 (bench/ on sys.path)

import torch

from grader.batch.grading import prepare_batch
from grader.checks import integrity
from grader.checks.base import UNIT_STAGES
from grader.checks.forbidden import install_guards
from grader.job.expected import reference_module
from grader.intake.discover import prepare_submission
from grader.checks import kind_of, stage_of
from grader.checks.verdict import StageResult
from grader.core.outputs import read_stage
from grader.batch.pipeline import BatchSetup, grade_submission
from grader.rubric import Rubric, load_rubric
from grader.runner import StageWriter, run_stage, stage_configs
from grader.sandbox.base import SandboxRequest, SandboxRun
from grader.sandbox.forkserver import PRELOAD
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


def end_to_end(batch: BatchSetup, work: Path) -> tuple[float, dict[str, float], dict[str, float]]:
    """(seconds, check -> score, stage -> seconds) for the reference through the local sandbox."""
    sub = prepare_submission(REPO / "reference", student="reference", workdir=work / "intake")
    if isinstance(batch.sandbox, LocalSandbox):  # the batch's server is warm, as in a batch
        _trivial_stage(batch.sandbox, batch.rubric.threads, work)
    with Clock() as clock:
        result, _ = grade_submission(batch, sub)
    return clock.seconds, {c.id: c.score for c in result.checks}, result.provenance["durations_s"]


def _stages(rubric: Rubric) -> list[str]:
    return rubric.stages()


def _call_stage(stage: str, job: Path, student: object, out: Path, device: str) -> None:
    """One stage as ``grader.runner.main`` runs it (the guards and the integrity snapshot of a guarded unit stage,
    its records), minus what cannot be undone in a process that runs every stage: the Landlock seal of the cases."""
    stages = stage_configs(job, json.loads((job / "job.json").read_text())["stages"], stage)
    out.mkdir(parents=True)
    writer = StageWriter(out, stage)
    guarded = stage in UNIT_STAGES and any(c.get("record_ops") for c in stages.get(stage, {}).get("checks", []))
    tampered = None
    if guarded:
        install_guards()
        tampered = integrity.snapshot()
    if stage in UNIT_STAGES:
        writer.record("import_ops", {"ok": True, "seal": {"sealed": False, "why": "in-process benchmark"}})
    try:
        run_stage(student, stage, stages, job, writer, device, None, tampered)
    finally:
        if tampered is not None:
            writer.record("integrity", {"ok": True, "changed": tampered()})


def _judge_all(batch: BatchSetup, stages: dict[str, StageResult]) -> dict[str, float]:
    return {c.id: kind_of(c).judge(c, stages[stage_of(c)], batch.ctx).result.score for c in batch.rubric.checks}


def _run_stage(stage: str, batch: BatchSetup, student: object, out: Path) -> StageResult:
    _call_stage(stage, batch.ctx.plan.job_dir, student, out, batch.device)
    return StageResult(stage, _IN_PROCESS, read_stage(out, stage), batch.rubric.budget(stage))


def _fresh_child(job: str, out: str, device: str, threads: int, stages: list[str]) -> None:
    """In a new process: what the fork server preloads and the reference imported, then the clock; prints
    stage -> seconds."""
    for name in PRELOAD:
        importlib.import_module(name)
    student = reference_module()
    torch.set_num_threads(threads)
    seconds = {}
    for stage in stages:
        with Clock() as clock:
            _call_stage(stage, Path(job), student, Path(out) / stage, device)
        seconds[stage] = round(clock.seconds, 3)
    print(json.dumps(seconds))


def direct_fresh(batch: BatchSetup, work: Path) -> tuple[float, dict[str, float], dict[str, float]]:
    """The same stages in ONE new Python process (imports before its clock), judged here by the same judge."""
    stages = _stages(batch.rubric)
    argv = [sys.executable, __file__, "--fresh-child", json.dumps(
        [str(batch.ctx.plan.job_dir), str(work / "fresh"), batch.device, batch.rubric.threads, stages])]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    seconds = json.loads(done.stdout.strip().splitlines()[-1])
    with Clock() as judging:
        results = {s: StageResult(s, _IN_PROCESS, read_stage(work / "fresh" / s, s), batch.rubric.budget(s))
                   for s in stages}
        scores = _judge_all(batch, results)
    return sum(seconds.values()) + judging.seconds, scores, seconds


def direct(batch: BatchSetup, work: Path) -> tuple[float, dict[str, float], dict[str, float]]:
    """The same stages on the reference module in this process, judged by the same judge."""
    student, stages, seconds = reference_module(), {}, {}
    torch.set_num_threads(batch.rubric.threads)
    with Clock() as clock:
        for stage in _stages(batch.rubric):
            with Clock() as stage_clock:
                stages[stage] = _run_stage(stage, batch, student, work / "direct" / stage)
            seconds[stage] = round(stage_clock.seconds, 3)
        scores = _judge_all(batch, stages)
    return clock.seconds, scores, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rubric", type=Path, default=REPO / "rubric.yaml")
    parser.add_argument("--cache-dir", type=Path, default=None, help="dataset cache (default: a temp folder)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median ratio is the figure")
    parser.add_argument("--sandbox", choices=("local", "docker"), default="local",
                        help="docker: the test image (one container per submission, started inside the clock)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per stage (default: the rubric's)")
    parser.add_argument("--fresh-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fresh_child:
        _fresh_child(*json.loads(args.fresh_child))
        return
    rubric = load_rubric(args.rubric)
    if args.threads is not None:
        rubric = dataclasses.replace(rubric, threads=args.threads)
    rounds, started = [], None
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        work = Path(tmp)
        cache = (args.cache_dir or work / "cache").resolve()
        if args.sandbox == "local":
            sandbox = LocalSandbox()
        else:  # the Docker SDK only when asked for: a GPU machine may have neither it nor an engine
            from grader.sandbox.container.engine import docker_sandbox_for_cli

            sandbox = docker_sandbox_for_cli(image="test")
        batch = prepare_batch(rubric, sandbox=sandbox, scratch=work, cache_dir=cache)
        direct(batch, work / "warm-up")  # discarded: this process's baseline has no warm-up left
        for r in range(args.rounds):  # alternating, so that a drift of the machine hits every side alike
            round_dir = work / f"round-{r}"
            rounds.append((end_to_end(batch, round_dir), direct_fresh(batch, round_dir), direct(batch, round_dir)))
        batch.sandbox.close()
        if args.sandbox == "local":
            started = server_start(rubric.threads, work)
    print(f"machine: {machine()}; rubric {args.rubric} (threads {rubric.threads}); sandbox {args.sandbox}")
    for sandboxed, fresh, warm in rounds:
        assert sandboxed[1] == fresh[1] == warm[1], f"the paths disagree: {sandboxed[1]} / {fresh[1]} / {warm[1]}"
        print(f"reference {sum(sandboxed[1].values()):g}/{rubric.max_score:g} every way; end to end "
              f"{sandboxed[0]:.2f} s, in-process fresh {fresh[0]:.2f} s, warm {warm[0]:.2f} s: ratios "
              f"{sandboxed[0] / fresh[0]:.3f} (fresh), {sandboxed[0] / warm[0]:.3f} (warm)")
        print("  " + "  ".join(f"{stage} {sandboxed[2].get(stage, float('nan')):.2f}/{fresh[2][stage]:.2f}/"
                               f"{seconds:.2f}" for stage, seconds in warm[2].items())
              + "  s (sandboxed/fresh/warm)")
    goal = "1.10" if args.sandbox == "local" else "1.15"
    fresh_ratio = statistics.median(s[0] / f[0] for s, f, _ in rounds)
    warm_ratio = statistics.median(s[0] / w[0] for s, _, w in rounds)
    print(f"median ratio over {len(rounds)} rounds: {fresh_ratio:.3f} vs one fresh process (goal <= {goal}); "
          f"{warm_ratio:.3f} vs this warmed process (stricter)")
    if started is not None:
        print(f"once per batch: the fork server's start and torch import {started:.2f} s (overlaps the job's "
              f"preparation); a batch of ONE submission that waited for it all: ratio "
              f"{fresh_ratio + started / statistics.median(f[0] for _, f, _ in rounds):.3f} vs fresh")


if __name__ == "__main__":
    main()
