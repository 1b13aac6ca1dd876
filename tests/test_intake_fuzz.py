"""Property tests: whatever a class folder, a zip, a Canvas download or a Gradescope metadata file holds,
``discover`` returns one entry per student and never raises, and nothing outside the input is graded.

Each example builds real files (and real zips) in a fresh folder beside an ``outside`` folder that holds a
planted ``segmentation.py``; a Submission whose code is that file means intake followed something out.
"""
from __future__ import annotations

import os
import string
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grader.intake.discover import Rejected, Submission, discover, hash_folder

CODE = "def transpose_conv2d(x, w):\n    return x\n"
LEAK = "LEAKED = 'outside the input'\n"
FUZZ = settings(max_examples=40, deadline=timedelta(seconds=10), database=None,
                suppress_health_check=[HealthCheck.too_slow])

# Name parts a hostile or careless upload uses: traversal, separators, hidden and Windows names, the names
# intake looks for, Canvas's and Gradescope's layouts.
_PARTS = st.sampled_from([".", "..", "", "a", "b", "submission_1", "segmentation.py", "x.ipynb", "y.zip",
                          "submission_metadata.yml", "__MACOSX", ".DS_Store", "._segmentation.py", "C:", "\\",
                          "doe_1_2_segmentation.py", "doe_1_2_..", "doe_LATE_1_3_.", "zoë", "a" * 120])
_NAME = st.one_of(_PARTS, st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0/"),
                                  min_size=1, max_size=20))
_CONTENT = st.one_of(st.just(CODE), st.just("{]"), st.binary(max_size=64), st.just('{"cells": [{"cell_type": '
                                                                                    '"code", "source": [1]}]}'))


@contextmanager
def _world() -> Iterator[tuple[Path, Path]]:
    """A class folder to fill and a workdir, beside an ``outside`` folder that must never be graded."""
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        (top / "outside").mkdir()
        (top / "outside" / "segmentation.py").write_text(LEAK)
        (top / "class").mkdir()
        yield top / "class", top / "work"


def _write(root: Path, parts: list[str], content: str | bytes) -> None:
    """Create one file if the OS allows the name (a file where a folder is wanted just does not happen)."""
    try:
        path = root.joinpath(*parts)
        if not path.resolve().is_relative_to(root.resolve()):
            return  # the builder itself never writes outside; intake's traversal is fed by zips and YAML
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    except (OSError, ValueError):
        pass


def _check(results: list[Submission | Rejected], work: Path, *, single: bool = False) -> None:
    assert isinstance(results, list)
    assert len({r.student for r in results}) == len(results), "student ids must be unique"
    assert not single or len(results) == 1
    for r in results:
        if isinstance(r, Rejected):
            assert isinstance(r.reason, str) and r.reason.strip(), r
            continue
        assert isinstance(r, Submission), r
        assert r.path.resolve().is_relative_to(work.resolve()) and (r.path / "segmentation.py").is_file()
        assert LEAK not in (r.path / "segmentation.py").read_text(errors="replace"), "followed out of the input"
        assert r.content_hash == hash_folder(r.path)


def _run(root: Path, work: Path) -> None:
    _check(discover([root], workdir=work), work)
    _check(discover([root], workdir=work / "single", single=True), work / "single", single=True)


@FUZZ
@given(st.lists(st.tuples(st.lists(_NAME, min_size=1, max_size=5), _CONTENT), max_size=8),
       st.sampled_from(["none", "link_out", "link_loop", "fifo"]))
def test_any_folder_tree_gives_entries_never_an_exception(files: list[tuple[list[str], str | bytes]],
                                                          odd: str) -> None:
    with _world() as (root, work):
        for parts, content in files:
            _write(root, parts, content)
        odd_path = root / "zz_odd"
        if odd == "link_out":
            odd_path.symlink_to(root.parent / "outside")
        elif odd == "link_loop":
            odd_path.symlink_to(odd_path)
        elif odd == "fifo":
            os.mkfifo(odd_path)
        _run(root, work)


