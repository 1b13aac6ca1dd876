"""Confine the current process: the first code of every local-sandbox stage, trusted, pre-student.

``confine(cfg)`` runs in a child that the fork server (``grader.sandbox.forkserver``) has just forked for one
stage, before any student code; it returns in the confined process:
1. new mount, network and IPC (+ user, when not root) namespaces, where the kernel allows: SysV message
   queues, shared memory and POSIX message queues are the stage's own and die with it;
2. a new root built from an ALLOW-list, then chroot: a tmpfs holding only the system folders (read-only),
   /dev, a fresh /proc, and the paths the run needs bound in (the Python installation, the grader package
   WITHOUT its host-only modules, the job and the submission read-only). Everything writable (/tmp,
   /var/tmp, /dev/shm, the scratch and the out folder) is ONE size-capped tmpfs that dies with the stage;
   the relay copies the out folder's files to the host after the stage. Nothing else of the host exists
   inside: not reference/, not the labels or the cache, not the results, not home folders;
3. a new PID namespace, so the sandbox dies as a whole when its first process dies;
4. rlimits (address space, or data with a GPU, plus the tmpfs: together the stage's memory budget;
   processes, file size, no core dumps) and, when root, the submission's own uid/gid (``cfg["uid"]``,
   from a reserved range: process limits and keyrings are per student), a fresh session keyring.
Its first stderr line says what held: ``[sandbox] isolation: ...``; a stage without that line never got
this far, which is the grader's fault, never the student's. What the kernel refuses is said there and the
stage still runs (the local sandbox is documented as weaker than Docker). Only the standard library here.
"""
from __future__ import annotations

import ctypes
import os
import platform
import re
import resource
import signal
import stat
from pathlib import Path

__all__ = ["MARKER", "SANDBOX_PACKAGES", "SANDBOX_VISIBLE", "SUBMISSION_UIDS", "confine", "prctl", "set_parent_death_signal", "visible_package"]

MARKER = "[sandbox] isolation: "
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
CLONE_NEWIPC = 0x08000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
NOBODY = 65534
SUBMISSION_UIDS = range(100_000, 200_000)  # reserved for students, as the Docker engine's uids
MB = 1024 * 1024
_libc = ctypes.CDLL(None, use_errno=True)

# What a stage is shown of the ``grader`` package: an ALLOW-list of its top-level entries. The packages are
# grouped by who may see them (README, "Layout"): ``core`` (results, the output reader, metrics, lazy imports,
# cleanup, the VOC loader), ``checks`` (one module per check kind), ``sandbox`` (the engines, the fork server)
# and the runner. Everything else (intake, data with the generator and the evaluation key, job, batch, kit,
# similarity, report, the rubric, the CLI) is host only and simply absent inside. tests/test_imports.py fails
# when the runner's import closure leaves this list; the fork server refuses to start if its preload did.
SANDBOX_VISIBLE = ("__init__.py", "runner.py", "core", "checks", "sandbox")
SANDBOX_PACKAGES = frozenset(n.removesuffix(".py") for n in SANDBOX_VISIBLE if n != "__init__.py")

# The one writable tmpfs: its sub-folders and where the stage sees them (scratch and out: cfg's paths).
SHARED_TMP = (("tmp", "/tmp"), ("var-tmp", "/var/tmp"), ("shm", "/dev/shm"))
MAX_INODES = 32768  # tmpfs inodes are kernel memory its size cap does not count; also bounds the copy-out
MAX_OUT_FILES = 4096
_OUT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,160}")  # what the runner writes; anything else is not copied out
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}.get(platform.machine())
KEYCTL_JOIN_SESSION_KEYRING, KEYCTL_CLEAR, KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING = 1, 7, -4, -5


def visible_package(package: str) -> list[str]:
    """The files and folders of the ``grader`` package at ``package`` that a stage is shown (each bound in on
    its own): SANDBOX_VISIBLE and the compiled files of its top-level modules, nothing else."""
    shown = [os.path.join(package, n) for n in SANDBOX_VISIBLE
             if os.path.exists(os.path.join(package, n)) and not os.path.islink(os.path.join(package, n))]
    cache = os.path.join(package, "__pycache__")
    if os.path.isdir(cache) and not os.path.islink(cache):
        shown += [os.path.join(cache, n) for n in sorted(os.listdir(cache))
                  if n.split(".")[0] in {"__init__", "runner"}]
    return shown


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), f"mount {target}")


def _enter_namespaces(root: bool, disk_mb: int) -> list[str]:
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | (0 if root else CLONE_NEWUSER)
    _check(_libc.unshare(flags), "unshare")
    if not root:  # map ourselves to root of the new user namespace, so mounts are allowed
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
        Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    return ["mount, network, PID and IPC namespaces" + ("" if root else " (in a user namespace)"),
            _limit_sysv(disk_mb)]


