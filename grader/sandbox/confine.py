"""Confine a command before exec'ing it: the first code of the local sandbox, trusted, pre-student.

``python -m grader.sandbox.confine --config FILE -- CMD...`` (spawned by ``grader.sandbox.local``):
1. new mount + network (+ user, when not root) namespaces, where the kernel allows;
2. a new root built from an ALLOW-list, then chroot: a tmpfs holding only the system folders (read-only),
   /dev, a fresh /proc, private /tmp, /var/tmp and /dev/shm, and the paths the run needs bound in (the
   Python installation, the grader package, the job and the submission read-only; the out folder and the
   scratch writable). Nothing else of the host exists inside: not reference/, not the labels or the cache,
   not the results, not home folders, not other checkouts of the repository;
3. a new PID namespace, so the sandbox dies as a whole when its first process dies;
4. rlimits (address space, processes, file size, no core dumps) and, when root, the uid/gid of nobody.
Its first stderr line says what held: ``[sandbox] isolation: ...``. What the kernel refuses is said there
and the command still runs (the local sandbox is documented as weaker than Docker).
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
from pathlib import Path

__all__ = ["MARKER", "main"]

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
    mb = 1024 * 1024
    for name, value in (("RLIMIT_AS", cfg["memory_mb"] * mb), ("RLIMIT_NPROC", cfg["max_processes"]),
                        ("RLIMIT_FSIZE", cfg["max_file_mb"] * mb), ("RLIMIT_CORE", 0)):
        resource.setrlimit(getattr(resource, name), (value, value))


def _drop_privileges() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _become_pid1_parent(argv: list[str]) -> None:
    """After CLONE_NEWPID the next child is PID 1 of the namespace; we wait and relay its exit."""
    pid = os.fork()
    if pid == 0:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        return
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
    _, status = os.waitpid(pid, 0)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def main() -> None:
    sep = sys.argv.index("--")
    cfg = json.loads(Path(sys.argv[sys.argv.index("--config") + 1]).read_text())
    argv = sys.argv[sep + 1:]
    root = os.getuid() == 0
    # Die with the grader: if it is killed (even SIGKILL), no student code outlives it, timeout or not.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    notes: list[str] = []
    try:
        notes += _enter_namespaces(root)
        new_root = _build_root(cfg)
        _become_pid1_parent(argv)
        _enter_root(new_root)
        notes.append("an allow-list root (system folders, Python, grader, job, submission, out, scratch)")
    except OSError as exc:
        notes.append(f"NOT isolated: the kernel refused namespaces ({exc}); reference/ and labels are "
                     "hidden only by file permissions")
    _limits(cfg)
    if root:
        _drop_privileges()
        notes.append("ran as nobody")
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    notes.append(f"rlimits: {cfg['memory_mb']} MB address space, {cfg['max_processes']} processes")
    sys.stderr.write(MARKER + "; ".join(notes) + "\n")
    sys.stderr.flush()
    os.chdir(cfg["cwd"])
    os.execve(argv[0], argv, cfg["env"])


if __name__ == "__main__":
    main()
