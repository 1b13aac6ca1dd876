"""Removing a folder a sandbox may have written: iteratively, by descriptor, never following a link.

``shutil.rmtree`` recurses once per level: a student who leaves a few thousand nested folders in the out or
scratch folder makes it raise RecursionError, which ``ignore_errors`` does not catch (it is not an OSError),
and a path that deep is longer than PATH_MAX anyway. ``remove_tree`` never builds a path longer than one name
(every call is an ``*at`` call relative to an open folder), holds at most two folders open, and keeps its
work list on disk: a folder found inside a folder being emptied is renamed up into the top folder ("hoisted"),
so nothing it works on is more than two levels deep and its memory does not grow with the depth of the tree
or the number of entries (``os.scandir`` streams a folder of a million names).

Links, FIFOs, sockets and device nodes are unlinked, never opened. A folder the grader owns but cannot read,
search or write (a student's ``chmod 000``) is given back its owner's permissions first.
"""
from __future__ import annotations

import errno
import itertools
import os
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["remove_tree"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OWNER_ALL = stat.S_IRWXU
_NAME_TAKEN = (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR)


class _Removal:
    """One call's state: the hoisting counter and the first error met (raised only if something stayed)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.first_error: OSError | None = None
        self._names = itertools.count()

    def attempt(self, call: Callable[..., object], *args: object, **kwargs: object) -> bool:
        """Run an ``os`` call; True when it changed the tree. A name already gone is no error."""
        try:
            call(*args, **kwargs)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            self.first_error = self.first_error or exc
            return False

    def empty_root(self) -> None:
        """Pass over the top folder until a pass changes nothing: hoisted folders land in it, possibly
        behind the listing's cursor, so the next pass sees them. Each pass removes or hoists something or
        ends the loop; hoisting lowers the sum of depths, so the loop ends."""
        progress = True
        while progress:
            progress = False
            os.lseek(self.root, 0, os.SEEK_SET)  # scandir(fd) lists from the descriptor's position
            with os.scandir(self.root) as entries:
                for entry in entries:
                    if _is_dir(entry):
                        progress |= self.remove_subfolder(entry.name)
                    else:
                        progress |= self.attempt(os.unlink, entry.name, dir_fd=self.root)

    def remove_subfolder(self, name: str) -> bool:
        """Empty the top folder's folder ``name`` (its own folders are hoisted, the rest unlinked) and
        remove it."""
        progress = False
        fd = self.open_folder(name, self.root)
        if fd is not None:
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        if _is_dir(entry):
                            progress |= self.hoist(fd, entry.name)
                        else:
                            progress |= self.attempt(os.unlink, entry.name, dir_fd=fd)
            finally:
                os.close(fd)
        return self.attempt(os.rmdir, name, dir_fd=self.root) or progress

    def hoist(self, parent: int, name: str) -> bool:
        """Move folder ``name`` of ``parent`` into the top folder under a fresh name."""
        fixed = False
        while True:
            target = f".remove_tree-{os.getpid()}-{next(self._names)}"
            try:
                os.rename(name, target, src_dir_fd=parent, dst_dir_fd=self.root)
                return True
            except FileNotFoundError:
                return False
            except OSError as exc:
                if exc.errno in _NAME_TAKEN and _exists(target, self.root):
                    continue  # a student's entry already has that name: take the next one
                if exc.errno in (errno.EACCES, errno.EPERM) and not fixed:
                    fixed = True  # moving a folder rewrites its "..": it must be writable
                    if _grant_owner(name, parent):
                        continue
                # not movable (a mount point, someone else's folder): removable in place only when empty
                if self.attempt(os.rmdir, name, dir_fd=parent):
                    return True
                self.first_error = self.first_error or exc
                return False

    def open_folder(self, name: str, parent: int) -> int | None:
        """An open descriptor of folder ``name`` whose entries can be removed, or None (error kept)."""
        for retry in (False, True):
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                return None
            except PermissionError as exc:
                if retry or not _grant_owner(name, parent):
                    self.first_error = self.first_error or exc
                    return None
                continue
            except OSError as exc:  # replaced by a link or a file since it was listed
                self.first_error = self.first_error or exc
                return None
            _make_writable(fd)
            return fd
        return None


def remove_tree(path: Path | str, *, ignore_errors: bool = False) -> None:
    """Remove ``path`` and everything under it, whatever a sandbox left there; a link at ``path`` itself is
    removed, not followed, and a missing ``path`` is no error.

    Raises the first ``OSError`` met (and only an OSError) when something could not be removed, after
    removing all it could; with ``ignore_errors`` it never raises.
    """
    path = os.fspath(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError:
        if ignore_errors:
            return
        raise
    if not stat.S_ISDIR(info.st_mode):
        _finish(_unlink_quietly(path), ignore_errors)
        return
    try:
        root = _open_root(path, info)
    except OSError as exc:
        _finish(exc, ignore_errors)
        return
    removal = _Removal(root)
    try:
        removal.empty_root()
    finally:
        os.close(root)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        _finish(removal.first_error or exc, ignore_errors)


def _open_root(path: str, info: os.stat_result) -> int:
    try:
        fd = os.open(path, _DIR_FLAGS)
    except PermissionError:
        if info.st_uid != os.geteuid():
            raise
        os.chmod(path, _OWNER_ALL, follow_symlinks=False)
        fd = os.open(path, _DIR_FLAGS)
    _make_writable(fd)
    return fd


def _finish(error: OSError | None, ignore_errors: bool) -> None:
    if error is not None and not ignore_errors:
        raise error


def _unlink_quietly(path: str) -> OSError | None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc
    return None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False  # unlinking it then reports what is wrong


def _exists(name: str, parent: int) -> bool:
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError:
        return False
    return True


def _make_writable(fd: int) -> None:
    """Give an open folder that the grader owns its owner's full permissions (its entries can go)."""
    info = os.fstat(fd)
    if info.st_uid == os.geteuid() and info.st_mode & _OWNER_ALL != _OWNER_ALL:
        try:
            os.fchmod(fd, stat.S_IMODE(info.st_mode) | _OWNER_ALL)
        except OSError:
            pass  # the removal that needed it reports the error


def _grant_owner(name: str, parent: int) -> bool:
    """chmod u+rwx folder ``name`` of ``parent`` when the grader owns it, without following a link."""
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            return False
        os.chmod(name, stat.S_IMODE(info.st_mode) | _OWNER_ALL, dir_fd=parent, follow_symlinks=False)
    except (OSError, NotImplementedError):
        return False
    return True
