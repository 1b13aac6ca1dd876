"""Similar submissions for course staff: every pair of graded submissions compared in a normalised form.

Each student's code (``load_code``) is first stripped of comments and docstrings, then cut at a number of
tokens (``grader.similarity.normalise``: a copy behind megabytes of comment lines is still compared whole),
then fingerprinted: every statement and expression of a few nodes or more, with names replaced by their kind
and ``for``/``while`` as one loop kind, as a set of 64-bit BLAKE2 digests. Fingerprints that also occur in
the student template or in the grader's notebook prelude are removed first (boilerplate), so code every
student received never counts. A pair's similarity is the larger of the two directions: the share of one
submission's own fingerprints found in the other. Renaming, reordering functions, rewriting ``for`` as
``while``, merging or splitting expressions and comment padding leave most of the set in place
(bench/similarity.py measures it on a generated corpus). copydetect (MOSS's winnowing) then marks the
shared passages of the pairs that get a side-by-side page, on the stripped code.

Where the code comes from: ``grader grade`` keeps, for each graded student, a copy of the ``.py`` files of
the clean submission (the intake's folder; a notebook is its ``segmentation.py`` prelude and its code cells)
under ``OUT/<student>/code/``, stamped with the submission's content hash. The copy is refreshed only when
that hash differs from the one in result.json, by running the intake again on the batch's paths
(``sources``); ``grader similarity OUT --from SUBMISSIONS`` does the same for a folder graded before. The
copies, the CSV and the side-by-side pages are owner-only (0700/0600): staff files, never linked from a
student's report, in case OUT is served to students. Student code is only ever read here as text, tokenised
and parsed with ``ast``: never imported, never run. Nothing here changes a score, result.json or grades.csv.
A student whose code cannot be read is left out and listed (``missing``); the others are still compared.

The result is keyed like the reports: the students' content hashes, the template's bytes, the settings and
the pages' renderer; an unchanged regrade reads result.json files and one stamp, and compares nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from grader.intake.archives import MIB, Budget, UnpackError
from grader.intake.cleancopy import list_files as collect_files
from grader.report.collect import collect as collect_results
from grader.similarity import normalise
from grader.similarity.passages import GUARANTEE_T, NOISE_T

__all__ = ["TEMPLATE", "FLOOR", "MIN_FEATURES", "NOISE_T", "GUARANTEE_T", "CODE_DIR", "Code", "Pair", "Outcome",
           "load_code", "code_text", "boilerplate", "compare", "store_code", "similarity"]

TEMPLATE = Path(__file__).resolve().parents[2] / "student_template" / "segmentation.py"
FLOOR = 0.2  # pairs below this are not written to similarity.csv: independent solutions share idioms
MIN_FEATURES = 40  # a share is of at least this many fingerprints: two near-empty submissions are not "100 %"
CODE_DIR = "code"
_STAMP = ".submission.sha256"
_MAX_FILE_BYTES = 20 * MIB  # the intake's limit per file; the token cap (normalise.MAX_TOKENS) bounds the work
_CODE_BUDGET = Budget(max_file_bytes=20 * MIB, max_total_bytes=100 * MIB, max_files=200, max_ratio=float("inf"))
_VERSION = "2"  # bump when the comparison or the files written change
_PRELUDE_NOTEBOOK = (b'{"cells": [{"cell_type": "code", "metadata": {}, "source": "pass", "outputs": [], '
                     b'"execution_count": null}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')


@dataclass(frozen=True)
class Pair:
    student_a: str
    student_b: str
    similarity: float  # max(sim_a, sim_b)
    sim_a: float  # share of a's own code found in b
    sim_b: float
    overlap: int  # shared tokens (copydetect's filtered characters) of the passages marked; 0: no page drawn
    slices_a: tuple[tuple[int, int], ...]  # shared passages, character offsets in a's code (``Code.text``)
    slices_b: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Code:
    """One student's code as compared: ``text`` (every .py file behind a ``# ===== name =====`` line, comments
    and docstrings dropped; what the pages show) and its fingerprints."""

    text: str
    features: frozenset[int] = field(repr=False)
    cut: bool = False  # the token cap was reached: what follows it is not compared


@dataclass(frozen=True)
class Outcome:
    """What one similarity step did; ``error`` is set when it failed (the batch goes on)."""

    computed: bool  # False: up to date, nothing compared
    students: int
    pairs: int  # rows of similarity.csv
    flagged: int  # pairs at or above the threshold
    missing: tuple[str, ...] = ()  # graded students without a readable code copy (left out)
    error: str | None = None
    cut: tuple[str, ...] = ()  # students whose code reached the token cap (compared up to it)


def _read_text(path: Path) -> str:
    """A regular file as text, without following a link; bytes that are not UTF-8 become U+FFFD."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise UnpackError(f"{path.name} is not a file")
        return f.read(_MAX_FILE_BYTES).decode("utf-8", errors="replace")


