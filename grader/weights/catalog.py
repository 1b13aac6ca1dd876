"""What the rubric's ``pretrained:`` entries name: one ``Weight`` each, with the file torchvision looks for.

A torchvision entry (``ResNet18_Weights.IMAGENET1K_V1``) is resolved by torchvision itself
(``torchvision.models.get_weight``: its URL, whose last part is the file name the hub caches it under,
``resnet18-f37072fd.pth``, carrying a prefix of the file's sha256). The grader's process never imports torch,
so a child interpreter answers, once per torchvision version: the answers are kept in ``<cache>/weights/
catalog.json``. A course entry ``{file, sha256}`` needs no resolving: its declared hash is what the bytes must be.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from grader.rubric import PretrainedSpec, Rubric, RubricError

__all__ = ["Weight", "hash_prefix", "resolve", "weights_folder"]

_HUB_HASH = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's HASH_REGEX: the sha256 prefix in a file's name
_RESOLVE = """\
import json, sys
from torchvision.models import get_weight
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = {"url": get_weight(name).url}
    except Exception as exc:  # an unknown enum or member: said per name
        out[name] = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Weight:
    """One allowed weights file: how the rubric names it, the file name under ``hub/checkpoints``, and what its
    sha256 must be (``sha256``: the whole declared hash; else ``prefix``: torchvision's prefix in the name)."""

    label: str  # the rubric's name: ResNet18_Weights.IMAGENET1K_V1, or the course file's name
    file: str
    sha256: str = ""
    prefix: str = ""
    url: str | None = None  # torchvision's download URL (None for a course checkpoint)

    def matches(self, digest: str) -> bool:
        if self.sha256:
            return digest == self.sha256
        return bool(self.prefix) and digest.startswith(self.prefix)

    @property
    def expected(self) -> str:
        """The hash it must have, as a message says it."""
        return self.sha256 or f"{self.prefix}... (the prefix in torchvision's file name)"

    @property
    def shown(self) -> str:
        """How a student reads it: the name they write, and the file."""
        return f"{self.label} ({self.file})" if self.label != self.file else self.file


def weights_folder(cache_dir: Path) -> Path:
    """Where the course's weights are kept: ``<cache>/weights/``."""
    return Path(cache_dir) / "weights"


def hash_prefix(file: str) -> str:
    """The sha256 prefix torchvision's hub puts in a file name (``resnet18-f37072fd.pth``: ``f37072fd``)."""
    found = _HUB_HASH.search(file)
    return found.group(1) if found else ""


def resolve(rubric: Rubric, cache_dir: Path) -> tuple[Weight, ...]:
    """The rubric's allowed weights, in its order. An unknown torchvision name is a RubricError naming its
    YAML path (``pretrained[0]``)."""
    names = [e.weights for e in rubric.pretrained if e.weights]
    urls = _torchvision_urls(names, cache_dir) if names else {}
    return tuple(_weight(entry, urls, f"pretrained[{i}]") for i, entry in enumerate(rubric.pretrained))


def _weight(entry: PretrainedSpec, urls: dict[str, dict], where: str) -> Weight:
    if not entry.weights:
        return Weight(label=str(entry.file), file=str(entry.file), sha256=str(entry.sha256))
    answer = urls[entry.weights]
    if "url" not in answer:
        raise RubricError(f"{where}: {entry.weights!r} is not a weight torchvision knows ({answer.get('error')}); "
                          "spell it as in torchvision.models, e.g. ResNet18_Weights.IMAGENET1K_V1")
    file = answer["url"].rsplit("/", 1)[-1]
    if not hash_prefix(file):
        raise RubricError(f"{where}: torchvision's file {file} carries no sha256 prefix to check it by; list it "
                          f"as {{file: {file}, sha256: HEX}} with the hash you vouch for")
    return Weight(label=entry.weights, file=file, prefix=hash_prefix(file), url=answer["url"])


def _torchvision_urls(names: list[str], cache_dir: Path) -> dict[str, dict]:
    """torchvision's answer for each name, from the memo of this torchvision version, else a child's."""
    try:
        version = metadata.version("torchvision")
    except metadata.PackageNotFoundError as exc:
        raise RubricError("pretrained: naming torchvision weights needs torchvision installed on the grading "
                          "machine (pip install torchvision)") from exc
    memo_file = weights_folder(cache_dir) / "catalog.json"
    memo = _read_memo(memo_file, version)
    missing = sorted(set(names) - set(memo))
    if missing:
        memo.update(_ask_torchvision(missing))
        _write_memo(memo_file, version, memo)
    return memo


def _ask_torchvision(names: list[str]) -> dict[str, dict]:
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _RESOLVE, *names], check=False, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RubricError(f"pretrained: cannot ask torchvision about {', '.join(names)}: {exc}") from exc
    if done.returncode != 0:
        raise RubricError(f"pretrained: torchvision could not be asked about {', '.join(names)}: "
                          f"{done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _read_memo(path: Path, version: str) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("torchvision") != version or not isinstance(data.get("names"), dict):
        return {}
    return {k: v for k, v in data["names"].items() if isinstance(v, dict) and isinstance(v.get("url"), str)}


def _write_memo(path: Path, version: str, memo: dict[str, dict]) -> None:
    """Only the names torchvision knew are kept (a typo is asked again, once fixed it resolves)."""
    known = {k: v for k, v in memo.items() if "url" in v}
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"torchvision": version, "names": known}, sort_keys=True))
        os.replace(tmp, path)
    except OSError:  # a read-only cache: asked again next time
        pass
