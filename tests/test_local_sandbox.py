"""The local sandbox, proven by real hostile programs (the same ones the Docker tests run)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader.sandbox.base import InfrastructureError, SandboxRequest, SandboxRun
from grader.sandbox.local import LocalSandbox

PROGRAMS = Path(__file__).parent / "sandbox_programs"
ROOT = os.getuid() == 0


def _request(tmp_path: Path, **overrides: object) -> SandboxRequest:
    for name in ("job", "out", "submission"):
        (tmp_path / name).mkdir(exist_ok=True)
    settings = dict(submission_dir=tmp_path / "submission", job_dir=tmp_path / "job", out_dir=tmp_path / "out",
                    stage="import", timeout_s=30, memory_mb=1024)
    return SandboxRequest(**{**settings, **overrides})


def _program(request: SandboxRequest, program: str) -> str:
    """The program as the sandbox sees it: inside the submission (nothing else of the host is there)."""
    shutil.copy(PROGRAMS / program, request.submission_dir / program)
    return str(request.submission_dir / program)


def _run(tmp_path: Path, program: str, *args: str, **overrides: object) -> SandboxRun:
    request = _request(tmp_path, **overrides)
    return LocalSandbox().run_argv([sys.executable, _program(request, program), *args], request)


def test_isolation_is_reported(tmp_path: Path) -> None:
    run = _run(tmp_path, "identity.py")
    assert "namespaces" in run.isolation and "NOT isolated" not in run.isolation
    assert run.exit_code == 0, run.stderr


def test_environment_is_scrubbed_and_privileges_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEG_GRADER_SECRET_TOKEN", "do-not-leak")
    info = json.loads(_run(tmp_path, "identity.py").stdout)
    assert "SEG_GRADER_SECRET_TOKEN" not in info["env"]
    assert info["no_new_privs"] == "1"
    if ROOT:
        assert 100_000 <= info["uid"] < 200_000 and info["gid"] == info["uid"]  # the submission's own
        assert info["caps"]["CapEff"] == "0000000000000000"


def test_nothing_outside_the_allow_list_is_visible(tmp_path: Path) -> None:
    secret = tmp_path / "reference"
    secret.mkdir()
    (secret / "segmentation.py").write_text("ANSWERS = 42\n")
    code = f"import os; p = {str(secret)!r}; print(os.listdir(p) if os.path.exists(p) else [])"
    run = LocalSandbox().run_argv([sys.executable, "-c", code], _request(tmp_path, hidden_paths=(secret,)))
    assert run.stdout.strip() == "[]", run.stderr
    assert (secret / "segmentation.py").exists()  # hidden, not harmed
    repo = Path(__file__).resolve().parent.parent
    code = (f"import os; print([os.path.exists(p) for p in ({str(repo / 'reference')!r}, {str(repo / 'tests')!r}, "
            f"os.path.expanduser('~root/.cache'), '/home', '/opt', '/srv', '/var/lib')])")
    run = LocalSandbox().run_argv([sys.executable, "-c", code], _request(tmp_path))
    assert run.stdout.strip() == str([False] * 7), run.stdout + run.stderr


def test_endless_loop_is_killed_at_the_timeout(tmp_path: Path) -> None:
    run = _run(tmp_path, "endless_loop.py", timeout_s=3)
    assert run.timed_out and run.exit_code is None
    assert 3 <= run.duration_s < 10


def test_a_stage_that_leaves_its_process_group_is_still_killed(tmp_path: Path) -> None:
    """setsid, SIGTERM ignored, parent-death signal cleared, a forked child: the timeout still ends them all."""
    request = _request(tmp_path, timeout_s=3)
    program = _program(request, "escape_group.py")
    run = LocalSandbox().run_argv([sys.executable, program], request)
    assert run.timed_out and "escaped" in run.stdout
    assert subprocess.run(["pgrep", "-f", program], capture_output=True).stdout == b""


def test_close_stops_the_fork_server_at_once(tmp_path: Path) -> None:
    sandbox = LocalSandbox()
    assert sandbox.run_argv(["/bin/true"], _request(tmp_path)).exit_code == 0
    [server] = sandbox._servers.values()
    started = time.monotonic()
    sandbox.close()
    assert "ended (exit code 0)" in server.dead and time.monotonic() - started < 5


def test_a_stage_starts_with_what_training_imports_lazily_already_imported(tmp_path: Path) -> None:
    """The first optimizer a process constructs imports torch._dynamo (~1 s): the fork server imports it
    once, so the overfit and train stages of every submission do not each pay it. What it preloaded is
    frozen (gc.freeze): a stage's full collections then skip it instead of copying the shared heap page by page."""
    request = _request(tmp_path)
    (request.job_dir / "job.json").write_text(json.dumps({"threads": 1, "device": "cpu", "stages": {}}))
    (request.submission_dir / "segmentation.py").write_text(
        "import gc, sys\nprint('preloaded:', all(m in sys.modules for m in ('torch', 'torch._dynamo', 'torchvision')),"
        "'frozen:', gc.get_freeze_count() > 10000)\n")
    sandbox = LocalSandbox()
    try:
        sandbox.warm_up(1)
        run = sandbox.run(request)
    finally:
        sandbox.close()
    assert run.stdout.strip() == "preloaded: True frozen: True", run.stdout + run.stderr


