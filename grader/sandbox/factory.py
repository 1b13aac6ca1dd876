"""The one place that turns "which engine" into a sandbox: ``SandboxSpec`` (plain data: it can be pickled
and sent to a Ray node, which builds the engine there) and ``make_sandbox``.

The engines are imported only when one is made: describing a sandbox (a CLI argument, a Ray task's spec)
imports neither the Docker SDK nor the fork server, and connects to nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

if TYPE_CHECKING:
    from grader.sandbox.base import Sandbox

__all__ = ["KINDS", "SandboxSource", "SandboxSpec", "make_sandbox", "spec_of"]

KINDS = ("local", "docker")


@dataclass(frozen=True)
class SandboxSpec:
    """Which engine, with which image and GPUs: what a sandbox is, without building it."""

    kind: str = "local"  # "local" | "docker"
    image: str | None = None  # docker: the image tag ("test": the local test image; None: the production one)
    gpus: tuple[str, ...] = ()  # docker: the GPU indices the engine may hand to containers
    unconfined_ok: bool = False  # local: `grader check` only, where the kernel refuses namespaces (confine.py)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown sandbox {self.kind!r}: choose one of {', '.join(KINDS)}")

    def make(self) -> Sandbox:
        return make_sandbox(self.kind, image=self.image, gpus=self.gpus, unconfined_ok=self.unconfined_ok)


# What a batch is handed: the engine itself, a spec, or a function that makes one (called only when needed).
SandboxSource = Union["Sandbox", SandboxSpec, Callable[[], "Sandbox"]]


def make_sandbox(kind: str = "local", *, image: str | None = None, gpus: tuple[str, ...] = (),
                 unconfined_ok: bool = False) -> Sandbox:
    """Build the engine ``kind`` (the Docker one connects to the daemon and sweeps leftovers: an
    InfrastructureError names what is missing). ``unconfined_ok``: a student's self-check, which may run
    unconfined where the kernel refuses namespaces; a staff grader never does."""
    if kind == "local":
        from grader.sandbox.local import LocalSandbox  # the engines: only when one is made

        return LocalSandbox(unconfined_ok=unconfined_ok)
    if kind == "docker":
        from grader.sandbox.container.engine import docker_sandbox_for_cli

        return docker_sandbox_for_cli(image=image, gpus=tuple(gpus))
    raise ValueError(f"unknown sandbox {kind!r}: choose one of {', '.join(KINDS)}")


def spec_of(source: SandboxSource) -> SandboxSpec:
    """The spec of what a batch was handed, without building anything: a spec is itself; a built engine
    says its name and image. A bare factory cannot say what it would build without being called."""
    if isinstance(source, SandboxSpec):
        return source
    if hasattr(source, "run") and hasattr(source, "name"):
        return SandboxSpec(kind=source.name, image=getattr(source, "image", None),
                           gpus=tuple(getattr(source, "gpus", ()) or ()))
    raise TypeError("a sandbox factory cannot be sent to other machines: pass a SandboxSpec or a sandbox")
