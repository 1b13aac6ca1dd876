"""The staff pages (a staff link's session): the queue with stage and age, the class summary as ``grader
grade`` draws it, re-running one student, releasing the reports, and grades.csv.

The class pages are served from ``DIR`` by looking each URL part up in the folder's listing (no part is ever
joined into a path unseen; dot-files and the service's own files are never listed).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from grader.serve.pages import page
from grader.serve.auth import check_csrf, staff
from grader.serve.config import RESERVED, when
from grader.serve.store import Identity
from grader.serve.student import report_file
from grader.serve.uploads import requeue_copy

__all__ = ["router", "lookup"]

Staff = Annotated[Identity, Depends(staff)]
router = APIRouter(prefix="/staff")
_SERVED = {".html": "text/html", ".csv": "text/csv"}
CLASS_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; " \
            "frame-ancestors 'none'"


def lookup(root: Path, parts: list[str]) -> Path | None:
    """The file under ``root`` named by ``parts``, each found in its folder's listing; None if any part is not
    a listed, non-hidden, non-link entry, or the file is not a page or a CSV."""
    here = root
    if not parts or len(parts) > 3:
        return None
    for i, part in enumerate(parts):
        try:
            entries = {e.name: e for e in os.scandir(here)}
        except OSError:
            return None
        entry = entries.get(part)
        if entry is None or part.startswith(".") or part in RESERVED or entry.is_symlink():
            return None
        last = i == len(parts) - 1
        if last != entry.is_file(follow_symlinks=False):
            return None
        here = Path(entry.path)
    return here if here.suffix in _SERVED else None


@router.get("")
def queue(request: Request, who: Staff, message: str = "") -> Response:
    store = request.app.state.store
    now = time.time()
    active = [{"id": s.id, "student": s.student, "status": s.status, "stage": s.stage,
               "age": f"{(now - s.created) / 60:.1f} min", "runs": s.runs, "message": s.message or ""}
              for s in store.submissions(status=("queued", "running", "failed"))]
    recent = [{"id": s.id, "student": s.student, "score": s.score, "max_score": s.max_score,
               "result": s.result_status, "finished": when(s.finished)}
              for s in store.submissions(status=("done",))[-50:][::-1]]
    return page(request, "staff.html.j2", active=active, recent=recent, students=store.students(),
                released=store.setting("released") == "1", message=message)


@router.post("/rerun")
async def rerun(request: Request, who: Staff) -> Response:
    form = await request.form()
    check_csrf(who, form.get("csrf"))
    name = str(form.get("student", ""))
    store = request.app.state.store
    if name not in store.students():
        return RedirectResponse("/staff?message=No+such+student.", status_code=303)
    sub_id = requeue_copy(store, request.app.state.config, name)
    note = f"Queued {name}'s latest upload again (submission {sub_id})." if sub_id else f"{name} has no upload."
    return RedirectResponse(f"/staff?message={note.replace(' ', '+')}", status_code=303)


@router.post("/release")
async def release(request: Request, who: Staff) -> Response:
    form = await request.form()
    check_csrf(who, form.get("csrf"))
    on = form.get("released") == "1"
    request.app.state.store.set_setting("released", "1" if on else "0")
    word = "released: students see every check" if on else "withdrawn: students see the visible checks only"
    return RedirectResponse(f"/staff?message=Reports+{word.replace(' ', '+')}.", status_code=303)


@router.get("/grades.csv")
def grades(request: Request, who: Staff) -> Response:
    path = request.app.state.config.data_dir / "grades.csv"
    if not path.is_file():
        return page(request, "message.html.j2", 404, title="No grades yet", message="Nothing has been graded yet.")
    return FileResponse(path, media_type="text/csv", filename="grades.csv")


@router.get("/class/{rest:path}")
def class_pages(request: Request, rest: str, who: Staff) -> Response:
    path = lookup(request.app.state.config.data_dir, (rest or "index.html").split("/"))
    if path is None:
        return page(request, "message.html.j2", 404, title="Not found", message="No such page of the class.")
    return FileResponse(path, media_type=_SERVED[path.suffix], headers={"Content-Security-Policy": CLASS_CSP})


@router.get("/submissions/{sub_id}/report")
def any_report(request: Request, sub_id: int, who: Staff) -> Response:
    sub = request.app.state.store.submission(sub_id)
    if sub is None:
        return page(request, "message.html.j2", 404, title="Not found", message="No such submission.")
    return report_file(request, sub)
