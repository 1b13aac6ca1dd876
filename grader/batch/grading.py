"""Grading the submissions that need it (the heavy side of the seam: ``grader.batch.batch`` imports this module only
when something needs grading). Here: the batch's shared job (built once, by a trusted subprocess), the
``grade_one`` an executor is handed, and the one place an outcome is recorded.

Two kinds of ``grade_one``: for an executor in this process, a batch prepared here (the engine the batch
was handed); for a remote one (Ray), ``NodeGrader``: plain data (rubric, ``SandboxSpec``, cache) that builds
the engine and the job on the node, once per worker process. The driver then builds no sandbox at all.
"""
from __future__ import annotations

import atexit
import functools
import os
import platform
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from grader import __version__
from grader.core.cleanup import remove_tree
from grader.batch.executors import Begin, Executor, Finished, Graded, gpu_memory_fraction, gpu_sharing
from grader.intake.discover import Submission
from grader.job.cache import eval_key_fingerprint, installed_version
from grader.kit.checkout import staff_hidden
from grader.checks.verdict import JudgeContext
from grader.data.evalsecret import KEY_FILE
from grader.batch.pipeline import BatchSetup, grade_submission, intake_identity, rejected_result, write_artifacts
from grader.job.prepare import prepare_job
from grader.core.results import SubmissionResult, write_result
from grader.rubric import Rubric
from grader.sandbox.base import InfrastructureError, Sandbox
from grader.sandbox.factory import SandboxSpec
from grader.batch.scoring import score_submission
from grader.data.shapes import default_cache_dir
from grader.weights.store import check_node, fingerprint
from grader.weights.store import provide as provide_weights

__all__ = ["NodeGrader", "grade_fresh", "grade_with_gpu", "infrastructure_result", "prepare_batch",
           "record_result", "rejected_result"]


def _provenance(rubric: Rubric, dataset_hash: str, device: str) -> dict:
    return {"grader_version": __version__, "torch_version": installed_version("torch"),
            "python_version": platform.python_version(), "device": device, "dataset_hash": dataset_hash,
            "seeds": {c.id: c.seed for c in rubric.checks if hasattr(c, "seed")}, "threads": rubric.threads}


def prepare_batch(rubric: Rubric, *, sandbox: Sandbox, scratch: Path, cache_dir: Path, device: str = "cpu",
                  hidden: tuple[Path, ...] = (), jobs_per_gpu: int = 1) -> BatchSetup:
    """What every submission of a batch shares: the job folder, expected outputs, provenance (built once, by
    a trusted subprocess: see ``grader.job.prepare``). Hidden from the sandbox: reference/, the dataset cache
    (labels) and the host-only folder (expected outputs, evaluation labels). ``jobs_per_gpu``: K jobs share
    each GPU, every stage capped to 1/K of its memory (recorded in the provenance)."""
    torch_home = provide_weights(rubric, cache_dir=cache_dir, scratch=scratch)  # missing: stop before any student
    sandbox.warm_up(rubric.threads)  # in the background, while the job is prepared
    prepared = prepare_job(rubric, job_dir=scratch / "job", host_dir=scratch / "host", cache_dir=cache_dir,
                           device=device)
    ctx = JudgeContext(plan=prepared.plan, expected=prepared.expected, num_classes=rubric.num_classes)
    hidden_paths = (*staff_hidden(), cache_dir, prepared.host_dir, *hidden)  # reference/ (none in a kit)
    provenance = _provenance(rubric, prepared.plan.dataset_hash, device)
    if device == "cuda":
        provenance["gpu_sharing"] = gpu_sharing(jobs_per_gpu)
    return BatchSetup(rubric=rubric, ctx=ctx, sandbox=sandbox, hidden_paths=hidden_paths, scratch=scratch,
                 device=device, gpu_memory_fraction=gpu_memory_fraction(jobs_per_gpu), provenance=provenance,
                 torch_home=torch_home)


def grade_with_gpu(batch: BatchSetup, sub: Submission, gpu: str | None) -> Graded:
    """``grade_one`` over a batch prepared in this process."""
    return grade_submission(replace(batch, gpu=gpu), sub)


