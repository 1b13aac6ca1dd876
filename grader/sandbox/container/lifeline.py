"""PID 1 of a one-command container: it ends the container by itself, whatever happens to the grader.

``python -s -m grader.sandbox.container.lifeline DEADLINE_S -- ARGV...`` runs ARGV as its child (stdin
/dev/null) and ends the container, killing every process in it (``kill(-1)`` from PID 1 spares only
itself; the container ends when PID 1 does), at the first of:
- the child's exit (its exit code is the container's: 128 + N for a signal N, as a shell says it);
- the DEADLINE (the stage's budget plus a grace, set by the grader): exit code 124; the grader's own clock
  runs out first and kills it from outside, this is the backstop when no grader is left to do so;
- the LIFELINE: its stdin is the grader's attached stream (``stdin_once``: Docker closes it when the grader
  that attached it is gone: killed, out of memory, its node lost). End of file there: exit code 125.
Trusted, stdlib only, in the container, before any student code (the child is the student's stage).
"""
from __future__ import annotations

import os
import select
import signal
import sys
import time

__all__ = ["main", "DEADLINE_EXIT", "LIFELINE_EXIT"]

DEADLINE_EXIT, LIFELINE_EXIT = 124, 125
POLL_S = 0.2


def _end(code: int) -> None:
    try:
        os.kill(-1, signal.SIGKILL)  # as PID 1: every other process of the container
    except (ProcessLookupError, PermissionError):
        pass
    os._exit(code)


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.exit("usage: python -m grader.sandbox.container.lifeline DEADLINE_S -- ARGV...")
    deadline = time.monotonic() + float(argv[0])
    child = os.fork()
    if child == 0:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.execvp(argv[2], argv[2:])
    while True:
        pid, status = os.waitpid(-1, os.WNOHANG)  # PID 1 reaps orphans too
        if pid == child:
            _end(code if (code := os.waitstatus_to_exitcode(status)) >= 0 else 128 - code)
        left = deadline - time.monotonic()
        if left <= 0:
            os.write(2, b"[lifeline] the stage's deadline passed: the container ends\n")
            _end(DEADLINE_EXIT)
        readable, _, _ = select.select([0], [], [], min(POLL_S, left))
        if readable:
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if not data:
                os.write(2, b"[lifeline] the grader is gone: the container ends\n")
                _end(LIFELINE_EXIT)


if __name__ == "__main__":
    main(sys.argv[1:])
