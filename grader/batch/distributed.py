"""The Ray executor (``grader grade --executor ray``): one Ray task per submission, on the node Ray picks.

The driver sends each task plain data: the ``grade_one`` it was handed (a ``grader.batch.grading.NodeGrader``: the
rubric, the ``SandboxSpec``, the cache folder), the clean submission folder packed as a tar (made by the
intake, trusted) and its identity. On its node the task unpacks the folder, checks its content hash and calls
``grade_one`` with the GPU Ray assigned; it RETURNS the result (JSON) and its artefacts (npz bytes): no shared
filesystem is needed, and only the driver records results, once per submission. The driver builds no sandbox.

Failure policy: a student's failure is a result like any other. Only the machinery is retried by Ray: a
lost node or a dead worker (``max_retries``) and an ``InfrastructureError`` (``retry_exceptions``). What
still fails after the retries becomes an ``infrastructure_error`` result (never a zero), which the next
run grades again.
"""
from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from grader.batch.executors import Begin, GradeOne, Record
from grader.intake.discover import Submission, hash_folder
from grader.core.results import SubmissionResult
from grader.sandbox.base import InfrastructureError

__all__ = ["MAX_RETRIES", "RayExecutor", "TaskSpec", "pack_folder", "ray_files", "unpack_folder"]

MAX_RETRIES = 3  # Ray re-runs a task this often after a node / worker death or an InfrastructureError


@dataclass(frozen=True)
class TaskSpec:
    """One submission as data: no paths of the driver's machine."""

    student: str
    content_hash: str
    source: str
    notes: tuple[str, ...]
    files: bytes  # the clean submission folder as an uncompressed tar


# ----------------------------------------------------------------------------------- on the node
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


def ray_files() -> tuple[Path, ...]:
    """Ray's folder on this node: its sessions' Unix sockets are reachable from any network namespace, so a
    local sandbox must not see it (a student could talk to the raylet and run code outside the sandbox)."""
    import ray

    context = ray.get_runtime_context()
    if hasattr(context, "get_temp_dir"):  # Ray >= 2.3x; before, the default folder
        return (Path(context.get_temp_dir()),)
    return (Path(tempfile.gettempdir()) / "ray",)


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def grade_task(grade_one: GradeOne, spec: TaskSpec) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The body of one Ray task: (result JSON, artefact name -> npz bytes)."""
    import ray

    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    folder = Path(tempfile.mkdtemp(prefix=f"{spec.student[:40]}-"))
    try:
        unpack_folder(spec.files, folder)
        if hash_folder(folder) != spec.content_hash:
            raise InfrastructureError(f"the submission of {spec.student} arrived damaged (content hash differs)")
        sub = Submission(student=spec.student, path=folder, content_hash=spec.content_hash, source=spec.source,
                         notes=spec.notes)
        result, artifacts = grade_one(sub, gpu_ids[0] if gpu_ids else None)
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
        raise InfrastructureError("--executor ray needs Ray: pip install -e '.[ray]' (on every node)") from exc
    return ray


def _spec(sub: Submission) -> TaskSpec:
    return TaskSpec(student=sub.student, content_hash=sub.content_hash, source=sub.source, notes=tuple(sub.notes),
                    files=pack_folder(sub.path))


def _resources(ray: Any, cpus: int, jobs_per_gpu: int = 1) -> dict[str, float]:
    """Where the cluster has GPUs, 1/K of one GPU per task (Ray packs K tasks on a GPU, each told its index),
    plus the CPU threads the rubric fixes; without GPUs, those threads only."""
    if ray.cluster_resources().get("GPU", 0) >= 1:
        return {"num_gpus": 1 / jobs_per_gpu if jobs_per_gpu > 1 else 1, "num_cpus": cpus}
    return {"num_cpus": cpus}


def _cause(exc: Exception) -> str:
    cause = getattr(exc, "cause", None) or exc  # a RayTaskError carries the task's own exception
    lines = str(cause).strip().splitlines() or ["no message"]
    return f"{type(cause).__name__} on a Ray node: {lines[0][:500]}"


def _receive(ray: Any, ref: Any, sub: Submission, record: Record) -> SubmissionResult:
    """The task's outcome recorded once: its result, or an infrastructure fault after Ray's retries."""
    try:
        data, blobs = ray.get(ref)
        outcome: Any = (SubmissionResult.from_json(data), {name: _arrays(blob) for name, blob in blobs.items()})
    except ray.exceptions.RayError as exc:  # node lost past the retries, InfrastructureError, a grader bug
        outcome = InfrastructureError(_cause(exc))
    return record(sub, outcome)


def _arrays(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


class RayExecutor:
    """One Ray task per submission; joins ``address`` unless Ray is already initialised (None: $RAY_ADDRESS,
    else the cluster `ray start` made here, else a new local one). ``threads``: the CPUs each task holds (the
    rubric's torch threads); ``jobs_per_gpu``: K tasks share a GPU (``num_gpus=1/K``; the memory cap that goes
    with it travels in the ``grade_one`` the driver builds)."""

    remote = True
    hidden_on_node = staticmethod(ray_files)

    def __init__(self, *, address: str | None = None, threads: int = 1, jobs_per_gpu: int = 1) -> None:
        if jobs_per_gpu < 1:
            raise ValueError(f"jobs per GPU must be at least 1, not {jobs_per_gpu}")
        self.address, self.threads, self.jobs_per_gpu = address, threads, jobs_per_gpu

    def run(self, todo: Sequence[Submission], grade_one: GradeOne, record: Record, *,
            on_begin: Begin | None = None) -> list[SubmissionResult]:
        ray = _import_ray()
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        try:
            task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=[InfrastructureError])(grade_task)
            options = _resources(ray, self.threads, self.jobs_per_gpu)
            shared = ray.put(grade_one)  # sent once, not once per task
            pending = {task.options(**options).remote(shared, _spec(sub)): sub for sub in todo}
            return self._collect(ray, pending, record)
        finally:
            if started:
                ray.shutdown()

    @staticmethod
    def _collect(ray: Any, pending: dict, record: Record) -> list[SubmissionResult]:
        results = []
        try:
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                results.append(_receive(ray, ref, pending.pop(ref), record))
        except BaseException:  # Ctrl-C: stop what runs; nothing is recorded for the interrupted submissions
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return results
