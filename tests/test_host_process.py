"""The grader's own process never imports torch: trusted torch work (expected outputs, reading the dataset)
runs in the preparation subprocess, and what it leaves for the host is hidden from the sandbox."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grader.checks.overfit import cross_entropy
from grader.rubric import Rubric, load_rubric, parse_rubric, rubric_yaml
from grader.sandbox.base import InfrastructureError

REPO = Path(__file__).resolve().parent.parent
UNIT_ONLY = """\
assignment: unit checks only
threads: 1
budgets: {import: {timeout_s: 60}, unit: {timeout_s: 60}}
checks:
  - {id: transpose_conv, kind: transpose_conv, name: Transpose conv, points: 6, seed: 1, cases: 4}
  - {id: bilinear_kernel, kind: bilinear_kernel, name: Bilinear kernel, points: 2}
  - {id: mean_iou, kind: mean_iou, name: Mean IoU, points: 2, seed: 3, cases: 3}
"""

# Imports what `grader grade` imports, grades one copy of the reference, then says what it imported.
_GRADE_AND_REPORT = """\
import json, sys
from pathlib import Path
import grader.cli, grader.batch.batch, grader.batch.pipeline, grader.report, grader.report.export
from grader.batch.batch import GradeOptions, grade_all
from grader.rubric import parse_rubric
from grader.sandbox.local import LocalSandbox

work = Path(sys.argv[1])
[result] = grade_all([work / "class"], rubric=parse_rubric((work / "rubric.yaml").read_text()),
                     sandbox=LocalSandbox(), options=GradeOptions(out_dir=work / "out", cache_dir=work / "cache"))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "reference"))
print(json.dumps({"score": result.score, "max": result.max_score, "status": result.status, "heavy": heavy,
                  "torch_version": result.provenance.get("torch_version")}))
"""


@pytest.fixture(scope="module")
def unit_rubric() -> Rubric:
    return parse_rubric(UNIT_ONLY)


def test_importing_the_grader_imports_no_torch() -> None:
    code = ("import sys, grader.cli, grader.batch.batch, grader.batch.pipeline, grader.report, grader.report.export, grader.checks.overfit,"
            " grader.data.dataset, grader.job.prepare, grader.batch.distributed\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'reference')))")
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow  # three interpreters import torch: the preparation and two sandbox stages
def test_grading_a_class_never_imports_torch_in_the_grader_process(tmp_path: Path) -> None:
    (tmp_path / "class" / "alice").mkdir(parents=True)
    (tmp_path / "class" / "alice" / "segmentation.py").write_text((REPO / "reference" / "segmentation.py").read_text())
    (tmp_path / "rubric.yaml").write_text(UNIT_ONLY)
    done = subprocess.run([sys.executable, "-c", _GRADE_AND_REPORT, str(tmp_path)], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["status"] == "graded" and seen["score"] == seen["max"] == 10, seen
    assert seen["heavy"] == [], f"the grader process imported {seen['heavy'][:5]}"
    assert seen["torch_version"] == importlib.metadata.version("torch")  # read without importing torch


_REGRADE_AND_SAY = """\
import json, sys
from grader.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "heavy": sorted(m for m in sys.modules
                                                if m.split(".")[0] in ("numpy", "jinja2", "matplotlib", "torch")),
                  "engines": sorted(m for m in sys.modules if m in ("grader.sandbox.local", "grader.sandbox.container.engine",
                                                                    "docker"))}))
