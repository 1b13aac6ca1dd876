"""Failure is data: every fixture submission, graded in one batch, gets exactly its expected outcome."""
from __future__ import annotations

import json

import pytest

from fixture_submissions import expectation, fixture_names

pytestmark = pytest.mark.slow


def _expected_checks(name: str, reference) -> dict[str, tuple[str, float | None]]:
    """check id -> (status, score or None for 'below full points'), defaulting to the reference's outcome."""
    exp = expectation(name)
    out = {}
    for check in reference.checks:
        if "all" in exp:
            status = exp["all"]
        else:
            status = exp.get("checks", {}).get(check.id)
        if status is None:
            out[check.id] = (check.status, check.score)
        elif status == "passed":
            out[check.id] = (status, check.max_score)
        else:
            out[check.id] = (status, exp.get("scores", {}).get(check.id, 0.0 if status != "failed" else None))
    return out


def test_reference_passes_every_check(local_batch) -> None:
    _, results = local_batch
    ref = results["passes_all"]
    assert ref.status == "graded"
    assert [c.status for c in ref.checks] == ["passed"] * len(ref.checks), [c.message for c in ref.checks]
    assert ref.score == ref.max_score


@pytest.mark.parametrize("name", fixture_names())
def test_fixture_outcome(local_batch, name: str) -> None:
    _, results = local_batch
    result, reference = results[name], results["passes_all"]
    exp = expectation(name)
    assert result.status == exp["status"], result.message
    got = {c.id: c for c in result.checks}
    for check_id, (status, score) in _expected_checks(name, reference).items():
        check = got[check_id]
        assert check.status == status, f"{check_id}: {check.status} {check.message}"
        assert check.message, f"{check_id} has no message"
        if score is None:
            assert check.score < check.max_score, f"{check_id} failed but kept full points"
        else:
            assert check.score == pytest.approx(score), f"{check_id}: {check.score} != {score}"
    if "score" in exp:
        assert result.score == exp["score"]


def test_timeout_keeps_the_stages_that_finished(local_batch) -> None:
    _, results = local_batch
    loop = {c.id: c for c in results["infinite_loop"].checks}
    assert loop["full_training"].status == "timeout"
    assert "budget" in loop["full_training"].message
    assert loop["overfit"].status == "passed" and loop["transpose_conv"].status == "passed"


def test_memory_hog_is_reported_as_out_of_memory(local_batch) -> None:
    _, results = local_batch
    check = {c.id: c for c in results["memory_hog"].checks}["full_training"]
    assert "out of memory" in check.message.lower()


def test_fake_results_have_no_effect(local_batch) -> None:
    out, results = local_batch
    assert results["writes_fake_results"].score == results["passes_all"].score
    on_disk = json.loads((out / "writes_fake_results" / "result.json").read_text())
    assert on_disk["score"] == results["passes_all"].score
    assert not (out / "summary.json").read_text().count('"score": 1000')


def test_reference_is_hidden_from_the_sandbox(local_batch) -> None:
    _, results = local_batch
    stolen = results["reads_reference"]
    assert stolen.score == 0
    assert "NOT isolated" not in stolen.provenance["sandbox"]["isolation"]


def test_syntax_error_is_ungradable_with_a_line_number(local_batch) -> None:
    _, results = local_batch
    result = results["syntax_error"]
    assert result.status == "ungradable"
    assert "line" in result.message and "resubmit" in result.message


def test_feedback_shows_the_smallest_failing_case(local_batch) -> None:
    _, results = local_batch
    check = {c.id: c for c in results["fails_transpose_conv_padding"].checks}["transpose_conv"]
    smallest = check.details["smallest_failure"]
    assert smallest["args"]["padding"] > 0  # the bug only shows with padding
    assert set(smallest["shapes"]) >= {"x", "weight"} and smallest["max_abs_error"] > 0
    assert "padding" in check.details["hint"]
    assert 0 < check.score < check.max_score  # the padding-0 cases still earn their share


def test_made_up_loss_history_earns_nothing(local_batch) -> None:
    _, results = local_batch
    check = {c.id: c for c in results["lies_about_overfit_loss"].checks}["overfit"]
    assert check.details["first_epoch_below"] is not None  # the story it told...
    assert check.details["pixel_accuracy"]["train_mode"] < 0.95  # ...and what the host measured
    assert check.score == 0


def test_a_hook_that_answers_with_the_target_earns_nothing(local_batch) -> None:
    _, results = local_batch  # red team B4: the hook removed before the evaluation, the untrained net found out
    check = {c.id: c for c in results["fails_overfit_hook_cheat"].checks}["overfit"]
    assert check.score == 0 and check.details["undone_before_evaluation"] == ["a forward hook on SegNet"]
    assert "parameters are exactly as the grader initialised them" in check.message
