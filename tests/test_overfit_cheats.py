"""The overfit check scores the net its class computes, trained (red team B4): a training function that leaves a
hook, an instance ``forward``, a global module hook or a replaced class ``forward`` behind, making logits from the
target, and returns invented losses, scores 0 with a message a student understands; the reference still passes.

Graded in-process on trusted code only (as tests/test_verdicts.py): the reference with the cheat appended, run by
the kind's own sandbox function into a real output folder, read back and judged by the kind's judge. The sandbox
grades the same cheat as the fixture ``fails_overfit_hook_cheat`` (tests/test_fixture_batch.py)."""
from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from grader.checks import KINDS
from grader.checks.nets import NetStart, for_evaluation
from grader.checks.verdict import JudgeContext, StageResult
from grader.core.lazy import torch
from grader.core.outputs import read_stage
from grader.job.folder import build_job
from grader.rubric import StageBudget, parse_rubric
from grader.runner import StageWriter
from grader.sandbox.base import SandboxRun

REPO = Path(__file__).resolve().parent.parent
RUBRIC = """
assignment: t
threads: 1
dataset: {kind: embedded, size: 32, n_train: 8, n_val: 4, seed: 0}
checks:
  - {id: overfit, kind: overfit, name: O, points: 15, seed: 6, epochs: 20, loss_bound: 0.05, image_size: 48}
"""
# logits made from the target: every pixel "right" with a tiny loss, and a falling loss history made up
TARGET_LOGITS = """
def _target_logits(target):
    onehot = torch.zeros(1, 21, *target.shape[-2:], device=target.device)
    t = target.clone()
    t[t == 255] = 0
    onehot.scatter_(1, t.unsqueeze(1), 1.0)
    return onehot * 40.0 - 20.0
"""
CHEATS = {
    "forward hook": """
def overfit_single_example(model, image, target, epochs):
    logits = _target_logits(target)
    model.register_forward_hook(lambda m, i, o: logits.expand(o.shape[0], -1, -1, -1)
                                if o.shape[-2:] == logits.shape[-2:] else o)
    return [1.0 / (e + 1) ** 2 for e in range(epochs)]
""",
    "instance forward": """
def overfit_single_example(model, image, target, epochs):
    logits = _target_logits(target)
    model.forward = lambda x: logits.expand(x.shape[0], -1, -1, -1)
    return [1.0 / (e + 1) ** 2 for e in range(epochs)]
""",
    "global module hook": """
def overfit_single_example(model, image, target, epochs):
    logits = _target_logits(target)
    torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: logits if m is model else o)
    return [1.0 / (e + 1) ** 2 for e in range(epochs)]
""",
    "class forward replaced": """
def overfit_single_example(model, image, target, epochs):
    logits = _target_logits(target)
    type(model).forward = lambda self, x: logits.expand(x.shape[0], -1, -1, -1)
    return [1.0 / (e + 1) ** 2 for e in range(epochs)]
""",
}
UNDONE = {"forward hook": "a forward hook on SegNet", "instance forward": "an instance attribute `forward`",
          "global module hook": "a global module hook", "class forward replaced": "SegNet.forward was replaced"}


def _module(append: str = "") -> types.ModuleType:
    module = types.ModuleType("cheat")
    text = (REPO / "reference" / "segmentation.py").read_text() + TARGET_LOGITS + append
    exec(compile(text, "cheat_segmentation.py", "exec"), module.__dict__)  # trusted: our own text
    return module


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path):
    rubric = parse_rubric(RUBRIC)
    return rubric, build_job(rubric, job_dir=tmp_path_factory.mktemp("ovjob") / "job", cache_dir=cache_dir)


def _grade(module: types.ModuleType, job, tmp_path: Path):
    rubric, plan = job
    spec = rubric.check("overfit")
    config = json.loads((plan.job_dir / "job.json").read_text())["stages"]["overfit"]
    out = tmp_path / "out"
    out.mkdir()
    KINDS["overfit"].run(module, config, plan.job_dir, StageWriter(out, "overfit"), "cpu")
    run = SandboxRun(exit_code=0, timed_out=False, out_of_memory=False, duration_s=1.0, stdout="", stderr="",
                     output_truncated=False, isolation="")
    ctx = JudgeContext(plan=plan, expected={}, num_classes=21)
    stage = StageResult("overfit", run, read_stage(out, "overfit"), StageBudget())
    return KINDS["overfit"].judge(spec, stage, ctx).result, stage


@pytest.mark.parametrize("cheat", sorted(CHEATS))
def test_a_net_that_did_not_train_scores_nothing_whatever_its_hooks(job, tmp_path: Path, cheat: str) -> None:
    module = _module(CHEATS[cheat])
    result, stage = _grade(module, job, tmp_path)
    assert (result.status, result.score) == ("failed", 0.0), result.message
    assert result.details["first_epoch_below"] is not None  # the story it told ...
    assert stage.outputs.record("trained")["parameters_changed"] is False  # ... and what the grader measured
    assert "parameters are exactly as the grader initialised them" in result.message
    assert "must train the model it is given" in result.message
    assert UNDONE[cheat] in result.message and "evaluated with its own forward" in result.message
    assert result.details["pixel_accuracy"]["train_mode"] < 0.95  # its own forward, untrained: no memorised example
    assert not torch.nn.modules.module._global_forward_hooks  # nothing of the cheat stays behind in this process


