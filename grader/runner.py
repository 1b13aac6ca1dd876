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
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from grader.sandbox.base import DEVICE_LINE

__all__ = ["main"]

API_NAMES = ("transpose_conv2d", "bilinear_kernel", "confusion_matrix", "mean_iou", "pixel_accuracy",
             "SegNet", "overfit_single_example", "train")


class StageWriter:
    """Accumulates a stage's records and rewrites ``<stage>.json`` atomically after each one."""

    def __init__(self, out: Path, stage: str) -> None:
        self.out, self.stage, self.records = out, stage, {}

    def record(self, key: str, value: dict[str, Any]) -> None:
        self.records[key] = value
        tmp = self.out / f".{self.stage}.json.tmp"
        tmp.write_text(json.dumps({"stage": self.stage, "records": self.records}, allow_nan=True))
        os.replace(tmp, self.out / f"{self.stage}.json")

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
    return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": "".join(tb)[-6000:]}


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load(job: Path, rel: str) -> np.ndarray:
    return np.load(job / rel, allow_pickle=False)


def stage_import(student: Any, spec: dict, job: Path, w: StageWriter) -> None:
    w.record("names", {"ok": True, "present": [n for n in API_NAMES if callable(getattr(student, n, None))]})


def stage_unit(student: Any, spec: dict, job: Path, w: StageWriter) -> None:
    import torch

    for case in spec["cases"]:
        fn = getattr(student, case["function"], None)
        if fn is None:
            continue
        args = [torch.from_numpy(_load(job, a)) for a in case["arrays"]]
        try:
            result = fn(*args, *case["args"], **case["kwargs"])
            if isinstance(result, torch.Tensor) and result.ndim > 0 or isinstance(result, np.ndarray):
                w.record(case["id"], {"ok": True, "kind": "array", "file": w.array(case["id"], result)})
            else:
                w.record(case["id"], {"ok": True, "kind": "number", "value": float(result)})
        except Exception as exc:  # the student's exception is data for the judge
            w.record(case["id"], _error(exc))


def _build_model(student: Any, spec: dict, device: str) -> Any:
    _seed_everything(spec["seed"])
    return student.SegNet(num_classes=spec["num_classes"]).to(device)


def stage_model(student: Any, spec: dict, job: Path, w: StageWriter, device: str) -> None:
    import torch

    model = _build_model(student, spec, device)
    n_params = sum(p.numel() for p in model.parameters())
    w.record("model", {"ok": True, "parameters": int(n_params)})
    model.eval()
    for i, (n, h, wd) in enumerate(spec["input_sizes"]):
        x = torch.rand(n, 3, h, wd, generator=torch.Generator().manual_seed(spec["seed"] + i)).to(device)
        try:
            with torch.no_grad():
                y = model(x)
            w.record(f"forward_{i}", {"ok": True, "file": w.array(f"forward_{i}", y.float())})
        except Exception as exc:
            w.record(f"forward_{i}", _error(exc))


def stage_overfit(student: Any, spec: dict, job: Path, w: StageWriter, device: str) -> None:
    import torch

    image = torch.from_numpy(_load(job, spec["image"])).float().div(255).unsqueeze(0).to(device)
    target = torch.from_numpy(_load(job, spec["target"])).long().unsqueeze(0).to(device)
    model = _build_model(student, spec, device)
    model.train()
    start = time.perf_counter()
    losses = student.overfit_single_example(model, image, target, spec["epochs"])
    w.record("losses", {"ok": True, "losses": [float(v) for v in losses],
                        "seconds": time.perf_counter() - start})
    for mode in ("train", "eval"):
        model.train(mode == "train")
        with torch.no_grad():
            w.record(f"logits_{mode}", {"ok": True, "file": w.array(f"logits_{mode}", model(image).float())})


def stage_train(student: Any, spec: dict, job: Path, w: StageWriter, device: str) -> None:
    import torch

    from grader.dataset import make_loader, to_tensors

    loader = make_loader(_load(job, spec["train_images"]), _load(job, spec["train_masks"]),
                         batch_size=spec["batch_size"], seed=spec["seed"])
    model = _build_model(student, spec, device)
    start = time.perf_counter()
    losses = student.train(model, loader, spec["epochs"])
    w.record("losses", {"ok": True, "losses": [float(v) for v in losses],
                        "seconds": time.perf_counter() - start})
    images, _ = to_tensors(_load(job, spec["eval_images"]), None)
    model.eval()
    preds = []
    with torch.no_grad():
        for batch in images.split(spec["batch_size"]):
            preds.append(model(batch.to(device)).argmax(1).to(torch.uint8).cpu())
    w.record("predictions", {"ok": True, "file": w.array("predictions", torch.cat(preds))})


STAGES: dict[str, Callable[..., None]] = {
    "import": stage_import, "unit": stage_unit, "model": stage_model,
    "overfit": stage_overfit, "train": stage_train,
}


def _device(torch: Any, wanted: str) -> str:
    """The device the stage runs on: the job's, never silently another. Said on stderr BEFORE any student
    code runs (so the first such line is the runner's, whatever the student prints later): the host refuses
    a GPU stage that would run on the CPU (see ``grader.sandbox.base.runner_device``)."""
    if wanted != "cuda":
        print(f"{DEVICE_LINE}cpu", file=sys.stderr, flush=True)
        return "cpu"
    try:
        torch.cuda.init()
        name = torch.cuda.get_device_name(0)
    except Exception as exc:  # noqa: BLE001 - said to the host, which stops the batch
        print(f"{DEVICE_LINE}unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
              file=sys.stderr, flush=True)
        return "cpu"
    print(f"{DEVICE_LINE}cuda ({name})", file=sys.stderr, flush=True)
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
    spec = config["stages"].get(args.stage, {})
    run = STAGES[args.stage]
    try:
        run(student, spec, job, writer) if args.stage in ("import", "unit") else \
            run(student, spec, job, writer, device)
    except Exception as exc:
        writer.record("stage_error", _error(exc))
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
