"""Confine the current process: the first code of every local-sandbox stage, trusted, pre-student.

``confine(cfg)`` runs in a child that the fork server (``grader.sandbox.forkserver``) has just forked for one
stage, before any student code; it returns in the confined process:
1. new mount + network (+ user, when not root) namespaces, where the kernel allows;
2. a new root built from an ALLOW-list, then chroot: a tmpfs holding only the system folders (read-only),
   /dev, a fresh /proc, private /tmp, /var/tmp and /dev/shm, and the paths the run needs bound in (the
   Python installation, the grader package, the job and the submission read-only; the out folder and the
   scratch writable). Nothing else of the host exists inside: not reference/, not the labels or the cache,
   not the results, not home folders, not other checkouts of the repository;
3. a new PID namespace, so the sandbox dies as a whole when its first process dies;
4. rlimits (address space, or data with a GPU; processes, file size, no core dumps) and, when root, the
   uid/gid of nobody.
Its first stderr line says what held: ``[sandbox] isolation: ...``; a stage without that line never got
this far, which is the grader's fault, never the student's. What the kernel refuses is said there and the
stage still runs (the local sandbox is documented as weaker than Docker). Only the standard library here.
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal
from pathlib import Path

__all__ = ["MARKER", "confine", "prctl", "set_parent_death_signal"]

MARKER = "[sandbox] isolation: "
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
NOBODY = 65534
_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), f"mount {target}")


def _enter_namespaces(root: bool) -> list[str]:
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | (0 if root else CLONE_NEWUSER)
    _check(_libc.unshare(flags), "unshare")
    if not root:  # map ourselves to root of the new user namespace, so mounts are allowed
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
        Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    return ["mount, network and PID namespaces" + ("" if root else " (in a user namespace)")]


SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


def _bind(source: str, target: str, *, writable: bool) -> None:
    os.makedirs(target, exist_ok=True)
    _mount(source, target, None, MS_BIND | MS_REC)
    if not writable:
        _mount("none", target, None, MS_BIND | MS_REC | MS_RDONLY | MS_REMOUNT | MS_NOSUID)


def _build_root(cfg: dict) -> str:
    """A tmpfs root holding only the allow-list; returns its host path (chroot into it later)."""
    new = cfg["root_dir"]
    _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=755")
    for path in SYSTEM_DIRS:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            os.symlink(os.readlink(path), new + path)
        elif os.path.isdir(path):
            _bind(path, new + path, writable=False)
    _bind("/dev", new + "/dev", writable=True)
    os.makedirs(new + "/proc")
    for path in PRIVATE_DIRS:
        os.makedirs(new + path, exist_ok=True)
        _mount("tmpfs", new + path, "tmpfs", MS_NOSUID | MS_NODEV, "size=512m,mode=1777")
    for path, writable in sorted(cfg["expose"]):
        if os.path.exists(path):
            _bind(path, new + path, writable=writable)
    return new


def _enter_root(new: str) -> None:
    """In the PID namespace's first process: its own /proc, then the new root."""
    _mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | 8)  # 8: MS_NOEXEC
    os.chroot(new)
    os.chdir("/")


def _limits(cfg: dict) -> None:
    """The memory limit is the address space (every mapping counts), except with a GPU: CUDA reserves far
    more address space than it uses (a 16 GB limit fails on an H100), so there it is the data segment
    (private writable memory: the process's own allocations; not shared mappings)."""
    mb = 1024 * 1024
    memory = "RLIMIT_DATA" if cfg.get("gpu") else "RLIMIT_AS"
    for name, value in ((memory, cfg["memory_mb"] * mb), ("RLIMIT_NPROC", cfg["max_processes"]),
                        ("RLIMIT_FSIZE", cfg["max_file_mb"] * mb), ("RLIMIT_CORE", 0)):
        resource.setrlimit(getattr(resource, name), (value, value))


def _drop_privileges() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def prctl(option: int, value: int) -> None:
    _libc.prctl(option, value, 0, 0, 0)


def set_parent_death_signal(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig)


def _become_pid1_parent() -> None:
    """After CLONE_NEWPID the next child is PID 1 of the namespace. This process stays outside as its relay:
    it waits and relays the exit, and a SIGTERM (the server's kill, or its death) makes it SIGKILL PID 1,
    which takes the whole namespace with it, whatever the student did to its process group."""
    pid = os.fork()
    if pid == 0:
        set_parent_death_signal(signal.SIGKILL)
        return
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
    set_parent_death_signal(signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def confine(cfg: dict) -> None:
    """Confine this process as ``cfg`` says (root_dir, expose, cwd, memory_mb, max_processes, max_file_mb) and
    write the marker line to stderr; returns in the confined process, its working folder ``cfg["cwd"]``."""
    root = os.getuid() == 0
    notes: list[str] = []
    try:
        notes += _enter_namespaces(root)
        new_root = _build_root(cfg)
        _become_pid1_parent()
        _enter_root(new_root)
        notes.append("an allow-list root (system folders, Python, grader, job, submission, out, scratch)")
    except OSError as exc:
        notes.append(f"NOT isolated: the kernel refused namespaces ({exc}); reference/ and labels are "
                     "hidden only by file permissions")
    _limits(cfg)
    if root:
        _drop_privileges()
        notes.append("ran as nobody")
    set_parent_death_signal(signal.SIGKILL)  # again: changing the uid cleared it
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    memory = "of private data (GPU stage)" if cfg.get("gpu") else "address space"
    notes.append(f"rlimits: {cfg['memory_mb']} MB {memory}, {cfg['max_processes']} processes")
    os.write(2, (MARKER + "; ".join(notes) + "\n").encode())
    os.chdir(cfg["cwd"])
