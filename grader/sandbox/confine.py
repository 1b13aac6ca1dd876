"""Confine the current process: the first code of every local-sandbox stage, trusted, pre-student.

``confine(cfg)`` runs in a child that the fork server (``grader.sandbox.forkserver``) has just forked for one
stage, before any student code; it returns in the confined process:
1. new mount, network and IPC (+ user, when not root) namespaces, where the kernel allows: SysV message
   queues, shared memory and POSIX message queues are the stage's own and die with it;
2. a new root built from an ALLOW-list, then pivot_root (the host's root detached): a tmpfs holding only the system folders (read-only),
   /dev, a fresh /proc, and the paths the run needs bound in (the Python installation, the grader package
   WITHOUT its host-only modules, the job and the submission read-only). Everything writable (/tmp,
   /var/tmp, /dev/shm, the scratch and the out folder) is ONE size-capped tmpfs that dies with the stage;
   the relay copies the out folder's files to the host after the stage. Nothing else of the host exists
   inside: not reference/, not the labels or the cache, not the results, not home folders;
3. a new PID namespace, so the sandbox dies as a whole when its first process dies;
4. a CPU share: a cgroup capped at its ``threads`` cores (``grader.sandbox.cpushare``), where one can be made;
5. rlimits (address space, or data with a GPU, plus the tmpfs: together the stage's memory budget;
   processes, file size, no core dumps) and, when root, the submission's own uid/gid (``cfg["uid"]``,
   from a reserved range: process limits and keyrings are per student), a fresh session keyring.
Its first stderr line says what held: ``[sandbox] isolation: ...``; a stage without that line never got
this far, which is the grader's fault, never the student's.

It fails CLOSED. Where confining fails, the stage never runs: its first line is ``[sandbox] NOT confined:
CAUSE`` and the grader treats it as an infrastructure fault (exit 3), naming the cause. Only where the kernel
itself refuses namespaces (unshare() answers EPERM, EINVAL, ENOSPC or EUSERS; or a user namespace that is
granted no privileges, as AppArmor's restriction does) AND the grader allowed it (``cfg["unconfined_ok"]``:
``grader check`` on a student's own machine only) does the stage run unconfined, saying so. A failure while
building the root (``grader.sandbox.rootfs``) is a bug, never a refusal. Only the standard library here.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import resource
import signal
import stat
from pathlib import Path

from grader.sandbox import cpushare, jail
from grader.sandbox.rootfs import MAX_INODES, build_root, mount

__all__ = ["FAILED", "KernelRefused", "MARKER", "SANDBOX_PACKAGES", "SANDBOX_VISIBLE", "SUBMISSION_UIDS", "confine", "prctl", "set_parent_death_signal", "visible_package"]

MARKER = "[sandbox] isolation: "
FAILED = "[sandbox] NOT confined: "  # the stage did not run: an infrastructure fault, with its cause
REFUSALS = (errno.EPERM, errno.EINVAL, errno.ENOSPC, errno.EUSERS)  # unshare(): the kernel says no
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
CLONE_NEWIPC = 0x08000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
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


class KernelRefused(OSError):
    """The kernel refused the namespaces themselves (not a bug of ours): only ``grader check`` may go on."""


def _unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise (KernelRefused if err in REFUSALS else OSError)(err, f"unshare: {os.strerror(err)}")


def _enter_namespaces(root: bool, disk_mb: int) -> list[str]:
    """The user namespace first (not root), then mount, network and IPC, the PID namespace LAST: a process
    that has unshared its PID namespace can no longer create threads (clone answers EINVAL: libgomp's "Thread
    creation failed", so every OpenMP op dies), so nothing may run unconfined after that step."""
    uid, gid = os.getuid(), os.getgid()
    try:
        if not root:  # map ourselves to root of the new user namespace, so mounts are allowed
            _unshare(CLONE_NEWUSER)
            Path("/proc/self/setgroups").write_text("deny")
            Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
            Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
        _unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC)
        mount("none", "/", None, MS_REC | MS_PRIVATE)
    except PermissionError as exc:  # a user namespace granted no privileges (e.g. AppArmor's restriction)
        raise KernelRefused(exc.errno, f"a user namespace without privileges: {exc}") from exc
    _unshare(CLONE_NEWPID)
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


