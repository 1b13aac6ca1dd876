"""Work ahead of the call (issue 22): while the student's module is imported, the unit cases' inputs cannot be
read, neither from the job folder nor from the runner's frames; the runner hands them over after the import.
Torch work done at import is recorded and flagged for staff review, never scored. The runner runs here as the
sandbox runs it (``python -m grader.runner``), without a sandbox around it: the seal is the runner's own."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grader.checks import KINDS, stage_of
from grader.checks.base import WITHHELD_UNIT_STAGE
from grader.checks.verdict import JudgeContext, StageResult
from grader.core.outputs import read_stage
from grader.job.expected import expected_outputs
from grader.job.folder import build_job
from grader.rubric import StageBudget, parse_rubric
from grader.sandbox.base import SandboxRun

REPO = Path(__file__).resolve().parent.parent
RUBRIC = """
assignment: t
threads: 1
checks:
  - {id: tc, kind: transpose_conv, name: T, points: 10, seed: 1, cases: 4}
  - {id: tc_hidden, kind: transpose_conv, name: H, points: 5, visibility: hidden, seed: 9, cases: 3, edge_cases: false}
  - {id: cm, kind: confusion_matrix, name: C, points: 1, seed: 2, cases: 2}
"""
PROBE = '''
import json as _json, os as _os, sys as _sys
from pathlib import Path as _Path
import numpy as _np

def _probe():
    found = {"readable": [], "denied": [], "frame_arrays": [], "job": None}
    frame, job = _sys._getframe(), None
    while frame is not None:
        for name, value in list(frame.f_locals.items()):
            if isinstance(value, _Path) and (value / "job.json").is_file():
                job = value
            inner = list(value.values()) if isinstance(value, dict) else list(value) if isinstance(value, (list, tuple)) else [value]
            for v in inner[:10000]:
                if isinstance(v, (_np.ndarray, torch.Tensor)) or isinstance(v, (bytes, bytearray)) and len(v) > 64:
                    found["frame_arrays"].append(f"{frame.f_code.co_name}:{name}")
        frame = frame.f_back
    found["job"] = str(job)
    for path in sorted(job.rglob("*")):
        if path.is_file():
            try:
                path.read_bytes()
                found["readable"].append(str(path.relative_to(job)))
            except OSError:
                found["denied"].append(str(path.relative_to(job)))
    _Path(_os.environ["SEG_TEST_PROBE"]).write_text(_json.dumps(found))

_probe()
'''


def _run(tmp_path: Path, cache_dir: Path, extra: str, stage: str = "unit") -> tuple[Path, object]:
    rubric = parse_rubric(RUBRIC)
    plan = build_job(rubric, job_dir=tmp_path / "job", cache_dir=cache_dir)
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "segmentation.py").write_text((REPO / "reference" / "segmentation.py").read_text() + extra)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "SEG_TEST_PROBE": str(tmp_path / "probe.json"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "grader.runner", "--job", str(plan.job_dir), "--out", str(out),
                           "--submission", str(sub), "--stage", stage], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, (rubric, plan)


@pytest.mark.parametrize("stage", ["unit", WITHHELD_UNIT_STAGE])
def test_an_import_time_search_finds_no_case_input_and_the_cases_arrive_after(tmp_path: Path, cache_dir: Path,
                                                                              stage: str) -> None:
    out, (rubric, plan) = _run(tmp_path, cache_dir, PROBE, stage=stage)
    probe = json.loads((tmp_path / "probe.json").read_text())
    case_files = {a for cs in plan.cases.values() for c in cs for a in c.arrays} and \
        {str(p.relative_to(plan.job_dir)) for p in (plan.job_dir / "unit").rglob("*") if p.is_file()}
    assert case_files and probe["job"] == str(plan.job_dir)  # it found the job folder through the frames ...
    assert set(probe["denied"]) == case_files  # ... and could open none of the case files (nor the withheld config)
    assert "job.json" in probe["readable"] and not any(r.startswith("unit/") for r in probe["readable"])
    assert probe["frame_arrays"] == []  # and no frame of the runner held an input
    records = json.loads((out / f"{stage}.json").read_text())["records"]
    assert records["import_ops"]["seal"] == {"sealed": True}
    mine = [c for c in rubric.checks if stage_of(c) == stage]
    ids = [c.id for check in mine for c in plan.cases[check.id]]
    others = [c.id for cs in plan.cases.values() for c in cs if c.id not in ids]
    assert ids and others and not set(others) & set(records)  # the other unit stage's cases never ran here
    assert all(records[i]["ok"] for i in ids), {i: records[i].get("error") for i in ids}
    for check in mine:  # and the cases handed over after the import are the job's: full marks
        result = _judge(check, out, plan)
        assert (result.status, result.score) == ("passed", check.points), result.message


def _judge(check, out: Path, plan) -> object:
    run = SandboxRun(exit_code=0, timed_out=False, out_of_memory=False, duration_s=1.0, stdout="", stderr="",
                     output_truncated=False, isolation="")
    ctx = JudgeContext(plan=plan, expected=expected_outputs(plan.cases), num_classes=21)
    stage = stage_of(check)
    return KINDS[check.kind].judge(check, StageResult(stage, run, read_stage(out, stage), StageBudget()), ctx).result


def test_torch_work_at_import_is_flagged_for_review_not_scored(tmp_path: Path, cache_dir: Path) -> None:
    demo = "\n_demo = F.conv_transpose2d(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 3, 3))  # a notebook's demo cell\n"
    out, (rubric, plan) = _run(tmp_path, cache_dir, demo)
    result = _judge(rubric.check("tc"), out, plan)
    assert (result.status, result.score) == ("passed", 10)
    assert result.details["review"] is True and "torch:conv_transpose2d" in result.details["import_detected"]
    assert "Flagged for staff review (not scored)" in result.message and "imported" in result.message
    unguarded = _judge(rubric.check("cm"), out, plan)
    assert "review" not in unguarded.details


@pytest.mark.parametrize("stage", ["import"])
def test_every_stage_seals_the_case_files(tmp_path: Path, cache_dir: Path, stage: str) -> None:
    _run(tmp_path, cache_dir, PROBE, stage=stage)
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe["denied"] and all(d.startswith("unit/") for d in probe["denied"])
