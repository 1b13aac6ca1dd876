"""The Docker engine grades the whole fixture batch with exactly the local sandbox's scores."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from grader.rubric import Rubric

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def docker_sandbox():  # noqa: ANN201 - a DockerSandbox
    from grader.sandbox.base import InfrastructureError
    from grader.sandbox.docker import docker_sandbox_for_cli

    try:
        return docker_sandbox_for_cli(image="test")
    except InfrastructureError as exc:
        if os.environ.get("SEG_REQUIRE_DOCKER") == "1":
            raise
        pytest.skip(f"Docker Engine not reachable: {exc}")


@pytest.fixture(scope="module")
def docker_batch(tmp_path_factory: pytest.TempPathFactory, fixture_class: Path, test_rubric: Rubric,
                 cache_dir: Path, docker_sandbox) -> dict:
    from grader.batch import GradeOptions, grade_all

    out = tmp_path_factory.mktemp("graded-docker")
    results = grade_all([fixture_class], rubric=test_rubric, sandbox=docker_sandbox,
                        options=GradeOptions(out_dir=out, jobs=2, cache_dir=cache_dir))
    return {r.student: r for r in results}


def test_docker_scores_equal_local_scores(local_batch, docker_batch) -> None:
    _, local = local_batch
    assert set(docker_batch) == set(local)
    for student, result in local.items():
        other = docker_batch[student]
        assert other.status == result.status, student
        assert other.score == result.score, (student, [(c.id, c.score, c.message) for c in other.checks])
        assert [c.score for c in other.checks] == [c.score for c in result.checks], student


def test_docker_runs_record_the_engine_in_provenance(docker_batch) -> None:
    sandbox = docker_batch["passes_all"].provenance["sandbox"]
    assert sandbox["engine"] == "docker" and sandbox.get("image_id")


def test_no_container_is_left_after_the_batch(docker_batch) -> None:
    import docker

    from grader.sandbox.docker import LABEL

    client = docker.from_env()
    assert client.containers.list(all=True, filters={"label": LABEL}) == []