def _python_files(folder: Path) -> list[tuple[str, Path]]:
    """The .py files under ``folder`` (links, litter skipped; limits held), segmentation.py first."""
    files = [(rel, p) for rel, p in collect_files(folder, _CODE_BUDGET, []) if rel.endswith(".py")]
    return sorted(files, key=lambda f: (f[0] != "segmentation.py", f[0]))


def _code(named_texts: Sequence[tuple[str, str]]) -> Code:
    parts, found, left, cut = [], set(), normalise.MAX_TOKENS, False
    for rel, text in named_texts:
        if left <= 0:
            cut = True
            break
        stripped = normalise.strip(text, left)  # comments and docstrings go before the cut
        parts.append(f"# ===== {rel} =====\n{stripped.code}\n")
        found |= normalise.features(stripped.code)
        left -= stripped.tokens
        cut = cut or stripped.cut
    return Code("".join(parts), frozenset(found), cut)


def load_code(folder: Path) -> Code:
    """A submission's code, normalised and fingerprinted (all its .py files, at most ``MAX_TOKENS`` tokens)."""
    return _code([(rel, _read_text(path)) for rel, path in _python_files(folder)])


def code_text(folder: Path) -> str:
    """A submission's code as the pages show it: each .py file behind a line naming it, without comments."""
    return load_code(folder).text


def boilerplate(template: str) -> Code:
    """What every student received: the template, and the prelude the intake writes for every notebook."""
    from grader.intake.notebooks import notebook_to_files

    prelude = notebook_to_files(_PRELUDE_NOTEBOOK, name="notebook.ipynb")[0]["segmentation.py"]
    return _code([("segmentation.py", template), ("notebook prelude", prelude)])


def store_code(student_dir: Path, clean_folder: Path, content_hash: str) -> None:
    """Replace ``student_dir/code`` with the .py files of ``clean_folder`` (owner-only), stamped with the hash."""
    tmp = Path(tempfile.mkdtemp(prefix=".code-", dir=student_dir))  # 0700
    try:
        for rel, path in _python_files(clean_folder):
            target = tmp / rel
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(_read_text(path))
        (tmp / _STAMP).write_text(content_hash)
        shutil.rmtree(student_dir / CODE_DIR, ignore_errors=True)
        tmp.rename(student_dir / CODE_DIR)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _stamp(student_dir: Path) -> str | None:
    try:
        return (student_dir / CODE_DIR / _STAMP).read_text()
    except (OSError, ValueError):
        return None


def _refresh_code(out: Path, graded: Mapping[str, str], sources: Sequence[Path]) -> None:
    """Copy the code of every graded student whose copy is missing or stale from the intake of ``sources``."""
    stale = {s for s, h in graded.items() if _stamp(out / s) != h}
    if not stale or not sources:
        return
    from grader.intake.discover import Submission, discover  # the intake again, only when a copy is out of date

    with tempfile.TemporaryDirectory(prefix="seg-similarity-") as workdir:
        for entry in discover([Path(p) for p in sources], workdir=Path(workdir)):
            if isinstance(entry, Submission) and entry.student in stale and entry.content_hash == graded[entry.student]:
                try:
                    store_code(out / entry.student, entry.path, entry.content_hash)
                except (OSError, UnpackError):
                    continue  # left out and listed as missing; the class is still compared


