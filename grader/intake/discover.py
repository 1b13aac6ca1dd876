"""Intake: what students hand in -> a clean, hashed folder holding ``segmentation.py``.

A submission is a folder with ``segmentation.py`` (at its top, or inside one folder, since students
zip the folder itself), a single ``.py`` file (copied as ``segmentation.py``), a Jupyter notebook
(each code cell a file, run one by one by a ``segmentation.py`` prelude: ``grader.intake.notebooks``), a ``.zip``
of one of these, or a folder whose only content is one of these. The clean copy lives in
``workdir/<student>-<hash8>``; the student's original is never touched or run. OS litter (``__pycache__``,
``*.pyc``, ``.DS_Store``, ``__MACOSX``, ``.ipynb_checkpoints``, ``.git``, ``._*``) is dropped.

Policy on links: symlink entries in a ZIP reject the submission (``archives``); symlinks inside a
submitted FOLDER are skipped, never followed, and listed in the notes.

Nothing here raises for a bad submission: it becomes ``Rejected`` with a reason for the student. ``discover``
holds a barrier per path and per student: whatever goes wrong with one entry (even a grader bug) becomes that
entry's ``Rejected``; only a full disk (the grader's own fault) and interrupts go through.

``single=True`` (Gradescope mode) takes every path as one student's own submission: never a class export, so
no ``submission_metadata.yml`` is read and no Canvas name is parsed, and nothing outside the path is reached.
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from grader.intake.archives import (MIB, Budget, UnpackError, entry_parts, extract_class_zip, extract_zip, is_junk,
                             read_listing, reraise_disk_full)
from grader.intake.cleancopy import clean_copy, hash_folder
from grader.intake.ids import assign_ids, safe_student_id
from grader.intake.lms import METADATA, Candidate, class_candidates, is_canvas_name
from grader.intake.notebooks import notebook_to_files, write_notebook_files

__all__ = ["IntakeLimits", "Submission", "Rejected", "prepare_submission", "discover", "hash_folder",
           "safe_student_id"]

ENTRY = "segmentation.py"
MAX_ZIP_NESTING = 1  # a zip inside the submitted zip is fine; a zip inside that one is refused
MAX_FOLDER_NESTING = 4  # single-child folders descended looking for segmentation.py
EXPECTED = ("expected segmentation.py at the top level (or inside a single folder), a single .py file, "
            "a Jupyter notebook (.ipynb), or a .zip of one of these")
_OTHER_ARCHIVES = (".tar", ".gz", ".tgz", ".bz2", ".xz", ".rar", ".7z")


@dataclass(frozen=True)
class IntakeLimits:
    max_file_mb: float = 20
    max_total_mb: float = 100
    max_files: int = 200
    max_ratio: float = 200.0

    def budget(self) -> Budget:
        return Budget(max_file_bytes=int(self.max_file_mb * MIB), max_total_bytes=int(self.max_total_mb * MIB),
                      max_files=self.max_files, max_ratio=self.max_ratio)


@dataclass(frozen=True)
class Submission:
    student: str  # safe id: [A-Za-z0-9._-], unique within one discover()
    path: Path  # clean folder under workdir containing segmentation.py (+ any helper modules)
    content_hash: str  # sha256 over sorted relative paths + bytes of the clean folder
    source: str  # what it came from (for messages)
    notes: tuple[str, ...] = ()
    lms_id: str = ""  # the LMS's id of the student (Canvas user id, Gradescope sid), "" where none
    email: str = ""
    owner: str = ""  # who the id belongs to across batches (lms_id, else the raw name): ids never change owner
    lms: str = ""  # "canvas", "gradescope" or "" (a plain folder or file)
    submitted_at: str = ""  # ISO 8601 where the LMS export says, else ""

    def identity(self) -> dict[str, str]:
        """Where the row came from, for result.json's provenance and grades.csv."""
        return {"source": self.source, "lms": self.lms, "lms_id": self.lms_id, "email": self.email,
                "owner": self.owner}


@dataclass(frozen=True)
class Rejected:
    student: str
    source: str
    reason: str  # becomes an "ungradable" result with this reason
    lms_id: str = ""
    email: str = ""
    owner: str = ""
    lms: str = ""
    submitted_at: str = ""

    identity = Submission.identity


class _Reject(Exception):
    """Internal: the submission cannot be graded; ``str(exc)`` says why."""


# ---------------------------------------------------------------------------------- finding the root
def _is_regular(path: Path) -> bool:
    return stat.S_ISREG(os.lstat(path).st_mode) if os.path.lexists(path) else False


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not is_junk((p.name,)))


