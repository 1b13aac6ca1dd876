"""Runs INSIDE the sandbox: import the student's ``segmentation.py``, call it, write raw outputs.

Usage (by the sandbox engines only): ``main(["--job", J, "--out", O, "--submission", S, "--stage", X])`` in a
confined fork of the fork server (``grader.sandbox.forkserver``), or ``python -m grader.runner ...`` in a
container of its own (``DockerSandbox(per_submission=False)``).

Everything this process writes is untrusted by construction (student code shares the process), so it
writes raw data only — arrays as ``.npy`` and plain JSON — and never a score. The host judges.
Outputs of a stage: ``O/<stage>.json`` (rewritten atomically after every case, so a timeout keeps what
finished) and ``O/<name>.npy`` arrays that the JSON names.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from grader.checks import KINDS, STUDENT_NAMES
from grader.sandbox.base import DEVICE_LINE, GPU_SHARE_ENV, GPU_SHARE_LINE

__all__ = ["StageWriter", "main", "run_stage"]


class StageWriter:
    """Accumulates a stage's records and rewrites ``<stage>.json`` atomically after each one."""

    def __init__(self, out: Path, stage: str) -> None:
        self.out, self.stage, self.records = out, stage, {}

    def record(self, key: str, value: dict[str, Any]) -> None:
        self.records[key] = value
        tmp = self.out / f".{self.stage}.json.tmp"
        tmp.write_text(json.dumps({"stage": self.stage, "records": self.records}, allow_nan=True))
        os.replace(tmp, self.out / f"{self.stage}.json")

    def error(self, key: str, exc: BaseException) -> None:
        """The student's exception, recorded as data for the judge."""
        self.record(key, _error(exc))

    def array(self, name: str, value: Any) -> str:
        arr = _to_numpy(value)
        np.save(self.out / f"{name}.npy", arr, allow_pickle=False)
        return f"{name}.npy"


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.dtype.is_floating_point:
            value = value.double()
        return value.numpy()
    return np.asarray(value)


def _error(exc: BaseException) -> dict[str, Any]:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    said = str(exc).strip() or "(no message)"
    return {"ok": False, "error": f"{type(exc).__name__}: {said}"[:2000], "traceback": "".join(tb)[-6000:]}


def run_stage(student: Any, stage: str, stages: dict, job: Path, writer: StageWriter, device: str) -> None:
    """``import``: which API names exist; ``unit``: every unit check's cases; else the check named ``stage``."""
    if stage == "import":
        writer.record("names", {"ok": True, "present": [n for n in STUDENT_NAMES
                                                        if callable(getattr(student, n, None))],
                                "notebook": _notebook_cells(student)})
        return
    configs = stages["unit"]["checks"] if stage == "unit" else [stages[stage]]
    for config in configs:
        KINDS[config["kind"]].run(student, config, job, writer, device)


def _notebook_cells(student: Any) -> dict | None:
    """The cells a notebook's prelude (``grader.intake.notebooks``) recorded as failed, as plain JSON; None for a .py.
    The student's code could have changed the record: only well-formed entries pass, and the host only shows
    them as a warning."""
    try:
        cells = getattr(student, "__grader_notebook__", {}).get("failed_cells")
        return {"failed_cells": [{"cell": e["cell"], "first_line": str(e.get("first_line"))[:80],
                                  "error": str(e.get("error"))[:300]} for e in cells[:50]
                                 if isinstance(e, dict) and type(e.get("cell")) is int]}
    except Exception:  # noqa: BLE001 - not a notebook, or a record the student's code broke: nothing to say
        return None


def _gpu_share() -> float | None:
    """The share of the GPU's memory this stage may allocate (K jobs on one GPU), from the sandbox's
    environment; None without a cap. A value the grader could not have meant raises (the host's fault)."""
    text = os.environ.get(GPU_SHARE_ENV)
    if text is None:
        return None
    fraction = float(text)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"{GPU_SHARE_ENV}={text!r} is not in (0, 1]")
    return fraction


def _device(torch: Any, wanted: str) -> str:
    """The device the stage runs on: the job's, never silently another. Said on stderr BEFORE any student
    code runs (so the first such line is the runner's, whatever the student prints later): the host refuses
    a GPU stage that would run on the CPU (see ``grader.sandbox.base.runner_device``). On a GPU, also before
    any student code: the memory cap of a shared GPU (then said on stderr too) and deterministic kernels, so
    that a score does not depend on how many jobs share the GPU."""
    if wanted != "cuda":
        print(f"{DEVICE_LINE}cpu", file=sys.stderr, flush=True)
        if os.environ.get(GPU_SHARE_ENV) is not None:  # nothing to cap on the CPU; said, so a test can see it
            print(f"{GPU_SHARE_LINE}{os.environ[GPU_SHARE_ENV]} (not applied: cpu)", file=sys.stderr, flush=True)
        return "cpu"
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read at cuBLAS's first handle: set before
    # deterministic convolutions and GEMMs (not torch.use_deterministic_algorithms: it would raise, or warn and
    # fill torch.empty with NaN, in code that runs fine on the CPU; atomics-based kernels stay as they are)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        fraction = _gpu_share()
        torch.cuda.init()
        name = torch.cuda.get_device_name(0)
        if fraction is not None:  # a job past it gets "CUDA out of memory", never its neighbour's memory
            torch.cuda.set_per_process_memory_fraction(fraction, 0)
    except Exception as exc:  # noqa: BLE001 - said to the host, which stops the batch
        first = (str(exc).splitlines() or [""])[0][:300]
        print(f"{DEVICE_LINE}unavailable: {type(exc).__name__}: {first}",
              file=sys.stderr, flush=True)
        return "cpu"
    print(f"{DEVICE_LINE}cuda ({name})", file=sys.stderr, flush=True)
    if fraction is not None:
        print(f"{GPU_SHARE_LINE}{fraction:g}", file=sys.stderr, flush=True)
    return "cuda"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grader.runner")
    for flag in ("--job", "--out", "--submission", "--stage"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args(argv)
    job, out = Path(args.job), Path(args.out)
    config = json.loads((job / "job.json").read_text())
    import torch

    torch.set_num_threads(config["threads"])
    device = _device(torch, config.get("device", "cpu"))
    writer = StageWriter(out, args.stage)
    sys.path.insert(0, str(Path(args.submission).resolve()))
    sys.argv = ["segmentation.py"]  # the student's code must not learn the out folder from argv
    try:
        student = importlib.import_module("segmentation")
    except BaseException as exc:  # SyntaxError, ImportError, SystemExit ...: data for the judge
        writer.record("import_error", {**_error(exc), "syntax": isinstance(exc, SyntaxError)})
        return 3
    try:
        run_stage(student, args.stage, config["stages"], job, writer, device)
    except Exception as exc:
        writer.record("stage_error", _error(exc))
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
