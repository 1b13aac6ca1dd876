"""The Ray engine (``grader grade --engine ray``): one Ray task per submission, on the node Ray picks.

The driver sends each task plain data: the rubric, the clean submission folder packed as a tar (made by
the intake, trusted), its content hash, the sandbox engine's name and image. On its node the task builds
the job once per worker process, grades with the same ``grade_submission`` in the same sandbox, with the
GPU Ray assigned, and RETURNS the result (JSON) and its artefacts (npz bytes): no shared filesystem is
needed, and only the driver writes results, once per submission.

Failure policy: a student's failure is a result like any other. Only the machinery is retried by Ray: a
lost node or a dead worker (``max_retries``) and an ``InfrastructureError`` (``retry_exceptions``). What
still fails after the retries becomes an ``infrastructure_error`` result (never a zero), which the next
run grades again.
"""
from __future__ import annotations

import atexit
import functools
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from grader import __version__
from grader.batch import GradeOptions, infrastructure_result
from grader.grading import prepare_batch, record_result
from grader.intake import Submission, hash_folder
from grader.pipeline import Batch, grade_submission
from grader.results import SubmissionResult
from grader.rubric import Rubric
from grader.sandbox.base import InfrastructureError, Sandbox
from grader.shapes import default_cache_dir

__all__ = ["MAX_RETRIES", "TaskSpec", "grade_on_ray", "pack_folder", "unpack_folder"]

MAX_RETRIES = 3  # Ray re-runs a task this often after a node / worker death or an InfrastructureError


@dataclass(frozen=True)
class TaskSpec:
    """Everything one task needs, as data: no paths of the driver's machine except an optional cache."""

    rubric: Rubric
    student: str
    content_hash: str
    source: str
    notes: tuple[str, ...]
    files: bytes  # the clean submission folder as an uncompressed tar
    engine: str  # sandbox engine on the node: "local" | "docker"
    image: str | None  # docker image tag (engine "docker")
    cache_dir: str | None  # dataset cache on the node (None: the node's default)
    grader_version: str


# ----------------------------------------------------------------------------------- on the node
_NODE_BATCHES: dict[tuple, Batch] = {}  # per worker process: the job is built once, not once per task


def pack_folder(folder: Path) -> bytes:
    """The regular files under ``folder`` as an uncompressed tar (sorted, relative names)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return buffer.getvalue()


def unpack_folder(data: bytes, folder: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(folder, filter="data")  # refuses absolute names, '..', links out of the folder


def _node_sandbox(engine: str, image: str | None) -> Sandbox:
    if engine == "local":
        from grader.sandbox.local import LocalSandbox

        return LocalSandbox()
    from grader.sandbox.docker import docker_sandbox_for_cli

    return docker_sandbox_for_cli(image=image)


def _ray_files() -> Path:
    """Ray's folder on this node: its sessions' Unix sockets are reachable from any network namespace, so a
    local sandbox must not see it (a student could talk to the raylet and run code outside the sandbox)."""
    import ray

    context = ray.get_runtime_context()
    if hasattr(context, "get_temp_dir"):  # Ray >= 2.3x; before, the default folder
        return Path(context.get_temp_dir())
    return Path(tempfile.gettempdir()) / "ray"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    return True


def _node_scratch() -> Path:
    """This worker process's scratch folder. Ray ends idle workers without running exit handlers, so the
    folders of dead workers are removed here, whenever a new one is made."""
    root = Path(tempfile.gettempdir()) / "seg-grader-ray"
    root.mkdir(exist_ok=True)
    if root.is_symlink() or root.stat().st_uid != os.getuid():  # not ours: never clean up in it
        return Path(tempfile.mkdtemp(prefix="seg-grader-ray-"))
    for old in root.iterdir():
        pid = old.name.partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
    atexit.register(shutil.rmtree, scratch, True)
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


def _node_batch(spec: TaskSpec, gpu: str | None) -> Batch:
    device = "cuda" if gpu is not None and _cuda_usable(gpu) else "cpu"  # what the runner will use
    key = (spec.rubric.source_hash, spec.engine, spec.image, spec.cache_dir, device)
    if key not in _NODE_BATCHES:
        scratch = _node_scratch()
        cache = (Path(spec.cache_dir) if spec.cache_dir else default_cache_dir()).resolve()
        _NODE_BATCHES[key] = prepare_batch(spec.rubric, sandbox=_node_sandbox(spec.engine, spec.image),
                                           scratch=scratch, cache_dir=cache, device=device, hidden=(_ray_files(),))
    return replace(_NODE_BATCHES[key], gpu=gpu)


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def grade_task(spec: TaskSpec) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The body of one Ray task: (result JSON, artefact name -> npz bytes)."""
    import ray

    if spec.grader_version != __version__:
        raise InfrastructureError(f"this node runs grader {__version__}, the driver {spec.grader_version}; "
                                  "install the same version on every node")
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    batch = _node_batch(spec, gpu_ids[0] if gpu_ids else None)
    folder = Path(tempfile.mkdtemp(prefix=f"{spec.student[:40]}-", dir=batch.scratch))
    try:
        unpack_folder(spec.files, folder)
        if hash_folder(folder) != spec.content_hash:
            raise InfrastructureError(f"the submission of {spec.student} arrived damaged (content hash differs)")
        sub = Submission(student=spec.student, path=folder, content_hash=spec.content_hash, source=spec.source,
                         notes=spec.notes)
        result, artifacts = grade_submission(batch, sub)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    data = result.to_json()
    data["provenance"]["ray"] = {"node_id": ray.get_runtime_context().get_node_id(), "gpu_ids": gpu_ids}
    return data, {name: _npz(arrays) for name, arrays in artifacts.items()}