def _listing(folder: Path, limit: int = 12) -> str:
    """What a folder holds, for the rejection message (links shown, not followed)."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = Path(dirpath).relative_to(folder)
        dirnames[:] = sorted(d for d in dirnames if not is_junk((d,))) if len(rel.parts) < 8 else []
        found += [(rel / f).as_posix() for f in sorted(filenames) if not is_junk((f,))]
        if len(found) > limit:
            break
    shown = ", ".join(found[:limit]) + (", ..." if len(found) > limit else "")
    return f"found {shown}" if found else "found nothing (an empty submission)"


def _resolve(path: Path, *, stage: Path, budget: Budget, depth: int, notes: list[str]) -> Path:
    """The folder whose top holds segmentation.py, unpacking into ``stage`` as needed."""
    if path.is_symlink():
        raise _Reject(f"{path.name} is a symbolic link; links are not followed")
    if path.is_dir():
        return _resolve_dir(path, stage=stage, budget=budget, depth=depth, notes=notes, nesting=0)
    if not _is_regular(path):
        raise _Reject(f"{path.name} is not a regular file")
    if path.stat().st_size > budget.max_file_bytes:
        raise _Reject(f"{path.name} is {path.stat().st_size / MIB:.1f} MB, over the "
                      f"{budget.max_file_bytes / MIB:g} MB limit per file")
    suffix, out = path.suffix.lower(), Path(tempfile.mkdtemp(dir=stage))
    if suffix == ".py":
        shutil.copyfile(path, out / ENTRY)
        notes += [f"{path.name} was renamed {ENTRY}"] if path.name != ENTRY else []
    elif suffix == ".ipynb":
        files, nb_notes = notebook_to_files(path.read_bytes(), name=path.name)
        write_notebook_files(out, files)
        notes += nb_notes
    elif suffix == ".zip":
        if depth > MAX_ZIP_NESTING:
            raise _Reject(f"{path.name} is an archive nested more than one level deep; submit one zip")
        extract_zip(path, out, budget=budget)
        return _resolve_dir(out, stage=stage, budget=budget, depth=depth + 1, notes=notes, nesting=0)
    elif path.name.lower().endswith(_OTHER_ARCHIVES):
        raise _Reject(f"{path.name}: this archive format is not accepted; submit a .zip")
    else:
        raise _Reject(f"no {ENTRY}: found {path.name}; {EXPECTED}")
    return out


def _resolve_dir(folder: Path, *, stage: Path, budget: Budget, depth: int, notes: list[str],
                 nesting: int) -> Path:
    if _is_regular(folder / ENTRY):
        return folder
    kids = _children(folder)
    dirs = [k for k in kids if _is_real_dir(k) and _is_regular(k / ENTRY)]
    files = [k for k in kids if _is_regular(k) and k.suffix.lower() in (".py", ".ipynb", ".zip")]
    if len(kids) == 1 and _is_real_dir(kids[0]) and nesting < MAX_FOLDER_NESTING:
        return _resolve_dir(kids[0], stage=stage, budget=budget, depth=depth, notes=notes, nesting=nesting + 1)
    if len(dirs) == 1 or (not dirs and len(files) == 1):
        chosen = (dirs or files)[0]
        ignored = [k.name for k in kids if k != chosen]
        notes += [f"graded {chosen.name}; ignored {', '.join(ignored)}"] if ignored else []
        return _resolve(chosen, stage=stage, budget=budget, depth=depth, notes=notes)
    hint = ("; several folders hold one: if this is a whole class, unzip it and grade the folder (one path "
            "on the command line is one student's submission)") if len(dirs) > 1 else ""
    raise _Reject(f"no {ENTRY}: {_listing(folder)}; {EXPECTED}{hint}")


# ------------------------------------------------------------------------------------ public API
def _prepare(path: Path, *, student: str, source: str, workdir: Path, limits: IntakeLimits,
             notes: Sequence[str] = (), who: dict[str, str] | None = None) -> Submission | Rejected:
    who = who or {}
    workdir.mkdir(parents=True, exist_ok=True)
    found: list[str] = list(notes)
    budget = limits.budget()
    try:
        with tempfile.TemporaryDirectory(prefix=".stage-", dir=workdir, ignore_cleanup_errors=True) as stage:
            root = _resolve(path, stage=Path(stage), budget=budget, depth=0, notes=found)
            clean, digest = clean_copy(root, student=student, workdir=workdir, budget=limits.budget(),
                                        notes=found)
    except (_Reject, UnpackError) as exc:
        return Rejected(student=student, source=source, reason=str(exc), **who)
    except OSError as exc:
        reraise_disk_full(exc)
        why = f"{exc.strerror}: {Path(str(exc.filename)).name}" if exc.strerror and exc.filename else str(exc)
        return Rejected(student=student, source=source, reason=f"could not read the submission ({why})", **who)
    except Exception as exc:  # the barrier: one submission's oddity (or a grader bug) is its result only
        return Rejected(student=student, source=source, reason=_unexpected(exc), **who)
    return Submission(student=student, path=clean, content_hash=digest, source=source, notes=tuple(found), **who)


def _unexpected(exc: BaseException) -> str:
    what = " ".join(str(exc).split())[:300]
    return (f"the grader could not take this submission in ({type(exc).__name__}{': ' if what else ''}{what}); "
            f"submit a .zip of the folder holding {ENTRY}, and tell the course staff if this happens again")


def prepare_submission(source: Path, *, student: str, workdir: Path,
                       limits: IntakeLimits = IntakeLimits()) -> Submission | Rejected:
    """Turn one submission (folder, .py, .ipynb or .zip) into a clean hashed folder under ``workdir``."""
    return _prepare(Path(source), student=safe_student_id(student), source=str(source), workdir=workdir,
                    limits=limits)


def _lenient_parts(name: str) -> tuple[str, ...]:
    try:
        return entry_parts(name)
    except UnpackError:
        return ()  # an evil name says nothing about the layout; extraction rejects it later


def _zip_is_class_export(path: Path) -> bool:
    """Whether a zip given alone is an LMS export (Gradescope's metadata file, or Canvas's file names), at
    its top or under one wrapper folder. Anything else is one student's submission, whatever it holds: a
    student's zip with folders named like classmates must never become their rows."""
    try:
        infos = read_listing(path)
    except UnpackError:
        return False  # unreadable: prepared as one submission, rejected with the reason
    names = [n for n in (_lenient_parts(i.filename) for i in infos if not i.is_dir()) if n and not is_junk(n)]
    wrapped = len({n[0] for n in names}) == 1 and all(len(n) > 1 for n in names)
    top = [n[1:] if wrapped else n for n in names]
    return any(len(n) == 1 and (n[0] == METADATA or is_canvas_name(n[0])) for n in top)


