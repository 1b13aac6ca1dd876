"""Re-rendering a grading output folder from its result.json files, drawing only what changed.

A regrade of an unchanged class ends here with nothing to draw: this module imports neither Jinja2 nor the
views (nor matplotlib) until a page must be drawn, so that regrade costs the interpreter's start.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from grader.core.files import update_tree
from grader.report.collect import Unreadable, student_dirs

__all__ = ["render_all", "renderer_digest"]


_PACKAGE = Path(__file__).resolve().parent
_GRADE_VIEW = _PACKAGE.parent / "gradebook" / "view.py"  # the Grade card's view (grader.gradebook.view)


@functools.cache
def renderer_digest(root: Path = _PACKAGE) -> str:
    """The source of the pages' drawing (this package's code, templates and style, and the gradebook's view of
    the staff's layers): a grader upgrade that changes how pages look redraws them on the next run, even for an
    unchanged class."""
    digest = hashlib.sha256()
    update_tree(digest, root, (".py", ".j2", ".css"))
    digest.update(_GRADE_VIEW.read_bytes())
    return digest.hexdigest()


def _inputs_digest(student_dir: Path, released: bool) -> str:
    """What a report is made from: result.json, the artefacts, the staff's layers (grade.json: overrides,
    lateness; grader.gradebook), the release flag, the renderer's source."""
    digest = hashlib.sha256(f"released={released}\0{renderer_digest()}".encode())
    layers = [student_dir / "grade.json"] if (student_dir / "grade.json").is_file() else []
    for path in [student_dir / "result.json", *layers, *sorted((student_dir / "artifacts").glob("*.npz"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _up_to_date(student_dir: Path, digest: str) -> bool:
    stamp = student_dir / ".report.sha256"
    return (student_dir / "report.html").exists() and stamp.exists() and stamp.read_text() == digest


def render_all(out_dir: Path, *, released: bool = False, only_changed: bool = False) -> list[Path]:
    """Re-render every student's report.html and the class summary index.html from result.json files.

    One broken folder (unreadable result.json, a report that fails to render) is listed on the
    summary with its reason and does not stop the others. Returns the pages written, summary last.
    ``only_changed`` skips a report whose inputs (result.json, artefacts, release flag, the renderer's
    source) are unchanged since it was rendered, and the summary when none of them nor summary.json changed:
    a regrade of an unchanged class then draws nothing (the summary keeps the time it was generated at).
    """
    out_dir = Path(out_dir)
    written: list[Path] = []
    failures: list[Unreadable] = []
    index_inputs = hashlib.sha256(f"released={released}\0{renderer_digest()}".encode())
    for student_dir in student_dirs(out_dir):
        try:
            digest = _inputs_digest(student_dir, released) if (student_dir / "result.json").exists() else ""
            index_inputs.update(f"{student_dir.name}\0{digest}\0".encode())
            if only_changed and digest and _up_to_date(student_dir, digest):
                continue
            from grader.report.render import render_student_report  # Jinja2: only when a report is drawn

            written.append(render_student_report(student_dir, released=released))
            if digest:
                (student_dir / ".report.sha256").write_text(digest)
        except Exception as exc:  # noqa: BLE001 -- failure is data: one bad folder never stops the batch
            failures.append(Unreadable(student_dir.name, f"report not rendered: {type(exc).__name__}: {exc}"))
    for shown in ("summary.json", "similarity.json"):  # similarity.json: the "Similar pairs" section
        index_inputs.update((out_dir / shown).read_bytes() + b"\0" if (out_dir / shown).exists() else b"-\0")
    stamp, digest = out_dir / ".index.sha256", index_inputs.hexdigest()
    if only_changed and not failures and (out_dir / "index.html").exists() and stamp.exists() \
            and stamp.read_text() == digest:
        return written  # nothing the summary shows changed: not even matplotlib is imported
    from grader.report.summary import render_class_summary  # jinja2: only when the summary is drawn

    written.append(render_class_summary(out_dir, failures=tuple(failures)))
    stamp.write_text(digest)
    return written
