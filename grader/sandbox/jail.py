"""The last two steps of confinement, in the stage's own process: entering the new root for good, and giving up
every capability. Only the standard library here (it runs in the sandbox, before student code).

- ``enter_root``: the stage's own mount namespace, then ``pivot_root`` into the allow-list root and the old root
  DETACHED. A ``chroot`` alone leaves the host's root one ``chroot(".."-walk)`` away for a process that still
  holds CAP_SYS_CHROOT (a grader run by an ordinary user maps the stage to root of a user namespace, with every
  capability there): after ``pivot_root`` + ``umount2(MNT_DETACH)`` there is no host root left in the
  namespace to walk back to. The relay (the stage's parent, in the mount namespace before this one) keeps the
  host's view it needs to copy the out folder back.
- ``drop_capabilities``: the bounding and ambient sets emptied, the securebits locked (uid 0 gains nothing
  from an exec) and the effective, permitted and inheritable sets cleared. Inside a user namespace that is what
  makes "root" an ordinary uid: no chroot, no mount, no unshare, no ptrace of the relay.
"""
from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

__all__ = ["drop_capabilities", "enter_root", "capabilities_now"]

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine())
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}.get(platform.machine())
CLONE_NEWNS, MNT_DETACH = 0x20000, 2
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 28, 47, 4
# NOROOT, NO_SETUID_FIXUP, KEEP_CAPS (locked off), NO_CAP_AMBIENT_RAISE: each with its lock bit
_SECUREBITS = 0b1 | 0b10 | 0b100 | 0b1000 | 0b100000 | 0b1000000 | 0b10000000
_CAP_VERSION_3 = 0x20080522


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str | None, target: str, fstype: str | None, flags: int) -> None:
    _check(_libc.mount(src.encode() if src else None, target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), None), f"mount {target}")


def enter_root(new: str) -> None:
    """Make ``new`` (a mount point: the allow-list tmpfs) this process's ``/``, with no way back to the host's."""
    if _SYS_PIVOT_ROOT is None:
        raise OSError(0, f"pivot_root: unknown on {platform.machine()}")
    _check(_libc.unshare(CLONE_NEWNS), "unshare(mount namespace)")  # the relay keeps the namespace before
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(new)
    # pivot_root(".", "."): the old root is stacked on "." and detached at once (pivot_root(2), NOTES)
    _check(_libc.syscall(_SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "detaching the host's root")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)  # the root's own tmpfs: read-only


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """No capability left, now or after any exec (the stage's uid may be 0 of its user namespace)."""
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text()) if os.path.exists(
        "/proc/sys/kernel/cap_last_cap") else 63
    _check(_libc.prctl(PR_SET_SECUREBITS, ctypes.c_ulong(_SECUREBITS), 0, 0, 0), "locking the securebits")
    for cap in range(last + 1):
        _check(_libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0), f"dropping capability {cap}")
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clearing ambient capabilities")
    header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    if _SYS_CAPSET is None:
        raise OSError(0, f"capset: unknown on {platform.machine()}")
    _check(_libc.syscall(_SYS_CAPSET, ctypes.byref(header), ctypes.byref(data)), "capset")
    if capabilities_now() != {"CapEff": 0, "CapPrm": 0, "CapBnd": 0, "CapAmb": 0}:
        raise OSError(0, f"capabilities left after dropping them: {capabilities_now()}")


def capabilities_now() -> dict[str, int]:
    """This process's capability sets, from /proc/self/status (the host's /proc or the stage's own)."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            found[key] = int(value.strip(), 16)
    return found
