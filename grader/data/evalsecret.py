"""The installation's evaluation secret: 32 random bytes in the staff cache folder, made once, never shown.

The embedded dataset's evaluation split is drawn from this secret (``grader.data.shapes``), so nobody can
regenerate its labels: not a student's ``train`` inside the sandbox (the cache folder is one of the sandbox's
hidden paths, and the file is owner-only), not anyone who reads the rubric, the job folder or a result.json
(none of them holds it). Only the trusted side reads it: the preparation process that generates the dataset
and the job cache, which keys its entries by a one-way fingerprint of it.

The file is ``CACHE/eval-secret.key``, mode 0600. ``rotate_secret`` (``grader rotate-key``) draws a new evaluation
split for a new term: a new key takes the name at once, the old one is kept aside as
``eval-secret.key.retired-<UTC time>`` (rename it back to grade on the old split again); the dataset folder and
the prepared job are named after the key's effect, so both are rebuilt.
Every machine that grades the same class must hold the same file (copy it to each node of a Ray cluster, or
share the cache folder); the ``dataset_hash`` in each result's provenance differs where they do not.

Stdlib only: the grader's own process calls it (the job cache key) and must not import numpy for it.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import secrets
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KEY_FILE", "KEY_BYTES", "RETIRED_PREFIX", "EvalSecretError", "Rotation", "default_cache_dir",
           "installation_secret", "rotate_secret", "secret_fingerprint"]

KEY_FILE = "eval-secret.key"
KEY_BYTES = 32
RETIRED_PREFIX = KEY_FILE + ".retired-"  # + the UTC time of the rotation
_WAIT_FOR_WRITER_S = 2.0  # only the no-hard-link fallback has a window where the file exists but is empty


class EvalSecretError(OSError):
    """The key file exists but is not a key (wrong size, not a regular file): the message says what to do."""


def default_cache_dir() -> Path:
    """$SEG_GRADER_CACHE, else ~/.cache/seg-autograder."""
    env = os.environ.get("SEG_GRADER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "seg-autograder"


def installation_secret(cache_dir: Path) -> bytes:
    """The key in ``cache_dir``, created there first if it is missing. Two graders starting at once agree:
    the key is written whole into a private temporary file and then hard-linked to its name, which fails if
    the name exists (the same all-or-nothing test as O_CREAT | O_EXCL, without a moment where the name holds
    a half-written key); the loser reads the winner's key."""
    cache = Path(cache_dir)
    path = cache / KEY_FILE
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    cache.mkdir(parents=True, exist_ok=True)
    _create(cache, path)
    return _read(path)


@dataclass(frozen=True)
class Rotation:
    """What ``rotate_secret`` did: the new key's fingerprint, where the old key was kept (None: there was none)."""

    key_file: Path
    fingerprint: str
    retired: Path | None
    retired_fingerprint: str | None


def rotate_secret(cache_dir: Path, *, now: datetime.datetime | None = None) -> Rotation:
    """A new key for a new term. The old key (if any, and only if it is a valid key: a broken file is an
    ``EvalSecretError``, nothing is moved) is hard-linked to ``eval-secret.key.retired-<UTC time>`` first, then
    a new key, written whole into a private temporary file, replaces the name in one rename: at no moment is
    there no key, or half a key, under the name. Never run it while a batch grades with this cache."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / KEY_FILE
    try:
        old: bytes | None = _read(path)
    except FileNotFoundError:
        old = None
    retired = None
    if old is not None:
        stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%dT%H%M%S.%fZ")
        retired = cache / f"{RETIRED_PREFIX}{stamp}"
        os.link(path, retired)  # FileExistsError rather than overwrite an earlier retired key
    fd, tmp = tempfile.mkstemp(prefix=f".{KEY_FILE}.", dir=cache)  # O_EXCL, mode 0600
    try:
        new = secrets.token_bytes(KEY_BYTES)
        os.write(fd, new)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return Rotation(key_file=path, fingerprint=secret_fingerprint(new), retired=retired,
                    retired_fingerprint=secret_fingerprint(old) if old is not None else None)


def secret_fingerprint(secret: bytes) -> str:
    """A one-way name for the key (for cache keys): equal keys, equal names; it reveals nothing of the key."""
    return hashlib.sha256(b"seg-autograder eval-secret fingerprint\0" + secret).hexdigest()[:16]


def _create(cache: Path, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{KEY_FILE}.", dir=cache)  # O_EXCL, mode 0600
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
        os.close(fd)
        fd = -1
        try:
            os.link(tmp, path)
        except FileExistsError:
            return  # another grader made it first: use theirs
        except OSError:  # a file system without hard links: create the name itself, exclusively
            _create_in_place(path)
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)


def _create_in_place(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: Path) -> bytes:
    deadline = time.monotonic() + _WAIT_FOR_WRITER_S
    while True:
        data = _read_once(path)
        if len(data) == KEY_BYTES:
            return data
        if data or time.monotonic() > deadline:  # an empty file may be a writer between open and write
            raise EvalSecretError(
                f"{path} holds {len(data)} bytes, not a {KEY_BYTES}-byte key. Delete it to make a new key "
                f"(the evaluation split of the embedded dataset will change), or restore the right one.")
        time.sleep(0.01)


def _read_once(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise EvalSecretError(f"{path} cannot be opened as the key ({exc}); delete it to make a new key") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise EvalSecretError(f"{path} is not a regular file; delete it to make a new key")
        if info.st_mode & 0o077:  # made by hand or copied with loose modes: owner-only, as the cache is
            os.fchmod(fd, 0o600)
        return os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
