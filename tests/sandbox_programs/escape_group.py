"""Tries to outlive its stage: ignores SIGTERM, leaves the stage's process group and session, clears its
parent-death signal, and leaves a forked child that does the same; then both loop forever."""
import ctypes
import os
import signal
import time

PR_SET_PDEATHSIG = 1
libc = ctypes.CDLL(None)


def escape() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.setsid()
    except OSError:  # already a group leader
        pass
    libc.prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0)


escape()
if os.fork() == 0:
    escape()
print("escaped", flush=True)
while True:
    time.sleep(1)
