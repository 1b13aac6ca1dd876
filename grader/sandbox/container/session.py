"""One hardened container per SUBMISSION, its stages forked from a warm server inside (Docker engine).

A container per stage paid a container start and a fresh interpreter importing torch for every stage (about
2.5 s on a small machine, five times per submission). Here the submission's container starts once, with the
same hardening as before, and its PID 1 is the fork server (``grader.sandbox.forkserver --listen``), which
imports torch before it listens. The engine starts the NEXT submission's container while this one is graded
(``docker_spares`` keeps spares per job and GPU), so in a batch a submission rarely waits for that import.
A spare is blank until it is bound to a submission: its folder (in the batch's scratch, next to the job)
holds ``submission/`` (the submission is copied in, mounted read-only), ``runs/`` (mounted writable; each
stage writes ``runs/<stage>``, renamed to the stage's out folder afterwards: a rename on one filesystem,
never a copy that would follow the student's symlinks) and ``ctl/`` (the server's socket). Each stage is a fork of it, with the stage's stdout/stderr pipes handed over
a unix socket in a folder mounted at ``/ctl``; the wall clock and the kill stay here, on the host. Between
stages the server kills every other process of the container and empties ``/tmp`` and ``/scratch``; the
container's memory limit is set to each stage's budget before the stage starts. No other submission ever
runs in it, and it is removed when the submission is done (or the grader is interrupted).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from grader.core.cleanup import remove_tree
from grader.sandbox.base import InfrastructureError, SandboxRequest, SandboxRun, runner_args, says_out_of_memory, \
    share_with_sandbox
from grader.sandbox.container.containers import DEADLINE_GRACE_S, ISOLATION, BindMount, Container, ContainerSettings, HeadTail, \
    weights_bind
from grader.sandbox.container.daemon import Daemon
from grader.sandbox.forkclient import ForkServerClient, run_forked

__all__ = ["SubmissionContainer", "SESSION_ISOLATION"]

START_TIMEOUT_S = 180.0  # container start + the server's torch import, before any stage clock runs
SOCKET = "server.sock"
# A blank container imports torch with the smallest CPU share, so that it never slows the stages running
# beside it (on a small machine it competes for the same cores); bound to a submission, it gets the default.
SPARE_CPU_SHARES, FULL_CPU_SHARES = 2, 1024
SESSION_ISOLATION = ("one container per submission; each stage a fork of its warm server, every other process "
                     "of the container killed and /tmp, /scratch emptied between stages")


class SubmissionContainer:
    """The container of one submission: started blank (``template`` gives the job, GPU and threads), bound to
    a submission by ``bind``, removed by ``close``."""

    def __init__(self, daemon: Daemon, settings: ContainerSettings, template: SandboxRequest) -> None:
        self.daemon, self.settings, self.job_dir, self.gpu = daemon, settings, template.job_dir, template.gpu
        self.folder = Path(tempfile.mkdtemp(prefix="container-", dir=template.job_dir.parent))
        self.submission, self.runs, self.ctl = (self.folder / name for name in ("submission", "runs", "ctl"))
        for folder in (self.submission, self.runs, self.ctl):
            folder.mkdir()
        self.folder.chmod(0o755)
        self.runs.chmod(0o777)
        self.ctl.chmod(0o777)
        self.bound_to: Path | None = None
        self.uid = settings.new_uid()
        self.container: Container | None = None
        self.client: ForkServerClient | None = None
        self.output = HeadTail(4000)
        try:
            self._start(template)
        except BaseException:
            self.close()
            raise

    def bind(self, request: SandboxRequest) -> None:
        """Give this blank container its submission (a copy: the original stays the grader's)."""
        if self.bound_to is not None:
            raise InfrastructureError("a submission's container was offered to another submission")
        shutil.copytree(request.submission_dir, self.submission, symlinks=True, dirs_exist_ok=True)
        share_with_sandbox(dataclasses.replace(request, submission_dir=self.submission, out_dir=self.runs))
        self.runs.chmod(0o777)
        assert self.container is not None
        self.container.update(cpu_shares=FULL_CPU_SHARES)  # from a spare's idle share to a full one
        self.bound_to = request.submission_dir

    def run(self, request: SandboxRequest) -> SandboxRun:
        if request.submission_dir != self.bound_to or request.job_dir != self.job_dir:
            raise InfrastructureError("a stage of another submission was sent to this submission's container")
        inside = self.runs / request.stage
        remove_tree(inside, ignore_errors=True)
        inside.mkdir()
        inside.chmod(0o777)
        assert self.container is not None and self.client is not None
        mb = request.memory_mb
        self.container.update(mem_limit=f"{mb}m", memswap_limit=f"{mb}m")
        payload = {"runner": runner_args("/job", f"/runs/{request.stage}", "/submission", request.stage),
                   "config": {"cwd": "/scratch", "env": self.settings.environment(request),
                              "isolation": ISOLATION + "; " + SESSION_ISOLATION},
                   "deadline_s": request.timeout_s + DEADLINE_GRACE_S}  # ends there even with no grader left
        done = run_forked(self.client, payload, timeout_s=request.timeout_s, max_output_bytes=request.max_output_bytes)
        _hand_over(inside, request.out_dir)
        # A stage killed by SIGKILL that the host did not kill: the cgroup's OOM killer (it takes the stage
        # first: oom_score_adj 1000). MemoryError and friends are the other sign.
        oom = not done.timed_out and (done.exit_code == -9 or says_out_of_memory(done.stderr))
        info = {"engine": "docker", "image": self.settings.image, "container_id": self.container.id[:12],
                "user": self.uid, "per_submission": True}
        return SandboxRun(exit_code=done.exit_code, timed_out=done.timed_out, out_of_memory=oom,
                          duration_s=done.duration_s, stdout=done.stdout, stderr=done.stderr,
                          output_truncated=done.truncated, isolation=done.isolation, engine_info=info)

    @property
    def dead(self) -> bool:
        return self.client is None or bool(self.client.dead)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()  # the server kills its stages and exits; the container ends
        if self.container is not None:
            self.container.remove()
        remove_tree(self.folder, ignore_errors=True)

    def _start(self, request: SandboxRequest) -> None:
        settings = self.settings
        request = dataclasses.replace(request, submission_dir=self.submission, out_dir=self.runs)
        settings.check(request, extra_shown=(self.ctl,))
        share_with_sandbox(request)
        self.runs.chmod(0o777)
        argv = [settings.python, "-s", "-m", "grader.sandbox.forkserver", "--listen", f"/ctl/{SOCKET}",
                "--clean", "/tmp", "--clean", "/scratch", "--lifeline"]
        binds = [BindMount(request.job_dir, "/job"), BindMount(self.submission, "/submission"),
                 BindMount(self.runs, "/runs", False), BindMount(self.ctl, "/ctl", False), *weights_bind(request)]
        self.container = Container(self.daemon, settings, argv, request, uid=self.uid, binds=binds,
                                   stage="submission", cpu_shares=SPARE_CPU_SHARES, lifeline=True)
        self.container.start(self.output, self.output)
        self.client = ForkServerClient(self._connect(self.container), self._ended)

    def _connect(self, container: Container) -> socket.socket:
        """Wait for the server's socket (it appears once torch is imported), then connect to it."""
        path, deadline = self.ctl / SOCKET, time.monotonic() + START_TIMEOUT_S
        while not path.exists():
            if time.monotonic() > deadline or not container.state()["Running"]:
                raise InfrastructureError(f"the submission's container did not start its fork server: "
                                          f"{self.output.text()[0].strip()[-1500:] or 'no output'}")
            time.sleep(0.02)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        folder = os.open(self.ctl, os.O_RDONLY | os.O_DIRECTORY)  # a short path, whatever TMPDIR is
        try:
            sock.connect(f"/proc/self/fd/{folder}/{SOCKET}")
        except OSError as exc:
            sock.close()
            raise InfrastructureError(f"cannot connect to the submission container's fork server: {exc}") from exc
        finally:
            os.close(folder)
        return sock

    def _ended(self) -> str:
        """Why the server's connection closed: how its container ended, and its last output."""
        state: dict = {}
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.wait(5)
            with contextlib.suppress(Exception):
                state = self.container.state()
        return (f"the submission's container ended (exit code {state.get('ExitCode')}, out of memory: "
                f"{state.get('OOMKilled')}): {self.output.text()[0].strip()[-1500:] or 'no output'}")


def _hand_over(inside: Path, out_dir: Path) -> None:
    """The stage's outputs become its out folder by a rename (symlinks stay links; nothing is read)."""
    remove_tree(out_dir, ignore_errors=True)
    try:
        os.rename(inside, out_dir)
    except OSError as exc:  # another filesystem: refuse rather than copy what a student may have linked
        raise InfrastructureError(f"cannot move the stage's outputs {inside} to {out_dir}: {exc}; keep the "
                                  "grader's scratch on one filesystem") from exc
