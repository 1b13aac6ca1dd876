"""The passages two similar submissions share, marked for the side-by-side pages (copydetect).

The score of a pair comes from ``grader.similarity.normalise``'s fingerprints; this only marks where the
shared code is, on the code the pages show (comments and docstrings already dropped). copydetect's
tokenising filter (names become V/F/O, strings S) and its winnowing are used with a reproducible hash: its
own ``hash()`` is salted per process and would mark other passages on every run. k-grams that also occur in
the boilerplate (the template, the notebook prelude) are not marked.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

__all__ = ["NOISE_T", "GUARANTEE_T", "mark"]

NOISE_T = 25  # shortest match (filtered characters) that is marked; copydetect's default
GUARANTEE_T = 35  # every match this long is marked: winnowing window 11 (10x fewer fingerprints than 25)


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


def mark(pairs: Sequence, texts: Mapping[str, str], boilerplate: str = "") -> list:
    """``pairs`` (``grader.similarity.compare.Pair``) with their shared passages (character offsets into
    ``texts``) and ``overlap`` (copydetect's shared tokens) filled in; scores unchanged."""
    if not pairs:
        return []
    import numpy as np
    from copydetect.detector import compare_files  # numpy, pygments, matplotlib: only when pages are drawn

    bp = np.array(sorted(_fingerprint(boilerplate, 1).hashes), dtype=np.int64) if boilerplate else None
    prints: dict[str, _Fingerprint] = {}
    out = []
    for pair in pairs:
        for s in (pair.student_a, pair.student_b):
            if s not in prints:
                prints[s] = _fingerprint(texts[s], GUARANTEE_T - NOISE_T + 1, bp)
        a, b = prints[pair.student_a], prints[pair.student_b]
        overlap, _, (slices_a, slices_b) = compare_files(a, b)
        out.append(replace(pair, overlap=int(overlap), slices_a=_slices(a.raw_code, slices_a),
                           slices_b=_slices(b.raw_code, slices_b)))
    return out
