"""Shared fixtures: the test rubric, the dataset cache, and ONE graded batch of every fixture submission.

The batch is graded once per session (with the local sandbox) and shared by the tests that assert its
scores, render its reports, and compare it with the Docker sandbox.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from fixture_submissions import fixture_names, materialize
from grader.data.evalsecret import KEY_BYTES, KEY_FILE
from grader.rubric import Rubric, load_rubric

TEST_RUBRIC = Path(__file__).parent / "rubric_small.yaml"
TEST_EVAL_KEY = b"seg-autograder: the tests' key.\n"  # 32 bytes; not a secret, a fixed split for the suite


@pytest.fixture(scope="session")
def test_rubric() -> Rubric:
    return load_rubric(TEST_RUBRIC)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dataset cache per test session (never the user's ~/.cache), with a FIXED evaluation key, so every
    run of the suite grades on the same evaluation split (a grader's key is random, made once per cache)."""
    cache = tmp_path_factory.mktemp("seg-cache")
    assert len(TEST_EVAL_KEY) == KEY_BYTES
    key = cache / KEY_FILE
    key.write_bytes(TEST_EVAL_KEY)
    key.chmod(0o600)
    return cache


@pytest.fixture(scope="session")
def fixture_class(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A class folder with one sub-folder per fixture submission."""
    root = tmp_path_factory.mktemp("class")
    for name in fixture_names():
        materialize(name, root)
    return root


@pytest.fixture(scope="session")
def local_batch(tmp_path_factory: pytest.TempPathFactory, fixture_class: Path, test_rubric: Rubric,
                cache_dir: Path) -> tuple[Path, dict]:
    """(out dir, {student: SubmissionResult}) for all fixtures graded with the local sandbox, -j 2."""
    from grader.batch.batch import GradeOptions, grade_all
    from grader.sandbox.local import LocalSandbox

    out = tmp_path_factory.mktemp("graded-local")
    results = grade_all([fixture_class], rubric=test_rubric, sandbox=LocalSandbox(),
                        options=GradeOptions(out_dir=out, jobs=2, cache_dir=cache_dir))
    return out, {r.student: r for r in results}
