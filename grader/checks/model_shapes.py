"""model_shapes: ``SegNet(num_classes)`` returns finite (N, C, H, W) logits for every input size, and its
parameter count lies in a band.

Its verdict per input size is kept in ``details["sizes"]`` (``hw``, ``ok``: the forward ran and gave the
right shape, ``problem``), so a check that requires this one runs whenever the sizes IT feeds the net
worked (``unmet``, the kind's prerequisite hook): an odd-size crop costs model_shapes alone. The sizes a dependent check needs
(its spec's ``net_sizes(rubric)``: overfit's image_size, full training's dataset.size) are forwarded too;
those not among ``input_sizes`` are recorded in ``sizes`` with ``counted: false`` and do not change this
check's verdict.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.checks.base import CheckKind, CheckSpec, View
from grader.checks.nets import build_model
from grader.checks.verdict import JudgeContext, Judged, StageResult, oneline, problem_or_crash, result
from grader.core.lazy import numpy as np
from grader.core.lazy import torch
from grader.core.outputs import OutputError

__all__ = ["KIND", "ModelShapesSpec"]


@dataclass(frozen=True)
class ModelShapesSpec(CheckSpec):
    seed: int = 0  # seeds the net's initialisation and the random inputs
    input_sizes: tuple[tuple[int, int, int], ...] = ((2, 64, 64), (1, 65, 67), (1, 97, 31))  # (N, H, W)
    min_parameters: int = 1_000
    max_parameters: int = 50_000_000


def _dependent_sizes(spec: ModelShapesSpec, rubric: Any) -> list[tuple[int, int, int]]:
    """(1, H, W) for each size a check requiring this one feeds the net and ``input_sizes`` lacks."""
    own = {(h, w) for _, h, w in spec.input_sizes}
    needed = [hw for check in rubric.checks if spec.id in check.requires and hasattr(check, "net_sizes")
              for hw in check.net_sizes(rubric)]
    return [(1, h, w) for h, w in dict.fromkeys(needed) if (h, w) not in own]


def inputs(spec: ModelShapesSpec, job: Any) -> tuple[dict, dict]:
    extra = _dependent_sizes(spec, job.rubric)
    config = {"seed": spec.seed, "num_classes": job.rubric.num_classes,
              "input_sizes": [list(s) for s in (*spec.input_sizes, *extra)]}
    return config, ({"dependent_sizes": np.array(extra, dtype=np.int64).reshape(-1, 3)} if extra else {})


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
    problems, outputs, sizes = [], [], []
    extra = ctx.plan.host.get(spec.id, {}).get("dependent_sizes", np.zeros((0, 3), dtype=np.int64))
    for i, (n, h, w) in enumerate([*spec.input_sizes, *(tuple(int(v) for v in row) for row in extra)]):
        counted = i < len(spec.input_sizes)
        want = (n, ctx.num_classes, h, w)
        shape, problem = _forward(stage, i, want)
        # what a dependent check needs of this size: the forward ran and gave the right shape
        sizes.append({"hw": [h, w], "ok": shape == list(want), "problem": problem, "counted": counted})
        if counted:
            outputs.append(shape)
            if problem:
                problems.append(problem)
    params = model.get("parameters")
    if isinstance(params, bool) or not isinstance(params, int) or \
            not spec.min_parameters <= params <= spec.max_parameters:
        params = params if isinstance(params, int) else None
        problems.append(f"{params} parameters, outside the allowed {spec.min_parameters:,}-{spec.max_parameters:,}")
    details = dict(inputs=[[n, 3, h, w] for n, h, w in spec.input_sizes], outputs=outputs, parameters=params,
                   problems=problems, sizes=sizes)
    if problems:
        return Judged(result(spec, "failed", 0.0, "SegNet: " + "; ".join(problems[:3]) + ".", **details))
    return Judged(result(spec, "passed", spec.points, f"Logits (N, {ctx.num_classes}, H, W) for every input "
                         f"size; {params:,} parameters.", **details))


def _forward(stage: StageResult, i: int, want: tuple[int, int, int, int]) -> tuple[list | None, str | None]:
    """(output shape, problem or None) of forward ``i`` against the expected (N, C, H, W)."""
    n, _, h, w = want
    rec = stage.outputs.record(f"forward_{i}")
    try:
        if rec is None or not rec.get("ok"):
            raise OutputError(oneline((rec or {}).get("error", "no output (the stage stopped)")))
        y = stage.outputs.array(f"forward_{i}")
    except OutputError as exc:
        return None, f"input {[n, 3, h, w]}: {exc}"
    if y.shape != want:
        return list(y.shape), f"input {[n, 3, h, w]} gave {list(y.shape)}, expected {list(want)}"
    if not np.isfinite(y).all():
        return list(y.shape), f"input {[n, 3, h, w]} gave non-finite logits (NaN or inf)"
    return list(y.shape), None


def unmet(done: Any, dependent: Any, rubric: Any) -> str | None:
    """The prerequisite hook: this check did not pass; may ``dependent`` (which requires it) run anyway? ""
    when its per-size verdicts (``details["sizes"]``) show that every input size ``dependent`` feeds the net
    (its spec's ``net_sizes``) worked: a failure elsewhere (an odd size, the parameter band) does not break
    the dependent's inputs. The failing size, named, when one it needs broke; None without evidence (a
    dependent that feeds no net, a size never tried, a crash that left no per-size verdicts)."""
    verdicts = done.details.get("sizes") if hasattr(dependent, "net_sizes") else None
    if not isinstance(verdicts, list):
        return None
    by_size = {tuple(v["hw"]): v for v in verdicts if isinstance(v, dict) and isinstance(v.get("hw"), list)}
    needed = dependent.net_sizes(rubric)
    if any(hw not in by_size for hw in needed):  # never tried at a size the dependent needs: no evidence
        return None
    broken = [hw for hw in needed if not by_size[hw].get("ok")]
    if not broken:
        return ""
    h, w = broken[0]
    return f"SegNet failed at {h}x{w}, the input size this check feeds it ({by_size[broken[0]].get('problem')})"


KIND = CheckKind(name="model_shapes", spec=ModelShapesSpec, budget="model", functions=("SegNet",), inputs=inputs,
                 run=run, judge=judge, view=View(section="model"), reads_dataset=False, prerequisite=unmet)
