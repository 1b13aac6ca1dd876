"""grader.core.cleanup.remove_tree: whatever a sandbox leaves in a folder, the folder goes, and nothing outside it.

Real folders on the real filesystem. The permission cases need a user that permissions apply to: as root
(CI, here) they run in a forked child that has become ``nobody``.
"""
from __future__ import annotations

import os
import shutil
import socket
import stat
import sys
import tempfile
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from grader.core.cleanup import remove_tree

NOBODY = 65534


def _nest(root: Path, depth: int) -> None:
    """``depth`` folders inside each other under ``root``, made by descriptor (the path is past PATH_MAX),
    with a file, a FIFO and a link at the bottom."""
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("file", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
        os.mkfifo("fifo", dir_fd=fd)
        os.symlink("/", "link", dir_fd=fd)
    finally:
        os.close(fd)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder every user can work in (``nobody`` cannot reach pytest's own tmp_path)."""
    base = Path(tempfile.mkdtemp(prefix="cleanup-test-"))
    base.chmod(0o777)
    yield base
    remove_tree(base, ignore_errors=True)


def _as_other_user(work: Callable[[], None]) -> None:
    """Run ``work`` as a user that file permissions apply to: ``nobody`` in a forked child when we are
    root, else here."""
    if os.geteuid() != 0:
        work()
        return
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's outcome is its exit code
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            work()
            code = 0
        except BaseException:  # noqa: BLE001 - reported through the exit code and stderr
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the check run as another user failed (see stderr)"


def test_a_tree_deeper_than_the_recursion_limit_is_removed(tmp_path: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    _nest(root, sys.getrecursionlimit() * 3)
    with pytest.raises(RecursionError):  # the threat: what the grader used before
        shutil.rmtree(root, ignore_errors=True)
    remove_tree(root)
    assert not root.exists()


def test_links_are_removed_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "keep.txt").write_text("grader data")
    root = tmp_path / "out"
    (root / "a").mkdir(parents=True)
    (root / "to_dir").symlink_to(outside)
    (root / "a" / "to_sub").symlink_to(outside / "sub")
    (root / "a" / "to_file").symlink_to(outside / "sub" / "keep.txt")
    (root / "dangling").symlink_to(tmp_path / "nothing")
    remove_tree(root)
    assert not root.exists()
    assert (outside / "sub" / "keep.txt").read_text() == "grader data"


def test_a_link_given_as_the_tree_is_removed_not_its_target(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("x")
    link = tmp_path / "out"
    link.symlink_to(target)
    remove_tree(link)
    assert not link.is_symlink() and (target / "keep").exists()


def test_fifos_sockets_and_files_are_removed_without_blocking(tmp_path: Path) -> None:
    root = tmp_path / "out"
    (root / "x").mkdir(parents=True)
    os.mkfifo(root / "fifo")
    os.mkfifo(root / "x" / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "x" / "sock"))
    sock.close()
    (root / "x" / "f.npy").write_bytes(b"\0" * 10)
    remove_tree(root)
    assert not root.exists()


def test_missing_path_and_plain_file(tmp_path: Path) -> None:
    remove_tree(tmp_path / "never-made")
    file = tmp_path / "file"
    file.write_text("x")
    remove_tree(file)
    assert not file.exists()


def test_names_that_look_like_the_removers_own_are_no_problem(tmp_path: Path) -> None:
    root = tmp_path / "out"
    for i in range(4):  # entries named as the hoisted folders will be, at every level
        (root / f"d{i}" / f".remove_tree-{os.getpid()}-{i}" / "e").mkdir(parents=True)
        (root / f".remove_tree-{os.getpid()}-{i}").write_text("x")
    remove_tree(root)
    assert not root.exists()


def test_folders_the_owner_cannot_read_search_or_write_are_removed(shared_tmp: Path) -> None:
    root = shared_tmp / "out"

    def work() -> None:
        for mode, name in ((0o000, "none"), (0o500, "read_only"), (0o300, "no_read"), (0o600, "no_search")):
            folder = root / "a" / name
            (folder / "inner").mkdir(parents=True)
            (folder / "inner" / "file").write_text("x")
            (folder / "inner").chmod(mode)
            folder.chmod(mode)
        (root / "a").chmod(0o500)
        root.chmod(0o500)
        remove_tree(root)
        assert not os.path.lexists(root)

    _as_other_user(work)


def test_what_cannot_be_removed_raises_oserror_unless_ignored(shared_tmp: Path) -> None:
    root = shared_tmp / "out"
    theirs = root / "theirs"  # made by the caller (root in CI): the other user may not empty it
    theirs.mkdir(parents=True)
    (theirs / "kept").write_text("x")
    theirs.chmod(0o755)
    if os.geteuid() != 0:
        pytest.skip("needs a second user: run as root")
    root.chmod(0o777)
    (root / "mine").mkdir()
    (root / "mine").chmod(0o777)

    def work() -> None:
        (root / "mine" / "deep").mkdir()
        with pytest.raises(OSError) as caught:
            remove_tree(root)
        assert not isinstance(caught.value, RecursionError)
        remove_tree(root, ignore_errors=True)  # the same failure, quietly
        assert not (root / "mine" / "deep").exists()  # everything else went
        assert (theirs / "kept").exists()

    _as_other_user(work)


def test_a_wide_folder_is_removed_in_memory_that_does_not_grow_with_it(tmp_path: Path) -> None:
    peaks = []
    for count in (1_000, 8_000):
        root = tmp_path / f"wide{count}"
        (root / "sub").mkdir(parents=True)
        for i in range(count):  # half in the top folder, half one level down; every 7th a folder
            entry = root / ("sub" if i % 2 else "") / f"entry-with-a-long-name-{i:07d}"
            if i % 7 == 0:
                entry.mkdir()
            else:
                entry.touch()
        tracemalloc.start()
        try:
            remove_tree(root)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert not root.exists()
    assert peaks[1] < 64 * 1024, peaks  # 8,000 names as a list of str would be ~600 KB
    assert peaks[1] < 2 * peaks[0] + 8 * 1024, peaks


def test_never_changes_the_mode_of_something_a_link_points_to(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o500)
    root = tmp_path / "out"
    root.mkdir()
    (root / "link").symlink_to(outside)
    remove_tree(root)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o500
