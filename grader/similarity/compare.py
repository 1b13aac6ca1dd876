"""Similar submissions for course staff: every pair of graded submissions compared with copydetect.

copydetect (MOSS's winnowing over tokenised code: names become V/F/O, strings S, comments and whitespace
dropped) fingerprints each student's code once; k-grams that also occur in the student template are removed
first (boilerplate), so code every student received never counts. A pair's similarity is the larger of the
two directions: the share of one submission's own (non-template) code found in the other.

Where the code comes from: ``grader grade`` keeps, for each graded student, a copy of the ``.py`` files of
the clean submission (the intake's folder; a notebook is its ``segmentation.py`` of code cells) under
``OUT/<student>/code/``, stamped with the submission's content hash. The copy is refreshed only when that
hash differs from the one in result.json, by running the intake again on the batch's paths (``sources``);
``grader similarity OUT --from SUBMISSIONS`` does the same for a folder graded before. The copies, the CSV
and the side-by-side pages are owner-only (0700/0600): staff files, never linked from a student's report, in
case OUT is served to students. Student code is only ever read here as text and tokenised: never imported,
never run. Nothing here changes a score, result.json or grades.csv.

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
from dataclasses import dataclass
from pathlib import Path

from grader.intake.archives import MIB, Budget, UnpackError
from grader.intake.cleancopy import collect as collect_files
from grader.report.collect import collect as collect_results

__all__ = ["TEMPLATE", "FLOOR", "NOISE_T", "GUARANTEE_T", "CODE_DIR", "Pair", "Outcome", "code_text", "compare",
           "store_code", "similarity"]

TEMPLATE = Path(__file__).resolve().parents[2] / "student_template" / "segmentation.py"
FLOOR = 0.2  # pairs below this are not written to similarity.csv: independent solutions share idioms
NOISE_T = 25  # shortest match (filtered characters) that counts; copydetect's default
GUARANTEE_T = 35  # every match this long is found: winnowing window 11 (10x fewer fingerprints than 25)
CODE_DIR = "code"
_STAMP = ".submission.sha256"
_MAX_CODE_CHARS = 400_000  # per student: pygments is linear, but a 100 MB "solution" must not stall a batch
_CODE_BUDGET = Budget(max_file_bytes=20 * MIB, max_total_bytes=100 * MIB, max_files=200, max_ratio=float("inf"))
_VERSION = "1"  # bump when the comparison or the files written change


@dataclass(frozen=True)
class Pair:
    student_a: str
    student_b: str
    similarity: float  # max(sim_a, sim_b)
    sim_a: float  # share of a's own code found in b
    sim_b: float
    overlap: int  # shared tokens (filtered characters)
    slices_a: tuple[tuple[int, int], ...]  # shared passages, character offsets in a's code
    slices_b: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Outcome:
    """What one similarity step did; ``error`` is set when it failed (the batch goes on)."""

    computed: bool  # False: up to date, nothing compared
    students: int
    pairs: int  # rows of similarity.csv
    flagged: int  # pairs at or above the threshold
    missing: tuple[str, ...] = ()  # graded students without a code copy (left out)
    error: str | None = None


def _read_text(path: Path) -> str:
    """A regular file as text, without following a link; bytes that are not UTF-8 become U+FFFD."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise UnpackError(f"{path.name} is not a file")
        return f.read(4 * _MAX_CODE_CHARS).decode("utf-8", errors="replace")


def _python_files(folder: Path) -> list[tuple[str, Path]]:
    """The .py files under ``folder`` (links, litter skipped; limits held), segmentation.py first."""
    files = [(rel, p) for rel, p in collect_files(folder, _CODE_BUDGET, []) if rel.endswith(".py")]
    return sorted(files, key=lambda f: (f[0] != "segmentation.py", f[0]))


def code_text(folder: Path) -> str:
    """A submission's code as one document: each .py file behind a comment naming it (comments do not count)."""
    parts, size = [], 0
    for rel, path in _python_files(folder):
        text = _read_text(path)
        parts.append(f"# ===== {rel} =====\n{text}\n")
        size += len(parts[-1])
        if size >= _MAX_CODE_CHARS:
            break
    return "".join(parts)[:_MAX_CODE_CHARS]


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
                store_code(out / entry.student, entry.path, entry.content_hash)


def _slices(raw: str, slices: object) -> tuple[tuple[int, int], ...]:
    """copydetect's 2xN start/end array as sorted, merged, in-bounds (start, end) pairs."""
    spans = sorted((max(0, int(s)), min(len(raw), int(e))) for s, e in zip(*slices)) if len(slices[0]) else []
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


