"""The check kinds: one module each, keyed by check id; judges that survive any output a sandbox leaves."""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grader.checks import KINDS, STUDENT_NAMES, kind_of
from grader.checks.verdict import JobPlan, JudgeContext, StageResult
from grader.job.folder import unit_cases
from grader.core.outputs import OutputError, StageOutputs, read_stage
from grader.batch.pipeline import judge_behind_barrier
from grader.rubric import StageBudget, parse_rubric
from grader.sandbox.base import SandboxRun

REPO = Path(__file__).resolve().parent.parent
ALL_KINDS = """
assignment: every kind once
checks:
  - {id: tc, kind: transpose_conv, name: T, points: 1, seed: 1, cases: 3}
  - {id: bk, kind: bilinear_kernel, name: B, points: 1, factors: [2]}
  - {id: cm, kind: confusion_matrix, name: C, points: 1, seed: 2, cases: 2}
  - {id: mi, kind: mean_iou, name: M, points: 1, seed: 3, cases: 2}
  - {id: pa, kind: pixel_accuracy, name: P, points: 1, seed: 4, cases: 2}
  - {id: ms, kind: model_shapes, name: S, points: 1, input_sizes: [[1, 8, 8]]}
  - {id: ov, kind: overfit, name: O, points: 1, epochs: 3, image_size: 8}
  - {id: ft, kind: full_training, name: F, points: 1, epochs: 1}
"""


def test_every_kind_has_one_module_and_the_registry_names_it() -> None:
    for name, kind in KINDS.items():
        module = __import__(f"grader.checks.{name}", fromlist=["KIND"])
        assert module.KIND is kind and kind.name == name
        assert kind.spec.__module__ == module.__name__, f"{name}'s rubric fields live in its own module"


def test_the_student_api_is_what_the_kinds_call() -> None:
    tree = ast.parse((REPO / "student_template" / "segmentation.py").read_text())
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert set(STUDENT_NAMES) <= defined and len(STUDENT_NAMES) == 8


def test_two_checks_of_one_unit_kind_get_their_own_cases() -> None:
    rubric = parse_rubric("""
assignment: t
checks:
  - {id: a, kind: transpose_conv, name: A, points: 1, seed: 1, cases: 4, edge_cases: false}
  - {id: b, kind: transpose_conv, name: B, points: 1, seed: 2, cases: 6, edge_cases: false}
""")
    cases = unit_cases(rubric)
    assert [len(cases["a"]), len(cases["b"])] == [4, 6]
    assert {c.id.split("-")[0] for c in cases["b"]} == {"b"}
    assert not np.array_equal(cases["a"][0].arrays["x"], cases["b"][0].arrays["x"])


def test_two_overfit_checks_run_in_stages_of_their_own(tmp_path: Path, cache_dir: Path) -> None:
    from grader.job.folder import build_job

    rubric = parse_rubric("""
assignment: t
dataset: {n_train: 4, n_val: 2, size: 16}
checks:
  - {id: short, kind: overfit, name: S, points: 1, seed: 3, epochs: 2, image_size: 16}
  - {id: long, kind: overfit, name: L, points: 1, seed: 4, epochs: 7, image_size: 32, example_index: 1}
""")
    assert rubric.stages() == ["import", "short", "long"]
    plan = build_job(rubric, job_dir=tmp_path / "job", cache_dir=cache_dir)
    stages = json.loads((plan.job_dir / "job.json").read_text())["stages"]
    assert (stages["short"]["epochs"], stages["short"]["seed"]) == (2, 3)
    assert (stages["long"]["epochs"], stages["long"]["seed"]) == (7, 4)
    assert plan.host["short"]["target"].shape == (16, 16) and plan.host["long"]["target"].shape == (32, 32)


@pytest.mark.slow
def test_two_overfit_checks_are_each_judged_by_their_own_settings(tmp_path: Path, cache_dir: Path) -> None:
    from grader.batch.batch import GradeOptions, grade_all
    from grader.sandbox.local import LocalSandbox

    rubric = parse_rubric("""
assignment: t
threads: 1
dataset: {n_train: 4, n_val: 2, size: 64}
checks:
  - {id: quick, kind: overfit, name: Q, points: 1, seed: 6, epochs: 2, loss_bound: 0.05, image_size: 64}
  - {id: patient, kind: overfit, name: P, points: 1, seed: 6, epochs: 20, loss_bound: 0.05, image_size: 64}
""")
    [result] = grade_all([REPO / "reference"], rubric=rubric, sandbox=LocalSandbox(),
                         options=GradeOptions(out_dir=tmp_path / "out", cache_dir=cache_dir))
    checks = {c.id: c for c in result.checks}
    assert len(checks["quick"].details["losses"]) == 2 and len(checks["patient"].details["losses"]) == 20
    assert checks["quick"].status == "failed" and "within 2 epochs" in checks["quick"].message
    assert checks["patient"].status == "passed", checks["patient"].message
    assert set(result.provenance["durations_s"]) == {"import", "quick", "patient"}


# ---- the judges against hostile outputs (the fault barrier's first line) ------------------------------

@pytest.fixture(scope="module")
def every_kind() -> tuple:
    from grader.job.expected import expected_outputs

    rubric = parse_rubric(ALL_KINDS)
    cases = unit_cases(rubric)
    rng = np.random.default_rng(0)
    host = {"ov": {"image": rng.integers(0, 255, (3, 8, 8), dtype=np.uint8),
                   "target": rng.integers(0, 3, (8, 8)).astype(np.uint8)},
            "ft": {"eval_images": rng.integers(0, 255, (2, 3, 8, 8), dtype=np.uint8),
                   "eval_labels": rng.integers(0, 3, (2, 8, 8)).astype(np.uint8)}}
    plan = JobPlan(job_dir=Path("/nonexistent"), cases=cases, host=host)
    return rubric, JudgeContext(plan=plan, expected=expected_outputs(cases), num_classes=21)


