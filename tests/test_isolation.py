"""Students cannot reach each other through the kernel, nor the grader's host-only code (local sandbox).

Real stages through LocalSandbox, as the grader runs them: each submission has a uid of its own, each stage
its own IPC namespace and one size-capped tmpfs for everything it writes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grader.sandbox.base import SandboxRequest, SandboxRun
from grader.sandbox.local import LocalSandbox, disk_mb

PROGRAMS = Path(__file__).parent / "sandbox_programs"
ROOT = os.getuid() == 0
IPC_OBJECTS = ("msg", "shm", "mq", "user_key", "session_key")


def _request(base: Path, student: str, **overrides: object) -> SandboxRequest:
    folders = {name: base / student / name for name in ("job", "out", "submission")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    settings = dict(submission_dir=folders["submission"], job_dir=folders["job"], out_dir=folders["out"],
                    stage="import", timeout_s=30, memory_mb=1024)
    return SandboxRequest(**{**settings, **overrides})


def _run(sandbox: LocalSandbox, request: SandboxRequest, program: str, *args: str) -> SandboxRun:
    """``program`` from the submission folder (the only place of the host the stage sees it in)."""
    shutil.copy(PROGRAMS / program, request.submission_dir / program)
    return sandbox.run_argv([sys.executable, str(request.submission_dir / program), *args], request)


@pytest.fixture
def host_ipc_cleaned():
    """On a sandbox without IPC namespaces the probe's objects land in the host's: removed after the test."""
    yield
    subprocess.run([sys.executable, str(PROGRAMS / "ipc_probe.py"), "clean"], capture_output=True, timeout=30)


def _host_has_shm_key() -> bool:
    listing = subprocess.run(["ipcs", "-m"], capture_output=True, text=True, check=True).stdout
    return "0x5e6a0514" in listing


@pytest.mark.usefixtures("host_ipc_cleaned")
def test_ipc_objects_and_keys_left_by_one_student_are_not_found_by_the_next(tmp_path: Path) -> None:
    sandbox = LocalSandbox()
    try:
        first = _request(tmp_path, "a")
        left = _run(sandbox, first, "ipc_probe.py", "leave")
        report = json.loads(left.stdout)
        usable = [o for o in IPC_OBJECTS if report["created"][o] == "created"]
        assert {"msg", "shm", "mq"} <= set(usable), report  # the kernel gives every stage these
        assert all(report["found_by_self"][o] != "none" for o in usable), report  # the probe can see them
        sandbox.end_submission(first.submission_dir)
        later = json.loads(_run(sandbox, _request(tmp_path, "b"), "ipc_probe.py", "find").stdout)
    finally:
        sandbox.close()
    assert {o: later[o] for o in usable} == dict.fromkeys(usable, "none"), later
    assert "IPC namespaces" in left.isolation, left.isolation
    if ROOT:  # keys are per uid: a uid of its own per submission is what keeps them apart
        assert {"user_key", "session_key"} <= set(usable), report
        assert "new session keyring" in left.isolation


@pytest.mark.usefixtures("host_ipc_cleaned")
def test_shared_memory_does_not_outlive_the_stage_on_the_host(tmp_path: Path) -> None:
    sandbox = LocalSandbox()
    try:
        report = json.loads(_run(sandbox, _request(tmp_path, "a"), "ipc_probe.py", "leave").stdout)
    finally:
        sandbox.close()
    assert report["found_by_self"]["shm"] == "left-by-student-a", report
    deadline = time.monotonic() + 10  # the kernel frees a dead IPC namespace from a work queue
    while _host_has_shm_key() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _host_has_shm_key(), "the stage's shared-memory segment is still in the host's `ipcs -m`"


def test_the_stages_of_one_submission_share_a_uid_and_submissions_graded_at_once_do_not(tmp_path: Path) -> None:
    if not ROOT:
        pytest.skip("uids of their own need the grader to be root (else the stage is the grader's user)")
    sandbox = LocalSandbox()
    try:
        a, b = _request(tmp_path, "a"), _request(tmp_path, "b")
        uids = [json.loads(_run(sandbox, r, "identity.py").stdout)["uid"] for r in (a, a, b)]
        sandbox.end_submission(a.submission_dir)
        sandbox.end_submission(b.submission_dir)
    finally:
        sandbox.close()
    assert uids[0] == uids[1] != uids[2], uids
    assert all(100_000 <= uid < 200_000 for uid in uids), uids


def test_a_fork_heavy_student_does_not_make_a_neighbour_fail(tmp_path: Path) -> None:
    """At -j 2: one student holds its whole process limit while another stage forks a few children."""
    if not ROOT:
        pytest.skip("the process limit is per uid: uids of their own need the grader to be root")
    sandbox = LocalSandbox()
    bomb_request = _request(tmp_path, "bomb", timeout_s=25, max_processes=64)
    bomb: list[SandboxRun] = []
    thread = threading.Thread(target=lambda: bomb.append(_run(sandbox, bomb_request, "fork_bomb.py")))
    thread.start()
    try:
        program = str(bomb_request.submission_dir / "fork_bomb.py")
        deadline = time.monotonic() + 20
        while _count(program) < 60 and time.monotonic() < deadline:  # the bomb holds its limit (64)
            time.sleep(0.2)
        assert _count(program) >= 60, "the fork bomb never reached its process limit"
        neighbour = _run(sandbox, _request(tmp_path, "neighbour", max_processes=64), "spawn_children.py", "8")
        still_bombing = thread.is_alive()
    finally:
        thread.join(timeout=60)
        sandbox.close()
    assert still_bombing, "the neighbour ran after the fork bomb: nothing was contended"
    assert bomb and bomb[0].timed_out
    assert neighbour.exit_code == 0 and "spawned 8" in neighbour.stdout, neighbour.stdout + neighbour.stderr


def _count(pattern: str) -> int:
    return len(subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split())


@pytest.mark.parametrize("where", ["/tmp", "/dev/shm", "out"])
def test_writing_2gb_is_stopped_at_the_stages_disk_cap(tmp_path: Path, where: str) -> None:
    """/tmp, /dev/shm and the out folder together are one tmpfs of disk_mb, part of the memory budget; the
    out folder's files reach the host after the stage, within the same cap."""
    request = _request(tmp_path, "a", memory_mb=1024)
    cap = disk_mb(request) << 20
    folder = str(request.out_dir) if where == "out" else where
    run = _run(LocalSandbox(), request, "fill_disk.py", folder, str(request.out_dir / "ok.txt"))
    result = json.loads(run.stdout)
    assert "No space left" in result["error"] and result["written"] <= cap, result
    assert f"{disk_mb(request)} MB tmpfs" in run.isolation, run.isolation
    assert (request.out_dir / "ok.txt").read_text() == "kept"  # what the stage wrote to out reaches the host
    on_host = sum(f.stat().st_size for f in request.out_dir.iterdir())
    assert on_host <= cap, on_host


