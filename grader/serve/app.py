"""The web application (FastAPI): sign-in by personal link, the student and staff routers, clear error pages.

``create_app(config)`` builds it; ``grader serve`` runs it on uvicorn beside the grading worker. Request
handlers only read and write the store and files under ``DIR``: grading never happens here, and this process
imports neither torch nor numpy (tests/test_serve_app.py checks). Every response carries a restrictive
Content-Security-Policy, no referrer (a link's token must not leak), and no framing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from grader.serve import staff, student
from grader.serve.auth import COOKIE, Forbidden, SignIn, check_csrf, identity
from grader.serve.config import ServeConfig
from grader.serve.pages import PAGE_CSP, environment, page
from grader.serve.store import Store, TokenProblem

__all__ = ["create_app", "build_app", "SizeLimit"]

_HERE = Path(__file__).resolve().parent
_STATIC = {"app.js": "text/javascript", "serve.css": "text/css"}  # the only files /static/ serves


class SizeLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 with a page that says the limit,
    before the form parser spools it anywhere (declared length first, then counted as it arrives)."""

    def __init__(self, app: Any, *, limit: int, message: str) -> None:
        self.app, self.limit, self.message = app, limit, message

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                return await self._refuse(send)
            chunks.append(body)
            more = message.get("more_body", False)
        whole = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        body = self.message.encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"), (b"content-security-policy", PAGE_CSP.encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(config: ServeConfig) -> FastAPI:
    app = FastAPI(title="seg-autograder submissions", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config = config
    app.state.store = Store(config.data_dir)
    app.state.templates = environment()
    app.include_router(student.router)
    app.include_router(staff.router)
    too_large = app.state.templates.get_template("message.html.j2").render(
        who=None, config=config, title="Upload too large",
        message=f"The file is larger than the {config.max_upload_mb:g} MB limit. Upload only segmentation.py "
                "(or a .zip without data sets or checkpoints); this upload cost no attempt.")
    app.add_middleware(SizeLimit, limit=config.max_upload_bytes + 65536, message=too_large)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(SignIn)
    async def sign_in(request: Request, exc: SignIn) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        return page(request, "message.html.j2", exc.status, title="Please sign in", message=str(exc))

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return page(request, "message.html.j2", 403, title="Not allowed", message=str(exc))

    @app.get("/login")
    def login(request: Request, token: str = "") -> Response:
        try:
            session = app.state.store.open_session(token, hours=config.session_hours)
            role = app.state.store.identity(session).role
        except TokenProblem as exc:
            return page(request, "message.html.j2", 403, title="This link does not work", message=str(exc))
        response = RedirectResponse("/staff" if role == "staff" else "/", status_code=303)
        response.set_cookie(COOKIE, session, max_age=int(config.session_hours * 3600), httponly=True,
                            samesite="lax", secure=request.url.scheme == "https", path="/")
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        form = await request.form()
        try:
            who = identity(request)
        except SignIn:
            who = None  # no session to end: just drop the cookie
        if who is not None:
            check_csrf(who, form.get("csrf"))
            app.state.store.end_session(request.cookies.get(COOKIE, ""))  # the cookie alone no longer works
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in _STATIC:  # looked up in a fixed table: a name never becomes a path
            return Response("not found", status_code=404)
        return Response((_HERE / "static" / name).read_bytes(), media_type=_STATIC[name],
                        headers={"Cache-Control": "max-age=300"})

    return app


def build_app(data: str | Path, rubric: str | Path = "rubric.yaml", **settings: Any) -> FastAPI:
    """``create_app`` from keyword settings (tests, benchmarks)."""
    return create_app(ServeConfig(data=str(data), rubric=str(rubric), **settings))
