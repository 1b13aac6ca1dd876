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


class _BuggyEngine(LocalSandbox):
    """A grader bug in the machinery (here: the engine's run raising TypeError, as a stale keyword did)."""

    def run(self, request):  # noqa: ANN001, ANN201 - the engine's signature
        raise TypeError("SandboxRequest.__init__() got an unexpected keyword argument 'x'")


def test_a_bug_in_the_grader_s_machinery_is_an_infrastructure_error_not_a_zero(tmp_path: Path) -> None:
    """It once became 'graded, 0 points, every check error' for every student, kept as final."""
    results = _grade(tmp_path, _BuggyEngine())
    assert len(results) == 4
    for result in results:
        assert result.status == "infrastructure_error", (result.student, result.status, result.message)
        assert "TypeError" in result.message and "not the student's" in result.message