"""


def test_an_unchanged_regrade_imports_neither_numpy_nor_jinja2_nor_a_sandbox_engine(tmp_path: Path) -> None:
    """Resuming a finished class costs the interpreter's start: no judge, no templates, no plots, no engine
    (so it works while the Docker daemon is down)."""
    (tmp_path / "class" / "bob").mkdir(parents=True)
    (tmp_path / "class" / "bob" / "segmentation.py").write_text(
        (REPO / "student_template" / "segmentation.py").read_text())
    (tmp_path / "rubric.yaml").write_text(UNIT_ONLY)
    argv = ["grade", str(tmp_path / "class"), "--out", str(tmp_path / "out"), "--rubric", str(tmp_path / "rubric.yaml"),
            "--cache-dir", str(tmp_path / "cache"), "-q"]
    seen = []
    for _ in range(2):  # graded, then unchanged
        done = subprocess.run([sys.executable, "-c", _REGRADE_AND_SAY, *argv], check=False, cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        seen.append(json.loads(done.stdout.splitlines()[-1]))
    assert seen[0]["code"] == seen[1]["code"] == 0
    assert "numpy" in seen[0]["heavy"] and "jinja2" in seen[0]["heavy"]  # the first run graded and drew
    assert seen[1]["heavy"] == [], f"the unchanged regrade imported {seen[1]['heavy'][:5]}"
    assert seen[0]["engines"] == ["grader.sandbox.local"] and seen[1]["engines"] == []  # no engine made at all
    assert len(list((tmp_path / "out").glob("*/report.html"))) == 1 and (tmp_path / "out" / "grades.csv").is_file()
    # an unchanged class needs no engine: with Docker asked for and no daemon to be found, it still succeeds
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    done = subprocess.run([sys.executable, "-c", _REGRADE_AND_SAY, *argv, "--sandbox", "docker"], check=False,
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    said = json.loads(done.stdout.splitlines()[-1])
    assert said["code"] == 0 and said["engines"] == [], done.stderr
    # while a class that needs grading says the daemon is missing (and grades nobody to zero)
    (tmp_path / "class" / "bob" / "segmentation.py").write_text("# changed\n")
    done = subprocess.run([sys.executable, "-c", _REGRADE_AND_SAY, *argv, "--sandbox", "docker"], check=False,
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert json.loads(done.stdout.splitlines()[-1])["code"] != 0, done.stdout + done.stderr
    assert "Docker Engine not reachable" in done.stderr and "nothing was scored" in done.stderr
    [kept] = (tmp_path / "out").glob("*/result.json")
    assert json.loads(kept.read_text())["status"] == "graded"  # the earlier result stays, nobody got a zero


def test_host_only_folder_is_hidden_from_the_sandbox(tmp_path: Path, unit_rubric: Rubric, cache_dir: Path) -> None:
    from grader.batch.grading import prepare_batch
    from grader.sandbox.base import SandboxRequest
    from grader.sandbox.local import LocalSandbox

    batch = prepare_batch(unit_rubric, sandbox=LocalSandbox(), scratch=tmp_path, cache_dir=cache_dir)
    host = tmp_path / "host"
    assert host.resolve() in batch.hidden_paths
    assert (host / "expected" / "transpose_conv-0.npy").is_file() and (host / "rubric.yaml").is_file()
    assert not any(batch.ctx.plan.job_dir.rglob("expected*")), "expected outputs leaked into the job folder"
    assert host.stat().st_mode & 0o077 == 0  # where namespaces fail and the sandbox runs as nobody
    code = f"import os; p = {str(host)!r}; print(sorted(os.listdir(p)) if os.path.isdir(p) else [])"
    for name in ("out", "submission"):
        (tmp_path / name).mkdir()
    request = SandboxRequest(submission_dir=tmp_path / "submission", job_dir=batch.ctx.plan.job_dir,
                             out_dir=tmp_path / "out", stage="import", timeout_s=30, memory_mb=1024,
                             hidden_paths=batch.hidden_paths)
    run = LocalSandbox().run_argv([sys.executable, "-c", code], request)
    assert run.exit_code == 0 and run.stdout.strip() == "[]", (run.stdout, run.stderr)


@pytest.mark.slow
def test_prepared_job_equals_the_one_built_in_process(tmp_path: Path, test_rubric: Rubric, cache_dir: Path) -> None:
    from grader.job.expected import expected_outputs
    from grader.job.folder import build_job
    from grader.job.prepare import prepare_job

    prepared = prepare_job(test_rubric, job_dir=tmp_path / "job", host_dir=tmp_path / "host", cache_dir=cache_dir)
    here = build_job(test_rubric, job_dir=tmp_path / "job-here", cache_dir=cache_dir)
    assert prepared.plan.dataset_hash == here.dataset_hash != ""
    assert {k: sorted(v) for k, v in prepared.plan.host.items()} == {  # the 2x2 adds the seen/unseen pairs
        "overfit": ["image", "target", "unseen_image", "unseen_target"],
        "full_training": ["eval_images", "eval_labels", "seen_image", "seen_target", "unseen_image", "unseen_target"],
        "model_shapes": ["dependent_sizes"]}
    for check_id, arrays in here.host.items():
        for name, b in arrays.items():
            a = prepared.plan.host[check_id][name]
            assert a.dtype == b.dtype and np.array_equal(a, b), (check_id, name)
    assert [c.id for cs in prepared.plan.cases.values() for c in cs] == [c.id for cs in here.cases.values() for c in cs]
    want = expected_outputs(here.cases)
    assert prepared.expected.keys() == want.keys()
    for case_id, exp in want.items():
        got = prepared.expected[case_id].value
        if isinstance(exp.value, np.ndarray):
            assert got.dtype == exp.value.dtype and np.array_equal(got, exp.value), case_id
        else:
            assert isinstance(got, float) and (got == exp.value or (np.isnan(got) and np.isnan(exp.value))), case_id
    assert any(isinstance(e.value, float) and np.isnan(e.value) for e in prepared.expected.values())  # nan kept
    job_files = sorted(p.relative_to(tmp_path / "job") for p in (tmp_path / "job").rglob("*"))
    assert job_files == sorted(p.relative_to(tmp_path / "job-here") for p in (tmp_path / "job-here").rglob("*"))


def test_a_failed_preparation_is_an_infrastructure_error_with_its_reason(tmp_path: Path) -> None:
    from grader.job.prepare import prepare_job

    rubric = parse_rubric(f"assignment: a\ndataset: {{kind: voc, voc_root: {str(tmp_path / 'nowhere')!r}}}\n"
                          "checks:\n  - {id: o, kind: overfit, name: O, points: 1}\n")
    with pytest.raises(InfrastructureError, match="PASCAL VOC 2012 not found"):
        prepare_job(rubric, job_dir=tmp_path / "job", host_dir=tmp_path / "host")


def test_rubric_survives_the_handover_also_when_edited_in_code() -> None:
    rubric = load_rubric(REPO / "tests" / "rubric_small.yaml")
    public = dataclasses.replace(rubric, checks=tuple(c for c in rubric.checks if c.visibility == "visible"))
    for r in (rubric, public, load_rubric(REPO / "rubric.yaml")):
        assert dataclasses.replace(parse_rubric(rubric_yaml(r)), source_hash=r.source_hash) == r


@pytest.mark.parametrize("scale", [1.0, 80.0])  # 80: exp() would overflow without the log-sum-exp shift
def test_numpy_cross_entropy_equals_torch(scale: float) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 21, 7, 9)) * scale
    target = rng.integers(0, 21, size=(2, 7, 9))
    target[rng.random(target.shape) < 0.3] = 255
    want = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(target), ignore_index=255).item()
    assert cross_entropy(logits.astype(np.float32), target.astype(np.uint8)) == pytest.approx(want, rel=1e-6)
    assert cross_entropy(logits, target) == pytest.approx(want, rel=1e-12)


def test_numpy_cross_entropy_of_an_all_void_mask_is_nan_like_torch() -> None:
    logits, target = np.zeros((1, 3, 2, 2)), np.full((1, 2, 2), 255)
    want = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(target), ignore_index=255).item()
    assert np.isnan(want) and np.isnan(cross_entropy(logits, target))
