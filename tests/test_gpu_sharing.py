"""Several jobs per GPU (``--jobs-per-gpu K``), tested on the CPU where it can be: the GPU slot queue (fake GPU
ids: at most K jobs hold one GPU at once, every GPU is used), the cap travelling from the batch to the runner
in a real sandbox, the Ray resources (num_gpus=1/K on a real local Ray with fake GPUs), the CLI flag, MPS
detection; and the VOC-sized rubric (valid, and a tiny preset of it graded on the CPU). What needs a GPU
(the cap refusing an allocation past it) is skipped without one; bench/gpu_throughput.py measures the rest.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from grader import cli
from grader.batch.executors import PoolExecutor, gpu_memory_fraction, gpu_sharing, gpu_slots, mps_running
from grader.intake.discover import Submission
from grader.rubric import load_rubric, parse_rubric
from grader.sandbox.base import GPU_SHARE_ENV, GPU_SHARE_LINE, SandboxRequest, SandboxRun, says_out_of_memory
from grader.sandbox.container.containers import ContainerSettings
from grader.sandbox.local import LocalSandbox

from quick_class import QUICK_RUBRIC, QUICK_SCORES, REPO, write_quick_class

VOC_SCALE = REPO / "rubrics" / "voc_scale.yaml"
HAS_GPU = Path("/dev/nvidia0").exists()


def _subs(tmp_path: Path, n: int) -> list[Submission]:
    return [Submission(student=f"s{i:02d}", path=tmp_path, content_hash=f"{i}", source="test") for i in range(n)]


# ------------------------------------------------------------------------------ the GPU slot queue
def test_the_slot_queue_holds_each_gpu_k_times_spread_over_the_gpus_first() -> None:
    assert gpu_slots(("0", "1"), 1) == ["0", "1"]
    assert gpu_slots(("0", "1"), 3) == ["0", "1", "0", "1", "0", "1"]
    assert gpu_slots((), 4) == []
    with pytest.raises(ValueError, match="at least 1"):
        gpu_slots(("0",), 0)
    assert gpu_memory_fraction(1) is None and gpu_memory_fraction(4) == 0.25


@pytest.mark.parametrize("gpus,k", [(("0", "1"), 3), (("5",), 4), (("0", "1", "2"), 1)])
def test_at_most_k_jobs_hold_one_gpu_at_once_and_every_gpu_is_used(tmp_path: Path, gpus: tuple, k: int) -> None:
    """The first wave waits at a barrier until len(gpus) x K jobs run at once, so the peak per GPU is reached
    for certain; a scheduler handing out more than K slots of a GPU would show a higher peak."""
    lock, holding, peak, first_wave = threading.Lock(), Counter(), Counter(), threading.Barrier(len(gpus) * k)
    started = []

    def grade_one(sub: Submission, gpu: str | None) -> tuple:
        with lock:
            holding[gpu] += 1
            peak[gpu] = max(peak[gpu], holding[gpu])
            started.append(gpu)
            wave = len(started) <= len(gpus) * k
        if wave:
            first_wave.wait(timeout=30)
        time.sleep(0.01)
        with lock:
            holding[gpu] -= 1
        return sub.student, {}

    subs = _subs(tmp_path, 5 * len(gpus) * k)
    results = PoolExecutor(gpus=gpus, jobs_per_gpu=k).run(subs, grade_one, lambda sub, outcome: outcome[0])
    assert sorted(results) == [s.student for s in subs]  # each graded once
    assert dict(peak) == {gpu: k for gpu in gpus}
    assert set(started[:len(gpus)]) == set(gpus)  # the first jobs went to distinct GPUs
    assert not first_wave.broken


def test_cpu_jobs_get_no_gpu_whatever_k(tmp_path: Path) -> None:
    seen = []
    PoolExecutor(jobs=2, jobs_per_gpu=4).run(_subs(tmp_path, 4), lambda sub, gpu: (seen.append(gpu), {}),
                                             lambda sub, outcome: sub.student)
    assert seen == [None] * 4


# ------------------------------------------------------------------------------ the cap reaches the runner
class RecordingSandbox(LocalSandbox):
    """The real local engine, keeping each request and how its stage ended."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[SandboxRequest, SandboxRun]] = []

    def run(self, request: SandboxRequest) -> SandboxRun:
        run = super().run(request)
        self.seen.append((request, run))
        return run


