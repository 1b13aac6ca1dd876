"""The Ray engine on a real local Ray cluster with fake GPUs: every submission graded exactly once, with the
scores of the local engine, also when a worker node is lost mid-batch.

Fake GPUs have no CUDA: each task gets a GPU id from Ray and passes it to its sandbox, and the node, seeing
that torch cannot use that GPU, prepares a CPU batch (a real GPU batch never falls back to the CPU): the
scores must equal the local engine's.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from grader.batch.batch import GradeOptions, grade_all
from grader.core.results import SubmissionResult, read_result
from grader.rubric import Rubric, parse_rubric
from grader.sandbox import factory
from grader.sandbox.local import LocalSandbox

from quick_class import QUICK_RUBRIC, QUICK_SCORES, write_quick_class

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="Ray is an optional extra, not installed: pip install -e '.[ray]'")

STUDENTS = tuple(QUICK_SCORES)
OBJECT_STORE = 80 * 1024 * 1024  # small: the results are a few kB


@pytest.fixture(scope="module")
def quick() -> Rubric:
    return parse_rubric(QUICK_RUBRIC)


@pytest.fixture(scope="module")
def quick_class(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 1.5 s per import, two imports per submission: the node-loss test kills a node while tasks still run
    return write_quick_class(tmp_path_factory.mktemp("quick-class"), import_delay_s=1.5)


@pytest.fixture(scope="module")
def local_outcome(tmp_path_factory: pytest.TempPathFactory, quick: Rubric, quick_class: Path) -> dict:
    """student -> per-check (status, score), graded by the local engine: what Ray must reproduce."""
    out = tmp_path_factory.mktemp("graded-local")
    results = grade_all([quick_class], rubric=quick, sandbox=LocalSandbox(),
                        options=GradeOptions(out_dir=out, jobs=2, cache_dir=tmp_path_factory.mktemp("cache")))
    assert {r.score for r in results} == {quick.max_score, 0.0}  # the class holds both outcomes
    return {r.student: _outcome(r) for r in results}


@pytest.fixture
def ray_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Ray's files in a short temp path (its sockets' paths must fit 107 bytes), its address file there too
    (RAY_TMPDIR: never /tmp/ray), no auth token written to ~/.ray; Ray stopped afterwards."""
    temp = tmp_path_factory.mktemp("ray")
    (temp / "ray").mkdir()
    monkeypatch.setenv("RAY_TMPDIR", str(temp))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield temp
    ray.shutdown()


def _outcome(result: SubmissionResult) -> dict[str, tuple[str, float]]:
    return {c.id: (c.status, c.score) for c in result.checks}


def _grade_with_ray(quick: Rubric, quick_class: Path, out: Path, cache: Path,
                    sandbox: object = None) -> tuple[list, Counter]:
    recorded: Counter = Counter()
    options = GradeOptions(out_dir=out, cache_dir=cache, executor="ray",
                           progress=lambda student, _result: recorded.update([student]))
    return grade_all([quick_class], rubric=quick, sandbox=sandbox or LocalSandbox(), options=options), recorded


def _assert_graded_once_like_local(results: list, recorded: Counter, out: Path, local_outcome: dict) -> None:
    assert recorded == Counter(STUDENTS), "a submission was recorded more or less than once"
    assert sorted(r.student for r in results) == sorted(STUDENTS)
    for student in STUDENTS:
        on_disk = read_result(out / student / "result.json")
        assert on_disk.status == "graded", on_disk.message
        assert _outcome(on_disk) == local_outcome[student]


def test_ray_grades_each_submission_once_with_the_local_scores(ray_env: Path, tmp_path: Path, quick: Rubric,
                                                               quick_class: Path, local_outcome: dict,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver sends the sandbox's spec and builds none: here, building one in the driver fails the batch
    (the nodes are other processes, where the factory is untouched)."""
    def no_sandbox_in_the_driver(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the Ray driver built a sandbox")

    monkeypatch.setattr(factory, "make_sandbox", no_sandbox_in_the_driver)
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, _temp_dir=str(ray_env),
             object_store_memory=OBJECT_STORE, log_to_driver=False)
    out = tmp_path / "out"
    results, recorded = _grade_with_ray(quick, quick_class, out, tmp_path / "cache", sandbox=factory.SandboxSpec())
    _assert_graded_once_like_local(results, recorded, out, local_outcome)
    for result in results:  # each task held one (fake) GPU; without CUDA the runner used the CPU
        assert len(result.provenance["ray"]["gpu_ids"]) == 1
        assert result.provenance["device"] == "cpu"


def test_losing_a_worker_node_mid_batch_still_grades_each_submission_once(
        ray_env: Path, tmp_path: Path, quick: Rubric, quick_class: Path, local_outcome: dict) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "include_dashboard": False, "temp_dir": str(ray_env),
        "object_store_memory": OBJECT_STORE,
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                           "health_check_failure_threshold": 3}})
    try:
        victim = cluster.add_node(num_cpus=2, num_gpus=2, object_store_memory=OBJECT_STORE)
        ray.init(address=cluster.address, log_to_driver=False)
        out, outcome = tmp_path / "out", {}

        def batch() -> None:
            outcome["results"], outcome["recorded"] = _grade_with_ray(quick, quick_class, out, tmp_path / "cache")

        worker = threading.Thread(target=batch)
        worker.start()
        _lose_node_after_first_result(cluster, victim, out)
        worker.join(timeout=300)
        assert not worker.is_alive(), "the batch did not finish after the node was lost"
        _assert_graded_once_like_local(outcome["results"], outcome["recorded"], out, local_outcome)
        nodes = {r.provenance["ray"]["node_id"] for r in outcome["results"]}
        assert nodes - {victim.node_id}, "no submission was graded on the replacement node"
    finally:
        ray.shutdown()
        cluster.shutdown()


def _lose_node_after_first_result(cluster, victim, out: Path) -> None:  # noqa: ANN001 - ray.cluster_utils types
    """Kill the GPU node while its next tasks run (its first result is in), then add a fresh one."""
    deadline = time.monotonic() + 180
    while not list(out.glob("*/result.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(out.glob("*/result.json")), "no result arrived from the worker node"
    cluster.remove_node(victim, allow_graceful=False)
    cluster.add_node(num_cpus=2, num_gpus=2, object_store_memory=OBJECT_STORE)