def _is_one_submission(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() != ".zip" or not _zip_is_class_export(path)
    kids = _children(path) if _is_real_dir(path) else []
    return _is_regular(path / ENTRY) or (len(kids) == 1 and _is_real_dir(kids[0]) and _is_regular(kids[0] / ENTRY))


def _candidates(path: Path, *, stage: Path, limits: IntakeLimits, single: bool) -> list[Candidate]:
    if not os.path.lexists(path):
        return [Candidate(path.stem, None, str(path), problem=f"{path} does not exist")]
    if single or path.is_symlink() or _is_one_submission(path):
        name = path.parent.name if path.stem == "segmentation" else path.stem if path.is_file() else path.name
        return [Candidate(name, path, str(path))]
    if path.is_dir():
        kids = _children(path)
        if len(kids) == 1 and _is_real_dir(kids[0]) and _is_regular(kids[0] / METADATA):
            path = kids[0]  # an unzipped Gradescope export keeps its wrapper folder
        return class_candidates(path, label=str(path), stage=stage)
    unpacked = Path(tempfile.mkdtemp(prefix="class-", dir=stage))
    archive = extract_class_zip(path, unpacked, new_budget=limits.budget)
    stray = [Candidate(path.stem, None, str(path), problem="; ".join(archive.stray))] if archive.stray else []
    return stray + class_candidates(unpacked, label=str(path), stage=stage, poisoned=archive.poisoned)


def _guarded_candidates(path: Path, *, stage: Path, limits: IntakeLimits, single: bool) -> list[Candidate]:
    """``_candidates`` behind the barrier: a path that cannot be read at all is one rejected entry."""
    try:
        return _candidates(path, stage=stage, limits=limits, single=single)
    except Exception as exc:
        reraise_disk_full(exc)
        reason = str(exc) if isinstance(exc, UnpackError) else _unexpected(exc)
        return [Candidate(path.stem or "submission", None, str(path), problem=reason)]


def _holds(folder: Path | None, inner: Path) -> bool:
    """Whether ``inner`` lies inside ``folder`` (a link loop or an unreadable path: no)."""
    try:
        return folder is not None and inner.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        return False


def discover(paths: Sequence[Path], *, workdir: Path, limits: IntakeLimits = IntakeLimits(),
             single: bool = False, known: Mapping[str, str] | None = None) -> list[Submission | Rejected]:
    """Every submission in ``paths``, sorted by student id.

    One path is a class when it is a folder of submissions or an LMS export (Gradescope's metadata, Canvas's
    file names); else it is one student's submission. Several paths: each is one student's submission,
    whatever it holds. ``single``: always so (Gradescope mode). ``known``: ids already in the output folder ->
    their owners (``Submission.owner``), so that an id never changes owner across batches.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    single = single or len(paths) > 1
    results: list[Submission | Rejected] = []
    with tempfile.TemporaryDirectory(prefix=".discover-", dir=workdir, ignore_cleanup_errors=True) as tmp:
        cands = [c for p in paths for c in _guarded_candidates(Path(p), stage=Path(tmp), limits=limits, single=single)]
        # A workdir kept inside the class folder is the grader's, not a student's.
        cands = [c for c in cands if not _holds(c.path, workdir)]
        for sid, cand in assign_ids(cands, known or {}):
            who = {"lms_id": cand.lms_id, "email": cand.email, "owner": cand.owner, "lms": cand.lms,
                   "submitted_at": cand.submitted_at}
            if cand.problem or cand.path is None:
                results.append(Rejected(student=sid, source=cand.source, reason=cand.problem, **who))
            else:
                results.append(_prepare(cand.path, student=sid, source=cand.source, workdir=workdir,
                                        limits=limits, notes=cand.notes, who=who))
    return sorted(results, key=lambda r: r.student)
