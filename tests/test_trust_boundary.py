"""The trust boundary, point by point: each test fails if its protection is removed."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from grader.checks import kind_of
from grader.checks.verdict import JudgeContext, StageResult
from grader.core.outputs import OutputError, read_stage
from grader.rubric import StageBudget
from grader.sandbox.base import SandboxRun

REPO = Path(__file__).resolve().parent.parent


def test_student_code_never_runs_in_the_grader_process(tmp_path: Path, cache_dir: Path) -> None:
    from grader.batch.batch import GradeOptions, grade_all
    from grader.rubric import parse_rubric
    from grader.sandbox.local import LocalSandbox

    sub = tmp_path / "spy"
    sub.mkdir()
    sub.joinpath("segmentation.py").write_text(  # reports the process it runs in through its error message
        "import os\n\ndef bilinear_kernel(factor):\n"
        "    raise RuntimeError(f'pid={os.getpid()} uid={os.getuid()}')\n")
    rubric = parse_rubric("assignment: t\nthreads: 1\nchecks:\n"
                          "  - {id: bk, kind: bilinear_kernel, name: B, points: 1, factors: [2]}\n")
    [result] = grade_all([sub], rubric=rubric, sandbox=LocalSandbox(),
                         options=GradeOptions(out_dir=tmp_path / "out", cache_dir=cache_dir))
    message = result.checks[0].message
    assert "It raised RuntimeError: pid=" in message, message
    assert int(message.split("pid=")[1].split()[0]) != os.getpid()
    assert "segmentation" not in sys.modules


def test_job_folder_holds_inputs_only(tmp_path: Path, test_rubric, cache_dir: Path) -> None:
    from grader.job.folder import build_job

    plan = build_job(test_rubric, job_dir=tmp_path / "job", cache_dir=cache_dir)
    labels = plan.host["full_training"]["eval_labels"]
    for path in plan.job_dir.rglob("*.npy"):
        arr = np.load(path, allow_pickle=False)
        assert not (arr.shape == labels.shape and np.array_equal(arr, labels)), f"{path.name} holds the eval labels"
        assert not (arr.ndim == 3 and arr.shape[1:] == labels.shape[1:] and arr.dtype == np.uint8
                    and len(arr) == len(labels) and "mask" in path.name), path.name
    names = {p.relative_to(plan.job_dir).as_posix() for p in plan.job_dir.rglob("*") if "unit" not in p.parts}
    # the 2x2 (issue 23): both nets also label the public validation IMAGE, the trained net the overfit example
    assert names == {"job.json", "overfit", "overfit/image.npy", "overfit/target.npy", "overfit/unseen.npy",
                     "full_training", "full_training/train_images.npy", "full_training/train_masks.npy",
                     "full_training/eval_images.npy", "full_training/seen.npy", "full_training/unseen.npy"}
    for folder in ("overfit", "full_training"):
        unseen = np.load(plan.job_dir / folder / "unseen.npy", allow_pickle=False)
        assert unseen.ndim == 3 and unseen.shape[0] == 3  # an image (3, S, S), never a mask
    assert "expected" not in (plan.job_dir / "job.json").read_text()


def _write_stage(out: Path, records: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "unit.json").write_text(json.dumps({"stage": "unit", "records": records}))


def test_pickled_arrays_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _write_stage(tmp_path, {"c": {"ok": True, "kind": "array", "file": "evil.npy"}})
    with pytest.raises(OutputError, match="not a valid .npy|not a plain numeric"):
        read_stage(tmp_path, "unit").array("c")


def test_symlinked_outputs_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.npy"
    np.save(target, np.zeros(3))
    (tmp_path / "link.npy").symlink_to(target)
    _write_stage(tmp_path, {"c": {"ok": True, "kind": "array", "file": "link.npy"}})
    with pytest.raises(OutputError, match="cannot be opened"):
        read_stage(tmp_path, "unit").array("c")


@pytest.mark.parametrize("name", ["../x.npy", "/etc/passwd", "x.pkl"])
def test_output_names_outside_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    _write_stage(tmp_path, {"c": {"ok": True, "kind": "array", "file": name}})
    with pytest.raises(OutputError, match="names no valid array"):
        read_stage(tmp_path, "unit").array("c")


def test_oversized_and_malformed_json_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "unit.json").write_text("{not json")
    with pytest.raises(OutputError, match="unreadable"):
        read_stage(tmp_path, "unit")
    monkeypatch.setattr("grader.core.outputs.MAX_JSON_BYTES", 10)
    _write_stage(tmp_path, {"c": {"ok": True}})
    with pytest.raises(OutputError, match="over the"):
        read_stage(tmp_path, "unit")


def test_a_malformed_output_fails_only_its_check(tmp_path: Path, test_rubric, cache_dir: Path) -> None:
    from grader.job.expected import expected_outputs
    from grader.job.folder import build_job

    plan = build_job(test_rubric, job_dir=tmp_path / "job", cache_dir=cache_dir)
    spec = test_rubric.check("bilinear_kernel")
    cases = plan.cases["bilinear_kernel"]
    records = {c.id: {"ok": True, "kind": "array", "file": f"{c.id}.npy"} for c in cases}
    _write_stage(tmp_path / "out", records)
    for case in cases[1:]:
        np.save(tmp_path / "out" / f"{case.id}.npy", np.zeros((3, 3)))
    (tmp_path / "out" / f"{cases[0].id}.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "out" / "result.json").write_text('{"score": 1000}')  # anything else is ignored
    run = SandboxRun(exit_code=0, timed_out=False, out_of_memory=False, duration_s=1, stdout="", stderr="",
                     output_truncated=False, isolation="test")
    stage = StageResult("unit", run, read_stage(tmp_path / "out", "unit"), StageBudget())
    ctx = JudgeContext(plan=plan, expected=expected_outputs({"bilinear_kernel": cases}), num_classes=21)
    result = kind_of(spec).judge(spec, stage, ctx).result
    assert result.status == "failed" and result.score == 0
    assert "not a valid .npy" in json.dumps(result.details)
