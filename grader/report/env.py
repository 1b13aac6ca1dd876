"""The one Jinja2 environment of the reports (autoescape on) and the atomic write of a page.

All HTML lives in templates/; Python only builds the data the templates show.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from grader.core.files import write_atomic

__all__ = ["TEMPLATES_DIR", "environment", "render_page"]

TEMPLATES_DIR = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def environment() -> Environment:
    """Templates from ``TEMPLATES_DIR``; every .html/.html.j2 template (and any string) is autoescaped.

    Only the stylesheet (.css, included inside <style>) is not escaped: it is ours, never data.
    StrictUndefined turns a misspelt variable into an error in the tests instead of a silent blank.
    """
    return Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(enabled_extensions=("html.j2", "html"), disabled_extensions=("css",),
                                     default_for_string=True, default=True),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )


def render_page(template: str, path: Path, **context: Any) -> Path:
    """Render ``template`` with ``context`` and write it to ``path`` atomically (temp file + rename)."""
    html = environment().get_template(template).render(**context)
    return write_atomic(path, html, mode=0o644)  # a report is meant to be read (web server, TAs)
