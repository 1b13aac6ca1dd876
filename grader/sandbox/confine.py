"""Confine a command before exec'ing it: the first code of the local sandbox, trusted, pre-student.

``python -m grader.sandbox.confine --config FILE -- CMD...`` (spawned by ``grader.sandbox.local``):
1. new mount + network (+ user, when not root) namespaces, where the kernel allows;
2. a tmpfs over every hidden path (reference/, expected outputs, evaluation labels, the grader's results,
   root's home), a private tmpfs over /tmp and /dev/shm, re-binding only what the run needs (the Python
   installation read-only, the job and submission read-only, the out folder and scratch writable);
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


def _inside(path: str, mounts: list[str]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def _hide(cfg: dict) -> list[str]:
    """Empty tmpfs over each hidden path, a private writable tmpfs over each shared scratch place (/tmp,
    /dev/shm: nothing of the host or of other students), then the paths the run needs bound back in."""
    expose = {p: os.open(p, os.O_PATH) for p, _ in cfg["expose"] if os.path.exists(p)}
    writable = {p for p, rw in cfg["expose"] if rw}
    mounted = []
    for path in cfg["hidden"] + cfg["private"]:
        if os.path.isdir(path):
            private = path in cfg["private"]
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV,
                   "size=512m,mode=1777" if private else "size=64k,mode=755")
            mounted.append(path)
    for path, fd in sorted(expose.items()):
        if _inside(path, mounted):
            os.makedirs(path, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            if path not in writable:
                _mount("none", path, None, MS_BIND | MS_REC | MS_RDONLY | MS_REMOUNT | MS_NOSUID)
        os.close(fd)
    return [f"hid {len(mounted) - len(cfg['private'])} paths, private {', '.join(cfg['private'])}"]


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
        notes += _hide(cfg)
        _become_pid1_parent(argv)
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