def test_a_sandbox_that_cannot_start_is_an_infrastructure_error(tmp_path: Path) -> None:
    with pytest.raises(InfrastructureError, match=r"fork server \(/bin/false\) ended"):
        LocalSandbox(python="/bin/false").run_argv(["/bin/true"], _request(tmp_path))


def test_fork_bomb_is_contained(tmp_path: Path) -> None:
    start = time.monotonic()
    run = _run(tmp_path, "fork_bomb.py", timeout_s=4, max_processes=64)
    assert run.timed_out and time.monotonic() - start < 30
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "submission" / "fork_bomb.py")], capture_output=True, text=True)
    assert left.stdout.strip() == "", "fork bomb processes survived the sandbox"


def test_memory_limit_holds(tmp_path: Path) -> None:
    run = _run(tmp_path, "allocate_4gb.py", memory_mb=512)
    assert run.out_of_memory, run.stderr[-500:]
    assert "did not hold" not in run.stdout


def test_network_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as server:  # a real listener on the host's loopback
        server.bind(("127.0.0.1", 0))
        server.listen()
        probe = json.loads(_run(tmp_path, "network_probe.py", str(server.getsockname()[1])).stdout)
    assert all(v != "connected" for k, v in probe.items() if k != "interfaces"), probe


def test_writes_outside_the_out_folder_fail(tmp_path: Path) -> None:
    req = _request(tmp_path)
    targets = [str(req.job_dir / "x"), str(req.submission_dir / "x"), str(Path(__file__)), str(req.out_dir / "ok")]
    run = LocalSandbox().run_argv([sys.executable, _program(req, "write_probe.py"), *targets], req)
    result = json.loads(run.stdout)
    assert result[str(req.out_dir / "ok")] == "ok"
    if ROOT:  # as an ordinary user, the user's own files stay writable: that is why Docker is the production engine
        assert all(result[t] != "ok" for t in targets[:3]), result


def test_output_flood_is_truncated(tmp_path: Path) -> None:
    run = _run(tmp_path, "print_100mb.py", max_output_bytes=10_000)
    assert len(run.stdout) < 12_000 and run.output_truncated
    assert "bytes of output dropped" in run.stdout and run.stdout.rstrip().endswith("END-OF-OUTPUT")


def test_tmp_is_private(tmp_path: Path) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="host-secret-", dir="/tmp") as secret:
        code = (f"import os; print(os.path.exists({secret.name!r})); open('/tmp/mine', 'w').write('x'); "
                "print(sorted(os.listdir('/dev/shm')))")
        run = LocalSandbox().run_argv([sys.executable, "-c", code], _request(tmp_path))
    assert run.stdout.split("\n")[:2] == ["False", "[]"], run.stderr
    assert not Path("/tmp/mine").exists()


def test_sandbox_dies_with_the_grader(tmp_path: Path) -> None:
    """A grader killed with SIGKILL leaves no student process behind, whatever the stage's timeout."""
    import signal

    req = _request(tmp_path, timeout_s=600)
    loop = _program(req, "endless_loop.py")
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent.parent)!r})\n"
              "from pathlib import Path\nfrom grader.sandbox.base import SandboxRequest\n"
              "from grader.sandbox.local import LocalSandbox\n"
              f"req = SandboxRequest(submission_dir=Path({str(req.submission_dir)!r}), job_dir=Path({str(req.job_dir)!r}),"
              f" out_dir=Path({str(req.out_dir)!r}), stage='import', timeout_s=600, memory_mb=1024)\n"
              f"LocalSandbox().run_argv([sys.executable, {loop!r}], req)\n")
    grader = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    pattern = loop
    while time.monotonic() < deadline and not subprocess.run(["pgrep", "-f", pattern], capture_output=True).stdout:
        time.sleep(0.2)
    assert subprocess.run(["pgrep", "-f", pattern], capture_output=True).stdout, "the loop never started"
    grader.send_signal(signal.SIGKILL)
    grader.wait()
    time.sleep(2)
    assert subprocess.run(["pgrep", "-f", pattern], capture_output=True).stdout == b""


