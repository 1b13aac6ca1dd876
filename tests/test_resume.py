"""Resume: a grader killed with SIGKILL mid-batch loses only the running job; the next run finishes the rest.

A real ``python -m grader grade`` process grades a class of four quick submissions (a unit-only rubric),
is killed with SIGKILL once a result exists, and is run again: no result.json is torn, no sandbox process
outlives its grace, every submission is graded exactly once with the right score, and a third run of the
unchanged class skips everything.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader.batch.batch import GradeOptions, grade_all
from grader.core.results import read_result
from grader.rubric import load_rubric
from grader.sandbox.local import LocalSandbox

from quick_class import QUICK_RUBRIC, QUICK_SCORES, write_quick_class

pytestmark = pytest.mark.slow

EXPECTED = QUICK_SCORES


def _results(out: Path) -> dict[str, Path]:
    return {p.parent.name: p for p in out.glob("*/result.json")}


def _stamp(path: Path) -> tuple[int, int, str]:
    """What changes when a result is written again: the file (inode, mtime) and its grading time."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, read_result(path).provenance["graded_at"]


def _sandbox_processes(grader_pid: int) -> list[str]:
    """Command lines of live sandbox processes of the grader ``grader_pid``: its fork servers and their forked
    stages (a fork keeps its server's command line)."""
    found, marker = [], f"--parent-pid {grader_pid}"
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if "grader.sandbox.forkserver" in cmdline and cmdline.rstrip().endswith(marker):
            found.append(cmdline)
    return found


def _wait_for(condition, timeout_s: float, interval_s: float = 0.05) -> bool:  # noqa: ANN001 - a callable
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


@pytest.fixture
def batch_setup(tmp_path: Path) -> dict:
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text(QUICK_RUBRIC)
    scratch = tmp_path / "tmp"  # the grader's scratch (and so every sandbox path) lives under tmp_path
    scratch.mkdir()
    out, cache = tmp_path / "out", tmp_path / "cache"
    cmd = [sys.executable, "-m", "grader", "grade", str(write_quick_class(tmp_path / "class")), "--out", str(out),
           "--rubric", str(rubric), "--cache-dir", str(cache), "-j", "1", "-q"]
    env = {**os.environ, "TMPDIR": str(scratch)}
    return {"cmd": cmd, "env": env, "out": out, "rubric": rubric, "cache": cache, "tmp": tmp_path}


def _kill_after_first_result(setup: dict) -> tuple[int, dict[str, tuple]]:
    with open(setup["tmp"] / "first-run.log", "wb") as log:
        proc = subprocess.Popen(setup["cmd"], env=setup["env"], stdout=log, stderr=subprocess.STDOUT)
        try:
            assert _wait_for(lambda: _results(setup["out"]) or proc.poll() is not None, 240)
            assert proc.poll() is None, "the batch ended before it could be killed"
            assert _sandbox_processes(proc.pid), "no fork server of the grader found: the check below is void"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    return proc.pid, {student: _stamp(path) for student, path in _results(setup["out"]).items()}


def test_sigkill_mid_batch_loses_only_running_jobs_and_resume_grades_each_once(batch_setup: dict) -> None:
    out = batch_setup["out"]
    grader_pid, before = _kill_after_first_result(batch_setup)
    assert 1 <= len(before) < len(EXPECTED), f"killed after {sorted(before)}: not mid-batch"
    for path in _results(out).values():  # atomic writes: every result on disk parses and is finished
        assert read_result(path).status == "graded"
    assert _wait_for(lambda: not _sandbox_processes(grader_pid), 30, 0.5), _sandbox_processes(grader_pid)

    second = subprocess.run(batch_setup["cmd"], env=batch_setup["env"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    after = {student: _stamp(path) for student, path in _results(out).items()}
    assert sorted(after) == sorted(EXPECTED)
    assert {s: after[s] for s in before} == before, "a result finished before the kill was graded again"
    for student, score in EXPECTED.items():
        result = read_result(out / student / "result.json")
        assert (result.status, result.score) == ("graded", score), (student, result.message)
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(s["student"] for s in summary["students"]) == sorted(EXPECTED)  # each exactly once

    started = time.perf_counter()
    third = subprocess.run(batch_setup["cmd"], env=batch_setup["env"], capture_output=True, text=True, timeout=300)
    cli_s = time.perf_counter() - started
    assert third.returncode == 0, third.stderr[-3000:]
    assert {s: _stamp(p) for s, p in _results(out).items()} == after, "an unchanged submission was regraded"

    in_process_s = _timed_unchanged_regrade(batch_setup, after)
    print(f"\nunchanged regrade of {len(EXPECTED)} submissions: whole CLI process {cli_s:.2f} s, "
          f"grade_all in-process {in_process_s * 1000:.0f} ms")
    assert in_process_s < 0.25 * len(EXPECTED)  # well under a second per submission


def _timed_unchanged_regrade(setup: dict, stamps: dict) -> float:
    """The cached path builds no job folder: in-process, the unchanged batch costs intake + reads only."""
    options = GradeOptions(out_dir=setup["out"], cache_dir=setup["cache"])
    started = time.perf_counter()
    again = grade_all([setup["tmp"] / "class"], rubric=load_rubric(setup["rubric"]), sandbox=LocalSandbox(),
                      options=options)
    elapsed = time.perf_counter() - started
    assert {r.student: r.score for r in again} == EXPECTED
    assert {s: _stamp(p) for s, p in _results(setup["out"]).items()} == stamps
    return elapsed


def test_sigterm_mid_batch_is_a_clean_interruption(batch_setup: dict) -> None:
    """SIGTERM (a scheduler, `timeout`) takes the Ctrl-C path: exit 130 with the resume message, the engine
    aborted and closed, the scratch folder removed (the default action would leave it and exit -15)."""
    write_quick_class(batch_setup["tmp"] / "slow", import_delay_s=30)  # each stage outlasts the signal
    cmd = [*batch_setup["cmd"]]
    cmd[cmd.index(str(batch_setup["tmp"] / "class"))] = str(batch_setup["tmp"] / "slow")
    proc = subprocess.Popen(cmd, env=batch_setup["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: _sandbox_processes(proc.pid) or proc.poll() is not None, 240)
        assert proc.poll() is None, proc.communicate()
        scratch = list((batch_setup["tmp"] / "tmp").glob("seg-grader-*"))
        assert scratch, "no scratch folder found: the check below is void"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted" in stderr
    assert not [p for p in scratch if p.exists()], "the batch's `finally` did not run"
    assert not _results(batch_setup["out"]), "an interrupted stage was recorded as a result"
    assert _wait_for(lambda: not _sandbox_processes(proc.pid), 10, 0.2), _sandbox_processes(proc.pid)


def test_signal_handlers_are_the_batch_s_only_while_it_runs() -> None:
    from grader.batch.interrupts import Terminated, aborting_on_signals

    before, aborted = signal.getsignal(signal.SIGTERM), []
    with pytest.raises(Terminated):
        with aborting_on_signals(lambda: aborted.append(True)):
            assert signal.getsignal(signal.SIGTERM) is not before
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here, in the main thread
    assert aborted == [True]
    assert signal.getsignal(signal.SIGTERM) is before
    with aborting_on_signals(lambda: aborted.append(False)):
        pass  # a batch that ends normally aborts nothing
    assert aborted == [True] and signal.getsignal(signal.SIGTERM) is before
