"""model_shapes: ``SegNet(num_classes)`` returns finite (N, C, H, W) logits for every input size, and its
parameter count lies in a band."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.checks.base import CheckKind, CheckSpec
from grader.checks.nets import build_model
from grader.checks.verdict import JudgeContext, Judged, StageResult, oneline, problem_or_crash, result
from grader.heavy import numpy as np
from grader.heavy import torch
from grader.outputs import OutputError

__all__ = ["KIND", "ModelShapesSpec"]


@dataclass(frozen=True)
class ModelShapesSpec(CheckSpec):
    seed: int = 0  # seeds the net's initialisation and the random inputs
    input_sizes: tuple[tuple[int, int, int], ...] = ((2, 64, 64), (1, 65, 67), (1, 97, 31))  # (N, H, W)
    min_parameters: int = 1_000
    max_parameters: int = 50_000_000


def inputs(spec: ModelShapesSpec, job: Any) -> tuple[dict, dict]:
    return {"seed": spec.seed, "num_classes": job.rubric.num_classes,
            "input_sizes": [list(s) for s in spec.input_sizes]}, {}


def run(student: Any, config: dict, job: Path, writer: Any, device: str) -> None:
    model = build_model(student, config, device)
    writer.record("model", {"ok": True, "parameters": int(sum(p.numel() for p in model.parameters()))})
    model.eval()
    for i, (n, h, w) in enumerate(config["input_sizes"]):
        x = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(config["seed"] + i)).to(device)
        try:
            with torch.no_grad():
                y = model(x)
            writer.record(f"forward_{i}", {"ok": True, "file": writer.array(f"forward_{i}", y.float())})
        except Exception as exc:
            writer.error(f"forward_{i}", exc)


def judge(spec: ModelShapesSpec, stage: StageResult, ctx: JudgeContext) -> Judged:
    model = stage.outputs.record("model")
    if model is None:
        return problem_or_crash(spec, stage)
    problems, outputs = [], []
    for i, (n, h, w) in enumerate(spec.input_sizes):
        want = (n, ctx.num_classes, h, w)
        rec = stage.outputs.record(f"forward_{i}")
        try:
            if rec is None or not rec.get("ok"):
                raise OutputError(oneline((rec or {}).get("error", "no output (the stage stopped)")))
            y = stage.outputs.array(f"forward_{i}")
        except OutputError as exc:
            problems.append(f"input {[n, 3, h, w]}: {exc}")
            outputs.append(None)
            continue
        outputs.append(list(y.shape))
        if y.shape != want:
            problems.append(f"input {[n, 3, h, w]} gave {list(y.shape)}, expected {list(want)}")
        elif not np.isfinite(y).all():
            problems.append(f"input {[n, 3, h, w]} gave non-finite logits (NaN or inf)")
    params = model.get("parameters")
    if isinstance(params, bool) or not isinstance(params, int) or \
            not spec.min_parameters <= params <= spec.max_parameters:
        params = params if isinstance(params, int) else None
        problems.append(f"{params} parameters, outside the allowed {spec.min_parameters:,}-{spec.max_parameters:,}")
    details = dict(inputs=[[n, 3, h, w] for n, h, w in spec.input_sizes], outputs=outputs, parameters=params,
                   problems=problems)
    if problems:
        return Judged(result(spec, "failed", 0.0, "SegNet: " + "; ".join(problems[:3]) + ".", **details))
    return Judged(result(spec, "passed", spec.points, f"Logits (N, {ctx.num_classes}, H, W) for every input "
                         f"size; {params:,} parameters.", **details))


KIND = CheckKind(name="model_shapes", spec=ModelShapesSpec, budget="model", functions=("SegNet",), inputs=inputs,
                 run=run, judge=judge)
