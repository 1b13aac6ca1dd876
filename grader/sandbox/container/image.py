"""The images the Docker engine runs: the production grading image and a tiny local test image.

Production: built from the repository's Dockerfile (a CUDA PyTorch base with the ``grader`` package);
``ensure_image`` builds it when asked or names the one command that does.

Test: no registry is reachable where the tests run, so nothing can be pulled. ``build_test_image`` imports
a rootfs of a few folders, ``/etc/passwd`` and the symlinks the host's loader paths need; at run time
``test_mounts`` shows the host's Python installation, the virtualenv and the system library folders
read-only at their own paths, plus ONLY the repository's ``grader/`` package at /opt/grader/grader (never
``reference/``). The interpreter to run inside is ``test_python()``.
"""
from __future__ import annotations

import hashlib
import io
import os
import posixpath
import sys
import tarfile
from pathlib import Path, PurePosixPath

import docker
from docker.errors import ImageNotFound

from grader.sandbox.base import InfrastructureError
from grader.sandbox.container.containers import BindMount
from grader.sandbox.container.daemon import engine_errors

__all__ = ["PRODUCTION_TAG", "TEST_TAG", "REPO_ROOT", "build_command", "ensure_image", "build_test_image",
           "test_mounts", "test_python"]

PRODUCTION_TAG = "seg-autograder:latest"
TEST_TAG = "seg-autograder-test:latest"
REPO_ROOT = Path(__file__).resolve().parents[3]
_ROOTFS_LABEL = "seg-autograder.rootfs"  # hash of the imported tarball: re-import only when it changed
_EMPTY_DIRS = ("tmp", "scratch", "job", "out", "runs", "ctl", "submission", "opt/grader", "home", "proc", "sys",
               "dev", "etc")
_PASSWD = ("root:x:0:0:root:/root:/usr/sbin/nologin\n"
           "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
_GROUP = "root:x:0:\nnogroup:x:65534:\n"
_LOADER_GLOBS = ("/lib64/ld-linux*.so*", "/lib/ld-linux*.so*", "/lib/ld-musl*.so*")


def build_command(tag: str = PRODUCTION_TAG) -> str:
    """The one shell command that builds the production image."""
    return f"docker build -t {tag} {REPO_ROOT}"


def ensure_image(client: docker.DockerClient, tag: str = PRODUCTION_TAG, *, build: bool = False,
                 base: str | None = None) -> str:
    """The id of image ``tag``; build it from the Dockerfile when missing and ``build`` is set."""
    with engine_errors(tag):
        try:
            return client.images.get(tag).id
        except ImageNotFound:
            pass
        if not build:
            raise InfrastructureError(f"Docker image {tag!r} is missing: build it with `{build_command(tag)}`")
        if not (REPO_ROOT / "Dockerfile").is_file():
            raise InfrastructureError(f"no Dockerfile at {REPO_ROOT}: build the image from a grader checkout")
        image, _ = client.images.build(path=str(REPO_ROOT), tag=tag, rm=True, pull=False,
                                       buildargs={"BASE": base} if base else None)
        return image.id


def _python_roots() -> list[Path]:
    """The interpreter installation and the virtualenv (if any), real paths, outermost only."""
    roots = sorted({Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()})
    return [r for r in roots if not any(o != r and o in r.parents for o in roots)]


def _library_dirs(exclude: list[Path]) -> list[Path]:
    """Folders of the shared libraries this process has loaded outside the Python roots (libc & co)."""
    found = set()
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/") and ".so" in fields[5]:
                path = Path(fields[5].strip()).resolve()
                if not any(root in path.parents for root in exclude):
                    found.add(path.parent)
    return sorted(found)


def test_python() -> str:
    """The interpreter path to run inside the test image (the same path as on the host)."""
    if sys.prefix == sys.base_prefix:
        return str(Path(sys.executable).resolve())
    return str(Path(sys.prefix).resolve() / "bin" / Path(sys.executable).name)


def test_mounts() -> tuple[BindMount, ...]:
    """Read-only host folders the test image needs: Python, the virtualenv, system libraries, grader/."""
    roots = _python_roots()
    folders = roots + _library_dirs(roots)
    mounts = [BindMount(folder, str(folder)) for folder in folders]
    return (*mounts, BindMount(REPO_ROOT / "grader", "/opt/grader/grader"))


def _entry(name: str, kind: bytes, mode: int, *, link: str = "", data: bytes = b"") -> tuple:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.type, info.mode, info.linkname, info.size, info.mtime = kind, mode, link, len(data), 0
    return info, data


def _chain(path: str, stops: set[str], out: dict[str, tuple], depth: int = 0) -> None:
    """Entries that make ``path`` resolve in the image as on the host: folders (0755), symlinks, files."""
    if depth > 32:
        raise InfrastructureError(f"symlink loop while resolving {path}")
    parts = PurePosixPath(path).parts[1:]
    current = "/"
    for index, part in enumerate(parts):
        current = posixpath.join(current, part)
        if os.path.islink(current):
            target = os.readlink(current)
            out[current] = _entry(current, tarfile.SYMTYPE, 0o777, link=target)
            rest = parts[index + 1:]
            _chain(posixpath.normpath(posixpath.join(posixpath.dirname(current), target, *rest)),
                   stops, out, depth + 1)
            return
        if current in stops or os.path.isdir(current):
            out.setdefault(current, _entry(current, tarfile.DIRTYPE, 0o755))  # 0755: /root is 0700 on hosts
            if current in stops:
                return
        elif os.path.isfile(current):
            out[current] = _entry(current, tarfile.REGTYPE, 0o755, data=Path(current).read_bytes())


def _rootfs(mounts: tuple[BindMount, ...]) -> bytes:
    """A deterministic tarball: same host layout, same bytes, same hash."""
    stops = {m.target for m in mounts}
    out: dict[str, tuple] = {f"/{d}": _entry(d, tarfile.DIRTYPE, 0o755) for d in _EMPTY_DIRS}
    for scratch in ("tmp", "scratch"):  # Docker gives the tmpfs mounted here this folder's mode
        out[f"/{scratch}"] = _entry(scratch, tarfile.DIRTYPE, 0o1777)
    out["/etc/passwd"] = _entry("etc/passwd", tarfile.REGTYPE, 0o644, data=_PASSWD.encode())
    out["/etc/group"] = _entry("etc/group", tarfile.REGTYPE, 0o644, data=_GROUP.encode())
    loaders = [str(p) for pattern in _LOADER_GLOBS for p in Path("/").glob(pattern.lstrip("/"))]
    for path in sorted({*stops, *loaders, test_python()}):
        _chain(path, stops, out)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(out):
            info, data = out[name]
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def build_test_image(client: docker.DockerClient, *, tag: str = TEST_TAG) -> str:
    """Import the test image (only when its rootfs changed) and return its tag."""
    data = _rootfs(test_mounts())
    digest = hashlib.sha256(data).hexdigest()[:16]
    with engine_errors(tag):
        try:
            if client.images.get(tag).labels.get(_ROOTFS_LABEL) == digest:
                return tag
        except ImageNotFound:
            pass
        repository, _, version = tag.partition(":")
        client.api.import_image_from_data(data, repository=repository, tag=version or "latest",
                                          changes=[f"LABEL {_ROOTFS_LABEL}={digest}", "USER 65534:65534",
                                                   "WORKDIR /scratch", "ENV PYTHONPATH=/opt/grader"])
    return tag
