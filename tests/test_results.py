"""grader.core.results: writing a result is total over what a judge puts in details; reading one refuses any
malformed file with ValueError (OSError only when it cannot be read at all)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grader.core.results import (
    MAX_DETAIL_DEPTH, MAX_DETAIL_VALUES, CheckResult, SubmissionResult, json_safe, read_result, write_result,
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(details: dict[str, Any], **fields: Any) -> CheckResult:
    base = dict(id="overfit", name="Overfit one example", score=0.0, max_score=10.0, status="failed",
                visibility="visible", message="The loss became NaN.", details=details)
    return CheckResult(**{**base, **fields})


def _result(*checks: CheckResult, **fields: Any) -> SubmissionResult:
    base = dict(student="ada", status="graded", score=0.0, max_score=10.0 * len(checks), checks=checks,
                provenance={"graded_at": "now"})
    return SubmissionResult(**{**base, **fields})


def test_nan_and_infinity_in_details_are_written_as_strings_float_reads_back(tmp_path: Path) -> None:
    details = {"losses": [2.3, float("nan"), float("inf")], "max_abs_error": float("-inf"),
               "nested": {"x": [np.float32("nan"), np.float64(1.5), np.int64(7), np.bool_(True)]}}
    path = write_result(tmp_path, _result(_check(details)))
    json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} written"))
    back = read_result(path).checks[0].details
    assert back["losses"][0] == 2.3 and back["losses"][1:] == ["nan", "inf"]
    assert math.isnan(float(back["losses"][1])) and float(back["max_abs_error"]) == -math.inf
    assert back["nested"]["x"][1:] == [1.5, 7, True]


def test_non_json_values_deep_values_and_cycles_are_cut_to_strings(tmp_path: Path) -> None:
    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no")

    class Wordy:
        def __str__(self) -> str:
            return "x" * 10**6

    deep: list[Any] = []
    node = deep
    for _ in range(100_000):  # deeper than json.dump could recurse
        node.append([])
        node = node[0]
    cycle: list[Any] = []
    cycle.append(cycle)
    cycle.append(cycle)
    details = {"array": np.arange(3), "set": {1, 2}, "bytes": b"\xff", "obj": Hostile(), 3: "int key",
               (1, 2): "tuple key", "deep": deep, "cycle": cycle, "long": Wordy(), "path": Path("/p"),
               "text": "y" * 10**5}
    path = write_result(tmp_path, _result(_check(details), provenance={"weird": Hostile()}))
    back = read_result(path)
    got = back.checks[0].details
    assert got["array"] == "[0 1 2]" and got["obj"] == "<Hostile>" and got["3"] == "int key"
    assert got["(1, 2)"] == "tuple key" and got["path"] == "/p" and back.provenance["weird"] == "<Hostile>"
    assert len(got["long"]) < 3000 and "cut" in got["long"] and got["text"] == "y" * 10**5  # JSON text is kept
    text = json.dumps(got["deep"])
    assert "nested deeper" in text and text.count("[") <= MAX_DETAIL_DEPTH
    assert "cut" in json.dumps(got["cycle"])


def test_a_cycle_is_bounded_by_the_value_budget() -> None:
    wide: list[Any] = []
    wide.extend([wide] * 50)  # 50 ** depth values unbounded: the budget stops it
    safe = json_safe(wide)
    text = json.dumps(safe)
    assert "too many values" in text and text.count("[") <= MAX_DETAIL_VALUES + 1


def test_a_score_that_is_not_a_finite_number_is_refused_by_name(tmp_path: Path) -> None:
    for bad in (float("nan"), float("inf"), None, "3", 10**400):
        with pytest.raises(ValueError, match="overfit"):
            write_result(tmp_path, _result(_check({}, score=bad), score=0.0))
    assert not (tmp_path / "result.json").exists()


def test_round_trip_of_a_plain_result(tmp_path: Path) -> None:
    result = _result(_check({"losses": [1.0, 0.5]}, score=7.5, status="passed", message="ok"),
                     _check({}, id="model_shapes", score=np.float64(2.0), max_score=np.int64(5)))
    back = read_result(write_result(tmp_path, result))
    assert back.checks[0] == result.checks[0]
    assert back.checks[1].score == 2.0 and back.checks[1].max_score == 5
    assert back.student == "ada" and back.provenance == {"graded_at": "now"}


def _valid_json() -> dict[str, Any]:
    return _result(_check({"a": 1})).to_json()


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(schema=True), lambda d: d.update(schema=2), lambda d: d.pop("student"),
    lambda d: d.update(score=float("nan")), lambda d: d.update(score=None), lambda d: d.update(score=True),
    lambda d: d.update(status="passed"), lambda d: d.update(checks={}), lambda d: d.update(checks=[1]),
    lambda d: d.update(provenance=[]), lambda d: d.update(unknown=1), lambda d: d.update(message=3),
    lambda d: d["checks"][0].update(status="great"), lambda d: d["checks"][0].update(visibility=["x"]),
    lambda d: d["checks"][0].update(details=[]), lambda d: d["checks"][0].pop("name"),
    lambda d: d["checks"][0].update(extra=1), lambda d: d["checks"][0].update(max_score=10**400),
    lambda d: d["checks"][0].update(details={"x": json.loads("[" * 30 + "1" + "]" * 30)}),
])
def test_malformed_result_files_raise_value_error(tmp_path: Path, mutate: Any) -> None:
    data = _valid_json()
    mutate(data)
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data, allow_nan=True))
    with pytest.raises(ValueError):
        read_result(path)


@pytest.mark.parametrize("text", [b"", b"\xff\xfe", b"[1]", b"NaN", b"[" * 100_000, b'{"schema": 1', b"null"])
def test_unparseable_result_files_raise_value_error(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "result.json"
    path.write_bytes(text)
    with pytest.raises(ValueError):
        read_result(path)


def test_a_missing_result_file_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_result(tmp_path / "result.json")


ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | st.binary(max_size=4)
    | st.builds(np.float32, st.floats(width=32)) | st.builds(np.int64, st.integers(-(2**63), 2**63 - 1)),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5) | st.integers() | st.floats(), inner, max_size=4),
    max_leaves=30)


@FUZZ
@given(ANY_VALUE)
def test_fuzz_any_details_are_written_and_read_back(details: Any) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = write_result(Path(folder), _result(_check({"d": details}), provenance={"p": details}))
        text = path.read_text()
        json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} written"))
        assert read_result(path).checks[0].details.keys() == {"d"}


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=25)


@FUZZ
@given(st.binary(max_size=300) | JSON_VALUES.map(lambda v: json.dumps(v).encode())
       | st.dictionaries(st.sampled_from(sorted(_valid_json())) | st.text(max_size=4), JSON_VALUES).map(
           lambda d: json.dumps({**_valid_json(), **d}).encode()))
def test_fuzz_read_result_raises_only_value_error(content: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "result.json"
        path.write_bytes(content)
        try:
            result = read_result(path)
        except ValueError:
            return
        assert isinstance(result, SubmissionResult) and all(isinstance(c, CheckResult) for c in result.checks)