def _limit_sysv(disk_mb: int) -> str:
    """SysV shared memory outlives a detach (not in the address space then): cap it like the tmpfs. The
    settings are the new IPC namespace's own (/proc/sys/kernel is per IPC namespace for these)."""
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        for name, value in (("shmmax", disk_mb * MB), ("shmall", disk_mb * MB // page), ("shmmni", 64),
                            ("msgmni", 16)):
            Path(f"/proc/sys/kernel/{name}").write_text(str(value))
    except OSError as exc:
        return f"SysV IPC of its own, its sizes NOT capped ({exc.strerror})"
    return f"SysV IPC of its own, shared memory at most {disk_mb} MB"


SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")


def _bind(source: str, target: str, *, writable: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:  # a single file (the grader package is shown file by file)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "a"):
            pass
    _mount(source, target, None, MS_BIND | MS_REC)
    if not writable:
        _mount("none", target, None, MS_BIND | MS_REC | MS_RDONLY | MS_REMOUNT | MS_NOSUID)


def _writable_space(cfg: dict) -> None:
    """One tmpfs, outside the new root (unreachable after chroot), capped at disk_mb and MAX_INODES; its
    sub-folders are bound where the stage writes. Scratch and out belong to the stage's uid."""
    rw, uid = cfg["rw_dir"], cfg.get("uid")
    _mount("tmpfs", rw, "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['disk_mb']}m,nr_inodes={MAX_INODES},mode=700")
    for name, _ in SHARED_TMP:
        os.mkdir(f"{rw}/{name}")
        os.chmod(f"{rw}/{name}", 0o1777)
    for name in ("scratch", "out"):
        os.mkdir(f"{rw}/{name}", 0o700)
        if uid is not None:
            os.chown(f"{rw}/{name}", uid, uid)


def _build_root(cfg: dict) -> tuple[str, str]:
    """A tmpfs root holding only the allow-list; returns its host path (chroot into it later) and a note."""
    new, rw = cfg["root_dir"], cfg["rw_dir"]
    _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=755")
    for path in SYSTEM_DIRS:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            os.symlink(os.readlink(path), new + path)
        elif os.path.isdir(path):
            _bind(path, new + path, writable=False)
    _bind("/dev", new + "/dev", writable=True)
    mqueue = "POSIX message queues of its own"
    if os.path.isdir("/dev/mqueue"):  # the host's queues are listed there: show this namespace's instead
        _mount("mqueue", new + "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | 8)
        mqueue += " (/dev/mqueue mounted fresh)"
    os.makedirs(new + "/proc")
    _writable_space(cfg)
    for name, path in SHARED_TMP:
        _bind(f"{rw}/{name}", new + path, writable=True)
    for path, writable in sorted(cfg["expose"]):
        if os.path.exists(path):
            _bind(path, new + path, writable=writable)
    _bind(f"{rw}/scratch", new + cfg["cwd"], writable=True)
    _bind(f"{rw}/out", new + cfg["out_dir"], writable=True)
    return new, mqueue


def _enter_root(new: str) -> None:
    """In the PID namespace's first process: its own /proc, then the new root."""
    _mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | 8)  # 8: MS_NOEXEC
    os.chroot(new)
    os.chdir("/")


def _limits(cfg: dict) -> None:
    """The memory limit is the address space (every mapping counts), except with a GPU: CUDA reserves far
    more address space than it uses (a 16 GB limit fails on an H100), so there it is the data segment
    (private writable memory: the process's own allocations; not shared mappings). Either way the tmpfs's
    share (disk_mb) is taken out of the budget: its pages are memory no rlimit sees."""
    memory = "RLIMIT_DATA" if cfg.get("gpu") else "RLIMIT_AS"
    for name, value in ((memory, (cfg["memory_mb"] - cfg["disk_mb"]) * MB), ("RLIMIT_NPROC", cfg["max_processes"]),
                        ("RLIMIT_FSIZE", cfg["max_file_mb"] * MB), ("RLIMIT_CORE", 0)):
        resource.setrlimit(getattr(resource, name), (value, value))


def _drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _keyctl(*args: int) -> int:
    return _libc.syscall(ctypes.c_long(_SYS_KEYCTL), *(ctypes.c_long(a) for a in args))


def _fresh_keyrings(own_uid: bool) -> str:
    """A new session keyring (else every stage shares the grader's), and, for a uid of the reserved range
    (``own_uid``), its user keyrings emptied: it may have served an earlier submission, whose keys would
    still be there. Never the grader user's own keyrings (a grader that is not root runs stages as itself)."""
    if _SYS_KEYCTL is None:
        return f"keyrings NOT renewed (no keyctl number for {platform.machine()})"
    if _keyctl(KEYCTL_JOIN_SESSION_KEYRING, 0) < 0:
        return f"keyrings NOT renewed (keyctl: {os.strerror(ctypes.get_errno())})"
    if not own_uid:
        return "a new session keyring"
    for keyring in (KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING):
        _keyctl(KEYCTL_CLEAR, keyring)
    return "a new session keyring, the uid's keyrings emptied"


def prctl(option: int, value: int) -> None:
    _libc.prctl(option, value, 0, 0, 0)


def set_parent_death_signal(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig)


def _become_pid1_parent(cfg: dict) -> None:
    """After CLONE_NEWPID the next child is PID 1 of the namespace. This process stays outside as its relay:
    it waits and relays the exit, and a SIGTERM (the server's kill, or its death) makes it SIGKILL PID 1,
    which takes the whole namespace with it, whatever the student did to its process group. Once every
    process of the namespace is gone it copies the out folder's files to the host (still trusted: it never
    ran student code, and nothing can write to the tmpfs any more)."""
    pid = os.fork()
    if pid == 0:
        set_parent_death_signal(signal.SIGKILL)
        return
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
    set_parent_death_signal(signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # pid is reaped: it may now name another process
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
    try:
        _copy_out(f"{cfg['rw_dir']}/out", cfg["out_dir"], cfg["disk_mb"] * MB)
    finally:
        os._exit(code)


def _copy_out(source: str, target: str, budget: int) -> None:
    """The out tmpfs's top-level regular files with the runner's kind of name, at most ``budget`` bytes in
    all (a sparse file is as long as it says): no link followed, no FIFO opened, no folder walked."""
    for name in sorted(os.listdir(source))[:MAX_OUT_FILES]:
        if not _OUT_NAME.fullmatch(name):
            continue
        try:
            fd = os.open(f"{source}/{name}", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:  # a symbolic link (ELOOP), or gone
            continue
        try:
            size = os.fstat(fd).st_size
            if not stat.S_ISREG(os.fstat(fd).st_mode) or size > budget:
                continue
            budget -= size
            out = os.open(f"{target}/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                offset = 0
                while offset < size and (sent := os.sendfile(out, fd, offset, size - offset)) > 0:
                    offset += sent
            finally:
                os.close(out)
        finally:
            os.close(fd)


def confine(cfg: dict) -> None:
    """Confine this process as ``cfg`` says (root_dir, rw_dir, expose, cwd, out_dir, memory_mb, disk_mb,
    max_processes, max_file_mb, uid, gpu) and write the marker line to stderr; returns in the confined
    process, its working folder ``cfg["cwd"]``."""
    root = os.getuid() == 0
    notes: list[str] = []
    disk = (f"{cfg['disk_mb']} MB tmpfs for /tmp, /var/tmp, /dev/shm, the scratch and the out folder together "
            f"(at most {MAX_INODES} files)")
    try:
        notes += _enter_namespaces(root, cfg["disk_mb"])
        new_root, mqueue = _build_root(cfg)
        _become_pid1_parent(cfg)
        _enter_root(new_root)
        notes += [mqueue, "an allow-list root (system folders, Python, the runner's part of grader, job, "
                  "submission; writable: " + disk + ")"]
    except OSError as exc:
        notes.append(f"NOT isolated: the kernel refused namespaces ({exc}); reference/ and labels are "
                     "hidden only by file permissions; IPC, /tmp and the disk are shared with the host, "
                     "the scratch and out folders NOT size-capped")
    _limits(cfg)
    if root:
        uid = cfg.get("uid") or NOBODY
        _drop_privileges(uid)
        notes.append(f"ran as its submission's own uid ({SUBMISSION_UIDS.start}-{SUBMISSION_UIDS.stop - 1})"
                     if uid in SUBMISSION_UIDS else "ran as nobody")
    notes.append(_fresh_keyrings(root and cfg.get("uid") in SUBMISSION_UIDS))
    set_parent_death_signal(signal.SIGKILL)  # again: changing the uid cleared it
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    memory = "of private data (GPU stage)" if cfg.get("gpu") else "address space"
    notes.append(f"rlimits: {cfg['memory_mb'] - cfg['disk_mb']} MB {memory} + {cfg['disk_mb']} MB tmpfs = "
                 f"{cfg['memory_mb']} MB, {cfg['max_processes']} processes of its uid")
    os.write(2, (MARKER + "; ".join(notes) + "\n").encode())
    os.chdir(cfg["cwd"])
