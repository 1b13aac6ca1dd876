"""Feedback pages: one self-contained HTML report per student and a class summary for TAs.

Built from result.json files (and the artefacts beside them) only, so re-rendering never regrades.
"""
from grader.report.render import render_all, render_student_report
from grader.report.summary import render_class_summary

__all__ = ["render_student_report", "render_class_summary", "render_all"]
