"""grader.core.outputs: what a sandbox wrote is hostile input. read_stage and the accessors return plain data or
raise OutputError, whatever the bytes, and never block.

Real files: FIFOs, sockets, links and folders where outputs are expected, and Hypothesis-made JSON and
.npy content. Every example runs under a short alarm, so a blocking open fails the test instead of hanging.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grader.core.outputs import MAX_ARRAY_NDIM, MAX_JSON_DEPTH, MAX_JSON_INT, OutputError, StageOutputs, read_stage

ALARM_S = 5.0  # generous on a loaded 2-core machine; a blocked open() never returns at all
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Blocked(BaseException):
    """Raised by the alarm: the reader blocked (a BaseException, so no except clause can swallow it)."""


@contextlib.contextmanager
def alarm(seconds: float = ALARM_S) -> Iterator[None]:
    def ring(signum: int, frame: Any) -> None:
        raise Blocked(f"still reading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _stage_json(records: dict[str, Any]) -> str:
    return json.dumps({"stage": "unit", "records": records}, allow_nan=True)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _npy_with_header(header: str, data: bytes) -> bytes:
    """A .npy file (version 1.0) with ``header`` as its header text, whatever it says."""
    text = header.encode("latin1", "replace")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


def _read_everything(out: Path, stage: str = "unit") -> None:
    """read_stage and every accessor on every key: each returns plain data or raises OutputError."""
    try:
        outputs = read_stage(out, stage)
    except OutputError as exc:
        assert str(exc)
        return
    assert isinstance(outputs.records, dict)
    for key in [*list(outputs.records)[:20], "absent"]:
        rec = outputs.record(key)
        assert rec is None or isinstance(rec, dict)
        try:
            value = outputs.number(key)
            assert isinstance(value, float)
        except OutputError:
            pass
        try:
            arr = outputs.array(key)
            assert isinstance(arr, np.ndarray) and arr.dtype.kind in "biuf" and arr.ndim <= MAX_ARRAY_NDIM
        except OutputError:
            pass


# ---- non-regular files --------------------------------------------------------------------------------

def _plant(kind: str, path: Path, outside: Path) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif kind == "folder":
        path.mkdir()
    elif kind == "link":
        path.symlink_to(outside)
    elif kind == "link_to_fifo":
        os.mkfifo(outside.with_suffix(".fifo"))
        path.symlink_to(outside.with_suffix(".fifo"))
    elif kind == "dangling":
        path.symlink_to(path.with_name("nothing-here"))


KINDS = ("fifo", "socket", "folder", "link", "link_to_fifo", "dangling")


@pytest.mark.parametrize("kind", KINDS)
def test_a_non_regular_stage_json_is_an_output_error_and_never_blocks(tmp_path: Path, kind: str) -> None:
    out, outside = tmp_path / "out", tmp_path / "secret.json"
    out.mkdir()
    outside.write_text(_stage_json({"c": {"ok": True, "kind": "number", "value": 1.0}}))
    _plant(kind, out / "unit.json", outside)
    with alarm(), pytest.raises(OutputError):
        read_stage(out, "unit")


@pytest.mark.parametrize("kind", KINDS)
def test_a_non_regular_array_file_is_an_output_error_and_never_blocks(tmp_path: Path, kind: str) -> None:
    out, outside = tmp_path / "out", tmp_path / "secret.npy"
    out.mkdir()
    outside.write_bytes(_npy(np.ones(3, dtype=np.float32)))
    (out / "unit.json").write_text(_stage_json({"c": {"ok": True, "kind": "array", "file": "c.npy"}}))
    _plant(kind, out / "c.npy", outside)
    outputs = read_stage(out, "unit")
    with alarm(), pytest.raises(OutputError):
        outputs.array("c")


def test_a_missing_stage_json_is_an_empty_stage(tmp_path: Path) -> None:
    assert read_stage(tmp_path, "unit").records == {}
    assert read_stage(tmp_path / "no-such-folder", "unit").records == {}


# ---- JSON: depth and numbers --------------------------------------------------------------------------

def test_deep_nesting_is_refused_before_parsing(tmp_path: Path) -> None:
    (tmp_path / "unit.json").write_text('{"records": {"c": ' + "[" * 200_000 + "]" * 200_000 + "}}")
    with pytest.raises(OutputError, match="nested"):
        read_stage(tmp_path, "unit")
    shallow = "[" * (MAX_JSON_DEPTH - 3) + "]" * (MAX_JSON_DEPTH - 3)
    (tmp_path / "unit.json").write_text('{"records": {"c": {"v": ' + shallow + "}}}")
    assert read_stage(tmp_path, "unit").record("c") is not None


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path: Path) -> None:
    text = "[{" * 5000 + '\\"' + "\\\\"
    (tmp_path / "unit.json").write_text(_stage_json({"c": {"ok": False, "error": text}}))
    assert read_stage(tmp_path, "unit").record("c") == {"ok": False, "error": text}


def test_nan_and_infinity_are_honest_values(tmp_path: Path) -> None:
    """The runner writes NaN for a diverging loss and for the nan mIoU of an all-void image."""
    (tmp_path / "unit.json").write_text(_stage_json({
        "m": {"ok": True, "kind": "number", "value": float("nan")},
        "i": {"ok": True, "kind": "number", "value": float("-inf")},
        "losses": {"ok": True, "losses": [1.0, float("nan"), float("inf")]}}))
    outputs = read_stage(tmp_path, "unit")
    assert math.isnan(outputs.number("m")) and outputs.number("i") == -math.inf
    assert outputs.record("losses")["losses"][0] == 1.0


@pytest.mark.parametrize("literal", ["1e999", "-1e400", str(10**400), str(2**63), "-" + str(2**64)])
def test_numbers_too_large_make_the_stage_unreadable(tmp_path: Path, literal: str) -> None:
    (tmp_path / "unit.json").write_text('{"records": {"c": {"ok": true, "kind": "number", "value": ' + literal + "}}}")
    with pytest.raises(OutputError, match="not valid JSON"):
        read_stage(tmp_path, "unit")


def test_the_largest_integer_allowed_is_read(tmp_path: Path) -> None:
    (tmp_path / "unit.json").write_text(_stage_json({"c": {"ok": True, "kind": "number", "value": MAX_JSON_INT}}))
    assert read_stage(tmp_path, "unit").number("c") == float(MAX_JSON_INT)


def test_number_refuses_what_is_not_a_number_even_when_built_in_code(tmp_path: Path) -> None:
    outputs = StageOutputs(tmp_path, {"b": {"value": True}, "s": {"value": "1"}, "big": {"value": 10**400},
                                      "r": "not a dict"})
    for key in ("b", "s", "big", "r", "absent"):
        with pytest.raises(OutputError):
            outputs.number(key)


def test_lone_surrogates_are_made_writable(tmp_path: Path) -> None:
    (tmp_path / "unit.json").write_text('{"records": {"c\\udc80": {"error": "bad \\ud800 text"}}}')
    records = read_stage(tmp_path, "unit").records
    for key, rec in records.items():
        (key + rec["error"]).encode("utf-8")  # a report writes them as UTF-8


@pytest.mark.parametrize("content", [b"\xff\xfe{}", b"", b"null", b"[]", b'{"records": []}', b"{" * 10,
                                     b'{"records": {}} trailing', '{"records": {}}'.encode("utf-16")])
def test_malformed_stage_json(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "unit.json").write_bytes(content)
    with pytest.raises(OutputError):
        read_stage(tmp_path, "unit")


# ---- arrays -------------------------------------------------------------------------------------------

def _stage_with_array(out: Path, content: bytes) -> StageOutputs:
    (out / "unit.json").write_text(_stage_json({"c": {"ok": True, "kind": "array", "file": "c.npy"}}))
    (out / "c.npy").write_bytes(content)
    return read_stage(out, "unit")


@pytest.mark.parametrize("arr", [np.arange(24, dtype=np.int64).reshape(2, 3, 4), np.ones((2, 2), dtype=">f8"),
                                 np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
                                 np.zeros((0, 21, 4), dtype=np.float32), np.array(3.5), np.array([True, False])])
def test_plain_arrays_come_back_equal_in_native_byte_order(tmp_path: Path, arr: np.ndarray) -> None:
    got = _stage_with_array(tmp_path, _npy(arr)).array("c")
    assert got.shape == arr.shape and got.dtype.kind == arr.dtype.kind and got.dtype.isnative
    np.testing.assert_array_equal(got, arr)
    got[...] = 0  # the grader's own copy, writable


@pytest.mark.parametrize("arr", [np.array([1 + 2j]), np.array(["text"]), np.array([b"by"]),
                                 np.zeros(2, dtype=[("a", "<i4")]), np.zeros(2, dtype="V8"),
                                 np.zeros(2, dtype="datetime64[s]"), np.zeros((1,) * (MAX_ARRAY_NDIM + 1))])
def test_odd_arrays_are_refused(tmp_path: Path, arr: np.ndarray) -> None:
    with pytest.raises(OutputError):
        _stage_with_array(tmp_path, _npy(arr)).array("c")


@pytest.mark.parametrize("header", [
    "{'descr': '<f8', 'fortran_order': False, 'shape': (1 << 40,), }",  # a lying header: no allocation
    "{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (3, -2), }",
    "{'descr': 'O', 'fortran_order': False, 'shape': (1,), }",
    "{'descr': [('a', '<f8', (2,))], 'fortran_order': False, 'shape': (1,), }",
    "{'descr': '<f8', 'fortran_order': 'yes', 'shape': (1,), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",  # 16 bytes said, 8 given
    "{'descr': '<f8', 'fortran_order': False, 'shape': (), 'extra': 1}",
    "[" * 3000 + "]" * 3000,
    "__import__('os').system('false')",
])
def test_hostile_headers_are_refused(tmp_path: Path, header: str) -> None:
    with pytest.raises(OutputError):
        _stage_with_array(tmp_path, _npy_with_header(header, b"\0" * 8)).array("c")


def test_truncated_and_padded_arrays_are_refused(tmp_path: Path) -> None:
    good = _npy(np.arange(10, dtype=np.float32))
    for content in (good[:-1], good + b"\0", good[:60]):
        with pytest.raises(OutputError):
            _stage_with_array(tmp_path, content).array("c")


def test_array_file_names_cannot_leave_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "x.npy").write_bytes(_npy(np.ones(2)))
    for name in ("../x.npy", "/etc/passwd", "x", "", None, 5, ["x.npy"], "a/b.npy"):
        outputs = StageOutputs(out, {"c": {"file": name}})
        with pytest.raises(OutputError):
            outputs.array("c")


# ---- fuzzing ------------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25)
RECORD = st.fixed_dictionaries({}, optional={
    "ok": JSON_VALUES, "kind": st.sampled_from(["array", "number", "other"]) | JSON_VALUES,
    "value": JSON_VALUES, "file": st.sampled_from(["c.npy", "d.npy", "../c.npy", "c.npy/"]) | JSON_VALUES,
    "error": JSON_VALUES})
STAGE = st.one_of(
    st.dictionaries(st.text(max_size=8) | st.just("c"), RECORD | JSON_VALUES, max_size=6).map(
        lambda records: {"stage": "unit", "records": records}),
    JSON_VALUES)


@contextlib.contextmanager
def _fresh_out() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-out-") as folder:
        yield Path(folder)


@FUZZ
@given(STAGE)
def test_fuzz_arbitrary_json_values(value: Any) -> None:
    with _fresh_out() as out, alarm():
        (out / "unit.json").write_text(json.dumps(value, allow_nan=True))
        (out / "c.npy").write_bytes(_npy(np.arange(3, dtype=np.float32)))
        _read_everything(out)


@FUZZ
@given(st.binary(max_size=400) | STAGE.map(lambda v: json.dumps(v).encode()).flatmap(
    lambda b: st.integers(0, len(b)).map(lambda cut: b[:cut])))
def test_fuzz_arbitrary_bytes_as_stage_json(content: bytes) -> None:
    with _fresh_out() as out, alarm():
        (out / "unit.json").write_bytes(content)
        _read_everything(out)


DESCRS = st.sampled_from(["<f4", ">f8", "<f2", "|b1", "|u1", "<i8", ">i2", "O", "<c16", "|V8", "<U3", "|S2",
                          "<M8[D]", "<m8[s]", "|O", "", "<f16", "<i0", "x"]) | st.text(max_size=6)
SHAPES = st.lists(st.integers(-3, 5) | st.integers(-(2**70), 2**70), max_size=MAX_ARRAY_NDIM + 2).map(tuple)


@st.composite
def npy_contents(draw: st.DrawFn) -> bytes:
    how = draw(st.sampled_from(["header", "truncated", "random"]))
    if how == "random":
        return draw(st.binary(max_size=300))
    if how == "truncated":
        dtype = draw(st.sampled_from(["<f4", "<i8", "|b1", ">f8"]))
        arr = np.zeros(draw(st.lists(st.integers(0, 4), max_size=4)), dtype=dtype)
        good = _npy(arr)
        return good[:draw(st.integers(0, len(good)))] + draw(st.binary(max_size=8))
    descr = draw(DESCRS | st.lists(st.tuples(st.text(max_size=3), DESCRS), max_size=3))
    header = f"{{'descr': {descr!r}, 'fortran_order': {draw(st.booleans())!r}, 'shape': {draw(SHAPES)!r}, }}"
    return _npy_with_header(header, draw(st.binary(max_size=200)))


@FUZZ
@given(npy_contents())
def test_fuzz_arbitrary_npy_content(content: bytes) -> None:
    with _fresh_out() as out, alarm():
        (out / "unit.json").write_text(_stage_json({"c": {"ok": True, "kind": "array", "file": "c.npy"}}))
        (out / "c.npy").write_bytes(content)
        _read_everything(out)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["unit.json", "c.npy"]), st.sampled_from(KINDS))
def test_fuzz_non_regular_files_in_place_of_outputs(where: str, kind: str) -> None:
    with _fresh_out() as out, alarm():
        (out / "unit.json").write_text(_stage_json({"c": {"ok": True, "kind": "array", "file": "c.npy"}}))
        (out / where).unlink(missing_ok=True)
        _plant(kind, out / where, out.parent / f"{out.name}-target")
        try:
            _read_everything(out)
        finally:
            for leftover in out.parent.glob(f"{out.name}-target*"):
                leftover.unlink()
