"""A stage of a grader run by an ordinary user is root of a user namespace: it must hold no capability there,
and no host root may be left in its mount namespace (red team, issue 21: a chroot walk-out reached the TA's
files, rewrote a classmate's result.json and planted code in the TA's grader package).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from grader.sandbox import jail
from venvs import (UNIT_RUBRIC, USER_UID, base_python, become_user, fresh_venv, open_for_user, user_env, user_home,
                   user_view)

ROOT = os.getuid() == 0
REPO = Path(__file__).resolve().parent.parent
# At import: the classic chroot walk-out, a mount and a new namespace; each outcome written to a host folder
# (reachable only after an escape) and into the module, which a check's message then shows.
ESCAPE = '''\
import json as _json, os as _os
_TRIED = {{}}
def _try(name, fn):
    try:
        fn()
        _TRIED[name] = "done"
    except OSError as exc:
        _TRIED[name] = exc.strerror
def _walk_out():
    _os.makedirs("/tmp/.x", exist_ok=True)
    fd = _os.open("/", _os.O_RDONLY)
    _os.chroot("/tmp/.x")
    _os.fchdir(fd)
    for _ in range(64):
        _os.chdir("..")
    _os.chroot(".")
    _TRIED["walked_out"] = _os.path.exists({host_file!r})
    open({marker!r}, "w").write("escaped")
_try("chroot", _walk_out)
import ctypes as _ctypes
_libc = _ctypes.CDLL(None, use_errno=True)
def _mount():
    if _libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) != 0:
        raise OSError(_ctypes.get_errno(), _os.strerror(_ctypes.get_errno()))
def _unshare():
    if _libc.unshare(0x20000) != 0:
        raise OSError(_ctypes.get_errno(), _os.strerror(_ctypes.get_errno()))
_try("mount", _mount)
_try("unshare", _unshare)
_TRIED["host_root_seen"] = _os.path.exists({host_file!r})
_caps = dict(line.split(":\\t") for line in open("/proc/self/status").read().splitlines() if line.startswith("Cap"))
_TRIED["CapEff"] = _caps["CapEff"].strip()
'''
REPORT = '''
def bilinear_kernel(factor):
    raise RuntimeError("TRIED " + _json.dumps(_TRIED))
'''


@pytest.mark.skipif(not ROOT, reason="switches to an ordinary user: needs root")
def test_a_stage_of_an_ordinary_user_s_grader_cannot_walk_out_mount_or_unshare(tmp_path: Path) -> None:
    import subprocess

    python = base_python(for_others=True)
    if python is None:
        pytest.skip(f"no Python {sys.version_info[:2]} an ordinary user may run")
    home = user_home(tmp_path / "ta")
    fresh_venv(home / "venv", python)
    (home / "drop").mkdir()
    (home / "host-only-file").write_text("the host's")  # where the TA, not the stage, can reach
    (home / "mallory").mkdir()
    (home / "unit.yaml").write_text(UNIT_RUBRIC)
    drop, view = become_user(home), user_view()
    marker, host_file = view / "drop" / "escaped", view / "host-only-file"  # the paths as the TA sees them
    (home / "mallory" / "segmentation.py").write_text(ESCAPE.format(marker=str(marker), host_file=str(host_file))
                                                        + REPORT)
    open_for_user(home)
    proc = subprocess.run([str(view / "venv" / "bin" / "python"), "-m", "grader", "grade", str(view / "mallory"),
                           "-q", "--rubric", str(view / "unit.yaml"), "--cache-dir", str(view / "cache"),
                           "--out", str(view / "out"), "-j", "1"],
                          cwd="/", preexec_fn=drop, env={**user_env(view), "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    [result] = [json.loads(p.read_text()) for p in (home / "out").glob("*/result.json")]
    message = result["checks"][0]["message"]
    tried = json.loads(message.split("TRIED ", 1)[1].split("}", 1)[0] + "}")
    assert not (home / "drop" / "escaped").exists() and "walked_out" not in tried, tried
    assert tried["chroot"] != "done" and tried["mount"] != "done" and tried["unshare"] != "done", tried
    assert tried["host_root_seen"] is False and int(tried["CapEff"], 16) == 0, tried
    assert "no capabilities" in result["provenance"]["sandbox"]["isolation"]
    assert USER_UID != 0


def test_dropping_capabilities_in_a_user_namespace_leaves_none(tmp_path: Path) -> None:
    """The primitive on its own, in a forked child that becomes root of a fresh user namespace."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
                os._exit(3)
            jail.drop_capabilities()
            caps = jail.capabilities_now()
            try:
                os.chroot(str(tmp_path))
                code = 2  # chroot still allowed
            except PermissionError:
                code = 0 if not any(caps.values()) else 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status)
    if code == 3:
        pytest.skip("this kernel refuses user namespaces")
    assert code == 0, {1: "raised", 2: "chroot allowed", 4: "capabilities left"}.get(code, code)
