"""The grader's own faults are recorded as such for every student (and regraded by the next run), never as
a zero: a sandbox that cannot start, a GPU that cannot be used inside the sandbox."""
from __future__ import annotations

from pathlib import Path

import pytest

from grader.batch.batch import GradeOptions, grade_all
from grader.rubric import load_rubric
from grader.sandbox.local import LocalSandbox

from quick_class import QUICK_RUBRIC, write_quick_class

pytestmark = pytest.mark.slow


def _grade(tmp_path: Path, sandbox: LocalSandbox, **options: object) -> list:
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text(QUICK_RUBRIC)
    return grade_all([write_quick_class(tmp_path / "class")], rubric=load_rubric(rubric), sandbox=sandbox,
                     options=GradeOptions(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", **options))


def test_a_sandbox_that_cannot_start_grades_nobody_zero(tmp_path: Path) -> None:
    results = _grade(tmp_path, LocalSandbox(python="/bin/false"))
    assert len(results) == 4
    for result in results:
        assert result.status == "infrastructure_error" and "fork server (/bin/false) ended" in result.message
        assert not result.checks and "not the student's fault" in result.message


def test_a_gpu_the_sandbox_cannot_use_is_never_silently_the_cpu(tmp_path: Path) -> None:
    """On this machine torch has no usable CUDA: asked for GPU 0, every stage refuses to run on the CPU."""
    import torch  # the test process may: it is not the grader

    if torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU; bench/gpu_check.sh checks the GPU path")
    results = _grade(tmp_path, LocalSandbox(), gpus=("0",))
    assert len(results) == 4
    for result in results:
        assert result.status == "infrastructure_error", (result.student, result.status, result.message)
        assert "GPU 0 cannot be used inside the local sandbox (unavailable:" in result.message
