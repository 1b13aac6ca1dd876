"""A CPU share per local-sandbox stage: a cgroup of its own whose quota is its ``threads`` cores.

Budgets are wall-clock, so at ``-j N`` a stage that ignores ``threads`` (spinning every core) would make its
neighbour's training run out of time. Each stage therefore joins, before it is confined, a cgroup of its own
under ``<cpu hierarchy>/seg-grader/``: ``cpu.max`` (cgroup v2) or ``cpu.cfs_quota_us`` (v1's cpu controller)
set to ``threads`` x the period. The fork server removes the cgroup once it has reaped the stage, and when it
starts, the empty ones a fork server killed outright (SIGKILL, out of memory) left behind (``sweep``).

Where no cpu controller can be written (no cgroup fs, v2 without the cpu controller delegated, an ordinary
user), the stage runs without a share and says so in its isolation line (provenance). Trusted, stdlib only.
"""
from __future__ import annotations

import os

__all__ = ["PERIOD_US", "join", "remove", "sweep"]

PERIOD_US = 100_000
_GROUP = "seg-grader"


def _mounts() -> tuple[str | None, str | None]:
    """(the cgroup2 mount point, the cgroup v1 mount point holding the cpu controller), either may be None."""
    v2 = v1 = None
    try:
        with open("/proc/self/mountinfo") as info:
            for line in info:
                fields = line.split()
                sep = fields.index("-")
                fstype, options = fields[sep + 1], fields[sep + 3].split(",") + fields[5].split(",")
                if fstype == "cgroup2" and v2 is None:
                    v2 = fields[4]
                elif fstype == "cgroup" and "cpu" in options and v1 is None:
                    v1 = fields[4]
    except (OSError, ValueError, IndexError):
        pass
    return v2, v1


def _base() -> tuple[str, str] | str:
    """(the folder of our stage cgroups, "v1" | "v2"), or why there is none."""
    v2, v1 = _mounts()
    if v2 is not None:
        try:
            with open(f"{v2}/cgroup.controllers") as controllers:
                has_cpu = "cpu" in controllers.read().split()
        except OSError:
            has_cpu = False
        if has_cpu:
            try:
                base = f"{v2}/{_GROUP}"
                os.makedirs(base, exist_ok=True)
                for folder in (v2, base):  # the cpu controller for the children (the root and ours hold no stage)
                    with open(f"{folder}/cgroup.subtree_control", "w") as control:
                        control.write("+cpu")
                return base, "v2"
            except OSError as exc:
                if v1 is None:
                    return f"cgroup v2 cpu controller not writable ({exc.strerror})"
    if v1 is not None:
        try:
            base = f"{v1}/{_GROUP}"
            os.makedirs(base, exist_ok=True)
            return base, "v1"
        except OSError as exc:
            return f"cgroup v1 cpu controller not writable ({exc.strerror})"
    return "no cgroup cpu controller on this host"


def join(cpus: int) -> str:
    """Move this process (the stage, before it is confined) into a new cgroup capped at ``cpus`` cores;
    returns the note for its isolation line."""
    found = _base()
    if isinstance(found, str):
        return f"CPU NOT capped: {found}; keep -j N x threads within the cores"
    base, version = found
    group = f"{base}/stage-{os.getpid()}"
    try:
        os.makedirs(group, exist_ok=True)
        if version == "v2":
            with open(f"{group}/cpu.max", "w") as limit:
                limit.write(f"{cpus * PERIOD_US} {PERIOD_US}")
        else:
            with open(f"{group}/cpu.cfs_period_us", "w") as period:
                period.write(str(PERIOD_US))
            with open(f"{group}/cpu.cfs_quota_us", "w") as quota:
                quota.write(str(cpus * PERIOD_US))
        with open(f"{group}/cgroup.procs", "w") as procs:
            procs.write(str(os.getpid()))
    except OSError as exc:
        return f"CPU NOT capped: its cgroup could not be made ({exc.strerror})"
    return f"CPU capped at {cpus} core{'s' if cpus != 1 else ''} (cgroup {version})"


def remove(pid: int) -> None:
    """The fork server, once stage ``pid`` is reaped (its cgroup is empty): remove its cgroup, if any."""
    v2, v1 = _mounts()
    for mount in (v2, v1):
        if mount is not None:
            try:
                os.rmdir(f"{mount}/{_GROUP}/stage-{pid}")
            except OSError:
                pass


def sweep() -> list[str]:
    """Remove the stage cgroups whose process is gone (left by a fork server that died before it could reap):
    only ``stage-<pid>`` of a pid that no longer exists, and only when empty (the kernel refuses a cgroup that
    still holds a process). A concurrent grader's cgroups belong to live pids and are left alone. Returns the
    paths removed."""
    removed = []
    for mount in _mounts():
        folder = f"{mount}/{_GROUP}" if mount is not None else None
        try:
            names = os.listdir(folder) if folder else []
        except OSError:
            continue
        for name in names:
            pid = name.removeprefix("stage-")
            if not (name.startswith("stage-") and pid.isdigit()) or _alive(int(pid)):
                continue
            try:
                os.rmdir(f"{folder}/{name}")
                removed.append(f"{folder}/{name}")
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True