def infrastructure_result(rubric: Rubric, sub: Submission, exc: Exception) -> SubmissionResult:
    """Not graded because the machinery failed: never a zero, regraded by the next run."""
    return score_submission(student=sub.student, checks=[], rubric=rubric, status="infrastructure_error",
                            message=f"Not graded — the grading machinery failed: {exc}. This is not the "
                                    "student's fault; fix it and run the same command again (finished "
                                    "results are kept).",
                            provenance={"grader_version": __version__, "submission_hash": sub.content_hash,
                                        **intake_identity(sub)})


def record_result(student_dir: Path, result: SubmissionResult, artifacts: dict) -> None:
    """Artefacts first, result.json last and atomically: a result on disk is always a finished one."""
    if artifacts:
        write_artifacts(student_dir, artifacts)
    write_result(student_dir, result)


def grade_fresh(todo: list[Submission], *, rubric: Rubric, executor: Executor,
                sandbox: Callable[[], Sandbox] | SandboxSpec, out_dir: Path, scratch: Path,
                cache_dir: Path | None = None, gpus: tuple[str, ...] = (), jobs_per_gpu: int = 1,
                progress: Callable[[str, SubmissionResult], None] | None = None,
                on_begin: Begin | None = None) -> list[SubmissionResult]:
    """Grade ``todo`` with ``executor``. ``sandbox``: for a local executor, what makes the engine (called
    here, once); for a remote one, its spec (sent to the nodes). ``jobs_per_gpu``: the executor shares each
    GPU between that many jobs; here each stage gets the memory cap that goes with it."""
    out, lock = out_dir.resolve(), threading.Lock()

    def record(sub: Submission, outcome: Finished) -> SubmissionResult:
        result, artifacts = ((infrastructure_result(rubric, sub, outcome), {})
                             if isinstance(outcome, InfrastructureError) else outcome)
        record_result(out / sub.student, result, artifacts)
        if progress:
            with lock:
                progress(sub.student, result)
        return result

    if executor.remote:
        if not isinstance(sandbox, SandboxSpec):
            raise TypeError("a remote executor is handed a SandboxSpec, never an engine built here")
        # the node's GPUs are the ones its scheduler assigns, not the driver's --gpus
        grade_one = NodeGrader(rubric=rubric, sandbox=replace(sandbox, gpus=()),
                               cache_dir=str(cache_dir) if cache_dir else None,
                               hidden_on_node=executor.hidden_on_node, jobs_per_gpu=jobs_per_gpu,
                               eval_key=_eval_key_fingerprint(rubric, (cache_dir or default_cache_dir()).resolve()),
                               weights=_driver_weights(rubric, (cache_dir or default_cache_dir()).resolve()))
        return executor.run(todo, grade_one, record, on_begin=on_begin)
    engine = sandbox.make() if isinstance(sandbox, SandboxSpec) else sandbox()
    batch = prepare_batch(rubric, sandbox=engine, scratch=scratch, cache_dir=(cache_dir or default_cache_dir()).resolve(),
                          device="cuda" if gpus else "cpu", hidden=(out,), jobs_per_gpu=jobs_per_gpu)
    return executor.run(todo, functools.partial(grade_with_gpu, batch), record, on_begin=on_begin)


# ------------------------------------------------------------------ grading on another machine (Ray nodes)
_NODE_BATCHES: dict[tuple, BatchSetup] = {}  # per worker process: the job is built once, not once per task


