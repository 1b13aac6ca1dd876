"""The local sandbox as TAs and students really run it: as an ordinary user at a terminal, from a site-packages
install, on a kernel that refuses namespaces. Real grader processes (``python -m grader``), real pip installs
into fresh venvs, a real pty; nothing mocked.

- A submission that opens the terminal at import time (/dev/tty, every /dev/pts/N, the TA's own pty path) and
  writes a forged grade line plus a clipboard escape: the TA's pty never receives it (minimal /dev).
- A staff batch never grades unconfined: where the kernel refuses namespaces it is an infrastructure fault
  (exit 3) naming the cause; only ``grader check`` runs unconfined there, and says so.
- ``pip install .`` and ``pip install -e .`` confine the same way, and show a stage none of the host-only modules.
"""
from __future__ import annotations

import fcntl
import json
import os
import pty
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

from grader.kit.handout import build_kit
from grader.rubric import parse_rubric
from venvs import (REPO, UNIT_RUBRIC, USER_UID, base_python, become_user, checkout_copy, fresh_venv, open_for_user,
                   pip_install, user_env, user_home, user_view, without_sys_admin)

ROOT = os.getuid() == 0
# The kit's: two torch threads (OpenMP) and a net, as the real rubric has: the old fall-open path had unshared
# the PID namespace, after which no thread can be created ("no output (the stage stopped)" for SegNet).
KIT_RUBRIC = UNIT_RUBRIC.replace("threads: 1", "threads: 2") + \
    "  - {id: model_shapes, kind: model_shapes, name: SegNet output shapes, points: 10, seed: 5}\n"
FORGED = b"Graded alice 100/100 FORGED"
# At import time: every terminal it can name, the TA's pty path (the test writes it in), the forged line and an
# OSC 52 escape that would put a shell command on the TA's clipboard.
FORGER = '''\
import glob as _glob, os as _os
for _path in ["/dev/tty", "/dev/console", *sorted(_glob.glob("/dev/pts/*")), *sorted(_glob.glob("/dev/tty*")),
              {host_pty!r}]:
    try:
        _fd = _os.open(_path, _os.O_WRONLY | _os.O_NOCTTY | _os.O_NONBLOCK)
    except OSError:
        continue
    try:
        _os.write(_fd, b"\\r\\n{forged}\\r\\n\\x1b]52;c;ZWNobyBwd25lZA==\\x07")
    except OSError:
        pass
    _os.close(_fd)
'''
HOST_ONLY_PROBE = '''\
import os as _os, grader as _grader
_shown = sorted(_os.listdir(_os.path.dirname(_grader.__file__)))
if [n for n in _shown if n in ("intake", "data", "job", "batch", "kit", "report", "rubric.py", "cli.py")]:
    raise RuntimeError(f"host-only grader modules are visible: {_shown}")
'''


def _submission(where: Path, prelude: str) -> Path:
    where.mkdir(parents=True)
    head, future, body = (REPO / "reference" / "segmentation.py").read_text().rpartition("from __future__ import annotations\n")
    (where / "segmentation.py").write_text(head + future + prelude + body)
    return where


def _result(out: Path) -> dict:
    [path] = out.glob("*/result.json")
    return json.loads(path.read_text())


