"""Verdicts a TA would sign: forbidden operations detected, dependencies judged on what a stage needs, and
case mixes that weigh each requirement as the check's name says.

The unit checks are graded here in-process on trusted code only: one-bug mutants of reference/ (text
replacements, as the fixtures plant their bugs), run by the kind's own sandbox function into a real output
folder, read back by the output reader and judged by the kind's judge, against the reference's expected
outputs. Nothing here is a student's submission; the fixture batch grades the same bugs in the sandbox.
"""
from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import numpy as np
import pytest

from grader.checks import KINDS, confusion_matrix, mean_iou, pixel_accuracy, transpose_conv
from grader.checks.forbidden import OpRecorder, describe, detected
from grader.checks.verdict import JobPlan, JudgeContext, StageResult
from grader.job.expected import expected_outputs
from grader.job.folder import JobBuilder
from grader.core.outputs import read_stage
from grader.batch.pipeline import _skip_reason
from grader.core.results import CheckResult
from grader.rubric import StageBudget, load_rubric, parse_rubric
from grader.runner import StageWriter
from grader.sandbox.base import SandboxRun

REPO = Path(__file__).resolve().parent.parent
REFERENCE = (REPO / "reference" / "segmentation.py").read_text()
RUBRICS = {"rubric.yaml": load_rubric(REPO / "rubric.yaml"),
           "rubric_small.yaml": load_rubric(REPO / "tests" / "rubric_small.yaml")}


def mutant(replace: list[tuple[str, str]] = (), append: str = "") -> types.ModuleType:
    """reference/segmentation.py with exact replacements (each must match once) and code appended."""
    text = REFERENCE
    for old, new in replace:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in the reference"
        text = text.replace(old, new)
    module = types.ModuleType("mutant")
    exec(compile(text + append, "mutant_segmentation.py", "exec"), module.__dict__)  # trusted: our own text
    return module


def grade_unit(module: types.ModuleType, spec, tmp_path: Path) -> CheckResult:
    """One unit check, graded as the pipeline grades it: the kind's run -> out folder -> reader -> judge."""
    kind = KINDS[spec.kind]
    rubric = parse_rubric("assignment: t\nchecks: [{id: x, kind: bilinear_kernel, name: X, points: 1}]")
    job = JobBuilder(rubric, tmp_path / "job", None)
    config, _ = kind.inputs(spec, job)
    out = tmp_path / "out"
    out.mkdir()
    writer = StageWriter(out, "unit")
    kind.run(module, {"id": spec.id, "kind": spec.kind, **config}, job.job_dir, writer, "cpu")
    writer.record("integrity", {"ok": True, "changed": []})  # as the runner writes after a guarded stage
    run = SandboxRun(exit_code=0, timed_out=False, out_of_memory=False, duration_s=1.0, stdout="", stderr="",
                     output_truncated=False, isolation="")
    cases = {spec.id: kind.cases(spec)}
    ctx = JudgeContext(plan=JobPlan(job_dir=job.job_dir, cases=cases, host={}), expected=expected_outputs(cases),
                       num_classes=21)
    return kind.judge(spec, StageResult("unit", run, read_stage(out, "unit"), StageBudget()), ctx).result


# ---- 3. case mixes: a one-bug mutant loses at least the share its requirement is worth ----------------

PADDING_BUG = [("    out = full[:, :, padding:padding + H_out, padding:padding + W_out]",
                "    out = full[:, :, :H_out, :W_out]  # BUG: crops from one side only")]