@dataclass(frozen=True)
class NodeGrader:
    """A ``grade_one`` that is plain data: wherever it is called it builds the engine from ``sandbox`` and
    the job, once per process (and device), then grades. ``hidden_on_node``: folders of the executor's own
    runtime on the node that the sandbox must not see (a module-level function: it travels by name)."""

    rubric: Rubric
    sandbox: SandboxSpec
    cache_dir: str | None = None  # the dataset cache on the node (None: the node's default)
    hidden_on_node: Callable[[], tuple[Path, ...]] | None = None
    jobs_per_gpu: int = 1  # K tasks share a GPU (Ray's num_gpus=1/K): each stage capped to 1/K of its memory
    eval_key: str | None = None  # the driver's evaluation-key fingerprint (embedded data): every node must agree
    weights: tuple[tuple[str, str], ...] = ()  # the driver's pretrained weights (file, sha256): every node holds them
    grader_version: str = __version__

    def __call__(self, sub: Submission, gpu: str | None) -> Graded:
        if self.grader_version != __version__:
            raise InfrastructureError(f"this node runs grader {__version__}, the driver {self.grader_version}; "
                                      "install the same version on every node")
        cache = (Path(self.cache_dir) if self.cache_dir else default_cache_dir()).resolve()
        if self.eval_key is not None and _eval_key_fingerprint(self.rubric, cache) != self.eval_key:
            raise InfrastructureError(
                f"this node's evaluation key ({cache / KEY_FILE}) differs from the grading machine's, so it would "
                "grade full training on another evaluation split: copy the grading machine's eval-secret.key "
                "to that path on every node (or share the cache folder), then rerun")
        if self.weights:
            check_node(self.rubric, cache_dir=cache, driver=self.weights)
        return grade_with_gpu(self._batch(gpu), sub, gpu)

    def _batch(self, gpu: str | None) -> BatchSetup:
        device = "cuda" if gpu is not None and _cuda_usable(gpu) else "cpu"  # what the runner will use
        key = (self.rubric.source_hash, self.sandbox, self.cache_dir, device, self.jobs_per_gpu)
        if key not in _NODE_BATCHES:
            cache = (Path(self.cache_dir) if self.cache_dir else default_cache_dir()).resolve()
            hidden = self.hidden_on_node() if self.hidden_on_node else ()
            _NODE_BATCHES[key] = prepare_batch(self.rubric, sandbox=self.sandbox.make(), scratch=node_scratch(),
                                               cache_dir=cache, device=device, hidden=hidden,
                                               jobs_per_gpu=self.jobs_per_gpu)
        return _NODE_BATCHES[key]


def _eval_key_fingerprint(rubric: Rubric, cache: Path) -> str | None:
    """Which evaluation split this machine's embedded dataset draws (a one-way name of its key); None for real
    VOC data, which every node reads as it is."""
    return eval_key_fingerprint(cache) if rubric.dataset.kind == "embedded" else None


def _driver_weights(rubric: Rubric, cache: Path) -> tuple[tuple[str, str], ...]:
    """The driver's pretrained weights, each hashed; one it lacks stops the batch before any task is sent."""
    if not rubric.pretrained:
        return ()
    scratch = Path(tempfile.mkdtemp(prefix="seg-weights-"))
    try:
        provide_weights(rubric, cache_dir=cache, scratch=scratch)  # verified; a missing one raises, naming its command
    finally:
        remove_tree(scratch, ignore_errors=True)
    return fingerprint(rubric, cache_dir=cache)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    return True


def node_scratch() -> Path:
    """This worker process's scratch folder. Ray ends idle workers without running exit handlers, so the
    folders of dead workers are removed here, whenever a new one is made."""
    root = Path(tempfile.gettempdir()) / "seg-grader-ray"
    root.mkdir(exist_ok=True)
    if root.is_symlink() or root.stat().st_uid != os.getuid():  # not ours: never clean up in it
        return Path(tempfile.mkdtemp(prefix="seg-grader-ray-"))
    for old in root.iterdir():
        pid = old.name.partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            remove_tree(old, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
    atexit.register(remove_tree, scratch, ignore_errors=True)
    return scratch


@functools.cache
def _cuda_usable(gpu: str) -> bool:
    """Whether the sandbox's torch can use GPU ``gpu`` (fake GPUs, CPU wheels: not). Asked of a child
    interpreter (isolated: -I), once per worker and GPU, like every torch question of the grader: the worker
    itself never imports torch."""
    code = "import torch; print(torch.cuda.is_available())"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
    try:
        done = subprocess.run([sys.executable, "-I", "-c", code], check=False, capture_output=True, text=True, env=env,
                              timeout=300, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InfrastructureError(f"cannot ask torch about GPU {gpu}: {exc}") from exc
    return done.returncode == 0 and done.stdout.strip().endswith("True")
