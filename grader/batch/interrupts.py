"""Signal handling owned by the batch: for the duration of a batch, SIGTERM becomes a clean interruption.

A grader killed by SIGTERM (a scheduler, ``timeout``, systemd) must leave no containers or fork servers
behind. Python's default SIGTERM action ends the process without running ``finally`` blocks, so for as long
as a batch runs, ``aborting_on_signals`` turns SIGTERM into ``Terminated`` (a ``KeyboardInterrupt``: the same
path as Ctrl-C, exit code 130), calls ``abort`` (kill what runs) on the way out and restores the previous
handlers afterwards. Nothing is installed at import time or from a constructor.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

__all__ = ["Terminated", "aborting_on_signals"]


class Terminated(KeyboardInterrupt):
    """The process received a termination signal during a batch (handled like Ctrl-C)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def aborting_on_signals(abort: Callable[[], None] | None = None,
                        signals: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[None]:
    """Within the block, ``signals`` raise ``Terminated`` in the main thread; on an interruption (that or
    Ctrl-C) ``abort`` is called before the exception propagates. Outside the main thread (a Ray task, a
    test's worker thread) Python cannot install handlers: the block runs unchanged, ``abort`` still runs on
    a KeyboardInterrupt."""
    installed: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        fired: list[int] = []

        def handler(signum: int, frame: object) -> None:
            if fired:  # already unwinding: a second signal must not interrupt the cleanup that removes containers
                return
            fired.append(signum)
            raise Terminated(signum)

        for sig in signals:
            installed[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
    try:
        yield
    except KeyboardInterrupt:
        if abort is not None:
            with contextlib.suppress(Exception):  # the interruption is what the caller must see
                abort()
        raise
    finally:
        for sig, previous in installed.items():
            # None: installed from C, not by Python; the default action is the closest we can restore
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)  # type: ignore[arg-type]