def test_a_request_that_would_show_a_hidden_path_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """Both ways round: a hidden folder inside a shown one, and a shown folder inside a hidden one."""
    request = _request(tmp_path, hidden_paths=(tmp_path / "submission" / "answers",))
    with pytest.raises(InfrastructureError, match="exposes hidden path"):
        LocalSandbox().run_argv(["/bin/true"], request)
    with pytest.raises(InfrastructureError, match="exposes hidden path"):
        LocalSandbox().run_argv(["/bin/true"], _request(tmp_path, hidden_paths=(tmp_path,)))


def test_dev_is_minimal_and_holds_no_terminal_of_the_host(tmp_path: Path) -> None:
    run = _run(tmp_path, "dev_probe.py")
    assert run.exit_code == 0, run.stderr
    found = json.loads(run.stdout)
    assert set(found["dev"]) == {"null", "zero", "full", "random", "urandom", "pts", "ptmx", "shm", "fd", "stdin",
                                 "stdout", "stderr"} | ({"mqueue"} if os.path.isdir("/dev/mqueue") else set())
    assert found["opened"] == [] and found["created"] is False
    assert found["pts"] == ["ptmx"] and found["own_pty"] == "/dev/pts/0"  # a new devpts instance: its own only
    assert found["urandom"] == 8
    assert "no terminal of the host" in run.isolation


class _BrokenRoot(LocalSandbox):
    """A root-building bug of the kind a site-packages install once hit: a file to be shown inside a folder
    already bound read-only (EROFS)."""

    def _confine_config(self, request: SandboxRequest, scratch: str, mounts: str) -> dict:
        config = super()._confine_config(request, scratch, mounts)
        config["expose"].append(["/etc/hostname", False])
        return config


def test_a_bug_building_the_root_stops_the_stage_it_is_not_a_kernel_refusal(tmp_path: Path) -> None:
    request = _request(tmp_path)
    marker = request.out_dir / "ran"
    sandbox = _BrokenRoot(unconfined_ok=True)  # even a self-check does not run unconfined after such a bug
    try:
        with pytest.raises(InfrastructureError, match="could not confine.*building the sandbox's root failed.*"
                                                      "Read-only file system"):
            sandbox.run_argv([sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ran')"], request)
    finally:
        sandbox.close()
    assert not marker.exists()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: nothing to share")
def test_a_stage_that_ignores_threads_gets_no_more_than_its_cpu_share(tmp_path: Path) -> None:
    """threads=1: a stage spinning every core gets at most about one core's time (its cgroup's quota), so a
    neighbour at -j 2 keeps its own core (bench/cpu_share.py measures the neighbour's training time)."""
    run = _run(tmp_path, "spin_all_cores.py", "3", threads=1)
    if "CPU NOT capped" in run.isolation:
        pytest.skip(run.isolation.split("CPU NOT capped: ")[1].split(";")[0])
    assert "CPU capped at 1 core" in run.isolation and run.exit_code == 0, run.stderr
    spent = json.loads(run.stdout)
    assert spent["processes"] >= 2
    assert spent["cpu"] <= 1.2 * spent["wall"], spent  # uncapped: about processes x wall


def test_a_fork_server_killed_outright_leaves_no_stage_cgroup_behind(tmp_path: Path) -> None:
    """A stage cgroup whose fork server died before reaping (SIGKILL, the OOM killer) is empty and its pid gone:
    the next fork server removes it; a live process's cgroup (another grader's stage) is left alone."""
    from grader.sandbox import cpushare

    run = _run(tmp_path, "spin_all_cores.py", "0.1", threads=1)  # makes the seg-grader folder where it can
    if "CPU NOT capped" in run.isolation:
        pytest.skip(run.isolation.split("CPU NOT capped: ")[1].split(";")[0])
    base = next(f"{m}/seg-grader" for m in cpushare._mounts() if m and os.path.isdir(f"{m}/seg-grader"))
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer exists
    stale, live = f"{base}/stage-{dead.pid}", f"{base}/stage-{os.getpid()}"
    os.makedirs(stale)
    os.makedirs(live)
    try:
        (tmp_path / "again").mkdir()
        _run(tmp_path / "again", "spin_all_cores.py", "0.1", threads=1)  # a new fork server starts
        assert not os.path.exists(stale)
        assert os.path.isdir(live)
    finally:
        for folder in (stale, live):
            if os.path.isdir(folder):
                os.rmdir(folder)