def _record_keys(spec, ctx: JudgeContext) -> list[str]:
    unit = [c.id for c in ctx.plan.cases.get(spec.id, [])]
    return unit + ["model", "forward_0", "losses", "logits_train", "logits_eval", "predictions", "stage_error"]


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4),
                           max_leaves=12)
arrays = st.tuples(st.sampled_from(["float64", "float32", "int64", "uint8", "bool", "int8"]),
                   st.lists(st.integers(0, 4), min_size=0, max_size=4),
                   st.floats(allow_nan=True, allow_infinity=True))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # inf into an int array, on purpose
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_judges_return_a_result_whatever_the_outputs(every_kind: tuple, tmp_path_factory, data) -> None:
    rubric, ctx = every_kind
    spec = data.draw(st.sampled_from(rubric.checks))
    out = tmp_path_factory.mktemp("out")
    records = {}
    for key in data.draw(st.lists(st.sampled_from(_record_keys(spec, ctx)), max_size=6, unique=True)):
        record = data.draw(st.dictionaries(st.sampled_from(["ok", "kind", "file", "value", "error", "losses",
                                                            "parameters", "traceback"]), json_values, max_size=5))
        if data.draw(st.booleans()):  # a real array file behind the record
            dtype, shape, fill = data.draw(arrays)
            np.save(out / f"{key}.npy", np.full(shape, fill if dtype.startswith("float") else 1, dtype=dtype))
            record = {**record, "ok": True, "kind": "array", "file": f"{key}.npy"}
        records[key] = record
    stage_name = kind_of(spec).stage(spec)
    (out / f"{stage_name}.json").write_text(json.dumps({"stage": stage_name, "records": records}))
    run = SandboxRun(exit_code=data.draw(st.sampled_from([0, 1, 137, None])), timed_out=data.draw(st.booleans()),
                     out_of_memory=False, duration_s=1.0, stdout="", stderr="", output_truncated=False, isolation="")
    try:  # as the pipeline reads a stage: an unreadable file is the stage's problem, said in the verdict
        stage = StageResult(stage_name, run, read_stage(out, stage_name), StageBudget())
    except OutputError as exc:
        stage = StageResult(stage_name, run, StageOutputs(out, {}), StageBudget(), problem=str(exc))
    judged = kind_of(spec).judge(spec, stage, ctx)  # the kind's own judge: it must not need the barrier
    assert judged.result.status in ("passed", "failed", "error", "timeout", "skipped")
    assert 0 <= judged.result.score <= spec.points and math.isfinite(judged.result.score)
    json.dumps(judged.result.details, default=str)


def test_the_barrier_turns_a_judge_crash_into_that_checks_error(every_kind: tuple, tmp_path: Path) -> None:
    rubric, ctx = every_kind
    spec = rubric.check("ms")
    (tmp_path / "ms.json").write_text(json.dumps({"stage": "ms", "records": {"model": {"ok": True}}}))
    run = SandboxRun(exit_code=0, timed_out=False, out_of_memory=False, duration_s=1.0, stdout="", stderr="",
                     output_truncated=False, isolation="")
    stage = StageResult("ms", run, read_stage(tmp_path, "ms"), StageBudget())

    def broken(*args: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    object.__setattr__(KINDS["model_shapes"], "judge", broken)
    try:
        judged = judge_behind_barrier(spec, stage, ctx)
    finally:
        object.__setattr__(KINDS["model_shapes"], "judge", __import__("grader.checks.model_shapes",
                                                                      fromlist=["judge"]).judge)
    assert judged.result.status == "error" and judged.result.score == 0
    assert "RecursionError" in judged.result.message


@pytest.mark.parametrize("error", ["", "\n\n", "   ", None, 12, ["a"]])
def test_an_empty_or_odd_error_message_is_still_a_sentence(every_kind: tuple, tmp_path: Path, error: object) -> None:
    rubric, ctx = every_kind
    spec = rubric.check("bk")
    [case] = ctx.plan.cases["bk"]
    (tmp_path / "unit.json").write_text(json.dumps({"stage": "unit", "records": {case.id: {"ok": False,
                                                                                            "error": error}}}))
    run = SandboxRun(exit_code=0, timed_out=False, out_of_memory=False, duration_s=1.0, stdout="", stderr="",
                     output_truncated=False, isolation="")
    judged = kind_of(spec).judge(spec, StageResult("unit", run, read_stage(tmp_path, "unit"), StageBudget()), ctx)
    assert judged.result.status == "failed" and "It raised " in judged.result.message


def test_a_fault_past_the_judges_keeps_the_judged_checks_and_the_batch_goes_on(
        tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from grader.batch import pipeline
    from grader.batch.batch import GradeOptions, grade_all
    from grader.sandbox.local import LocalSandbox

    def broken(record: object) -> str:
        raise RuntimeError("the notebook record could not be read")

    monkeypatch.setattr(pipeline, "failed_cells_message", broken)
    rubric = parse_rubric("assignment: t\nthreads: 1\nchecks:\n"
                          "  - {id: bk, kind: bilinear_kernel, name: B, points: 1, factors: [2]}\n")
    results = grade_all([REPO / "reference", REPO / "student_template"], rubric=rubric, sandbox=LocalSandbox(),
                        options=GradeOptions(out_dir=tmp_path / "out", cache_dir=cache_dir))
    assert [r.student for r in results] == ["reference", "student_template"]
    ref = results[0]
    assert ref.status == "graded" and ref.checks[0].status == "passed" and ref.score == 1
    assert ref.message.startswith("Partly graded: RuntimeError: the notebook record could not be read")