DIRECT_CALL = """
def transpose_conv2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    return F.conv_transpose2d(x, weight, bias, stride=stride, padding=padding, output_padding=output_padding)
"""
MUTANTS = {  # (kind module, requirement) -> the one bug that misses it
    (transpose_conv, "padding cropped from every side"): dict(replace=PADDING_BUG),
    (transpose_conv, "output_padding kept at the bottom/right"): dict(replace=[
        ("    H_out = (H - 1) * stride - 2 * padding + kH + output_padding\n"
         "    W_out = (W - 1) * stride - 2 * padding + kW + output_padding",
         "    H_out = (H - 1) * stride - 2 * padding + kH\n    W_out = (W - 1) * stride - 2 * padding + kW")]),
    (transpose_conv, "bias added per output channel"): dict(replace=[
        ("        out = out + bias.view(1, C_out, 1, 1)", "        out = out  # BUG: bias ignored")]),
    (transpose_conv, "by hand"): dict(append=DIRECT_CALL),
    (confusion_matrix, "void ignored"): dict(replace=[
        ("    keep = target != ignore_index\n", "    keep = target >= 0  # BUG: void pixels are kept\n"),
        ("    t = target[keep].long()  # (P,)", "    t = target[keep].long().clamp(max=num_classes - 1)  # (P,)")]),
    (confusion_matrix, "rows are the ground truth"): dict(replace=[
        ("torch.bincount(t * num_classes + p,", "torch.bincount(p * num_classes + t,")]),
    (mean_iou, "absent classes excluded"): dict(replace=[
        ("    return float((tp[present] / union[present]).mean())",
         "    return float((tp / union.clamp(min=1)).mean())  # BUG: absent classes count as 0")]),
    (mean_iou, "IoU = TP / (TP + FP + FN)"): dict(replace=[
        ("    return float((tp[present] / union[present]).mean())",
         "    return float((tp[present] / conf.sum(1)[present].clamp(min=1)).mean())  # BUG: recall")]),
    (mean_iou, "a class only predicted counts"): dict(replace=[
        ("    present = union > 0\n", "    present = conf.sum(1) > 0  # BUG: classes of the target only\n")]),
    (pixel_accuracy, "correct pixels over all labelled pixels"): dict(replace=[
        ("    return float(conf.diag().sum().double() / total.double())",
         "    rows = conf.sum(1).double()\n"
         "    return float((conf.diag().double() / rows.clamp(min=1))[rows > 0].mean())  # BUG: mean class acc")]),
}


def _checks_of(module: types.ModuleType) -> list[tuple[str, object]]:
    """The kind's checks in both shipped rubrics, and the smallest mixes the docstrings promise (other seeds,
    with and without edge cases): the shares are a property of the case maker, not of one seed."""
    shipped = [(name, c) for name, r in RUBRICS.items() for c in r.checks if c.kind == module.KIND.name]
    fewest = 10 if module is transpose_conv else 6
    variants = [(f"seed {seed}, {fewest} cases, edge_cases {edge}",
                 dataclasses.replace(shipped[0][1], seed=seed, cases=fewest, edge_cases=edge))
                for seed, edge in ((11, True), (2024, False))]
    return shipped + variants


@pytest.mark.parametrize("module", [transpose_conv, confusion_matrix, mean_iou, pixel_accuracy],
                         ids=lambda m: m.KIND.name)
def test_every_stated_share_has_a_mutant_and_is_in_the_docstring(module: types.ModuleType) -> None:
    assert {req for mod, req in MUTANTS if mod is module} == set(module.REQUIREMENTS)
    bullets = module.__doc__.replace("\n  ", " ").splitlines()
    for requirement, share in module.REQUIREMENTS.items():
        [line] = [b for b in bullets if b.startswith(f"- {requirement}")]
        assert (f">= {share * 100:.0f} %" if share < 1 else "100 %") in line, (line, share)


@pytest.mark.parametrize("key", list(MUTANTS), ids=lambda k: f"{k[0].KIND.name}: {k[1]}")
def test_a_one_bug_mutant_loses_at_least_its_share(key: tuple, tmp_path: Path) -> None:
    module, requirement = key
    share = module.REQUIREMENTS[requirement]
    student = mutant(**MUTANTS[key])
    for i, (rubric_name, spec) in enumerate(_checks_of(module)):
        result = grade_unit(student, spec, tmp_path / str(i))
        lost = 1 - result.score / result.max_score
        assert result.status == "failed", (rubric_name, spec.id, result.message)
        assert lost >= share - 1e-9, f"{rubric_name} {spec.id}: lost {lost:.0%} < {share:.0%} ({result.message})"


@pytest.mark.parametrize("module", [transpose_conv, confusion_matrix, mean_iou, pixel_accuracy],
                         ids=lambda m: m.KIND.name)
