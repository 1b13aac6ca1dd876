"""Withheld unit checks run in a stage of their own (red team B5): the visible unit checks' process never holds a
withheld case, so a student's function that remembers every input it was called with and raises them in a
visible check's message (shown at once: report, Gradescope, grader serve) shows none of the withheld ones."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from grader.checks import stage_of
from grader.checks.base import WITHHELD_UNIT_STAGE
from grader.job.folder import WITHHELD_CONFIG, build_job, case_secret, unit_cases
from grader.rubric import parse_rubric

REPO = Path(__file__).resolve().parent.parent
RUBRIC = """
assignment: t
threads: 1
checks:
  - {id: tc, kind: transpose_conv, name: T, points: 10, seed: 1, cases: 3, edge_cases: false}
  - {id: tc_hidden, kind: transpose_conv, name: H, points: 5, visibility: hidden, seed: 1001, cases: 4,
     edge_cases: false}
  - {id: bk, kind: bilinear_kernel, name: B, points: 10}
  - {id: mi_later, kind: mean_iou, name: M, points: 5, visibility: after_due_date, seed: 1003, cases: 2,
     edge_cases: false}
"""

# The red team's attack (/tmp/redteam/gs): every transpose_conv2d input remembered, all of them raised from a
# visible check's function. Each remembered input is named by a digest of its bytes.
ATTACK = '''
import hashlib as _hl, json as _json
_SEEN = []
_ref_tc = transpose_conv2d
def transpose_conv2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    _SEEN.append("in-" + _hl.sha1(x.numpy().tobytes()).hexdigest()[:12])
    return _ref_tc(x, weight, bias, stride, padding, output_padding)
def bilinear_kernel(factor):
    raise RuntimeError("LEAK " + _json.dumps(_SEEN))
'''


def _digest(array) -> str:
    return "in-" + hashlib.sha1(array.tobytes()).hexdigest()[:12]


def test_withheld_unit_checks_get_a_stage_of_their_own_and_their_config_stays_out_of_job_json(
        tmp_path: Path, cache_dir: Path) -> None:
    rubric = parse_rubric(RUBRIC)
    assert [stage_of(c) for c in rubric.checks] == ["unit", WITHHELD_UNIT_STAGE, "unit", WITHHELD_UNIT_STAGE]
    assert rubric.stages() == ["import", "unit", WITHHELD_UNIT_STAGE]
    assert rubric.budget(WITHHELD_UNIT_STAGE) == rubric.budget("unit")
    plan = build_job(rubric, job_dir=tmp_path / "job", cache_dir=cache_dir)
    job_json = (plan.job_dir / "job.json").read_text()
    stages = json.loads(job_json)["stages"]
    assert [c["id"] for c in stages["unit"]["checks"]] == ["tc", "bk"]
    assert stages[WITHHELD_UNIT_STAGE] == {"sealed": WITHHELD_CONFIG}
    assert "tc_hidden" not in job_json and "mi_later" not in job_json  # no case id, no scalar argument of theirs
    sealed = json.loads((plan.job_dir / WITHHELD_CONFIG).read_text())
    assert [c["id"] for c in sealed["checks"]] == ["tc_hidden", "mi_later"]
    assert (plan.job_dir / WITHHELD_CONFIG).parent == plan.job_dir / "unit"  # sealed with the case arrays


def test_a_visible_message_carries_no_withheld_input(tmp_path: Path, cache_dir: Path) -> None:
    from grader.batch.batch import GradeOptions, grade_all
    from grader.sandbox.local import LocalSandbox

    rubric = parse_rubric(RUBRIC)
    sub = tmp_path / "class" / "leaker"
    sub.mkdir(parents=True)
    (sub / "segmentation.py").write_text((REPO / "reference" / "segmentation.py").read_text() + ATTACK)
    [result] = grade_all([tmp_path / "class"], rubric=rubric, sandbox=LocalSandbox(),
                         options=GradeOptions(out_dir=tmp_path / "out", cache_dir=cache_dir))
    checks = {c.id: c for c in result.checks}
    cases = unit_cases(rubric, secret=case_secret(rubric, cache_dir))
    visible = {_digest(case.arrays["x"]) for case in cases["tc"]}
    hidden = {_digest(case.arrays["x"]) for case in cases["tc_hidden"]}
    assert visible and hidden and not visible & hidden
    leak = checks["bk"].message
    assert "LEAK" in leak, leak  # the attack ran: its visible message lists what it remembered ...
    shown = set(json.loads(leak[leak.index("["):leak.index("]") + 1]))
    assert shown == visible, leak  # ... the visible cases' inputs, and no withheld one
    shown_anywhere = " ".join(c.message + json.dumps(c.details, default=str) for c in result.checks
                              if rubric.check(c.id).visibility == "visible")
    assert not any(h in shown_anywhere for h in hidden)
    assert checks["tc"].status == checks["tc_hidden"].status == "passed"  # both still graded, each in its stage
    assert checks["mi_later"].status == "passed"
    assert set(result.provenance["durations_s"]) == {"import", "unit", WITHHELD_UNIT_STAGE}


def test_the_withheld_unit_stage_is_named_in_no_pre_release_report(tmp_path: Path) -> None:
    import dataclasses

    from report_samples import PASSING, sample_result

    from grader.core.results import write_result
    from grader.report import render_student_report

    result = sample_result(PASSING)  # its rubric withholds full_training (after_due_date) and metrics_hidden
    provenance = {**result.provenance, "durations_s": {"import": 0.8, "unit": 3.2, WITHHELD_UNIT_STAGE: 2.7}}
    write_result(tmp_path / "s", dataclasses.replace(result, provenance=provenance))
    before = render_student_report(tmp_path / "s", released=False).read_text(encoding="utf-8")
    assert WITHHELD_UNIT_STAGE not in before and "2.7 s" not in before
    assert "3.2 s" in before and "4.0 s" in before  # the visible stages, and their total