def _enter_root(new: str) -> None:
    """In the PID namespace's first process: its own mount namespace and /proc, then ``pivot_root`` into the
    new root with the host's root detached (``grader.sandbox.jail``: a chroot alone can be walked out of)."""
    jail.enter_root(new)


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
    """Confine this process as ``cfg`` says (root_dir, rw_dir, expose, package, package_files, cwd, out_dir,
    memory_mb, disk_mb, max_processes, max_file_mb, uid, gpu, cpus, unconfined_ok) and write the marker line to
    stderr; returns in the confined process, its working folder ``cfg["cwd"]``. Where it cannot confine, it
    writes the FAILED line and ends the process: the stage never runs."""
    root = os.getuid() == 0
    cpu = cpushare.join(int(cfg.get("cpus") or 1))  # before the namespaces: the host's cgroup folders
    notes: list[str] = []
    disk = (f"{cfg['disk_mb']} MB tmpfs for /tmp, /var/tmp, /dev/shm, the scratch and the out folder together "
            f"(at most {MAX_INODES} files)")
    try:
        notes += _enter_namespaces(root, cfg["disk_mb"])
    except KernelRefused as exc:
        if not cfg.get("unconfined_ok"):
            _fail(f"the kernel refused namespaces ({exc.strerror}); a staff grader never grades unconfined: "
                  "grade as root, or where unprivileged user namespaces are allowed, or with --sandbox docker")
        notes.append(f"NOT isolated: the kernel refused namespaces ({exc.strerror}); reference/ and labels are "
                     "hidden only by file permissions; IPC, /tmp and the disk are shared with the host, "
                     "the scratch and out folders NOT size-capped")
    except OSError as exc:
        _fail(f"entering namespaces failed: {exc}")
    else:
        try:
            new_root, dev = build_root(cfg)
        except OSError as exc:  # a bug or a broken host, never a refusal: the stage must not run
            _fail(f"building the sandbox's root failed: {exc}")
        _become_pid1_parent(cfg)
        try:
            _enter_root(new_root)
        except OSError as exc:
            _fail(f"entering the sandbox's root failed: {exc}")
        notes += [dev, "an allow-list root (system folders, Python, the runner's part of grader, job, "
                  "submission; writable: " + disk + ")"]
    _limits(cfg)
    if root:
        uid = cfg.get("uid") or NOBODY
        _drop_privileges(uid)  # leaving uid 0 clears every capability
        notes.append(f"ran as its submission's own uid ({SUBMISSION_UIDS.start}-{SUBMISSION_UIDS.stop - 1})"
                     if uid in SUBMISSION_UIDS else "ran as nobody")
    elif "NOT isolated" not in "".join(notes):  # root of a user namespace: every capability there, until now
        try:
            jail.drop_capabilities()
        except OSError as exc:
            _fail(f"dropping the stage's capabilities failed: {exc}")
        notes.append("no capabilities (root of its user namespace only)")
    caps = jail.capabilities_now()
    if caps.get("CapEff") or caps.get("CapPrm"):
        _fail(f"the stage still holds capabilities: {caps}")
    notes.append(_fresh_keyrings(root and cfg.get("uid") in SUBMISSION_UIDS))
    set_parent_death_signal(signal.SIGKILL)  # again: changing the uid cleared it
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    memory = "of private data (GPU stage)" if cfg.get("gpu") else "address space"
    notes.append(cpu)
    notes.append(f"rlimits: {cfg['memory_mb'] - cfg['disk_mb']} MB {memory} + {cfg['disk_mb']} MB tmpfs = "
                 f"{cfg['memory_mb']} MB, {cfg['max_processes']} processes of its uid")
    os.write(2, (MARKER + "; ".join(notes) + "\n").encode())
    os.chdir(cfg["cwd"])


def _fail(cause: str) -> None:
    """The stage does not run: one line saying why (the grader raises an InfrastructureError with it)."""
    os.write(2, (FAILED + cause.replace("\n", " ") + "\n").encode())
    os._exit(71)
