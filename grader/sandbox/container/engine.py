"""The production sandbox engine: hardened, throw-away Docker containers.

A submission's stages run in one container of its own (``docker_session``: a warm fork server is its PID 1),
taken from a pool of warm spares (``docker_spares``) when one is ready; ``run_argv`` (and
``per_submission=False``) runs one container per command (``docker_container``). What the containers are
made with (the hardening) is ``docker_container``'s; talking to the daemon is ``docker_daemon``'s.

Every container the engine starts is removed: in ``finally`` after a command, by ``end_submission`` after a
submission, by ``close`` after a batch, and by ``abort`` when the grader is interrupted (then also those
being created at that moment). The batch owns the signal handling that calls ``abort`` and ``close``: no
constructor here installs a handler. Engine failures raise InfrastructureError.
"""
from __future__ import annotations

import threading
from pathlib import Path

import docker

from grader.sandbox.container import image as images
from grader.sandbox.base import SandboxRequest, SandboxRun, runner_argv
from grader.sandbox.container.containers import ISOLATION, BindMount, ContainerSettings, run_once
from grader.sandbox.container.daemon import Daemon, cleanup_leftovers, connect, engine_errors
from grader.sandbox.container.session import SESSION_ISOLATION, SubmissionContainer
from grader.sandbox.container.spares import SparePool

__all__ = ["DockerSandbox", "docker_sandbox_for_cli"]


class DockerSandbox:
    """Runs each submission's stages in a hardened container of its own, from ``image``; see the module
    docstring. Implements ``grader.sandbox.base.Sandbox``."""

    name = "docker"

    def __init__(self, *, image: str, gpus: tuple[str, ...] = (), python: str = "python",
                 extra_mounts: tuple[BindMount, ...] = (), client: docker.DockerClient | None = None,
                 user: str | None = None, per_submission: bool = True) -> None:
        self.settings = ContainerSettings(image=image, python=python, gpus=tuple(gpus),
                                          extra_mounts=tuple(extra_mounts), user=user)
        self.per_submission = per_submission
        self.daemon = Daemon(client if client is not None else connect())
        self._spares = SparePool(self._new_container)
        self._sessions: dict[tuple[Path, str | None], SubmissionContainer] = {}  # (submission, gpu) ->
        self._lock = threading.Lock()
        self._description: dict | None = None

    @property
    def image(self) -> str:
        return self.settings.image

    @property
    def python(self) -> str:
        return self.settings.python

    @property
    def gpus(self) -> tuple[str, ...]:
        return self.settings.gpus

    def run(self, request: SandboxRequest) -> SandboxRun:
        if not self.per_submission:
            return self.run_argv(runner_argv(self.python, "/job", "/out", "/submission", request.stage), request)
        return self._container_of(request).run(request)

    def run_argv(self, argv: list[str], request: SandboxRequest) -> SandboxRun:
        """Run ``argv`` in a hardened container made for ``request``; the container is always removed."""
        return run_once(self.daemon, self.settings, argv, request)

    def warm_up(self, threads: int) -> None:
        """Nothing to warm once per batch: each submission's container imports torch before its first stage."""

    def end_submission(self, submission_dir: Path) -> None:
        """The submission is graded: remove its container."""
        with self._lock:
            ended = [k for k in self._sessions if k[0] == submission_dir]
            sessions = [self._sessions.pop(k) for k in ended]
        for session in sessions:
            session.close()

    def close(self) -> None:
        """The batch is over: remove the spares (those being started too), any submission's still open, and
        whatever else of this engine is still on the daemon. The engine stays usable."""
        self._spares.close()
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()
        self.daemon.remove_all()  # e.g. a container whose binding failed: none may outlive the batch

    def abort(self) -> None:
        """The grader was interrupted: remove every container this engine has, now and whenever one being
        created appears, and refuse new runs (InfrastructureError)."""
        self.daemon.seal()  # first: a container created from now on is removed as soon as it exists
        self.daemon.remove_all()  # running stages end now, so the waits below are short
        self.close()

    def describe(self) -> dict:
        if self._description is None:
            with engine_errors(self.image):
                version = self.daemon.client.version()
                image_id = self.daemon.api.inspect_image(self.image)["Id"]
            self._description = {"engine": self.name, "image": self.image, "image_id": image_id,
                                 "docker_version": version.get("Version"),
                                 "api_version": version.get("ApiVersion"), "gpus": list(self.settings.gpus),
                                 "isolation": ISOLATION + (f"; {SESSION_ISOLATION}" if self.per_submission else ""),
                                 "per_submission": self.per_submission}
        return dict(self._description)

    def _new_container(self, template: SandboxRequest) -> SubmissionContainer:
        return SubmissionContainer(self.daemon, self.settings, template)

    def _container_of(self, request: SandboxRequest) -> SubmissionContainer:
        """The submission's container: its own, or a warm spare bound to it now (then another spare starts)."""
        self.daemon.refuse_if_sealed()
        key = (request.submission_dir, request.gpu)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and session.dead:
                del self._sessions[key]
        if session is not None and session.dead:
            session.close()
        elif session is not None:
            return session
        container = self._spares.take(request) or self._new_container(request)
        self._spares.refill(request)
        try:
            container.bind(request)
        except BaseException:
            container.close()
            raise
        with self._lock:
            self._sessions[key] = container
        return container


def docker_sandbox_for_cli(*, image: str | None = None, gpus: tuple[str, ...] = ()) -> DockerSandbox:
    """The engine behind ``--sandbox docker``: the production image (it must exist: the error names the
    build command), or with ``image="test"`` the local test image on the host's Python (no registry needed).
    Leftover containers of graders that died are removed first."""
    client = connect()
    cleanup_leftovers(client)
    if image in ("test", images.TEST_TAG):
        return DockerSandbox(image=images.build_test_image(client), gpus=gpus, python=images.test_python(),
                             extra_mounts=images.test_mounts(), client=client)
    tag = image or images.PRODUCTION_TAG
    images.ensure_image(client, tag, build=False)
    return DockerSandbox(image=tag, gpus=gpus, client=client)
