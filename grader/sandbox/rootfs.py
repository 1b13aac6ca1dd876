"""The local sandbox's root: what a confined stage sees of the host, built from an allow-list (trusted, pre-student).

``build_root(cfg)`` runs in the stage's new mount namespace (``grader.sandbox.confine``) and returns the host
path of a tmpfs holding only:
- the system folders, read-only; the paths the run needs (the Python installation and its site folders, the
  runner's part of the grader package, the job, the submission), read-only;
- a minimal ``/dev`` of its own (a read-only tmpfs): null, zero, full, random, urandom bound from the host, a
  NEW devpts instance (its own ptys, never the host's terminals: no /dev/tty, no /dev/pts/N of the grader's
  user, no console), this IPC namespace's mqueue, the stage's shm, and the GPU device nodes only for a GPU
  stage. No other device;
- one size-capped writable tmpfs (outside the new root, unreachable after chroot) bound where the stage
  writes: /tmp, /var/tmp, /dev/shm, the scratch folder and the out folder.
The grader package is shown file by file: where it lies inside a folder already shown (a site-packages
install: ``pip install .``, the student kit), an empty read-only tmpfs is laid over it first, so its
host-only modules are hidden there too and nothing is ever created inside a read-only bind.
Any failure here is a bug or a broken host, never the kernel refusing namespaces: it raises, and the stage
does not run. Only the standard library here.
"""
from __future__ import annotations

import ctypes
import glob
import os

__all__ = ["DEV_NODES", "GPU_DEV_GLOBS", "MAX_INODES", "SHARED_TMP", "build_root", "mount"]

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
DEV_NODES = ("null", "zero", "full", "random", "urandom")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))
GPU_DEV_GLOBS = ("/dev/nvidia[0-9]*", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
                 "/dev/nvidia-modeset", "/dev/nvidia-caps", "/dev/dri")
# The one writable tmpfs: its sub-folders and where the stage sees them (scratch and out: cfg's paths).
SHARED_TMP = (("tmp", "/tmp"), ("var-tmp", "/var/tmp"), ("shm", "/dev/shm"))
MAX_INODES = 32768  # tmpfs inodes are kernel memory its size cap does not count; also bounds the copy-out
_libc = ctypes.CDLL(None, use_errno=True)


def mount(src: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    if _libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                   data.encode() if data else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or 'bind'} on {target}: {os.strerror(err)}")


def _read_only(target: str, extra: int = 0) -> None:
    mount("none", target, None, MS_BIND | MS_REC | MS_RDONLY | MS_REMOUNT | MS_NOSUID | extra)


def _bind(source: str, target: str, *, writable: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:  # a single file (the grader package is shown file by file; device nodes)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "a"):
            pass
    mount(source, target, None, MS_BIND | MS_REC)
    if not writable:
        _read_only(target)


def _writable_space(cfg: dict) -> None:
    """One tmpfs, outside the new root (unreachable after chroot), capped at disk_mb and MAX_INODES; its
    sub-folders are bound where the stage writes. Scratch and out belong to the stage's uid."""
    rw, uid = cfg["rw_dir"], cfg.get("uid")
    mount("tmpfs", rw, "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['disk_mb']}m,nr_inodes={MAX_INODES},mode=700")
    for name, _ in SHARED_TMP:
        os.mkdir(f"{rw}/{name}")
        os.chmod(f"{rw}/{name}", 0o1777)
    for name in ("scratch", "out"):
        os.mkdir(f"{rw}/{name}", 0o700)
        if uid is not None:
            os.chown(f"{rw}/{name}", uid, uid)


def gpu_device_nodes() -> list[str]:
    return sorted({p for pattern in GPU_DEV_GLOBS for p in glob.glob(pattern)})


def _minimal_dev(new: str, cfg: dict) -> str:
    """/dev as a small tmpfs of its own, made read-only once its entries are in place; returns a note."""
    dev = new + "/dev"
    os.makedirs(dev)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=256,mode=755")
    for name in DEV_NODES:
        _bind(f"/dev/{name}", f"{dev}/{name}", writable=True)
    for name, target in DEV_LINKS:
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/pts")  # a new instance: its ptys are the stage's own; the host's are not listed
    mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    note = "/dev: null, zero, full, random, urandom, its own pts, shm and mqueue"
    if os.path.isdir("/dev/mqueue"):  # the host's queues are listed there: show this namespace's instead
        os.mkdir(f"{dev}/mqueue")
        mount("mqueue", f"{dev}/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.mkdir(f"{dev}/shm")
    if cfg.get("gpu"):
        nodes = gpu_device_nodes()
        for path in nodes:
            _bind(path, new + path, writable=True)
        note += f", the GPU's nodes ({', '.join(os.path.basename(p) for p in nodes) or 'none found'})"
    return note + "; no terminal of the host, no other device"


def _show_package(new: str, package: str, files: list[str]) -> None:
    """The runner's part of the grader package at ``package`` (``files``: each one shown). Inside a folder
    already bound (site-packages), the package folder is first covered by an empty tmpfs."""
    target = new + package
    covered = os.path.isdir(target)
    if covered:
        mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=1024,mode=755")
    for path in files:
        _bind(path, new + path, writable=False)
    if covered:
        _read_only(target, MS_NODEV)


def build_root(cfg: dict) -> tuple[str, str]:
    """A tmpfs root holding only the allow-list (cfg: root_dir, rw_dir, expose, package, package_files, cwd,
    out_dir, disk_mb, uid, gpu); returns its host path (chroot into it later) and a note on /dev."""
    new, rw = cfg["root_dir"], cfg["rw_dir"]
    mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=755")
    for path in SYSTEM_DIRS:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            os.symlink(os.readlink(path), new + path)
        elif os.path.isdir(path):
            _bind(path, new + path, writable=False)
    dev_note = _minimal_dev(new, cfg)
    os.makedirs(new + "/proc")
    _writable_space(cfg)
    for name, path in SHARED_TMP:
        _bind(f"{rw}/{name}", new + path, writable=True)
    _read_only(new + "/dev", MS_NOEXEC)  # its entries are in place: the stage adds none
    for path, writable in sorted(cfg["expose"]):
        if os.path.exists(path):
            _bind(path, new + path, writable=writable)
    if cfg.get("package"):
        _show_package(new, cfg["package"], cfg["package_files"])
    _bind(f"{rw}/scratch", new + cfg["cwd"], writable=True)
    _bind(f"{rw}/out", new + cfg["out_dir"], writable=True)
    return new, dev_note
