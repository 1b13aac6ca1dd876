"""The Docker engine, proven by real containers: each limit is hit by a real program in tests/sandbox_programs.

Containers run the local test image (an imported rootfs + the host's Python mounted read-only), so no
registry is needed. Docker tests skip, saying why, only when the Docker Engine does not answer.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import docker
import pytest

from grader.sandbox.container import image
from grader.sandbox.base import InfrastructureError, SandboxRequest, SandboxRun
from grader.sandbox.container.engine import DockerSandbox, docker_sandbox_for_cli
from grader.sandbox.container.containers import BindMount, HeadTail
from grader.sandbox.container.daemon import LABEL, Daemon, cleanup_leftovers, connect

FIXTURES = Path(__file__).parent / "sandbox_programs"
REPO = Path(__file__).resolve().parents[1]
BOGUS_SOCKET = "unix:///nonexistent/seg-autograder/docker.sock"


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    try:
        return connect()
    except InfrastructureError as exc:
        if os.environ.get("SEG_REQUIRE_DOCKER") == "1":  # CI sets it: there a missing daemon is a failure
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def sandbox(client: docker.DockerClient) -> DockerSandbox:
    tag = image.build_test_image(client)
    return DockerSandbox(image=tag, python=image.test_python(), extra_mounts=image.test_mounts(), client=client)


def _ours(client: docker.DockerClient, owner: str | None = None) -> list[dict]:
    owner = owner or f"{socket.gethostname()}:{os.getpid()}"
    found = client.api.containers(all=True, filters={"label": f"{LABEL}=1"})
    return [c for c in found if c["Labels"].get(f"{LABEL}.owner") == owner]


@pytest.fixture()
def box(sandbox: DockerSandbox, client: docker.DockerClient) -> Iterator[DockerSandbox]:
    """The sandbox, and after the test the proof that no labelled container of ours outlived its run."""
    yield sandbox
    sandbox.close()  # the spare containers a submission's first stage started
    assert _ours(client) == [], "a labelled container outlived its run"


def _request(tmp_path: Path, fixture: str | None = None, **overrides: object) -> SandboxRequest:
    for name in ("job", "submission", "out"):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
    if fixture:
        shutil.copy(FIXTURES / fixture, tmp_path / "submission" / fixture)
    settings = {"stage": "unit", "timeout_s": 30.0, "memory_mb": 512, "max_processes": 64} | overrides
    return SandboxRequest(submission_dir=tmp_path / "submission", job_dir=tmp_path / "job",
                          out_dir=tmp_path / "out", **settings)


def _run(sandbox: DockerSandbox, request: SandboxRequest, fixture: str, *args: str) -> SandboxRun:
    return sandbox.run_argv([image.test_python(), f"/submission/{fixture}", *args], request)


# ---- no daemon needed ------------------------------------------------------------------------------------

def test_unreachable_daemon_says_how_to_start_it() -> None:
    with pytest.raises(InfrastructureError, match="systemctl start docker"):
        connect(base_url=BOGUS_SOCKET)


def test_daemon_lost_during_a_run_is_infrastructure_not_a_zero(tmp_path: Path) -> None:
    bogus = docker.DockerClient(base_url=BOGUS_SOCKET, version="1.41")  # no version probe: no connect yet
    sandbox = DockerSandbox(image="any:latest", client=bogus)
    with pytest.raises(InfrastructureError, match="dockerd"):
        sandbox.run(_request(tmp_path))


def test_mounting_a_hidden_path_is_refused(tmp_path: Path) -> None:
    bogus = docker.DockerClient(base_url=BOGUS_SOCKET, version="1.41")
    sandbox = DockerSandbox(image="any:latest", client=bogus)
    with pytest.raises(InfrastructureError, match="hidden path"):
        sandbox.run(_request(tmp_path, hidden_paths=(tmp_path,)))  # the job folder lies in a hidden one
    exposing = DockerSandbox(image="any:latest", client=bogus, extra_mounts=(BindMount(REPO, "/repo"),))
    with pytest.raises(InfrastructureError, match="hidden path"):
        exposing.run(_request(tmp_path / "x", hidden_paths=(REPO / "reference",)))


def test_head_tail_keeps_both_ends_within_the_limit() -> None:
    kept = HeadTail(1000)
    for index in range(10_000):
        kept.add(f"line {index}\n".encode())
    text, truncated = kept.text()
    assert truncated and len(text) <= 1000
    assert text.startswith("line 0\n") and text.endswith("line 9999\n") and "bytes of output dropped" in text


def test_head_tail_keeps_short_output_whole() -> None:
    kept = HeadTail(1000)
    kept.add(b"hello\n")
    assert kept.text() == ("hello\n", False)


def test_build_context_holds_grader_but_never_reference_or_tests() -> None:
    """What `docker build .` would send, computed by the Docker SDK from our .dockerignore."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    context = set(docker.utils.build.exclude_paths(str(REPO), patterns, dockerfile="Dockerfile"))
    assert {"Dockerfile", "pyproject.toml", "grader/__init__.py", "grader/sandbox/container/engine.py"} <= context
    assert not [p for p in context if p.split("/")[0] in {"reference", "tests", "examples", ".venv", ".git"}]
    assert not [p for p in context if "__pycache__" in p]


