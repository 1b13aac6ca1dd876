"""Drawing the service's pages: one Jinja2 environment (autoescaped), the page helper, the pages' CSP."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

__all__ = ["PAGE_CSP", "environment", "page"]

PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " \
           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"


def environment() -> Environment:
    return Environment(loader=FileSystemLoader(str(Path(__file__).resolve().parent / "templates")),
                       autoescape=select_autoescape(["j2"]), trim_blocks=True, lstrip_blocks=True)


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """``template`` with the signed-in person (if any) and the service's settings."""
    env: Environment = request.app.state.templates
    who = getattr(request.state, "identity", None)
    html = env.get_template(template).render(who=who, config=request.app.state.config, **context)
    return HTMLResponse(html, status_code=status)
