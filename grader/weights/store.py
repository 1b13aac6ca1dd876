"""The course's pretrained weights in the grader's cache (``<cache>/weights/``), and what a batch shows the sandbox.

- ``add``: files a staff member downloaded elsewhere, verified on the way in (a torchvision file by the sha256
  prefix in its name, a course checkpoint by its declared sha256; a mismatch is refused with both hashes);
- ``fetch``: torchvision's own URLs, on a machine with network;
- ``status``: what the rubric allows and what is present;
- ``pack``: copies of the course checkpoints (or every allowed file) for another machine, such as Gradescope's
  autograder image (``gradescope/make_zip.sh``), which adds them there and fetches torchvision's at build time;
- ``provide``: for one batch, a torch home (``<scratch>/torch/hub/checkpoints/``) holding a verified copy of
  exactly the allowed files, read-only; the sandbox sees it as ``$TORCH_HOME``, so unchanged student code
  (``resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)``) loads them offline. A missing file stops the batch
  before any student runs (an infrastructure fault, exit 3) with the command that adds it.

Where ``<cache>/weights/`` lacks a file, the host user's own torch cache (``$TORCH_HOME`` or
``~/.cache/torch``, ``hub/checkpoints/``) is looked in too, the same hash required: a student's self-check finds
what torchvision downloaded at home.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from grader.rubric import Rubric
from grader.sandbox.base import InfrastructureError
from grader.weights.catalog import Weight, resolve, weights_folder

__all__ = ["WeightsError", "WeightsMissing", "Present", "add", "fetch", "status", "pack", "provide", "fingerprint",
           "check_node", "sha256_of"]

_CHUNK = 1 << 20


class WeightsError(RuntimeError):
    """A file cannot be added or fetched: the message says why and what to do."""


class WeightsMissing(InfrastructureError):
    """The rubric allows weights this machine does not hold: the grader's fault, never a student's zero."""


@dataclass(frozen=True)
class Present:
    weight: Weight
    path: Path | None  # where it is, None when missing
    where: str  # "cache", "torch cache" or "missing"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _add_command(weight: Weight, cache_dir: Path) -> str:
    return f"grader weights add {weight.file} --cache-dir {cache_dir}"


def add(files: list[Path], *, rubric: Rubric, cache_dir: Path) -> list[Weight]:
    """Store ``files`` (each named as the rubric's entry it is) in ``<cache>/weights/``, each verified first."""
    allowed = {w.file: w for w in resolve(rubric, cache_dir)}
    stored = []
    for path in files:
        weight = allowed.get(path.name)
        if weight is None:
            names = ", ".join(sorted(allowed)) or "none"
            raise WeightsError(f"{path.name} is not a file the rubric's pretrained list allows (allowed files: "
                               f"{names}); add its entry to the rubric first, or rename the file as torchvision "
                               "names it")
        if not path.is_file():
            raise WeightsError(f"{path}: no such file")
        digest = sha256_of(path)
        if not weight.matches(digest):
            raise WeightsError(f"{path} is refused: its sha256 is {digest}, the rubric's {weight.label} must be "
                               f"{weight.expected}; download it again (a partial or other file)")
        _store(path, weight, cache_dir)
        stored.append(weight)
    return stored


def _store(source: Path, weight: Weight, cache_dir: Path) -> None:
    folder = weights_folder(cache_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".adding-")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        if not weight.matches(sha256_of(Path(tmp))):  # changed while copied
            raise WeightsError(f"{source} changed while it was copied; add it again")
        os.chmod(tmp, 0o400)
        os.replace(tmp, folder / weight.file)
    finally:
        Path(tmp).unlink(missing_ok=True)


def fetch(*, rubric: Rubric, cache_dir: Path, timeout_s: float = 60.0) -> list[Weight]:
    """Download every allowed torchvision weight not yet stored, from torchvision's own URL, then add it."""
    fetched = []
    for item in status(rubric=rubric, cache_dir=cache_dir):
        weight = item.weight
        if item.where == "cache":
            continue
        if weight.url is None:
            raise WeightsError(f"{weight.file} is a course checkpoint, nothing to download it from: copy it here "
                               f"and run `{_add_command(weight, cache_dir)}`")
        with tempfile.TemporaryDirectory(prefix="seg-weights-") as tmp:
            target = Path(tmp) / weight.file
            try:
                with urllib.request.urlopen(weight.url, timeout=timeout_s) as response, open(target, "wb") as out:
                    shutil.copyfileobj(response, out, _CHUNK)
            except (urllib.error.URLError, OSError) as exc:
                raise WeightsError(f"cannot download {weight.label} from {weight.url}: {exc}. On a machine without "
                                   f"network, download that URL elsewhere and run `{_add_command(weight, cache_dir)}`"
                                   ) from exc
            add([target], rubric=rubric, cache_dir=cache_dir)
        fetched.append(weight)
    return fetched


def _torch_cache() -> Path:
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(home) / "hub" / "checkpoints"


def status(*, rubric: Rubric, cache_dir: Path) -> list[Present]:
    """Each allowed weight and where it is (present files are not hashed here: ``provide`` does)."""
    found = []
    for weight in resolve(rubric, cache_dir):
        ours, theirs = weights_folder(cache_dir) / weight.file, _torch_cache() / weight.file
        if ours.is_file():
            found.append(Present(weight, ours, "cache"))
        elif theirs.is_file():
            found.append(Present(weight, theirs, "torch cache"))
        else:
            found.append(Present(weight, None, "missing"))
    return found


def pack(folder: Path, *, rubric: Rubric, cache_dir: Path, every: bool = False) -> list[Weight]:
    """Copy into ``folder`` the allowed files nobody can download (course checkpoints), or with ``every`` all
    allowed files, each verified as it is copied; a missing one is ``WeightsMissing`` naming the command."""
    found = [p for p in status(rubric=rubric, cache_dir=cache_dir) if every or p.weight.url is None]
    missing = [p.weight for p in found if p.path is None]
    if missing:
        raise WeightsMissing(_missing_message(missing, cache_dir, consequence="nothing was packed"))
    folder.mkdir(parents=True, exist_ok=True)
    for item in found:
        assert item.path is not None
        target = folder / item.weight.file
        target.unlink(missing_ok=True)
        digest = _copy_hashing(item.path, target)
        if not item.weight.matches(digest):
            target.unlink()
            raise WeightsMissing(f"{item.path} changed since it was added (sha256 {digest}, expected "
                                 f"{item.weight.expected}): run `{_add_command(item.weight, cache_dir)}` again")
    return [p.weight for p in found]


def _missing_message(missing: list[Weight], cache_dir: Path, *, consequence: str = "no student was graded") -> str:
    lines = "; ".join(f"{w.label}: `{_add_command(w, cache_dir)}`" + (f" (download: {w.url})" if w.url else "")
                      for w in missing)
    return (f"the rubric allows pretrained weights this machine does not hold, so {consequence}: {lines}; "
            "or `grader weights fetch` on a machine with network. `grader weights list` shows what is there")


def provide(rubric: Rubric, *, cache_dir: Path, scratch: Path) -> Path | None:
    """The batch's torch home (None when the rubric allows no weights): ``scratch/torch/hub/checkpoints/`` holds
    a copy of exactly the allowed files, each hashed as it is copied, all read-only."""
    if not rubric.pretrained:
        return None
    found = status(rubric=rubric, cache_dir=cache_dir)
    missing = [p.weight for p in found if p.path is None]
    if missing:
        raise WeightsMissing(_missing_message(missing, cache_dir))
    home = Path(tempfile.mkdtemp(prefix="torch-", dir=scratch))
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for item in found:
        assert item.path is not None
        digest = _copy_hashing(item.path, checkpoints / item.weight.file)
        if not item.weight.matches(digest):
            raise WeightsMissing(f"{item.path} changed since it was added (sha256 {digest}, expected "
                                 f"{item.weight.expected}): run `{_add_command(item.weight, cache_dir)}` again")
        os.chmod(checkpoints / item.weight.file, 0o444)
    for folder in (checkpoints, checkpoints.parent, home):
        os.chmod(folder, 0o555)
    return home


def _copy_hashing(source: Path, target: Path) -> str:
    digest = hashlib.sha256()
    with open(source, "rb") as f, open(target, "xb") as out:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


_HASHED: dict[tuple, str] = {}


def fingerprint(rubric: Rubric, *, cache_dir: Path) -> tuple[tuple[str, str], ...]:
    """(file, sha256) of each allowed weight on this machine, "" where missing (hashed once per file version):
    the Ray driver sends its own, each node compares (``check_node``)."""
    out = []
    for item in status(rubric=rubric, cache_dir=cache_dir):
        digest = ""
        if item.path is not None:
            st = item.path.stat()
            key = (str(item.path), st.st_size, st.st_mtime_ns, st.st_ino)
            digest = _HASHED.get(key) or _HASHED.setdefault(key, sha256_of(item.path))
        out.append((item.weight.file, digest))
    return tuple(out)


def check_node(rubric: Rubric, *, cache_dir: Path, driver: tuple[tuple[str, str], ...]) -> None:
    """On a Ray node: the same files as the driver's, or an infrastructure fault naming the ones that differ."""
    mine = dict(fingerprint(rubric, cache_dir=cache_dir))
    wrong = [f for f, digest in driver if mine.get(f) != digest]
    if wrong:
        absent = [f for f in wrong if not mine.get(f)]
        raise WeightsMissing(
            f"this node's pretrained weights differ from the grading machine's: missing {', '.join(absent) or 'none'}"
            f", different {', '.join(f for f in wrong if f not in absent) or 'none'} (in {weights_folder(cache_dir)});"
            f" copy the grading machine's {weights_folder(cache_dir).name}/ folder to every node, or run "
            f"`grader weights add FILE --cache-dir {cache_dir}` there")