def test_the_batch_hands_each_stage_its_share_and_the_runner_receives_it(tmp_path: Path) -> None:
    """A CPU batch graded with a (fake) GPU index and K = 4: every stage's request carries 1/4, the sandbox
    passes it to the runner, and the runner says so on stderr before any student code (the first line after
    the device line), whatever the student prints."""
    from grader.batch.grading import grade_with_gpu, prepare_batch

    sandbox = RecordingSandbox()
    klass = write_quick_class(tmp_path / "class")
    rubric = parse_rubric(QUICK_RUBRIC)
    try:
        batch = prepare_batch(rubric, sandbox=sandbox, scratch=tmp_path / "scratch", cache_dir=tmp_path / "cache",
                              jobs_per_gpu=4)
        (tmp_path / "scratch").mkdir(exist_ok=True)
        sub = Submission(student="ref_a", path=klass / "ref_a", content_hash="x", source="test")
        result, _ = grade_with_gpu(batch, sub, "3")
    finally:
        sandbox.close()
    assert result.score == QUICK_SCORES["ref_a"]  # the share changes nothing on the CPU
    assert [r.stage for r, _ in sandbox.seen] == ["import", "unit"]
    for request, run in sandbox.seen:
        assert request.gpu == "3" and request.gpu_memory_fraction == 0.25
        lines = run.stderr.splitlines()
        assert lines[1] == f"{GPU_SHARE_LINE}0.25 (not applied: cpu)", run.stderr[:500]


def test_docker_stages_get_the_share_in_their_environment(tmp_path: Path) -> None:
    settings = ContainerSettings(image="unused")
    request = SandboxRequest(submission_dir=tmp_path, job_dir=tmp_path, out_dir=tmp_path, stage="train",
                             timeout_s=1, memory_mb=1024, gpu="0", gpu_memory_fraction=0.125)
    env = settings.environment(request)
    assert env[GPU_SHARE_ENV] == "0.125" and env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert GPU_SHARE_ENV not in settings.environment(dataclasses.replace(request, gpu_memory_fraction=None))


def test_a_gpu_out_of_memory_message_is_recognised_as_out_of_memory() -> None:
    assert says_out_of_memory("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; "
                              "139.81 GiB total capacity; 34.95 GiB already allocated)")


def test_a_stage_that_ran_out_of_its_gpu_share_is_an_out_of_gpu_memory_error(tmp_path: Path) -> None:
    """What the runner records when a stage's code raises CUDA's out-of-memory error, as the judge sees it: an
    error that names the GPU share, not the host memory limit (and not a failure of the student's logic)."""
    from grader.checks.verdict import StageResult, stage_problem
    from grader.core.outputs import StageOutputs

    rubric = load_rubric(VOC_SCALE)
    said = {"ok": False, "error": "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; "
                                  "139.81 GiB total capacity; 17.20 GiB already allocated)", "traceback": "..."}
    run = SandboxRun(exit_code=4, timed_out=False, out_of_memory=False, duration_s=1.0, stdout="", stderr="",
                     output_truncated=False, isolation="test")
    stage = StageResult("full_training", run, StageOutputs(tmp_path, {"stage_error": said}),
                        rubric.budget("full_training"))
    verdict = stage_problem(rubric.check("full_training"), stage)
    assert verdict is not None and verdict.status == "error" and verdict.score == 0.0
    assert verdict.message.startswith("Out of GPU memory") and "share of the GPU" in verdict.message


@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")
def test_on_a_gpu_an_allocation_past_the_share_is_refused_as_out_of_memory(tmp_path: Path) -> None:
    """The runner caps the stage to 1/8 of the GPU before the student's module is imported: a module that
    allocates half the GPU at import time gets CUDA's out-of-memory error, recorded as its import error."""
    import json

    for name in ("job", "out", "submission"):
        (tmp_path / name).mkdir()
    (tmp_path / "job" / "job.json").write_text(json.dumps({"threads": 1, "device": "cuda", "stages": {"import": {}}}))
    (tmp_path / "submission" / "segmentation.py").write_text(
        "import torch\n_, total = torch.cuda.mem_get_info()\n"
        "hog = torch.empty(total // 2, dtype=torch.uint8, device='cuda')\n")
    request = SandboxRequest(submission_dir=tmp_path / "submission", job_dir=tmp_path / "job",
                             out_dir=tmp_path / "out", stage="import", timeout_s=120, memory_mb=16384, gpu="0",
                             gpu_memory_fraction=0.125)
    sandbox = LocalSandbox()
    try:
        run = sandbox.run(request)
    finally:
        sandbox.close()
    assert f"{GPU_SHARE_LINE}0.125" in run.stderr.splitlines(), run.stderr[:500]
    record = json.loads((tmp_path / "out" / "import.json").read_text())["records"]["import_error"]
    assert says_out_of_memory(record["error"]), record["error"]