def test_dockerfile_copies_only_the_grader_package() -> None:
    copies = [line.split()[1:-1] for line in (REPO / "Dockerfile").read_text().splitlines()
              if line.startswith(("COPY", "ADD"))]
    assert sorted(source for sources in copies for source in sources) == ["README.md", "grader/", "pyproject.toml"]


# ---- real containers -------------------------------------------------------------------------------------

@pytest.mark.docker
def test_user_is_not_root_and_has_no_capabilities(box: DockerSandbox, tmp_path: Path) -> None:
    run = _run(box, _request(tmp_path, "identity.py"), "identity.py")
    seen = json.loads(run.stdout)
    assert run.exit_code == 0 and seen["uid"] != 0 and seen["euid"] != 0 and seen["gid"] != 0
    assert set(seen["caps"].values()) == {"0000000000000000"}
    assert seen["no_new_privs"] == "1" and seen["seccomp"] == "2"
    assert seen["cwd"] == "/scratch"
    assert {"PATH", "HOME", "OMP_NUM_THREADS", "PYTHONPATH"} <= set(seen["env"])
    assert not set(seen["env"]) & {"PYTEST_CURRENT_TEST", "VIRTUAL_ENV", "DOCKER_HOST"}  # host env stays out


@pytest.mark.docker
def test_allocating_4gb_under_512mb_is_out_of_memory(box: DockerSandbox, tmp_path: Path) -> None:
    run = _run(box, _request(tmp_path, "allocate_4gb.py", memory_mb=512), "allocate_4gb.py")
    assert run.out_of_memory and run.exit_code == 137 and not run.timed_out
    assert "did not hold" not in run.stdout


@pytest.mark.docker
def test_fork_bomb_is_contained(box: DockerSandbox, tmp_path: Path) -> None:
    run = _run(box, _request(tmp_path, "fork_bomb.py", timeout_s=5, max_processes=32), "fork_bomb.py")
    assert run.timed_out and run.duration_s < 20
    assert subprocess.run(["true"], timeout=10).returncode == 0  # the host can still start processes


