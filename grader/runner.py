"""Runs INSIDE the sandbox: import the student's ``segmentation.py``, call it, write raw outputs.

Usage (by the sandbox engines only): ``main(["--job", J, "--out", O, "--submission", S, "--stage", X])`` in a
confined fork of the fork server (``grader.sandbox.forkserver``), or ``python -m grader.runner ...`` in a
container of its own (``DockerSandbox(per_submission=False)``).

Everything this process writes is untrusted by construction (student code shares the process), so it
writes raw data only — arrays as ``.npy`` and plain JSON — and never a score. The host judges.
Outputs of a stage: ``O/<stage>.json`` (rewritten atomically after every case, so a timeout keeps what
finished) and ``O/<name>.npy`` arrays that the JSON names.

Work ahead of the call: the unit cases' inputs are not readable while the student's module is imported. Before
the import the runner reads THIS stage's cases into an anonymous memory file (``memfd``: no path, no Python
object), then seals ``J/unit`` (Landlock: this process and its children can no longer open a file there, the
other unit stage's cases included), imports the module (recording, in a unit stage, what torch work the import
did: flagged for staff review, never a zero), and only then reads the cases back. The visible unit checks run
in stage ``unit``, the withheld ones in ``unit.withheld``, a fresh process: the visible stage never holds a
withheld input, so no message of a visible check can carry one. Where the kernel refuses Landlock the stage still runs, and its record says
so (``seal``). In a stage with a guarded call, ``grader.checks.forbidden.install_guards`` runs before the import.
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
from grader.checks.base import UNIT_STAGES
from grader.core.nonetwork import explain as explain_no_network
from grader.checks import integrity
from grader.checks.forbidden import OpRecorder, install_guards
from grader.sandbox.base import DEVICE_LINE, GPU_SHARE_ENV, GPU_SHARE_LINE

__all__ = ["StageWriter", "main", "run_stage", "stage_configs"]


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
    offline = explain_no_network(exc)  # never a bare URLError: what the course provides instead
    said = offline or str(exc).strip() or "(no message)"
    kind = "No network" if offline else type(exc).__name__
    return {"ok": False, "error": f"{kind}: {said}"[:2000], "traceback": "".join(tb)[-6000:]}


def run_stage(student: Any, stage: str, stages: dict, job: Path, writer: StageWriter, device: str,
              arrays: dict[str, Any] | None = None, tampered: Any = None) -> None:
    """``import``: which API names exist; ``unit`` / ``unit.withheld``: that stage's unit checks' cases (their
    input ``arrays`` by job path, read before the import: ``unseal``); else the check named ``stage``."""
    if stage == "import":
        writer.record("names", {"ok": True, "present": [n for n in STUDENT_NAMES
                                                        if callable(getattr(student, n, None))],
                                "notebook": _notebook_cells(student)})
        return
    configs = stages[stage]["checks"] if stage in UNIT_STAGES else [stages[stage]]
    for config in configs:
        extra = {**({"loaded": arrays} if arrays is not None else {}), **({"tampered": tampered} if tampered else {})}
        KINDS[config["kind"]].run(student, {**config, **extra}, job, writer, device)


# ---- the unit cases, out of reach while the student's module is imported ------------------------------------

def stage_configs(job: Path, stages: dict, stage: str) -> dict:
    """job.json's ``stages`` with ``stage``'s own config read in where the job keeps it sealed (the withheld unit
    checks': ``{"sealed": "unit/withheld.json"}``, grader.job.folder); to be called before ``seal_cases``."""
    own = stages.get(stage)
    if isinstance(own, dict) and "sealed" in own:
        return {**stages, stage: json.loads((job / own["sealed"]).read_text())}
    return stages


def _case_files(stages: dict, stage: str) -> list[str]:
    """The job paths of the input arrays of ``stage``'s unit cases (none outside a unit stage)."""
    checks = stages.get(stage, {}).get("checks", []) if stage in UNIT_STAGES else []
    return [a for c in checks for case in c.get("cases", []) for a in case["arrays"]]


def seal_cases(job: Path, stages: dict, stage: str) -> tuple[int | None, dict]:
    """In a unit stage, ITS cases' arrays (never the other unit stage's) copied into a memfd (``unseal`` reads
    them back); in every stage, ``J/unit`` sealed. Returns (the memfd or None, the record of what held)."""
    fd = None
    if stage in UNIT_STAGES:
        rels = _case_files(stages, stage)
        fd = os.memfd_create("unit-cases", os.MFD_CLOEXEC)
        with open(fd, "wb", closefd=False) as f:
            np.savez(f, *(np.load(job / rel, allow_pickle=False) for rel in rels))
    folder = job / "unit"
    if not folder.is_dir():
        return fd, {"sealed": False, "why": "no unit cases in this job"}
    why = deny_reading(folder)
    return fd, {"sealed": why is None, **({"why": why} if why else {})}


_LANDLOCK_READ_FILE, _PATH_BENEATH, _SYS = 1 << 2, 1, (444, 445, 446)  # same numbers on x86_64 and aarch64


def deny_reading(folder: Path) -> str | None:
    """Landlock: from now on this process (and what it starts) may open every file for reading except those
    beneath ``folder``; irreversible. Returns None when it held, else why not (an old kernel, a seccomp filter)."""
    import ctypes
    import struct

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    target = folder.resolve()
    attr = struct.pack("=Q", _LANDLOCK_READ_FILE)
    ruleset = libc.syscall(_SYS[0], attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        return f"Landlock unavailable: {os.strerror(ctypes.get_errno())}"
    try:
        chain = [*reversed(target.parents), target]  # "/", "/job", ... target
        same = {(s.st_dev, s.st_ino) for s in map(os.stat, chain)}  # a bind mount of one of them grants it
        for parent, step in zip(chain, chain[1:]):
            try:
                entries = list(os.scandir(parent))
            except OSError as exc:  # its other entries cannot be granted: restricting would hide them too
                return f"cannot list {parent}: {exc.strerror}"
            for entry in entries:
                path = Path(entry.path)
                try:
                    resolved, info = path.resolve(), os.stat(path)
                except (OSError, RuntimeError):  # dangling, or a link loop: nothing to read through it
                    continue
                if path == step or (info.st_dev, info.st_ino) in same or target in (resolved, *resolved.parents) \
                        or resolved in target.parents:  # a link into the target, or to an ancestor of it
                    continue
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue  # gone, or a dangling link: nothing to read there
                try:
                    rule = struct.pack("=Qi", _LANDLOCK_READ_FILE, fd)
                    libc.syscall(_SYS[1], ctypes.c_int(ruleset), ctypes.c_int(_PATH_BENEATH), rule,
                                 ctypes.c_uint32(0))
                finally:
                    os.close(fd)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS (the sandbox set it already): Landlock requires it
        if libc.syscall(_SYS[2], ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            return f"Landlock refused: {os.strerror(ctypes.get_errno())}"
    finally:
        os.close(ruleset)
    return None


def unseal(fd: int | None, stages: dict, stage: str) -> dict[str, Any] | None:
    """``stage``'s unit cases' arrays by job path, read back from the memfd after the import."""
    if fd is None:
        return None
    rels = _case_files(stages, stage)
    os.lseek(fd, 0, os.SEEK_SET)  # the memfd's offset is shared with its dups: written to the end, read from 0
    with open(os.dup(fd), "rb") as f, np.load(f, allow_pickle=False) as saved:
        return {rel: saved[f"arr_{i}"] for i, rel in enumerate(rels)}


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
    config["stages"] = stage_configs(job, config["stages"], args.stage)
    fd, seal = seal_cases(job, config["stages"], args.stage)
    sys.path.insert(0, str(Path(args.submission).resolve()))
    sys.argv = ["segmentation.py"]  # the student's code must not learn the out folder from argv
    guarded = args.stage in UNIT_STAGES and any(c.get("record_ops")
                                                 for c in config["stages"].get(args.stage, {}).get("checks", []))
    tampered = None
    if guarded:  # only where a guarded call runs: a training stage's torch (torch.compile ...) stays untouched
        install_guards()
        tampered = integrity.snapshot()  # the grader's own code, before the student's can touch it
    stage_runner, write = run_stage, writer.record  # bound before the import, like the check above
    recorder = OpRecorder(operators=False) if guarded else None  # torch functions and modules: a notebook's
    # training cell at import stays near full speed (the operator level costs ~10 ms a small call: bench/recorder.py)
    try:
        if recorder is None:
            student = importlib.import_module("segmentation")
        else:
            with recorder:
                student = importlib.import_module("segmentation")
    except BaseException as exc:  # SyntaxError, ImportError, SystemExit ...: data for the judge
        writer.record("import_error", {**_error(exc), "syntax": isinstance(exc, SyntaxError)})
        return 3
    if args.stage in UNIT_STAGES:
        writer.record("import_ops", {"ok": True, "seal": seal, **(recorder.record() if recorder else {})})
    try:
        stage_runner(student, args.stage, config["stages"], job, writer, device,
                     unseal(fd, config["stages"], args.stage), tampered)
    except Exception as exc:
        writer.record("stage_error", _error(exc))
        return 4
    finally:
        if tampered is not None:  # always, in a guarded stage: its absence after a clean exit is a finding too
            write("integrity", {"ok": True, "changed": tampered()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