def test_the_reference_keeps_full_points(module: types.ModuleType, tmp_path: Path) -> None:
    for i, (rubric_name, spec) in enumerate(_checks_of(module)):
        result = grade_unit(mutant(), spec, tmp_path / str(i))
        assert (result.status, result.score) == ("passed", spec.points), (rubric_name, result.message)


def test_metric_cases_look_like_voc() -> None:
    from grader.checks.metric_cases import VOID, label_map_pairs

    spec = RUBRICS["rubric.yaml"].check("confusion_matrix")
    pairs = label_map_pairs(spec)
    with_void = [p for p in pairs if (p[2] == VOID).any()]
    few_classes = [p for p in pairs if len(np.union1d(p[1], p[2][p[2] != VOID])) <= 6]
    assert len(with_void) >= 0.8 * len(pairs) and len(few_classes) >= 0.6 * len(pairs)
    assert all(p[1].max() < 21 and p[1].min() >= 0 for p in pairs)  # a net never predicts void


# ---- 1. forbidden operations: detected around the guarded call, judged on the host ---------------------

SHORTCUTS = {
    "direct call": DIRECT_CALL,
    "getattr-disguised call": """
def transpose_conv2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    fn = getattr(torch.nn.functional, "conv_" + "transpose2d")
    return fn(x, weight, bias, stride, padding, output_padding)
""",
    "nn.ConvTranspose2d built inside": """
def transpose_conv2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    layer = nn.ConvTranspose2d(weight.shape[0], weight.shape[1], tuple(weight.shape[2:]), stride=stride,
                               padding=padding, output_padding=output_padding, bias=bias is not None).to(x.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer(x)
""",
    "aten operator": """
def transpose_conv2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    return torch.ops.aten.convolution(x, weight, bias, [stride] * 2, [padding] * 2, [1, 1], True,
                                      [output_padding] * 2, 1)
""",
    "convolution backward": """
def transpose_conv2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    N, _, H, W = x.shape
    size = (N, weight.shape[1], (H - 1) * stride - 2 * padding + weight.shape[2] + output_padding,
            (W - 1) * stride - 2 * padding + weight.shape[3] + output_padding)
    out = torch.nn.grad.conv2d_input(size, weight, x, stride=stride, padding=padding)
    return out if bias is None else out + bias.view(1, -1, 1, 1)
""",
}
LEGITIMATE = {
    "zero insertion": """
def transpose_conv2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    N, C_in, H, W = x.shape
    _, C_out, kH, kW = weight.shape
    up = x.new_zeros(N, C_in, (H - 1) * stride + 1, (W - 1) * stride + 1)
    up[:, :, ::stride, ::stride] = x
    up = F.pad(up, (kW - 1, kW - 1 + output_padding, kH - 1, kH - 1 + output_padding))
    out = F.conv2d(up, weight.flip(2, 3).transpose(0, 1))
    H_out = (H - 1) * stride - 2 * padding + kH + output_padding
    W_out = (W - 1) * stride - 2 * padding + kW + output_padding
    out = out[:, :, padding:padding + H_out, padding:padding + W_out]
    return out if bias is None else out + bias.view(1, -1, 1, 1)
""",
    "fold": """
def transpose_conv2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    N, C_in, H, W = x.shape
    _, C_out, kH, kW = weight.shape
    cols = torch.einsum("nchw,cokl->noklhw", x, weight).reshape(N, C_out * kH * kW, H * W)
    full = F.fold(cols, ((H - 1) * stride + kH + output_padding, (W - 1) * stride + kW + output_padding),
                  (kH, kW), stride=stride)
    H_out = (H - 1) * stride - 2 * padding + kH + output_padding
    W_out = (W - 1) * stride - 2 * padding + kW + output_padding
    out = full[:, :, padding:padding + H_out, padding:padding + W_out]
    return out if bias is None else out + bias.view(1, -1, 1, 1)
""",
}


