"""One word for one thing: --executor (with --engine as a deprecated alias), `grader check -j` refused, the
grader's one atomic write and one tree digest."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from grader import cli
from grader.core.files import update_tree, write_atomic


def test_executor_names_where_submissions_are_graded_and_engine_still_works_with_a_warning(capsys) -> None:
    parser = cli.build_parser()
    assert cli._executor(parser.parse_args(["grade", "a", "--out", "o"])) == "pool"
    assert cli._executor(parser.parse_args(["grade", "a", "--out", "o", "--executor", "ray"])) == "ray"
    assert capsys.readouterr().err == ""
    assert cli._executor(parser.parse_args(["grade", "a", "--out", "o", "--engine", "local"])) == "pool"
    err = capsys.readouterr().err
    assert "--engine is deprecated" in err and "write --executor pool" in err
    assert cli._executor(parser.parse_args(["grade", "a", "--out", "o", "--engine", "ray"])) == "ray"
    assert "write --executor ray" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["grade", "a", "--out", "o", "--executor", "local"])  # the old word is not an executor


def test_check_refuses_j_instead_of_ignoring_it(tmp_path: Path, capsys) -> None:
    assert cli.main(["check", str(tmp_path), "-j", "4", "-q"]) == 2
    err = capsys.readouterr().err
    assert "-j" in err and "drop -j" in err
    assert not list(tmp_path.iterdir())  # nothing was graded


def test_write_atomic_replaces_whole_or_not_at_all(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "sub" / "grades.csv"
    write_atomic(path, "old\r\n", mode=0o644)
    assert path.read_bytes() == b"old\r\n" and path.stat().st_mode & 0o777 == 0o644
    write_atomic(path, b"\x00secret")
    assert path.read_bytes() == b"\x00secret" and path.stat().st_mode & 0o777 == 0o600  # owner-only by default

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        write_atomic(path, "new")
    assert path.read_bytes() == b"\x00secret" and sorted(p.name for p in path.parent.iterdir()) == ["grades.csv"]


def test_the_tree_digest_sees_every_source_change_and_nothing_else(tmp_path: Path) -> None:
    def digest(suffixes: tuple[str, ...] | None = (".py",)) -> str:
        h = hashlib.sha256()
        update_tree(h, tmp_path, suffixes)
        return h.hexdigest()

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("n")
    first, everything = digest(), digest(None)
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.py").write_text("compiled")
    (tmp_path / "notes.txt").write_text("changed")
    assert digest() == first and digest(None) != everything
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert digest() != first
    (tmp_path / "pkg" / "a.py").rename(tmp_path / "pkg" / "b.py")  # a rename is a change too
    (tmp_path / "pkg" / "b.py").write_text("x = 1\n")
    assert digest() != first