# ------------------------------------------------------------------------------ MPS, the CLI
def test_mps_is_detected_from_its_control_daemon_and_noted(tmp_path: Path) -> None:
    (tmp_path / "101").mkdir()
    (tmp_path / "101" / "comm").write_text("python3\n")
    assert not mps_running(tmp_path)
    (tmp_path / "202").mkdir()
    (tmp_path / "202" / "comm").write_text("nvidia-cuda-mps-control\n")
    assert mps_running(tmp_path)
    noted = gpu_sharing(4)
    assert noted["jobs_per_gpu"] == 4 and noted["memory_fraction"] == 0.25 and noted["mps"]


def test_the_cli_takes_jobs_per_gpu_and_refuses_less_than_one(capsys: pytest.CaptureFixture) -> None:
    args = cli.build_parser().parse_args(["grade", "x", "--out", "o", "--gpus", "0,1", "--jobs-per-gpu", "4"])
    assert args.jobs_per_gpu == 4 and cli._engine(args)["jobs_per_gpu"] == 4
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as exit_:
            cli.build_parser().parse_args(["selftest", "--jobs-per-gpu", bad])
        assert exit_.value.code == 2
    assert "at least 1" in capsys.readouterr().err


# ------------------------------------------------------------------------------ Ray: num_gpus = 1/K
@pytest.mark.slow
def test_ray_tasks_take_one_kth_of_a_gpu_and_grade_like_the_local_engine(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray", reason="Ray is an optional extra, not installed: pip install -e '.[ray]'")
    from grader.batch.batch import GradeOptions, grade_all
    from grader.batch.distributed import _resources

    temp = tmp_path_factory.mktemp("ray")  # a short path: Ray's socket paths must fit 107 bytes
    (temp / "ray").mkdir()
    monkeypatch.setenv("RAY_TMPDIR", str(temp))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, _temp_dir=str(temp),
             object_store_memory=80 * 1024 * 1024, log_to_driver=False)
    try:
        assert _resources(ray, 1, 2) == {"num_gpus": 0.5, "num_cpus": 1}
        assert _resources(ray, 1, 1) == {"num_gpus": 1, "num_cpus": 1}
        rubric = parse_rubric(QUICK_RUBRIC)
        options = GradeOptions(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", executor="ray",
                               jobs_per_gpu=2)
        results = grade_all([write_quick_class(tmp_path / "class")], rubric=rubric, sandbox=LocalSandbox(),
                            options=options)
    finally:
        ray.shutdown()
    assert {r.student: r.score for r in results} == QUICK_SCORES
    for result in results:  # one fake GPU shared: each task was told its index; no CUDA, so a CPU batch
        assert result.provenance["ray"]["gpu_ids"] == ["0"] and result.provenance["device"] == "cpu"


# ------------------------------------------------------------------------------ the VOC-sized rubric
def test_the_voc_sized_rubric_is_valid_and_has_vocs_split_sizes() -> None:
    rubric = load_rubric(VOC_SCALE)
    ds = rubric.dataset
    assert (ds.kind, ds.n_train, ds.n_val, ds.size) == ("embedded", 1464, 1449, 320)
    assert ds.max_train_images is None and ds.max_eval_images is None  # the whole split, as VOC
    assert rubric.check("full_training").epochs == 2
    assert rubric.budget("full_training").memory_mb >= 16384
    assert [c.id for c in rubric.checks] == [c.id for c in load_rubric(REPO / "rubric.yaml").checks]


@pytest.mark.slow
def test_a_tiny_preset_of_the_voc_sized_rubric_grades_the_reference_at_320_px(tmp_path: Path) -> None:
    """Its dataset settings as they are (320 px images, 2 epochs, its batch size), with a few images instead
    of VOC's thousands, and only the checks that use the dataset: graded on the CPU end to end."""
    from grader.batch.batch import GradeOptions, grade_all

    rubric = load_rubric(VOC_SCALE)
    ds = dataclasses.replace(rubric.dataset, n_train=8, n_val=4, max_train_images=8, max_eval_images=4)
    keep = [c for c in rubric.checks if c.id in ("model_shapes", "full_training")]
    budgets = dataclasses.replace(rubric.budgets, train=dataclasses.replace(rubric.budgets.train, timeout_s=300))
    tiny = dataclasses.replace(rubric, dataset=ds, checks=tuple(keep), budgets=budgets, threads=1)
    [result] = grade_all([REPO / "reference"], rubric=tiny, sandbox=LocalSandbox(),
                         options=GradeOptions(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache"))
    assert result.status == "graded", result.message
    by_id = {c.id: c for c in result.checks}
    assert by_id["model_shapes"].status == "passed", by_id["model_shapes"].message
    training = by_id["full_training"]
    assert training.status in ("passed", "failed") and "Timed out" not in training.message, training.message
    assert 0.0 <= training.details["miou"] <= 1.0
