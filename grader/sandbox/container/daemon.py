"""Talking to the Docker daemon: connecting, turning its failures into InfrastructureError, the label every
container of ours carries, the containers one engine has there, and the sweep of those a dead grader left.

An engine keeps its containers in a ``Daemon`` (never in a process-wide registry): ``abort`` seals it, so a
container whose creation was under way when the grader was interrupted is removed as soon as it is adopted,
and ``remove_all`` removes what is there. The batch owns the signal handling that calls ``abort``.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Iterator

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from grader.sandbox.base import InfrastructureError

__all__ = ["LABEL", "START_DOCKER_HINT", "Daemon", "connect", "engine_errors", "owner", "labels",
           "cleanup_leftovers"]

LABEL = "seg-autograder"  # every container we create carries {LABEL: "1"}: leftovers are findable
START_DOCKER_HINT = ("start the Docker Engine: `sudo systemctl start docker` (or `sudo dockerd &`; "
                     "`bash .ci/docker-setup.sh` installs and starts it)")
INTERRUPTED = "the grader was interrupted"


def connect(*, base_url: str | None = None, timeout_s: int = 60) -> docker.DockerClient:
    """A client for the local (or given) Docker Engine; InfrastructureError saying how to start it."""
    try:
        if base_url is None:
            return docker.from_env(timeout=timeout_s)
        return docker.DockerClient(base_url=base_url, timeout=timeout_s)
    except DockerException as exc:
        raise InfrastructureError(f"Docker Engine not reachable ({exc}); {START_DOCKER_HINT}") from exc


@contextlib.contextmanager
def engine_errors(image: str) -> Iterator[None]:
    """Turn the engine's failures into InfrastructureError: they are never the student's fault."""
    try:
        yield
    except ImageNotFound as exc:
        raise InfrastructureError(f"Docker image {image!r} is missing: build it with "
                                  f"`docker build -t {image} .` in the grader repository ({exc})") from exc
    except (requests.exceptions.ConnectionError, DockerException) as exc:
        if isinstance(exc, APIError) and "device driver" in str(exc):
            raise InfrastructureError(f"GPU requested but Docker has no GPU support ({exc}): install the "
                                      "NVIDIA Container Toolkit and restart dockerd") from exc
        if isinstance(exc, APIError):
            raise InfrastructureError(f"Docker Engine error: {exc}") from exc
        raise InfrastructureError(f"Docker Engine not reachable ({exc}); {START_DOCKER_HINT}") from exc


def owner() -> str:
    """Who made a container: this host and process (the sweep keeps the containers of live graders)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def labels(stage: str) -> dict[str, str]:
    """The labels of a container we create: ours, for which stage, made by which grader."""
    return {LABEL: "1", f"{LABEL}.stage": stage, f"{LABEL}.owner": owner()}


class Daemon:
    """One engine's daemon: its client, the daemon's core count, and every container the engine has there."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client, self.api = client, client.api
        self._live: set[str] = set()
        self._lock = threading.Lock()
        self._sealed = False
        self._cpus: int | None = None

    def cpus(self) -> int:
        """The daemon refuses a CPU quota above its own core count: the engine clamps to this (asked once)."""
        if self._cpus is None:
            self._cpus = int(self.client.info().get("NCPU") or os.cpu_count() or 1)
        return self._cpus

    def refuse_if_sealed(self) -> None:
        """Before creating anything: an interrupted grader starts no container."""
        if self._sealed:
            raise InfrastructureError(INTERRUPTED)

    def adopt(self, container_id: str) -> None:
        """Count a container just created as ours; once sealed, remove it at once and say so."""
        with self._lock:
            if not self._sealed:
                self._live.add(container_id)
                return
        self.remove(container_id)
        raise InfrastructureError(INTERRUPTED)

    def remove(self, container_id: str) -> None:
        """Force-remove one container (gone already is fine: removal is idempotent)."""
        with contextlib.suppress(NotFound, DockerException, requests.exceptions.RequestException):
            self.api.remove_container(container_id, force=True)
        with self._lock:
            self._live.discard(container_id)

    def seal(self) -> None:
        """The grader was interrupted: no container of this engine may outlive the moment, now or later."""
        with self._lock:
            self._sealed = True

    def remove_all(self) -> int:
        """Force-remove every container this engine still has; how many there were."""
        with self._lock:
            found = list(self._live)
        for container_id in found:
            self.remove(container_id)
        return len(found)


def _owner_alive(made_by: str) -> bool:
    """Whether the grader that made a container may still be running it (another host's: cannot tell).
    Ours counts as alive: this process's containers belong to its engines, which remove them."""
    host, _, pid = made_by.rpartition(":")
    if host and host != socket.gethostname():
        return True
    if not pid.isdigit():
        return False  # unlabelled: nobody will remove it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, run by another user
    return True


def cleanup_leftovers(client: docker.DockerClient) -> list[str]:
    """Remove labelled containers left by a crashed grader; those of still-running graders (this process
    included) are kept."""
    with engine_errors("-"):
        found = client.api.containers(all=True, filters={"label": f"{LABEL}=1"})
    removed = []
    for entry in found:
        made_by = (entry.get("Labels") or {}).get(f"{LABEL}.owner", "")
        if _owner_alive(made_by):
            continue
        with contextlib.suppress(NotFound, DockerException, requests.exceptions.RequestException):
            client.api.remove_container(entry["Id"], force=True)
        removed.append(entry["Id"])
    return removed