@pytest.mark.skipif(not ROOT, reason="switches to an ordinary user: needs root")
def test_a_stage_cannot_reach_the_terminal_of_a_ta_running_as_an_ordinary_user(tmp_path: Path) -> None:
    python = base_python(for_others=True)
    if python is None:
        pytest.skip(f"no Python {sys.version_info[:2]} an ordinary user may run")
    home = user_home(tmp_path / "ta")
    fresh_venv(home / "venv", python)
    master, slave = pty.openpty()
    host_pty = os.ttyname(slave)
    os.chown(host_pty, USER_UID, -1)  # the TA's own terminal, as a login gives it
    _submission(home / "alice", FORGER.format(host_pty=host_pty, forged=FORGED.decode()))
    (home / "unit.yaml").write_text(UNIT_RUBRIC)
    open_for_user(home)
    drop, view = become_user(home), user_view()  # the TA sees its home at `view`

    def at_the_terminal() -> None:  # a login shell: its own session, the pty as controlling terminal
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        drop()

    proc = subprocess.Popen([str(view / "venv" / "bin" / "python"), "-m", "grader", "check", str(view / "alice"), "-q",
                             "--rubric", str(view / "unit.yaml"), "--cache-dir", str(view / "cache"),
                             "--out", str(view / "out")],
                            stdin=slave, stdout=slave, stderr=slave, cwd="/", preexec_fn=at_the_terminal,
                            env={**user_env(view), "PYTHONPATH": str(REPO)})
    os.close(slave)
    seen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the slave is gone
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert proc.wait(timeout=300) == 0, seen.decode(errors="replace")
    finally:
        proc.kill()
        reader.join(timeout=30)
        os.close(master)
    assert b"2 / 2 points" in seen, seen.decode(errors="replace")  # the check ran, and its summary reached us
    assert FORGED not in seen and b"\x1b]52" not in seen
    isolation = _result(home / "out")["provenance"]["sandbox"]["isolation"]
    assert "in a user namespace" in isolation and "no terminal of the host" in isolation, isolation


@pytest.mark.skipif(not ROOT, reason="drops a capability from root's bounding set")
def test_a_staff_batch_never_grades_unconfined_only_a_self_check_does_and_says_so(tmp_path: Path) -> None:
    sub = _submission(tmp_path / "bob", "")
    (tmp_path / "unit.yaml").write_text(UNIT_RUBRIC)
    common = [str(sub), "-q", "--rubric", str(tmp_path / "unit.yaml"), "--cache-dir", str(tmp_path / "cache")]
    graded = subprocess.run([sys.executable, "-m", "grader", "grade", *common, "--out", str(tmp_path / "staff")],
                            preexec_fn=without_sys_admin, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert graded.returncode == 3, graded.stdout + graded.stderr
    result = _result(tmp_path / "staff")
    assert result["status"] == "infrastructure_error" and result["score"] == 0
    assert "could not confine the stage" in result["message"] and "kernel refused namespaces" in result["message"]
    checked = subprocess.run([sys.executable, "-m", "grader", "check", *common, "--out", str(tmp_path / "self")],
                             preexec_fn=without_sys_admin, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 / 2 points" in checked.stdout and "ran WITHOUT the sandbox" in checked.stdout
    assert "NOT isolated: the kernel refused namespaces" in _result(tmp_path / "self")["provenance"]["sandbox"][
        "isolation"]


@pytest.mark.parametrize("install", ["kit", "checkout-editable"])
def test_a_site_packages_install_confines_like_an_editable_one(tmp_path: Path, install: str) -> None:
    """The student kit installed with ``pip install KIT`` (grader in site-packages, where binding its files
    once failed read-only and the sandbox fell open) and staff's ``pip install -e`` checkout confine alike."""
    python = base_python(for_others=False)
    assert python is not None
    venv = fresh_venv(tmp_path / "venv", python)
    if install == "kit":
        source, rubric_args, points = build_kit(tmp_path / "KIT", rubric=parse_rubric(KIT_RUBRIC)), [], 12
    else:
        source = checkout_copy(tmp_path / "src")
        (tmp_path / "unit.yaml").write_text(UNIT_RUBRIC)
        rubric_args, points = ["--rubric", str(tmp_path / "unit.yaml")], 2
    pip_install(venv, source, editable=install != "kit")
    where = subprocess.run([str(venv), "-c", "import grader; print(grader.__file__)"], capture_output=True,
                           text=True, timeout=60, cwd=tmp_path)
    site = f"venv/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
    assert where.stdout.strip() == str(tmp_path / (site if install == "kit" else "src") / "grader" / "__init__.py")
    sub = _submission(tmp_path / "carol", HOST_ONLY_PROBE)
    done = subprocess.run([str(venv), "-m", "grader", "check", str(sub), "-q", *rubric_args,
                           "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    result = _result(tmp_path / "out")
    assert (result["status"], result["score"]) == ("graded", points), [  # the probe found no host module
        (c["id"], c["message"]) for c in result["checks"]]
    isolation = result["provenance"]["sandbox"]["isolation"]
    assert "NOT isolated" not in isolation and "an allow-list root" in isolation, isolation
