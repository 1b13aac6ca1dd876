"""Plain-text rendering of one result for ``grader check`` (a student's terminal)."""
from __future__ import annotations

from grader.core.results import SubmissionResult

__all__ = ["print_result"]

_MARK = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "timeout": "TIMEOUT", "skipped": "SKIP"}


def print_result(result: SubmissionResult) -> None:
    print(f"\n{result.student}: {result.score:g} / {result.max_score:g} points on the public checks "
          f"({result.status})")
    if result.message:
        print(f"  {result.message}")
    for check in result.checks:
        print(f"  [{_MARK[check.status]:>7}] {check.name:<40} {check.score:6.2f} / {check.max_score:g}")
        if check.status != "passed":
            print(f"            {check.message}")
            smallest = check.details.get("smallest_failure")
            if smallest:
                print(f"            smallest failing case: {smallest}")
            if check.details.get("hint"):
                print(f"            hint: {check.details['hint']}")
