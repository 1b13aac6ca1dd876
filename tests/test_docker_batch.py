"""The Docker engine grades the whole fixture batch with exactly the local sandbox's scores."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from grader.rubric import Rubric

pytestmark = [pytest.mark.docker, pytest.mark.slow]


# "test": the tiny test image (the host's Python mounted read-only); the production image built by
# .ci/build-image.sh (a debootstrapped Debian, torch from the package index, the real Dockerfile) when
# SEG_PRODUCTION_IMAGE names it, as README command 2 and .ci/run do.
IMAGES = ["test", pytest.param(os.environ.get("SEG_PRODUCTION_IMAGE"), id="production", marks=pytest.mark.skipif(
    not os.environ.get("SEG_PRODUCTION_IMAGE"), reason="SEG_PRODUCTION_IMAGE not set (bash .ci/build-image.sh)"))]


@pytest.fixture(scope="module", params=IMAGES)
def docker_image(request: pytest.FixtureRequest) -> str:
    """The --image the grader is given ("test" or the production image's name)."""
    return request.param


@pytest.fixture(scope="module")
def docker_sandbox(docker_image: str):  # noqa: ANN201 - a DockerSandbox
    from grader.sandbox.base import InfrastructureError
    from grader.sandbox.container.engine import docker_sandbox_for_cli

    try:
        return docker_sandbox_for_cli(image=docker_image)
    except InfrastructureError as exc:
        if os.environ.get("SEG_REQUIRE_DOCKER") == "1":
            raise
        pytest.skip(f"Docker Engine not reachable: {exc}")


@pytest.fixture(scope="module")
def docker_batch(tmp_path_factory: pytest.TempPathFactory, fixture_class: Path, test_rubric: Rubric,
                 cache_dir: Path, docker_sandbox) -> dict:
    from grader.batch.batch import GradeOptions, grade_all

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

    from grader.sandbox.container.daemon import LABEL

    client = docker.from_env()
    assert client.containers.list(all=True, filters={"label": LABEL}) == []


def _sigint_default() -> None:
    """The child we signal gets SIGINT's default disposition, however this test run was started (a job runner
    or a shell's background job starts commands with SIGINT ignored, and the ignore is inherited)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_interrupting_the_grader_mid_batch_leaves_no_container(tmp_path: Path, docker_sandbox, docker_image: str,
                                                               cache_dir: Path, signum: str) -> None:
    """Ctrl-C, or SIGTERM from a scheduler: the batch aborts the engine (spares included) and exits 130."""
    import signal
    import subprocess
    import sys
    import time

    import docker

    from fixture_submissions import materialize
    from grader.sandbox.container.daemon import LABEL

    materialize("infinite_loop", tmp_path / "class")
    rubric = tmp_path / "train_only.yaml"
    rubric.write_text(Path(__file__).with_name("rubric_small.yaml").read_text().split("checks:")[0] + (
        "checks:\n  - {id: full_training, kind: full_training, name: Full training, points: 1, epochs: 1}\n"))
    client = docker.from_env()
    grader = subprocess.Popen([sys.executable, "-m", "grader", "grade", str(tmp_path / "class"), "--out",
                               str(tmp_path / "out"), "--rubric", str(rubric), "--sandbox", "docker", "--image",
                               docker_image, "-q", "--cache-dir", str(cache_dir)], stderr=subprocess.PIPE,
                              text=True, preexec_fn=_sigint_default)
    deadline = time.monotonic() + 180
    while not client.containers.list(filters={"label": LABEL}) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert client.containers.list(filters={"label": LABEL}), "no grading container ever started"
    time.sleep(2)
    grader.send_signal(getattr(signal, signum))
    _, err = grader.communicate(timeout=120)
    assert grader.returncode == 130, err
    assert "interrupted" in err
    time.sleep(1)
    assert client.containers.list(all=True, filters={"label": LABEL}) == []
    assert not (tmp_path / "out" / "infinite_loop" / "result.json").exists()  # no result for a killed job
