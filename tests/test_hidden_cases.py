"""Hidden cases no one can compute at home (issue 22): a withheld check's cases are drawn from its rubric seed
combined with the installation key, so the rubric's seed and the kit's own case generator reproduce none of them,
and a new key draws new ones; the combined seed is written nowhere a student looks."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from grader.checks import KINDS
from grader.data.evalsecret import KEY_FILE
from grader.job.folder import build_job, unit_cases, withheld_seed
from grader.rubric import parse_rubric

RUBRIC = """
assignment: t
checks:
  - {id: tc, kind: transpose_conv, name: T, points: 10, seed: 1, cases: 3}
  - {id: tc_hidden, kind: transpose_conv, name: H, points: 5, visibility: hidden, seed: 1001, cases: 4, edge_cases: false}
  - {id: mi_later, kind: mean_iou, name: M, points: 5, visibility: after_due_date, seed: 1003, cases: 3, edge_cases: false}
"""


def _cache(tmp_path: Path, name: str, key: bytes) -> Path:
    cache = tmp_path / name
    cache.mkdir()
    (cache / KEY_FILE).write_bytes(key)
    (cache / KEY_FILE).chmod(0o600)
    return cache


def _inputs(plan, check_id: str) -> list[bytes]:
    return [np.load(plan.job_dir / f"unit/{case.id}-{name}.npy").tobytes()
            for case in plan.cases[check_id] for name in case.arrays]


def test_hidden_case_inputs_change_with_the_installation_key(tmp_path: Path) -> None:
    rubric = parse_rubric(RUBRIC)
    one = build_job(rubric, job_dir=tmp_path / "one", cache_dir=_cache(tmp_path, "a", b"a" * 32))
    two = build_job(rubric, job_dir=tmp_path / "two", cache_dir=_cache(tmp_path, "b", b"b" * 32))
    again = build_job(rubric, job_dir=tmp_path / "again", cache_dir=_cache(tmp_path, "a2", b"a" * 32))
    assert _inputs(one, "tc") == _inputs(two, "tc")  # public cases: the rubric's, as the kit has them
    for hidden in ("tc_hidden", "mi_later"):
        assert not set(_inputs(one, hidden)) & set(_inputs(two, hidden)), hidden  # a new key: all new cases
        assert _inputs(one, hidden) == _inputs(again, hidden)  # same key, same cases: same grade


def test_the_rubric_seed_and_the_kits_generator_reproduce_no_hidden_case(tmp_path: Path) -> None:
    rubric = parse_rubric(RUBRIC)
    plan = build_job(rubric, job_dir=tmp_path / "job", cache_dir=_cache(tmp_path, "c", b"k" * 32))
    for check_id in ("tc_hidden", "mi_later"):
        check = rubric.check(check_id)
        at_home = KINDS[check.kind].cases(check)  # what a student computes from a leaked rubric seed
        home = {a.tobytes() for case in at_home for a in case.arrays.values()}
        assert home and not home & set(_inputs(plan, check_id))
    job_json = (plan.job_dir / "job.json").read_text()
    for check_id in ("tc_hidden", "mi_later"):
        assert str(withheld_seed(b"k" * 32, rubric.check(check_id))) not in job_json


def test_withheld_cases_need_the_key() -> None:
    rubric = parse_rubric(RUBRIC)
    with pytest.raises(ValueError, match="installation key"):
        unit_cases(rubric)
    visible = dataclasses.replace(rubric, checks=rubric.checks[:1])
    assert list(unit_cases(visible)) == ["tc"]  # a kit's rubric (visible checks only) needs none


def test_no_hidden_seed_check_id_or_stage_name_in_a_pre_release_report(tmp_path: Path) -> None:
    """The "Seeds" and "Time per stage" tables show nothing of a withheld check before release (a seed lets a
    student compute its cases, a `.retry` stage says a run landed just under the bar); after release the
    after-due-date check's appear, the hidden check's never."""
    from report_samples import PASSING, sample_result

    from grader.core.results import write_result
    from grader.report import render_student_report

    result = sample_result(PASSING)
    provenance = {**result.provenance, "seeds": {"transpose_conv": 1, "metrics_hidden": 987651, "full_training": 987652},
                  "durations_s": {"import": 0.8, "unit": 3.2, "overfit": 14.5, "full_training": 61.0,
                                  "full_training.retry": 58.0, "unit.withheld": 2.5}}
    write_result(tmp_path / "s", dataclasses.replace(result, provenance=provenance))
    before = render_student_report(tmp_path / "s", released=False).read_text(encoding="utf-8")
    for leak in ("metrics_hidden", "987651", "987652", "full_training", ".retry", "unit.withheld", "61.0 s", "58.0 s",
                 "2.5 s"):
        assert leak not in before, leak
    assert "Seeds" in before and "14.5 s" in before and "18.5 s" in before  # the visible ones, and their total
    after = render_student_report(tmp_path / "s", released=True).read_text(encoding="utf-8")
    assert "987652" in after and "full_training.retry" in after and "58.0 s" in after
    for leak in ("metrics_hidden", "987651", "unit.withheld", "2.5 s"):  # that stage holds a hidden check too
        assert leak not in after, leak
