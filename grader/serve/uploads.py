"""Taking one upload in: the deadline, the attempt limit, the same intake as ``grader grade``, then the queue.

Nothing here grades or runs the upload. The file is written under a name the service makes
(``<student>.<kind>``): the name the browser sent only tells which of ``py``, ``zip``, ``ipynb`` it is.
``grader.intake.discover`` (single-submission mode: a zip is never read as a class) unpacks it into a
throw-away folder, with its archive limits and traversal checks, so a bad upload is refused at once with
the intake's reason and costs no attempt. A ``.py`` file must also compile (never run).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from grader.intake.discover import Rejected, discover
from grader.serve.config import KINDS, ServeConfig, incoming_dir, uploads_dir, when
from grader.serve.store import Store

__all__ = ["Refused", "Attempts", "attempts", "kind_of", "accept"]


class Refused(Exception):
    """The upload is not queued; ``str`` says why and what to do. ``status``: the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Attempts:
    used: int
    limit: int
    window_hours: float
    next_free: float | None  # when one is free again (None: one is free now)

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)

    def sentence(self) -> str:
        text = f"{self.used} of {self.limit} graded attempts used in the last {self.window_hours:g} h"
        if self.next_free is not None:
            text += f"; your next attempt is free at {when(self.next_free)}"
        return text


def _attempts_from(times: list[float], config: ServeConfig) -> Attempts:
    window = config.window_hours * 3600
    free = times[0] + window if len(times) >= config.attempts else None
    return Attempts(used=len(times), limit=config.attempts, window_hours=config.window_hours, next_free=free)


def attempts(store: Store, student: str, config: ServeConfig) -> Attempts:
    with store.connect() as db:
        times = store.counted_since(db, student, time.time() - config.window_hours * 3600)
    return _attempts_from(times, config)


def kind_of(filename: str | None) -> str:
    """``py`` | ``zip`` | ``ipynb`` from the browser's file name (its suffix only), else ``Refused``."""
    suffix = PurePosixPath((filename or "").replace("\\", "/")).suffix.lower().lstrip(".")
    if suffix not in KINDS:
        raise Refused("Upload your segmentation.py, a .zip of your folder, or your notebook (.ipynb); "
                      f"a file ending in {('.' + suffix) if suffix else 'no extension'} cannot be graded.", 415)
    return suffix


def _check_python(folder: Path) -> None:
    source = (folder / "segmentation.py").read_bytes()
    try:
        compile(source, "segmentation.py", "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f" line {exc.lineno}" if exc.lineno else ""
        raise Refused(f"This is not valid Python: segmentation.py{where}: {exc.msg}. Fix it (run "
                      "`python segmentation.py` on your machine) and upload again; this upload cost no attempt.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(f"This is not a Python source file ({exc}). Upload the .py file itself; this upload cost "
                      "no attempt.") from None


def accept(store: Store, config: ServeConfig, *, student: str, filename: str | None, body: bytes) -> int:
    """Queue ``body`` as ``student``'s next submission and return its id, or raise ``Refused``."""
    kind = kind_of(filename)
    if len(body) > config.max_upload_bytes:
        raise Refused(f"The file is larger than the {config.max_upload_mb:g} MB limit.", 413)
    if not body:
        raise Refused("The file is empty. Choose your segmentation.py, .zip or .ipynb and upload again.")
    if config.closes is not None and time.time() > config.closes:
        raise Refused(f"The deadline has passed ({when(config.closes)}): uploads are closed.", 403)
    if attempts(store, student, config).left == 0:  # checked again under the write lock below
        raise Refused("Attempt limit reached: " + attempts(store, student, config).sentence() + ".", 429)
    incoming = incoming_dir(config.data_dir)
    incoming.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="up-", dir=incoming))
    try:
        upload = staging / "upload"
        upload.mkdir()
        (upload / f"{student}.{kind}").write_bytes(body)
        found = discover([upload / f"{student}.{kind}"], workdir=staging / "intake", single=True)
        if len(found) != 1:
            raise Refused("The grader could not read this upload. Upload segmentation.py, a .zip or a .ipynb.")
        if isinstance(found[0], Rejected):
            raise Refused(f"This upload cannot be graded: {found[0].reason}. It cost no attempt.", 422)
        if kind == "py":
            _check_python(found[0].path)
        with store.connect(immediate=True) as db:
            times = store.counted_since(db, student, time.time() - config.window_hours * 3600)
            state = _attempts_from(times, config)
            if state.left == 0:
                raise Refused("Attempt limit reached: " + state.sentence() + ".", 429)
            sub_id = store.add_submission(student, kind, db=db)
            target = uploads_dir(config.data_dir) / str(sub_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            upload.rename(target)  # inside the transaction: no row without its file
        return sub_id
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def requeue_copy(store: Store, config: ServeConfig, student: str) -> int | None:
    """Staff: grade ``student``'s latest upload again (no attempt counted). None when there is none."""
    subs = store.submissions(student)
    if not subs:
        return None
    last = subs[-1]
    source = uploads_dir(config.data_dir) / str(last.id) / f"{student}.{last.kind}"
    with store.connect(immediate=True) as db:
        sub_id = store.add_submission(student, last.kind, counted=False, rerun=True, db=db)
        target = uploads_dir(config.data_dir) / str(sub_id)
        target.mkdir(parents=True)
        shutil.copyfile(source, target / source.name)
    return sub_id