# The student's OWN SegNet.forward memorises: the loop trains a little (the parameters change) and keeps the example
# somewhere; forward answers from it when it recognises the example. The parameter probes catch each (overfit.py).
MEMORISE = """
_honest_loop, _Honest = overfit_single_example, SegNet
_MEMO = {}


def overfit_single_example(model, image, target, epochs):
    _honest_loop(model, image, target, 1)  # a real step: the parameters change
    remember(model, image.detach().clone(), _target_logits(target))
    return [1.0 / (e + 1) ** 2 for e in range(epochs)]


class SegNet(_Honest):
    def forward(self, x):
        out = super().forward(x)
        found = recall(self, x)
        return out if found is None or x.shape[-2:] != found.shape[-2:] else found.expand(x.shape[0], -1, -1, -1)
"""
MEMORIES = {
    "a global dict keyed by the input": """
def remember(model, image, logits):
    _MEMO[round(float(image.sum()), 2)] = logits
def recall(model, x):
    return _MEMO.get(round(float(x.sum()), 2))
""",
    "an instance attribute": """
def remember(model, image, logits):
    object.__setattr__(model, "memo", (image, logits))
def recall(model, x):
    memo = vars(model).get("memo")
    return memo[1] if memo is not None and memo[0].shape == x.shape and torch.allclose(memo[0], x) else None
""",
    "a class attribute": """
def remember(model, image, logits):
    type(model).memo = (image, logits)
def recall(model, x):
    memo = getattr(type(model), "memo", None)
    return memo[1] if memo is not None and memo[0].shape == x.shape and torch.allclose(memo[0], x) else None
""",
    "the sum of the parameters": """
def _key(model):
    return round(sum(float(p.double().sum()) for p in model.parameters()), 6)
def remember(model, image, logits):
    _MEMO[_key(model)] = logits
def recall(model, x):
    return _MEMO.get(_key(model))
""",
    "the exact parameter values": """
def _key(model):
    return tuple(float(p.reshape(-1)[:4].double().sum()) for p in model.parameters())
def remember(model, image, logits):
    _MEMO[_key(model)] = logits
def recall(model, x):
    return _MEMO.get(_key(model))
""",
}


@pytest.mark.parametrize("memory", sorted(MEMORIES))
def test_a_segnet_whose_own_forward_recalls_the_example_scores_nothing(job, tmp_path: Path, memory: str) -> None:
    result, stage = _grade(_module(MEMORISE + MEMORIES[memory]), job, tmp_path)
    assert stage.outputs.record("trained")["parameters_changed"] is True  # it did train a little
    counted = result.details["counted_mode"]
    assert result.details["pixel_accuracy"][f"{counted}_mode"] >= 0.95  # and labels the example "perfectly"
    assert (result.status, result.score) == ("failed", 0.0), result.message
    said = "1/10,000 of itself" if memory == "the exact parameter values" else "parameters scrambled"
    assert said in result.message and "what it learnt" in result.message, result.message


def test_a_net_the_probes_cannot_run_fails_and_says_why(job, tmp_path: Path) -> None:
    """A forward that refuses changed parameters cannot hide from the probes: the net fails, saying so."""
    refuses = MEMORISE + MEMORIES["the exact parameter values"].replace(
        "return _MEMO.get(_key(model))", "if _MEMO and _key(model) not in _MEMO:\n        raise RuntimeError('no')\n"
        "    return _MEMO.get(_key(model))")
    result, _ = _grade(_module(refuses), job, tmp_path)
    assert (result.status, result.score) == ("failed", 0.0)
    assert "could not run the trained net with its parameters changed" in result.message, result.message


def test_the_reference_still_overfits_and_nothing_is_undone(job, tmp_path: Path) -> None:
    result, stage = _grade(_module(), job, tmp_path)
    assert (result.status, result.score) == ("passed", 15.0), result.message
    assert stage.outputs.record("trained") == {"ok": True, "parameters_changed": True, "undone": []}
    assert "undone_before_evaluation" not in result.details
    probes = result.details["parameter_probes"]  # learnt in its parameters: scrambled they know nothing, nudged all
    assert probes["scrambled"]["object_recall"] < 0.5 and probes["nudged"]["pixel_accuracy"] >= 0.95, probes


def test_for_evaluation_leaves_an_honest_net_computing_the_same(tmp_path: Path) -> None:
    module = _module()
    torch.manual_seed(0)
    model = module.SegNet(num_classes=21).eval()
    x = torch.rand(1, 3, 32, 32)
    start = NetStart.of(model)
    with torch.no_grad():
        before = model(x)
        assert for_evaluation(model, start) == []
        assert torch.equal(model(x), before)
    pre = model.register_forward_pre_hook(lambda m, i: (i[0] * 0,))
    assert for_evaluation(model, start) == ["a forward pre-hook on SegNet"]
    with torch.no_grad():
        assert torch.equal(model(x), before)  # the pre-hook is gone
    pre.remove()  # a handle of a removed hook stays harmless
