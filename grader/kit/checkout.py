"""Where the expected outputs come from: the repository's ``reference/`` (staff), or a student kit's files.

Staff run the grader from the repository checkout (an editable install, Gradescope's ``/autograder/source``):
``reference/`` lies beside the ``grader`` package and the trusted preparation process runs it. The installable
package never holds ``reference/`` (pyproject: ``grader*`` only). A student kit (``grader handout``) is that
package plus ``grader/kitdata/``: the public rubric (``rubric.yaml``), the reference's output for every public
unit case, computed at handout time (``expected/<case id>.npy``), and ``kit.json``. There the preparation step
loads the shipped outputs instead of importing a reference it does not have.

Stdlib only: the grader's own process asks it (default rubric, cache key, hidden paths).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from grader.core.files import update_tree
from grader.sandbox.base import InfrastructureError

__all__ = ["KIT_DATA", "KIT_FILE", "KIT_RUBRIC", "default_rubric", "expected_source_digest", "in_kit",
           "reference_dir", "shipped_expected_dir", "staff_hidden"]

_PACKAGE = Path(__file__).resolve().parent.parent  # grader/
KIT_DATA = _PACKAGE / "kitdata"
KIT_FILE = KIT_DATA / "kit.json"
KIT_RUBRIC = KIT_DATA / "rubric.yaml"


def reference_dir() -> Path | None:
    """The checkout's ``reference/`` beside the ``grader`` package (found by path, never imported here:
    importing it would import torch), or None where there is none (a student kit, a plain install)."""
    folder = _PACKAGE.parent / "reference"
    return folder if (folder / "segmentation.py").is_file() else None


def in_kit() -> bool:
    """Whether this grader is a student kit's: shipped expected outputs, and no reference to compute them."""
    return reference_dir() is None and KIT_FILE.is_file()


def default_rubric(repo_rubric: Path) -> Path:
    """The rubric a command uses unless told: the kit's public one in a kit, else the repository's."""
    return KIT_RUBRIC if in_kit() else repo_rubric


def shipped_expected_dir() -> Path:
    """The kit's expected outputs; an InfrastructureError (staff's fault, no student's) where there are none."""
    if not in_kit():
        raise InfrastructureError("no reference/ to compute the expected outputs and no student kit's shipped "
                                  "ones: run the grader from the repository checkout (staff), or install the kit "
                                  "`grader handout` wrote (students)")
    return KIT_DATA / "expected"


def staff_hidden() -> tuple[Path, ...]:
    """What no sandbox may see of the expected outputs' source: ``reference/``. A kit's shipped outputs are
    the public cases' answers the student already holds, so nothing is hidden there."""
    ref = reference_dir()
    return (ref,) if ref is not None else ()


def expected_source_digest() -> str:
    """A digest of what the expected outputs are computed or loaded from (the job cache's key): the
    reference's source, or the kit's shipped files."""
    ref = reference_dir()
    root, suffixes = (ref, (".py",)) if ref is not None else (shipped_expected_dir().parent, None)
    digest = hashlib.sha256(b"reference" if ref is not None else b"kit")
    update_tree(digest, root, suffixes)
    return digest.hexdigest()