# ---------------------------------------------------------------------------------- the driver
def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise InfrastructureError("--engine ray needs Ray: pip install -e '.[ray]' (on every node)") from exc
    return ray


def _spec(sub: Submission, rubric: Rubric, sandbox: Sandbox, options: GradeOptions) -> TaskSpec:
    return TaskSpec(rubric=rubric, student=sub.student, content_hash=sub.content_hash, source=sub.source,
                    notes=tuple(sub.notes), files=pack_folder(sub.path), engine=sandbox.name,
                    image=getattr(sandbox, "image", None),
                    cache_dir=str(options.cache_dir) if options.cache_dir else None, grader_version=__version__)


def _resources(ray: Any, rubric: Rubric) -> dict[str, float]:
    """One GPU per task where the cluster has GPUs, else the CPU threads the rubric fixes."""
    if ray.cluster_resources().get("GPU", 0) >= 1:
        return {"num_gpus": 1, "num_cpus": rubric.threads}
    return {"num_cpus": rubric.threads}


def _cause(exc: Exception) -> str:
    cause = getattr(exc, "cause", None) or exc  # a RayTaskError carries the task's own exception
    lines = str(cause).strip().splitlines() or ["no message"]
    return f"{type(cause).__name__} on a Ray node: {lines[0][:500]}"


def _receive(ray: Any, ref: Any, sub: Submission, rubric: Rubric, out: Path) -> SubmissionResult:
    """The task's outcome written once: its result, or an infrastructure_error after Ray's retries."""
    try:
        data, blobs = ray.get(ref)
        result = SubmissionResult.from_json(data)
        artifacts = {name: _arrays(blob) for name, blob in blobs.items()}
    except ray.exceptions.RayError as exc:  # node lost past the retries, InfrastructureError, a grader bug
        result, artifacts = infrastructure_result(rubric, sub, RuntimeError(_cause(exc))), {}
    record_result(out / sub.student, result, artifacts)
    return result


def _arrays(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def _collect(ray: Any, pending: dict, rubric: Rubric, options: GradeOptions) -> list[SubmissionResult]:
    results = []
    try:
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            sub = pending.pop(ref)
            results.append(_receive(ray, ref, sub, rubric, options.out_dir.resolve()))
            if options.progress:
                options.progress(sub.student, results[-1])
    except BaseException:  # Ctrl-C: stop what runs; nothing is written for the interrupted submissions
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return results


def grade_on_ray(todo: list[Submission], *, rubric: Rubric, sandbox: Sandbox,
                 options: GradeOptions) -> list[SubmissionResult]:
    """Grade ``todo`` as Ray tasks; joins ``options.ray_address`` unless Ray is already initialised."""
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:  # address None: $RAY_ADDRESS, else the cluster `ray start` made here, else a new local one
        ray.init(address=options.ray_address, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=[InfrastructureError])(grade_task)
        resources = _resources(ray, rubric)
        pending = {task.options(**resources).remote(_spec(sub, rubric, sandbox, options)): sub for sub in todo}
        return _collect(ray, pending, rubric, options)
    finally:
        if started:
            ray.shutdown()
