"""Feedback pages: one self-contained HTML report per student and a class summary for TAs.

Built from result.json files (and the artefacts beside them) only, so re-rendering never regrades. The names
below are imported on first use (PEP 562): ``grader.report.export`` needs ``grader.report.collect`` only, and an
unchanged regrade must not pay for Jinja2.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["render_student_report", "render_class_summary", "render_all"]

_HOME = {"render_student_report": "grader.report.render", "render_class_summary": "grader.report.summary",
         "render_all": "grader.report.folder"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'grader.report' has no attribute {name!r}")