_MEMBER = st.lists(_NAME, min_size=1, max_size=4).map("/".join)
_PREFIX = st.sampled_from(["", "/", "../", "class/", "class/../../", "C:/", "a/" * 40])


@pytest.mark.filterwarnings("ignore:Duplicate name")  # a zip naming one entry twice is part of the fuzz
@FUZZ
@given(st.lists(st.tuples(_PREFIX, _MEMBER, _CONTENT, st.sampled_from([0, 0o120777, 0o010644])), max_size=8),
       st.booleans())
def test_any_zip_gives_entries_never_an_exception(members: list[tuple[str, str, str | bytes, int]],
                                                  nested: bool) -> None:
    with _world() as (root, work):
        target = root / "ann.zip" if nested else root.parent / "export.zip"
        with zipfile.ZipFile(target, "w") as zf:
            for prefix, name, content, mode in members:
                info = zipfile.ZipInfo(prefix + name)  # verbatim: no sanitising by zipfile
                info.external_attr = mode << 16
                zf.writestr(info, content)
        if nested:
            _run(root, work)
        else:
            _check(discover([target], workdir=work), work)
            _check(discover([target], workdir=work / "single", single=True), work / "single", single=True)


_CANVAS = st.builds(lambda who, late, uid, sub, orig: f"{who}_{'LATE_' if late else ''}{uid}_{sub}_{orig}",
                    st.sampled_from(["doe", "roe", "zoë"]), st.booleans(), st.integers(0, 3),
                    st.integers(0, 10**30), _NAME)


@FUZZ
@given(st.lists(st.tuples(_CANVAS, _CONTENT), max_size=8))
def test_any_canvas_download_gives_entries_never_an_exception(files: list[tuple[str, str | bytes]]) -> None:
    with _world() as (root, work):
        for name, content in files:
            _write(root, [name], content)
        _run(root, work)


_YAML_TEXT = st.text(st.sampled_from(list(string.ascii_letters[:6] + string.digits[:3] + ":-[]{}&*!?|>'\"#,.~/ \n"
                                          "\t")), max_size=200)
_KEY = st.one_of(st.just("submission_1"), st.just("../outside"), st.just("submission_1/../../outside"),
                 st.just("."), st.just(""), st.just("submission_metadata.yml"), _NAME)
_SCALAR = st.one_of(st.none(), st.text(max_size=12), st.integers(), st.just("2024-13-45 10:00:00"),
                    st.just("2024-03-02 09:30:00.123456789 -08:00"))
_VALUE = st.recursive(_SCALAR, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                      st.dictionaries(st.text(max_size=8), kids, max_size=3)),
                      max_leaves=12)
_RECORD = st.fixed_dictionaries({}, optional={":submitters": st.one_of(
    _VALUE, st.lists(st.fixed_dictionaries({}, optional={":sid": _VALUE, ":email": _VALUE, ":name": _VALUE}),
                     max_size=3)), ":created_at": _VALUE, ":history": _VALUE})


def _yaml_of(data: object) -> Callable[[], str]:
    import yaml

    return lambda: yaml.safe_dump(data, allow_unicode=True)


@FUZZ
@given(st.one_of(_YAML_TEXT, st.dictionaries(_KEY, _RECORD, max_size=5).map(lambda d: _yaml_of(d)())),
       st.sampled_from(["", "a: &a [x, x]\nb: &b [*a, *a]\n", "x: " + "[" * 40 + "]" * 40 + "\n"]))
def test_any_gradescope_metadata_gives_entries_never_an_exception(text: str, extra: str) -> None:
    with _world() as (root, work):
        _write(root, ["submission_1", "segmentation.py"], CODE)
        _write(root, ["submission_2", "hw.ipynb"], "{]")
        _write(root, ["submission_metadata.yml"], text if not extra else extra + text)
        _run(root, work)