def compare(docs: Mapping[str, Code], common: Code | None = None, *, floor: float = FLOOR,
            pages: int | None = None) -> list[Pair]:
    """Every pair of ``docs`` (student -> code) at or above ``floor``, most similar first; ``common``'s
    fingerprints (the boilerplate) do not count. The shared passages are marked (copydetect) on the first
    ``pages`` pairs (all when None)."""
    shared_by_all = common.features if common is not None else frozenset()
    own = {s: docs[s].features - shared_by_all for s in sorted(docs)}
    pairs = []
    for a, b in combinations(sorted(own), 2):
        shared = len(own[a] & own[b])
        sim_a, sim_b = (shared / max(len(own[s]), MIN_FEATURES) for s in (a, b))
        if shared and max(sim_a, sim_b) >= floor:
            pairs.append(Pair(a, b, max(sim_a, sim_b), sim_a, sim_b, 0, (), ()))
    pairs.sort(key=lambda p: (-p.similarity, p.student_a, p.student_b))
    from grader.similarity.passages import mark  # copydetect (numpy, pygments): only for the pages

    marked = pairs[:len(pairs) if pages is None else pages]
    return mark(marked, {s: d.text for s, d in docs.items()}, common.text if common is not None else "") + \
        pairs[len(marked):]


def _key(graded: Mapping[str, str], present: Sequence[str], template: bytes, threshold: float) -> str:
    from importlib.metadata import version  # not ``import copydetect``: that imports numpy and matplotlib

    from grader.report.folder import renderer_digest  # the pair pages are drawn by the report's templates

    text = json.dumps({"version": _VERSION, "copydetect": version("copydetect"), "noise": NOISE_T,
                       "guarantee": GUARANTEE_T, "floor": FLOOR, "threshold": threshold, "min": MIN_FEATURES,
                       "normalise": [normalise.MAX_TOKENS, normalise.MIN_SUBTREE, normalise.KGRAM],
                       "template": hashlib.sha256(template).hexdigest(), "renderer": renderer_digest(),
                       "students": sorted((s, graded[s]) for s in present)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def similarity(out_dir: Path, *, threshold: float, sources: Sequence[Path] = (), template: Path | None = TEMPLATE,
               force: bool = False) -> Outcome:
    """Compare the graded submissions under ``out_dir``: ``similarity.csv``, ``similarity/<a>__<b>.html`` and
    ``similarity.json`` (what the index shows). Code copies missing or stale are taken from ``sources``.
    Failure is data: whatever goes wrong is written to similarity.json and returned, never raised."""
    out = Path(out_dir)
    try:
        loaded, _ = collect_results(out)
        graded = {x.student_dir.name: str(x.result.provenance.get("submission_hash", "")) for x in loaded
                  if x.result.status == "graded" and x.result.provenance.get("submission_hash")}
        _refresh_code(out, graded, sources)
        present = sorted(s for s, h in graded.items() if _stamp(out / s) == h)
        missing = tuple(sorted(set(graded) - set(present)))
        tpl = template.read_bytes() if template and template.is_file() else b""
        key = _key(graded, present, tpl, threshold)
        from grader.similarity.pages import MAX_PAGES, is_current, write_outputs

        if not force and is_current(out, key):
            return Outcome(False, len(present), 0, 0, missing)
        codes: dict[str, Code] = {}
        for student in present:
            try:
                codes[student] = load_code(out / student / CODE_DIR)
            except (OSError, UnpackError):  # a copy changed under us or holds too much: this student is left out
                continue
        missing = tuple(sorted(set(graded) - set(codes)))
        cut = tuple(s for s in sorted(codes) if codes[s].cut)
        pairs = compare(codes, boilerplate(tpl.decode("utf-8", "replace")), pages=MAX_PAGES)
        flagged = write_outputs(out, pairs, {s: c.text for s, c in codes.items()}, key=key, threshold=threshold,
                                floor=FLOOR, missing=missing, cut=cut)
        return Outcome(True, len(codes), len(pairs), flagged, missing, cut=cut)
    except Exception as exc:  # noqa: BLE001 -- failure is data: the batch's grades stand without this view
        from grader.similarity.pages import write_failure

        message = f"{type(exc).__name__}: {exc}"
        write_failure(out, message, threshold=threshold)
        return Outcome(False, 0, 0, 0, error=message)
