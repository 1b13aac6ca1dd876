"""Fresh virtual environments and an ordinary user, for the tests that install the grader as users do.

A fresh venv is made with ``python -m venv --without-pip`` and reaches the big dependencies (torch & co.)
through a ``.pth`` line naming this venv's site folder: a line of a .pth is a plain path, its own .pth files
(the checkout's editable install) are never processed, so the fresh venv's ``grader`` is the one pip put
there. pip runs from here with ``--python`` (no network, no build isolation): it takes seconds.

An ordinary user: the tests run as root, so a child switches to ``USER_UID`` (no groups, no capabilities).
It needs a Python it may execute: this one when its installation is open to others, else the system's
``pythonX.Y`` of the same version (the same ABI for torch's extensions).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Callable

USER_UID = 23456  # outside the submissions' reserved range (confine.SUBMISSION_UIDS)
REPO = Path(__file__).resolve().parent.parent


def _open_to_others(path: str) -> bool:
    real = Path(os.path.realpath(path))
    if not real.is_file() or real.stat().st_mode & 0o005 != 0o005:
        return False
    return all(p.stat().st_mode & 0o001 for p in real.parents)


def base_python(*, for_others: bool) -> str | None:
    """A Python of this version to make venvs from (``for_others``: one an ordinary user may run)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
                  f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    for python in candidates:
        if os.path.exists(python) and (not for_others or _open_to_others(python)):
            said = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                  text=True, timeout=60)
            if said.returncode == 0 and said.stdout.strip() == str(sys.version_info[:2]):
                return python
    return None


def fresh_venv(where: Path, python: str) -> Path:
    """A new venv at ``where`` made from ``python``, with this venv's third-party packages on its path
    (not its editable grader); returns its python."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(where)], check=True, capture_output=True, timeout=120)
    exe = where / "bin" / "python"
    site = subprocess.run([str(exe), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    (Path(site) / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return exe


def pip_install(venv_python: Path, source: Path, *, editable: bool = False) -> None:
    """``pip install [-e] SOURCE`` into the venv of ``venv_python``: a real install, from a built wheel."""
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv_python), "install", "-q", "--no-deps",
                           "--no-build-isolation", *(["-e"] if editable else []), str(source)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def checkout_copy(where: Path) -> Path:
    """What ``pip install .`` builds from (pyproject, README, the package), copied so that the build's
    folders are written under the test's tmp_path, not into the checkout."""
    where.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, where / name)
    for name in ("grader", "reference"):  # reference/: staff grade from a checkout (grader.kit.checkout)
        shutil.copytree(REPO / name, where / name, ignore=shutil.ignore_patterns("__pycache__"))
    return where


def open_for_user(path: Path) -> None:
    """``path`` and all it holds readable by others (folders enterable)."""
    for p in [path, *path.rglob("*")]:
        if not p.is_symlink():
            p.chmod(p.stat().st_mode | (0o005 if p.is_dir() or p.stat().st_mode & 0o100 else 0o004))


def user_home(where: Path) -> Path:
    """A folder the ordinary user owns (its HOME, cache and outputs go there)."""
    where.mkdir(parents=True, exist_ok=True)
    os.chown(where, USER_UID, USER_UID)
    open_for_user(where)
    return where


def user_view() -> Path:
    """Where the ordinary user sees its home: tmp_path's parents are root's own (pytest resets them to 0700
    whenever a session starts), so the child binds the home onto an existing folder open to all, in a mount
    namespace of its own (nothing changes for anyone else)."""
    for where in ("/mnt", "/srv", "/opt", "/media"):
        if os.path.isdir(where) and os.stat(where).st_mode & 0o001:
            return Path(where)
    raise RuntimeError("no folder open to all to show the ordinary user its home at")


def become_user(home: Path) -> Callable[[], None]:
    """A preexec_fn: the child sees ``home`` at ``user_view()`` (its own mount namespace), then drops root
    for USER_UID, no supplementary groups, no capabilities."""
    libc = ctypes.CDLL(None, use_errno=True)
    view = str(user_view()).encode()

    def drop() -> None:
        if libc.unshare(0x20000) != 0 or libc.mount(b"none", b"/", None, (1 << 18) | 16384, None) != 0 \
                or libc.mount(str(home).encode(), view, None, 4096, None) != 0:  # NEWNS; private; bind
            raise OSError(ctypes.get_errno(), "cannot show the ordinary user its home")
        os.setgroups([])
        os.setgid(USER_UID)
        os.setuid(USER_UID)
    return drop


def user_env(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


# One unit check under short budgets: what the confinement tests grade (real stages, seconds each).
UNIT_RUBRIC = """\
assignment: one unit check
threads: 1
budgets: {import: {timeout_s: 60}, unit: {timeout_s: 60}}
checks:
  - {id: bilinear_kernel, kind: bilinear_kernel, name: Bilinear kernel, points: 2}
"""
PR_CAPBSET_DROP, CAP_SYS_ADMIN = 24, 21


def without_sys_admin() -> None:
    """A preexec_fn: root without CAP_SYS_ADMIN (as in Docker's default), so unshare() answers EPERM."""
    assert ctypes.CDLL(None, use_errno=True).prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0) == 0
