"""Prepared jobs kept between batches: ``CACHE/prepared/<key>/{job,host}``, beside the embedded dataset.

Preparing a batch (``grader.job.prepare``: a process importing torch and torchvision, reading the dataset,
running the reference on every unit case) takes ~5 s on a small machine and is the same for every batch of
the same rubric: a student's repeated self-checks, a resumed or extended class, the test suite. It is kept
only where it is a pure function of what the key holds:

- the rubric as handed to the preparation process, and the device written into job.json;
- the source of the ``grader`` package and of ``reference/`` (any edit of either is a new key);
- the versions of Python, torch, torchvision and numpy (the reference's float results depend on them);
- the dataset: only the EMBEDDED one is cached (generated from the rubric's parameters by the grader's own
  code, already in the key, and from the installation's evaluation secret, whose fingerprint is in the key
  when the job reads the dataset: a new secret is a new entry); a real VOC root is prepared every time,
  since its files may change under it.

The cache lives in the dataset cache folder, which the sandbox never sees, owner-only. An entry is built in a
temporary folder and renamed into place whole, so a crash never leaves half an entry and two graders that
build the same one at once keep one. Delete ``CACHE/prepared`` to drop every entry.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import grader
from grader.checks import KINDS
from grader.core.files import update_tree
from grader.kit import checkout as kit
from grader.data.evalsecret import installation_secret, secret_fingerprint
from grader.rubric import Rubric
from grader.sandbox.base import InfrastructureError

__all__ = ["PREPARED", "cache_key", "eval_key_fingerprint", "installed_version", "reuse_or_build"]

PREPARED = "prepared"
_VERSIONED = ("torch", "torchvision", "numpy")


def installed_version(package: str) -> str:
    """The installed package's version, read from its metadata (importing torch would cost seconds)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def eval_key_fingerprint(cache_dir: Path) -> str:
    """A one-way name of the evaluation key in ``cache_dir`` (made there first if missing): which evaluation
    split this installation's embedded dataset draws. An unreadable key is the staff's, not a student's doing:
    an InfrastructureError that names the file, and nobody is graded."""
    try:
        return secret_fingerprint(installation_secret(cache_dir))
    except OSError as exc:  # EvalSecretError included
        raise InfrastructureError(f"cannot read the evaluation key in {cache_dir}: {exc}") from exc


def cache_key(rubric: Rubric, rubric_text: str, device: str, *, cache_dir: Path | None = None) -> str | None:
    """The entry's name, or None when this job must not be reused (a real VOC root; a job that reads the
    embedded dataset when no ``cache_dir`` names the evaluation secret it is drawn from)."""
    if rubric.dataset.kind != "embedded":
        return None
    digest = hashlib.sha256(f"{device}\0{platform.python_version()}\0".encode())
    if any(KINDS[c.kind].reads_dataset for c in rubric.checks):  # its eval split and hash depend on it
        if cache_dir is None:
            return None
        digest.update(f"eval-secret={eval_key_fingerprint(Path(cache_dir))}\0".encode())
    digest.update("\0".join(f"{p}={installed_version(p)}" for p in _VERSIONED).encode())
    digest.update(rubric_text.encode())
    update_tree(digest, Path(grader.__file__).resolve().parent, (".py",))
    digest.update(kit.expected_source_digest().encode())  # reference/'s source, or a kit's shipped outputs
    return digest.hexdigest()[:32]


def reuse_or_build(key: str, cache_dir: Path, build: Callable[[Path, Path], None], *, job_dir: Path,
                   host_dir: Path) -> None:
    """Fill ``job_dir`` and ``host_dir`` (both replaced) from the entry ``key``, building it first with
    ``build(job, host)`` when it is missing. ``host/host.json`` is written last by the preparation: an entry
    without it is not one."""
    entries = Path(cache_dir) / PREPARED
    entry = entries / key
    if not (entry / "host" / "host.json").is_file():
        entries.mkdir(parents=True, exist_ok=True)
        os.chmod(entries, 0o700)
        building = Path(tempfile.mkdtemp(prefix=".building-", dir=entries))
        try:
            build(building / "job", building / "host")
            _publish(building, entry)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    for source, target in ((entry / "job", job_dir), (entry / "host", host_dir)):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
    os.chmod(host_dir, 0o700)


def _publish(building: Path, entry: Path) -> None:
    """Rename the built folder to ``entry``, unless another grader published a whole entry first. A stale
    folder in the way (a half entry: no host.json) is removed; another grader may publish in between, so
    this looks again after every failed rename."""
    for _ in range(3):
        try:
            os.rename(building, entry)
            return
        except OSError:
            if (entry / "host" / "host.json").is_file():  # theirs is as good as ours
                return
            shutil.rmtree(entry, ignore_errors=True)
    raise InfrastructureError(f"cannot publish the prepared job in {entry}: something keeps a folder there; "
                              f"delete {entry.parent} and grade again")