@pytest.mark.parametrize("name", list(SHORTCUTS))
def test_a_shortcut_is_detected_and_scores_zero(name: str, tmp_path: Path) -> None:
    spec = RUBRICS["rubric_small.yaml"].check("transpose_conv")
    result = grade_unit(mutant(append=SHORTCUTS[name]), spec, tmp_path)
    assert (result.status, result.score) == ("failed", 0.0), result.message
    assert "detected" in result.message and "proved" not in result.message
    assert any(n.split(":")[1].startswith(("conv_transpose", "convolution_backward", "ConvTranspose"))
               for n in result.details["forbidden_detected"]), result.details
    assert "conv_transpose" in result.message or "convolution_backward" in result.message


@pytest.mark.parametrize("name", list(LEGITIMATE))
def test_a_legitimate_implementation_keeps_full_points(name: str, tmp_path: Path) -> None:
    spec = RUBRICS["rubric.yaml"].check("transpose_conv")
    result = grade_unit(mutant(append=LEGITIMATE[name]), spec, tmp_path)
    assert (result.status, result.score) == ("passed", spec.points), result.message
    assert "forbidden_detected" not in result.details


def test_on_forbidden_flag_keeps_the_score_and_says_what_was_detected(tmp_path: Path) -> None:
    spec = dataclasses.replace(RUBRICS["rubric_small.yaml"].check("transpose_conv"), on_forbidden="flag")
    result = grade_unit(mutant(append=DIRECT_CALL), spec, tmp_path)
    assert (result.status, result.score) == ("passed", spec.points)
    assert "Flagged for review" in result.message and "conv_transpose2d" in result.message
    assert result.details["forbidden_cases"] == result.details["cases"]


def test_the_recorder_is_installed_around_the_guarded_call_only(tmp_path: Path) -> None:
    import torch
    from torch.utils._python_dispatch import _len_torch_dispatch_stack

    spec = RUBRICS["rubric_small.yaml"].check("transpose_conv")
    grade_unit(mutant(), spec, tmp_path / "guarded")
    records = {k: r for k, r in read_stage(tmp_path / "guarded" / "out", "unit").records.items() if k != "integrity"}
    assert all("ops" in r for r in records.values()) and "torch:einsum" in next(iter(records.values()))["ops"]
    assert torch._C._len_torch_function_stack() == 0 and _len_torch_dispatch_stack() == 0
    assert not torch.nn.modules.module._global_forward_pre_hooks
    unguarded = RUBRICS["rubric_small.yaml"].check("confusion_matrix")  # no `forbidden`: nothing recorded
    grade_unit(mutant(), unguarded, tmp_path / "unguarded")
    assert not any("ops" in r for r in read_stage(tmp_path / "unguarded" / "out", "unit").records.values())
    with OpRecorder() as recorder:  # SegNet's own nn.ConvTranspose2d is recorded only while one is entered
        mutant().SegNet(21)(torch.rand(1, 3, 16, 16))
    assert "module:ConvTranspose2d" in recorder.names and "aten:conv_transpose2d" in recorder.names


def test_the_host_reads_a_hostile_record_without_crashing() -> None:
    patterns = ("conv_transpose*", "interpolate")
    assert detected(patterns, "torch:conv_transpose2d") == []  # not a list
    assert detected(patterns, [1, None, {"a": 1}, "no-level", "torch:interpolate" * 1000]) == []
    assert detected(patterns, ["torch:add", "aten:conv_transpose2d", "torch:interpolate"]) == [
        "aten:conv_transpose2d", "torch:interpolate"]
    assert describe(["aten:conv_transpose2d", "module:ConvTranspose2d"]) == \
        "conv_transpose2d (ATen operator), ConvTranspose2d (nn module)"


def test_the_rubric_keys_validate() -> None:
    from grader.rubric import RubricError

    rubric = parse_rubric("assignment: t\nchecks:\n  - {id: m, kind: mean_iou, name: M, points: 1, "
                          "forbidden: [nanmean], on_forbidden: flag}\n  - {id: t, kind: transpose_conv, name: T, "
                          "points: 1}\n")
    assert rubric.check("m").forbidden == ("nanmean",) and rubric.check("m").on_forbidden == "flag"
    assert "conv*transpose" in rubric.check("t").forbidden and rubric.check("t").on_forbidden == "zero"
    with pytest.raises(RubricError, match=r"checks\[0\]\.on_forbidden"):
        parse_rubric("assignment: t\nchecks:\n  - {id: t, kind: transpose_conv, name: T, points: 1, "
                     "on_forbidden: warn}\n")