def test_the_out_folder_reaches_the_host_as_regular_files_only(tmp_path: Path) -> None:
    """Copied out by trusted code after the stage: no link, FIFO or folder the student left is followed."""
    request = _request(tmp_path, "a")
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host only")
    out = str(request.out_dir)
    code = (f"import os; o = {out!r}; open(o + '/unit.json', 'w').write('{{}}'); "
            f"os.symlink({str(secret)!r}, o + '/link.npy'); os.mkfifo(o + '/fifo.npy'); os.mkdir(o + '/sub'); "
            "open(o + '/sub/x.npy', 'w').write('x'); open(o + '/odd name\\n.npy', 'w').write('x')")
    run = LocalSandbox().run_argv([sys.executable, "-c", code], request)
    assert run.exit_code == 0, run.stderr
    assert sorted(p.name for p in request.out_dir.iterdir()) == ["unit.json"]
    assert (request.out_dir / "unit.json").read_text() == "{}"


HOST_ONLY = ("grader.data.shapes", "grader.data.dataset", "grader.data.evalsecret", "grader.job.prepare",
             "grader.job.cache", "grader.report", "grader.rubric", "grader.kit.handout", "grader.similarity",
             "grader.intake.safe_yaml", "grader.batch.scoring", "grader.calibrate", "grader.api", "grader.cli")
HOST_FILES = ("data", "job", "batch", "intake", "kit", "kitdata", "similarity", "report", "rubric.py", "api.py",
              "cli.py", "calibrate.py", "gradescope.py")


def test_the_sandbox_sees_the_runners_modules_only(tmp_path: Path) -> None:
    """The dataset generator and the host's grading code can be neither imported nor read inside, not even
    from the fork server's memory; the runner's modules still import, also one no stage had imported yet."""
    request = _request(tmp_path, "a")
    (request.job_dir / "job.json").write_text(json.dumps({"threads": 1, "device": "cpu", "stages": {}}))
    (request.submission_dir / "segmentation.py").write_text(
        "import importlib, os, sys\n"
        "import grader\n"
        "pkg = os.path.dirname(grader.__file__)\n"
        "def imports(name):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "        return True\n"
        "    except ImportError:\n"
        "        return False\n"
        "lazy = 'grader.core.cleanup' not in sys.modules\n"
        f"print('HOST-ONLY', {{m: imports(m) for m in {HOST_ONLY!r}}},\n"
        f"      [f for f in {HOST_FILES!r} if os.path.exists(os.path.join(pkg, f))],\n"
        "      [f for f in os.listdir(os.path.join(pkg, '__pycache__')) if not f.startswith(('__init__.', 'runner.'))]\n"
        "      if os.path.isdir(os.path.join(pkg, '__pycache__')) else [])\n"
        "print('RUNNER', lazy, {m: imports(m) for m in ('grader.runner', 'grader.core.voc', 'grader.checks', "
        "'grader.core.cleanup')})\n")
    sandbox = LocalSandbox()
    try:
        sandbox.warm_up(1)
        run = sandbox.run(request)
    finally:
        sandbox.close()
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines() if line.startswith(("HOST-ONLY", "RUNNER")))
    assert lines.get("HOST-ONLY") == str(dict.fromkeys(HOST_ONLY, False)) + " [] []", run.stdout + run.stderr
    assert lines.get("RUNNER") == "True " + str({"grader.runner": True, "grader.core.voc": True, "grader.checks": True,
                                                 "grader.core.cleanup": True}), run.stdout + run.stderr
