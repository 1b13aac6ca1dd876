"""The pool of warm spares: blank submission containers started in the background, so that the next
submission rarely waits for a container start and the fork server's torch import (about 2.5 s).

Spares are kept per (job, GPU, threads), at most ``MAX_SPARES`` each. ``close`` ends a generation: spares
being started for an older one are removed by their own starter, which ``close`` waits for, so that nothing
it started outlives it.
"""
from __future__ import annotations

import threading
from typing import Callable

from grader.sandbox.base import SandboxRequest
from grader.sandbox.container.session import SubmissionContainer

__all__ = ["SparePool", "MAX_SPARES"]

MAX_SPARES = 2  # warm blank containers kept per job, GPU and thread count (each holds torch imported)


def _pool_of(request: SandboxRequest) -> tuple:
    return request.job_dir, request.gpu, request.threads


class SparePool:
    """Warm blank containers made by ``make`` (from a request that gives the job, the GPU and the threads)."""

    def __init__(self, make: Callable[[SandboxRequest], SubmissionContainer], *, limit: int = MAX_SPARES) -> None:
        self._make, self._limit = make, limit
        self._spares: dict[tuple, list[SubmissionContainer]] = {}
        self._starting: set[threading.Thread] = set()
        self._generation = 0
        self._lock = threading.Lock()

    def take(self, request: SandboxRequest) -> SubmissionContainer | None:
        """A live spare for ``request``'s job, GPU and threads, or None (a dead one is removed)."""
        with self._lock:
            spares = self._spares.get(_pool_of(request), [])
            spare = spares.pop(0) if spares else None
        if spare is not None and spare.dead:
            spare.close()
            return None
        return spare

    def refill(self, template: SandboxRequest) -> None:
        """Start one more spare for ``template``'s pool in the background (unless the pool is full)."""
        with self._lock:
            starter = threading.Thread(target=self._start_one, args=(template, self._generation), daemon=True,
                                       name="docker-spare")
            self._starting.add(starter)
        starter.start()

    def close(self) -> None:
        """Remove every spare, those being started included (waits for their starters)."""
        with self._lock:
            self._generation += 1
            starting = list(self._starting)
        for thread in starting:  # a spare of an older generation is removed by its own starter
            thread.join()
        with self._lock:
            spares = [c for pool in self._spares.values() for c in pool]
            self._spares = {}
        for spare in spares:
            spare.close()

    def _start_one(self, template: SandboxRequest, generation: int) -> None:
        pool = _pool_of(template)
        try:
            with self._lock:
                if len(self._spares.get(pool, ())) >= self._limit:
                    return
            try:
                spare = self._make(template)
            except Exception:  # noqa: BLE001 - the next submission starts its own and reports why
                return
            with self._lock:
                keep = generation == self._generation and len(self._spares.setdefault(pool, [])) < self._limit
                if keep:
                    self._spares[pool].append(spare)
            if not keep:
                spare.close()
        finally:
            with self._lock:
                self._starting.discard(threading.current_thread())
