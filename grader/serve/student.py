"""The student's pages: upload, live status (polled as JSON, no reload), history, and each report.

Every route takes the student from the session, never from the request: a submission id that is not the
student's own answers 404, exactly like one that does not exist.
"""
from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from grader.serve.pages import page
from grader.serve.auth import check_csrf, student
from grader.serve.config import ServeConfig, history_dir, when
from grader.serve.store import Identity, Store, Submission
from grader.serve.uploads import Refused, accept, attempts

__all__ = ["router", "status_view", "report_file", "REPORT_CSP"]

Student = Annotated[Identity, Depends(student)]
router = APIRouter()
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
_STAGE_WORDS = {"queued": "waiting in the queue", "preparing": "preparing the job", "grading": "in the sandbox",
                "import": "importing your code", "unit": "unit checks", "model": "model shapes",
                "overfit": "overfitting one example", "train": "full training", "rendering": "writing the report",
                "finished": "finished"}


def _row(sub: Submission, place: int | None, released: bool, late: bool) -> dict[str, Any]:
    stage = sub.stage.split(".")[0] if sub.stage else ""
    row: dict[str, Any] = {"id": sub.id, "uploaded": when(sub.created), "status": sub.status, "stage": sub.stage,
                           "stage_text": _STAGE_WORDS.get(stage, sub.stage), "place": place, "score": None,
                           "max_score": None, "result": sub.result_status, "report": None,
                           "message": sub.message or "", "attempt": bool(sub.counted), "late": late}
    if sub.status == "done":
        row["report"] = f"/submissions/{sub.id}/report"
        if sub.result_status == "graded":  # before release, the visible checks' part only (as the report shows)
            shown = (sub.score, sub.max_score) if released else (sub.visible_score, sub.visible_max)
            row.update(score=shown[0], max_score=shown[1])
    return row


def status_view(store: Store, config: ServeConfig, who: str) -> dict[str, Any]:
    queued = [s.id for s in store.submissions(status=("queued",))]
    released = store.setting("released") == "1"
    rows = []
    for sub in reversed(store.submissions(who)):
        place = queued.index(sub.id) + 1 if sub.id in queued else None
        rows.append(_row(sub, place, released, config.is_late(sub.created)))
    state = attempts(store, who, config)
    return {"student": who, "submissions": rows, "released": released,
            "attempts": {"used": state.used, "limit": state.limit, "left": state.left,
                         "next_free": when(state.next_free) or None, "text": state.sentence()},
            "due": when(config.due if config.late_due is None else config.late_due) or None,
            "late_until": when(config.closes) if config.late_due is not None else None,
            "late_policy": config.late_due is not None,
            "closed": config.closes is not None and time.time() > config.closes,
            "running": len(store.submissions(status=("running",)))}


def _home(request: Request, who: Identity, *, message: str = "", error: str = "", status: int = 200) -> Response:
    view = status_view(request.app.state.store, request.app.state.config, who.student)
    return page(request, "home.html.j2", status, view=view, message=message, error=error)


@router.get("/")
def home(request: Request, who: Student, queued: int = 0) -> Response:
    if who.role == "staff":
        return RedirectResponse("/staff", status_code=303)
    return _home(request, who, message=f"Submission {queued} is queued." if queued else "")


@router.get("/api/status")
def api_status(request: Request, who: Student) -> dict[str, Any]:
    return status_view(request.app.state.store, request.app.state.config, who.student)


@router.post("/submit")
async def submit(request: Request, who: Student) -> Response:
    form = await request.form()
    check_csrf(who, form.get("csrf"))
    upload = form.get("file")
    if who.role != "student":
        return _home(request, who, error="Staff accounts do not submit.", status=403)
    if not isinstance(upload, UploadFile) or not upload.filename:
        return _home(request, who, error="Choose a file first: your segmentation.py, a .zip or a .ipynb.",
                     status=400)
    body = await upload.read()
    try:
        sub_id = await run_in_threadpool(accept, request.app.state.store, request.app.state.config,
                                         student=who.student, filename=upload.filename, body=body)
    except Refused as exc:
        return _home(request, who, error=str(exc), status=exc.status)
    return RedirectResponse(f"/?queued={sub_id}", status_code=303)


def report_file(request: Request, sub: Submission) -> Response:
    released = request.app.state.store.setting("released") == "1"
    folder = history_dir(request.app.state.config.data_dir) / str(sub.id)
    path = folder / "report-released.html"
    if not released or not path.is_file():  # just released: the worker is still drawing it; less, never more
        path = folder / "report.html"
    if sub.status != "done" or not path.is_file():
        return page(request, "message.html.j2", 404, title="No report yet",
                    message="This submission has no report yet: it is still being graded, or was not graded.")
    return FileResponse(path, media_type="text/html", headers={"Content-Security-Policy": REPORT_CSP})


@router.get("/submissions/{sub_id}/report")
def report(request: Request, sub_id: int, who: Student) -> Response:
    sub = request.app.state.store.submission(sub_id)
    if sub is None or (sub.student != who.student and who.role != "staff"):
        return page(request, "message.html.j2", 404, title="Not found", message="There is no such submission "
                    "among yours.")
    return report_file(request, sub)