# ---- 2. dependencies judged on what the stage needs ----------------------------------------------------

ODD_SIZES_SHORT = [("        return y[:, :, :H, :W]  # (N, K, H, W)",
                    "        return y[:, :, :H // 2 * 2, :W // 2 * 2]  # BUG: one pixel short on odd sizes")]
ALWAYS_SHORT = [("        return y[:, :, :H, :W]  # (N, K, H, W)",
                 "        return y[:, :, :H, :W - 1]  # BUG: one column short")]


def _model_shapes(module: types.ModuleType, rubric, tmp_path: Path) -> CheckResult:
    """model_shapes graded as the pipeline does, with the sizes the rubric's dependents need."""
    spec = next(c for c in rubric.checks if c.kind == "model_shapes")
    kind = KINDS["model_shapes"]
    job = JobBuilder(rubric, tmp_path / "job", None)
    config, host = kind.inputs(spec, job)
    out = tmp_path / "out"
    out.mkdir()
    kind.run(module, {"id": spec.id, "kind": spec.kind, **config}, job.job_dir, StageWriter(out, spec.id), "cpu")
    run = SandboxRun(exit_code=0, timed_out=False, out_of_memory=False, duration_s=1.0, stdout="", stderr="",
                     output_truncated=False, isolation="")
    ctx = JudgeContext(plan=JobPlan(job_dir=job.job_dir, cases={}, host={spec.id: host}), expected={},
                       num_classes=21)
    return kind.judge(spec, StageResult(spec.id, run, read_stage(out, spec.id), StageBudget()), ctx).result


def _skips(rubric, shapes: CheckResult) -> dict[str, str]:
    names = {n for c in rubric.checks for n in KINDS[c.kind].functions}
    return {c.id: _skip_reason(c, names, "", {shapes.id: shapes}, rubric) for c in rubric.checks if c.requires}


@pytest.mark.parametrize("rubric_name", list(RUBRICS))
def test_an_odd_size_failure_costs_model_shapes_alone(rubric_name: str, tmp_path: Path) -> None:
    rubric = RUBRICS[rubric_name]
    shapes = _model_shapes(mutant(replace=ODD_SIZES_SHORT), rubric, tmp_path)
    assert shapes.status == "failed" and "65, 67" in shapes.message
    tried = {tuple(s["hw"]): s for s in shapes.details["sizes"]}
    assert (rubric.dataset.size,) * 2 in tried and (rubric.check("overfit").image_size,) * 2 in tried
    assert _skips(rubric, shapes) == {"overfit": "", "full_training": ""}


def test_a_failure_at_the_needed_size_says_which_size(tmp_path: Path) -> None:
    rubric = RUBRICS["rubric.yaml"]  # overfit feeds 128x128, full training 64x64
    shapes = _model_shapes(mutant(replace=ALWAYS_SHORT), rubric, tmp_path)
    skips = _skips(rubric, shapes)
    assert skips["overfit"].startswith("it requires model_shapes to pass first: SegNet failed at 128x128")
    assert "64x64" in skips["full_training"] and "[2, 21, 64, 63]" in skips["full_training"]


def test_a_failure_that_breaks_no_input_lets_dependents_run(tmp_path: Path) -> None:
    rubric = RUBRICS["rubric_small.yaml"]
    shapes = _model_shapes(mutant(), rubric, tmp_path)
    over_budget = dataclasses.replace(shapes, status="failed", score=0.0, message="SegNet: too many parameters.")
    assert _skips(rubric, over_budget) == {"overfit": "", "full_training": ""}
    for unknown in ({}, {"sizes": "garbage"}, {"sizes": [{"hw": [65, 67], "ok": True}]}):
        no_evidence = dataclasses.replace(over_budget, details=unknown)  # crashed, or never tried the size
        assert _skips(rubric, no_evidence)["overfit"] == "it requires model_shapes to pass first"