@pytest.mark.docker
def test_no_network_outside_or_to_host_loopback(box: DockerSandbox, tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        run = _run(box, _request(tmp_path, "network_probe.py"), "network_probe.py", str(port))
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody ever reached the host's listener
    seen = json.loads(run.stdout)
    assert seen["1.1.1.1:80"] != "connected" and seen[f"127.0.0.1:{port}"] != "connected"
    assert seen["interfaces"] == ["lo"]


@pytest.mark.docker
def test_writes_only_in_out_and_scratch(box: DockerSandbox, tmp_path: Path) -> None:
    request = _request(tmp_path, "write_probe.py")
    lib_dir = next(m.target for m in image.test_mounts() if m.target.startswith("/usr"))
    run = _run(box, request, "write_probe.py", f"{lib_dir}/x", f"{image.test_python()}-x")
    seen = json.loads(run.stdout)
    allowed = {"/out/ok.txt", "/tmp/ok.txt", "/scratch/ok.txt"}
    assert {path for path, outcome in seen.items() if outcome == "ok"} == allowed
    assert all("Read-only" in outcome or "Permission" in outcome
               for path, outcome in seen.items() if path not in allowed)
    assert (request.out_dir / "ok.txt").read_text() == "written from the sandbox\n"
    assert sorted(p.name for p in request.submission_dir.iterdir()) == ["write_probe.py"]
    assert list(request.job_dir.iterdir()) == []


@pytest.mark.docker
def test_endless_loop_is_killed_at_the_timeout(box: DockerSandbox, tmp_path: Path) -> None:
    run = _run(box, _request(tmp_path, "endless_loop.py", timeout_s=3), "endless_loop.py")
    assert run.timed_out and not run.out_of_memory and run.exit_code == 137
    assert 3 <= run.duration_s < 10
    assert run.stdout == "spinning\n"


@pytest.mark.docker
def test_100mb_of_output_is_truncated_head_and_tail(box: DockerSandbox, tmp_path: Path) -> None:
    started = time.monotonic()
    run = _run(box, _request(tmp_path, "print_100mb.py", max_output_bytes=10_000), "print_100mb.py")
    assert run.exit_code == 0 and run.output_truncated
    assert len(run.stdout) <= 10_000 and "bytes of output dropped" in run.stdout
    assert run.stdout.startswith("xxxx") and run.stdout.endswith("END-OF-OUTPUT\n")
    assert time.monotonic() - started < 60


@pytest.mark.docker
def test_private_submission_files_are_readable_inside(box: DockerSandbox, tmp_path: Path) -> None:
    request = _request(tmp_path)
    (request.submission_dir / "pkg").mkdir()
    (request.submission_dir / "pkg" / "secret.py").write_text("VALUE = 42\n")
    for path in (request.submission_dir / "pkg" / "secret.py", request.submission_dir / "pkg",
                 request.submission_dir, request.job_dir):
        path.chmod(0o600 if path.is_file() else 0o700)  # as tempfile.mkdtemp and umask 077 leave them
    code = "import sys; sys.path.insert(0, '/submission/pkg'); import secret; print(secret.VALUE)"
    run = box.run_argv([image.test_python(), "-c", code], request)
    assert (run.exit_code, run.stdout) == (0, "42\n"), run.stderr


@pytest.mark.docker
def test_exit_code_and_stderr_are_reported(box: DockerSandbox, tmp_path: Path) -> None:
    request = _request(tmp_path, threads=256)  # more than the host's cores: the CPU quota is clamped
    run = box.run_argv([image.test_python(), "-c", "import sys; print('bad', file=sys.stderr); sys.exit(3)"],
                           request)
    assert (run.exit_code, run.stderr, run.timed_out, run.out_of_memory) == (3, "bad\n", False, False)
    assert run.engine_info["image"] == image.TEST_TAG and "network none" in run.isolation


@pytest.mark.docker
def test_reference_is_not_importable_but_grader_is(box: DockerSandbox, tmp_path: Path) -> None:
    code = "import grader, importlib.util as u; print(grader.__file__, u.find_spec('reference'))"
    run = box.run_argv([image.test_python(), "-c", code], _request(tmp_path))
    assert run.exit_code == 0, run.stderr
    assert run.stdout == "/opt/grader/grader/__init__.py None\n"


@pytest.mark.docker
def test_run_starts_the_runner_in_the_submissions_container_removed_at_its_end(
        box: DockerSandbox, client: docker.DockerClient, tmp_path: Path) -> None:
    request = _request(tmp_path, stage="import")
    run = box.run(request)
    assert not run.timed_out and "No module named grader.runner" not in run.stderr
    ours = lambda: {c["Id"][:12] for c in _ours(client)}  # noqa: E731
    assert run.engine_info["per_submission"] and run.engine_info["container_id"] in ours()
    box.end_submission(request.submission_dir)
    assert run.engine_info["container_id"] not in ours()  # (the fixture then removes the spare, and checks)


LINGERING_STUDENT = """\
import os, subprocess, sys
others = []
for pid in (p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid())):
    try:
        others.append(open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode())
    except OSError:
        pass
print("found in /tmp:", sorted(os.listdir("/tmp")), "other processes:", others, flush=True)
open("/tmp/left-by-" + str(os.getpid()), "w").write("x")
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
"""


@pytest.mark.docker
def test_a_stage_killed_at_its_timeout_leaves_the_submissions_container_serving(
        box: DockerSandbox, tmp_path: Path) -> None:
    first = _request(tmp_path, stage="import", timeout_s=3.0)
    (first.job_dir / "job.json").write_text(json.dumps({"threads": 1, "device": "cpu", "stages": {}}))
    (first.submission_dir / "segmentation.py").write_text(  # loops in the import stage only
        "import os, time\nwhile os.path.isdir('/runs/import'):\n    time.sleep(0.1)\n")
    try:
        looped = box.run(first)
        again = box.run(dataclasses.replace(first, stage="model", out_dir=tmp_path / "model"))
    finally:
        box.end_submission(first.submission_dir)
    assert looped.timed_out and looped.exit_code is None and looped.duration_s < 3.0 + 2
    # 4: the runner's "stage error" (this job has no model spec): the same container ran the next stage
    assert not again.timed_out and again.exit_code == 4, again.stderr
    assert again.engine_info["container_id"] == looped.engine_info["container_id"]


@pytest.mark.docker
def test_stages_of_a_submission_share_its_container_but_nothing_outlives_a_stage(
        box: DockerSandbox, client: docker.DockerClient, tmp_path: Path) -> None:
    """Each stage leaves a file in /tmp and a daemon in a session of its own: the next stage sees neither."""
    first = _request(tmp_path, stage="import")
    (first.job_dir / "job.json").write_text(json.dumps({"threads": 1, "device": "cpu", "stages": {}}))
    (first.submission_dir / "segmentation.py").write_text(LINGERING_STUDENT)
    second = dataclasses.replace(first, stage="model", out_dir=tmp_path / "model")
    try:
        runs = [box.run(first), box.run(second)]
    finally:
        box.end_submission(first.submission_dir)
    assert runs[0].engine_info["container_id"] == runs[1].engine_info["container_id"]
    for run in runs:
        assert "left-by-" not in run.stdout and "other processes: []" in run.stdout, run.stdout + run.stderr


@pytest.mark.docker
def test_a_stage_in_the_container_starts_with_what_training_imports_lazily_already_imported(
        box: DockerSandbox, tmp_path: Path) -> None:
    """torch._dynamo (imported by the first optimizer a process constructs, ~1 s) is imported by the
    container's server, not by each training stage of the submission. What it preloaded is frozen (gc.freeze):
    a stage's full collections then skip it instead of copying the shared heap page by page."""
    request = _request(tmp_path, stage="import")
    (request.job_dir / "job.json").write_text(json.dumps({"threads": 1, "device": "cpu", "stages": {}}))
    (request.submission_dir / "segmentation.py").write_text(
        "import gc, sys\nprint('preloaded:', all(m in sys.modules for m in ('torch', 'torch._dynamo', 'torchvision')),"
        "'frozen:', gc.get_freeze_count() > 10000)\n")
    try:
        run = box.run(request)
    finally:
        box.end_submission(request.submission_dir)
    assert run.stdout.strip() == "preloaded: True frozen: True", run.stdout + run.stderr


@pytest.mark.docker
def test_gpu_request_without_gpu_support_is_infrastructure(box: DockerSandbox, client: docker.DockerClient,
                                                          tmp_path: Path) -> None:
    if "nvidia" in client.info().get("Runtimes", {}):
        pytest.skip("this Docker has the NVIDIA runtime: a GPU request would succeed")
    with pytest.raises(InfrastructureError, match="NVIDIA"):
        box.run_argv([image.test_python(), "-c", "pass"], _request(tmp_path, gpu="0"))


@pytest.mark.docker
def test_missing_image_names_the_build_command(client: docker.DockerClient) -> None:
    with pytest.raises(InfrastructureError, match="docker build -t seg-autograder-missing:never"):
        image.ensure_image(client, "seg-autograder-missing:never", build=False)


@pytest.mark.docker
def test_cli_engine_uses_the_test_image_or_names_the_build_command(client: docker.DockerClient) -> None:
    assert docker_sandbox_for_cli(image="test", gpus=("0",)).image == image.TEST_TAG
    with pytest.raises(InfrastructureError, match="docker build -t seg-autograder-missing:never"):
        docker_sandbox_for_cli(image="seg-autograder-missing:never")


@pytest.mark.docker
def test_describe_records_image_and_engine(box: DockerSandbox) -> None:
    described = box.describe()
    assert described["image_id"].startswith("sha256:") and described["docker_version"]
    assert described["engine"] == "docker" and "read-only root" in described["isolation"]


@pytest.mark.docker
def test_cleanup_leftovers_removes_orphans_of_dead_graders(client: docker.DockerClient, box: DockerSandbox) -> None:
    labels = {LABEL: "1", f"{LABEL}.owner": f"{socket.gethostname()}:999999999"}  # a pid that cannot exist
    orphan = client.api.create_container(image=box.image, command=["/none"], labels=labels)["Id"]
    live = {LABEL: "1", f"{LABEL}.owner": f"{socket.gethostname()}:{os.getpid()}"}  # a live grader's: ours
    mine = client.api.create_container(image=box.image, command=["/none"], labels=live)["Id"]
    try:
        removed = cleanup_leftovers(client)
        assert orphan in removed and mine not in removed
        assert not client.api.containers(all=True, filters={"id": orphan})
        assert client.api.containers(all=True, filters={"id": mine})
    finally:
        client.api.remove_container(mine, force=True)


@pytest.mark.docker
@pytest.mark.parametrize(("signum", "mode", "containers"), [(signal.SIGINT, "command", 1),
                                                           (signal.SIGTERM, "command", 1),
                                                           (signal.SIGTERM, "submission", 2)])
def test_interrupted_grader_leaves_no_container(client: docker.DockerClient, box: DockerSandbox, tmp_path: Path,
                                                 signum: int, mode: str, containers: int) -> None:
    """Ctrl-C or SIGTERM while a stage runs: the grader (owning the signals as a batch does) removes its
    containers, in "submission" mode also the spare it was starting beside the submission's."""
    for name in ("job", "submission", "out"):
        (tmp_path / name).mkdir()
    grader = subprocess.Popen([sys.executable, str(FIXTURES / "interrupted_grader.py"), str(REPO), str(tmp_path),
                               mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # however we were started
    owner = f"{socket.gethostname()}:{grader.pid}"
    try:
        deadline = time.monotonic() + 90
        while len([c for c in _ours(client, owner) if c["State"] == "running"]) < containers:
            assert grader.poll() is None, grader.communicate()
            assert time.monotonic() < deadline, "the containers never started"
            time.sleep(0.2)
        grader.send_signal(signum)
        grader.wait(timeout=60)
    finally:
        grader.kill()
        _, err = grader.communicate()
    assert _ours(client, owner) == [], err
    assert "KeyboardInterrupt" in err or "Terminated" in err, err  # it was interrupted, not killed outright


@pytest.mark.docker
@pytest.mark.parametrize(("mode", "containers"), [("command", 1), ("submission", 2)])
def test_a_killed_grader_leaves_no_container_running(client: docker.DockerClient, box: DockerSandbox, tmp_path: Path,
                                                     mode: str, containers: int) -> None:
    """SIGKILL (the OOM killer, a lost node): no handler runs, nothing is removed by the grader. Each container
    ends by itself: a command's init sees its attached stdin close (lifeline.py), a submission's fork server
    its socket; both long before the stage's budget (120 s) plus grace, with no grader left running."""
    for name in ("job", "submission", "out"):
        (tmp_path / name).mkdir()
    grader = subprocess.Popen([sys.executable, str(FIXTURES / "interrupted_grader.py"), str(REPO), str(tmp_path),
                               mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    owner = f"{socket.gethostname()}:{grader.pid}"
    try:
        deadline = time.monotonic() + 90
        while len([c for c in _ours(client, owner) if c["State"] == "running"]) < containers:
            assert grader.poll() is None, grader.communicate()
            assert time.monotonic() < deadline, "the containers never started"
            time.sleep(0.2)
        time.sleep(1)  # the stage's endless loop is running
        grader.send_signal(signal.SIGKILL)
        grader.wait(timeout=30)
        gone_by = time.monotonic() + 20
        while [c for c in _ours(client, owner) if c["State"] == "running"] and time.monotonic() < gone_by:
            time.sleep(0.5)
        assert [c["State"] for c in _ours(client, owner) if c["State"] == "running"] == []
    finally:
        grader.kill()
        grader.communicate()
        for c in _ours(client, owner):  # what the next grader's sweep would remove
            client.api.remove_container(c["Id"], force=True)


@pytest.mark.docker
def test_a_container_ends_at_its_budget_plus_grace_when_no_grader_acts(client: docker.DockerClient, box: DockerSandbox,
                                                                      tmp_path: Path) -> None:
    """The grader is stopped (SIGSTOP: alive, its connections open, its clock frozen): the container's init
    ends the endless stage at the budget (2 s) plus DEADLINE_GRACE_S by itself."""
    from grader.sandbox.container.containers import DEADLINE_GRACE_S

    for name in ("job", "submission", "out"):
        (tmp_path / name).mkdir()
    grader = subprocess.Popen([sys.executable, str(FIXTURES / "interrupted_grader.py"), str(REPO), str(tmp_path),
                               "command", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    owner = f"{socket.gethostname()}:{grader.pid}"
    try:
        deadline = time.monotonic() + 90
        while not [c for c in _ours(client, owner) if c["State"] == "running"]:
            assert grader.poll() is None, grader.communicate()
            assert time.monotonic() < deadline, "the container never started"
            time.sleep(0.2)
        grader.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        while [c for c in _ours(client, owner) if c["State"] == "running"] and time.monotonic() - started < 90:
            time.sleep(0.5)
        ended_after = time.monotonic() - started
        assert ended_after < 2 + DEADLINE_GRACE_S + 10, "the container ran on past its budget and grace"
        [container] = _ours(client, owner)
        assert client.api.inspect_container(container["Id"])["State"]["ExitCode"] == 124  # lifeline.DEADLINE_EXIT
    finally:
        grader.send_signal(signal.SIGCONT)
        grader.kill()
        grader.communicate()
        for c in _ours(client, owner):
            client.api.remove_container(c["Id"], force=True)


def test_the_engine_installs_no_signal_handler() -> None:
    """The batch owns the signals (grader.batch.interrupts); making an engine changes no handler."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    DockerSandbox(image="any:latest", client=docker.DockerClient(base_url=BOGUS_SOCKET, version="1.41"))
    assert {sig: signal.getsignal(sig) for sig in before} == before


@pytest.mark.docker
def test_a_container_created_after_abort_is_removed_as_it_appears(client: docker.DockerClient,
                                                                  box: DockerSandbox) -> None:
    """A creation under way when the grader is interrupted ends after ``abort``: adopting it removes it."""
    daemon = Daemon(client)
    before = client.api.create_container(image=box.image, command=["/none"], labels={LABEL: "1"})["Id"]
    daemon.adopt(before)
    daemon.seal()
    late = client.api.create_container(image=box.image, command=["/none"], labels={LABEL: "1"})["Id"]
    with pytest.raises(InfrastructureError, match="interrupted"):
        daemon.adopt(late)
    assert not client.api.containers(all=True, filters={"id": late})
    assert daemon.remove_all() == 1 and not client.api.containers(all=True, filters={"id": before})


@pytest.mark.docker
def test_abort_mid_stage_removes_the_submissions_container_and_the_spare_being_started(
        client: docker.DockerClient, box: DockerSandbox, tmp_path: Path) -> None:
    engine = DockerSandbox(image=box.image, python=box.python, extra_mounts=image.test_mounts(), client=client)
    request = _request(tmp_path, stage="import", timeout_s=120)
    (request.job_dir / "job.json").write_text(json.dumps({"threads": 1, "device": "cpu", "stages": {}}))
    (request.submission_dir / "segmentation.py").write_text("while True:\n    pass\n")
    outcome: list = []

    def grade() -> None:
        try:
            outcome.append(engine.run(request))
        except InfrastructureError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=grade)
    worker.start()
    deadline = time.monotonic() + 90
    while len(_ours(client)) < 2:  # the submission's container, and the spare started beside it
        assert worker.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.1)
    engine.abort()
    assert _ours(client) == []
    worker.join(timeout=30)
    assert not worker.is_alive() and outcome  # the stage ended (its container is gone), whatever it says
    with pytest.raises(InfrastructureError, match="interrupted"):
        engine.run(dataclasses.replace(request, stage="model", out_dir=tmp_path / "model"))
    assert _ours(client) == []