@dataclass
class _Fingerprint:
    """What copydetect's ``compare_files`` reads of a ``CodeFingerprint``."""

    k: int
    raw_code: str
    filtered_code: str
    offsets: object  # copydetect's Nx2 array: filtered index -> characters removed before it
    hashes: set[int]
    hash_idx: dict[int, list[int]]
    token_coverage: float


def _kgram_hash(gram: str) -> int:
    # copydetect hashes k-grams with hash(), salted per process: the same class would give other pairs on
    # every run. A keyed-nothing 64-bit BLAKE2 makes the report reproducible.
    return int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little", signed=True)


def _fingerprint(text: str, window: int, boilerplate: object = None) -> _Fingerprint:
    """copydetect's tokenising filter and winnowing (its ``CodeFingerprint``) with a reproducible hash; the
    k-grams of ``boilerplate`` (every one of the template's) are dropped."""
    import numpy as np
    from copydetect.utils import filter_code, get_token_coverage, winnow

    filtered, offsets = filter_code(text, "submission.py", language="python")  # never the student's file name
    hashes = np.array([_kgram_hash(filtered[i:i + NOISE_T]) for i in range(len(filtered) - NOISE_T + 1)],
                      dtype=np.int64)
    hashes, idx = winnow(hashes, window, remove_duplicates=False) if len(hashes) else (hashes, hashes)
    if boilerplate is not None and len(hashes):
        keep = ~np.isin(hashes, boilerplate)
        hashes, idx = hashes[keep], idx[keep]
    hash_idx: dict[int, list[int]] = {}
    for h, i in zip(hashes.tolist(), idx.tolist()):
        hash_idx.setdefault(h, []).append(i)
    return _Fingerprint(NOISE_T, text, filtered, offsets, set(hash_idx), hash_idx,
                        float(get_token_coverage(hash_idx, NOISE_T, len(filtered))))


def compare(docs: Mapping[str, str], boilerplate: str = "", *, floor: float = FLOOR) -> list[Pair]:
    """Every pair of ``docs`` (student -> code) at or above ``floor``, most similar first."""
    import numpy as np
    from copydetect.detector import compare_files  # numpy, pygments, matplotlib: only when comparing

    bp = np.array(sorted(_fingerprint(boilerplate, 1).hashes), dtype=np.int64) if boilerplate else None
    prints = {s: _fingerprint(docs[s], GUARANTEE_T - NOISE_T + 1, bp) for s in sorted(docs)}
    names, pairs = list(prints), []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            overlap, (sim_a, sim_b), (slices_a, slices_b) = compare_files(prints[a], prints[b])
            sim_a, sim_b = (min(1.0, float(x)) if np.isfinite(x) else 0.0 for x in (sim_a, sim_b))
            if max(sim_a, sim_b) >= floor and overlap:
                pairs.append(Pair(a, b, max(sim_a, sim_b), sim_a, sim_b, int(overlap),
                                  _slices(prints[a].raw_code, slices_a), _slices(prints[b].raw_code, slices_b)))
    return sorted(pairs, key=lambda p: (-p.similarity, p.student_a, p.student_b))


def _key(graded: Mapping[str, str], present: Sequence[str], template: bytes, threshold: float) -> str:
    from importlib.metadata import version  # not ``import copydetect``: that imports numpy and matplotlib

    from grader.report.folder import renderer_digest  # the pair pages are drawn by the report's templates

    text = json.dumps({"version": _VERSION, "copydetect": version("copydetect"), "noise": NOISE_T,
                       "guarantee": GUARANTEE_T, "floor": FLOOR, "threshold": threshold,
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
        from grader.similarity.pages import is_current, write_outputs

        if not force and is_current(out, key):
            return Outcome(False, len(present), 0, 0, missing)
        codes = {s: code_text(out / s / CODE_DIR) for s in present}
        pairs = compare(codes, tpl.decode("utf-8", "replace"))
        flagged = write_outputs(out, pairs, codes, key=key, threshold=threshold, floor=FLOOR, missing=missing)
        return Outcome(True, len(present), len(pairs), flagged, missing)
    except Exception as exc:  # noqa: BLE001 -- failure is data: the batch's grades stand without this view
        from grader.similarity.pages import write_failure

        message = f"{type(exc).__name__}: {exc}"
        write_failure(out, message, threshold=threshold)
        return Outcome(False, 0, 0, 0, error=message)
