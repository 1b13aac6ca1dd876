"""Running inside Gradescope's autograder container: /autograder/submission in, results.json out.

Gradescope runs ``run_autograder`` (see gradescope/) once per submission. The grader grades the folder
with the local sandbox (Gradescope's container is the outer isolation; ours hides reference/ and the labels
inside it), keeps its usual result folder under /autograder/grader-out, and writes the specification's
results.json. An infrastructure fault writes nothing and exits non-zero, so Gradescope shows an
autograder failure instead of a zero. The upload is only ever that student's submission: it is never read as
a class export (no metadata keys followed, no Canvas names parsed) and no link out of it is followed.
"""
from __future__ import annotations

import sys
from pathlib import Path

from grader.rubric import Rubric
from grader.sandbox.base import Sandbox

__all__ = ["run_gradescope", "GRADESCOPE_ROOT"]

GRADESCOPE_ROOT = Path("/autograder")


def run_gradescope(*, rubric: Rubric, sandbox: Sandbox, cache_dir: Path | None, root: Path = GRADESCOPE_ROOT) -> int:
    from grader.batch.batch import GradeOptions, grade_all
    from grader.report.export import GradescopeInfrastructureError, write_gradescope_results

    submission = root / "submission"
    if not submission.is_dir():
        print(f"grader: {submission} does not exist; --gradescope only runs inside Gradescope's container "
              "(or pass --gradescope-root to a folder laid out like it)", file=sys.stderr)
        return 2
    out = root / "grader-out"
    # single: the upload is this student's submission and nothing else. Read as a class export, a
    # submission_metadata.yml in it would name folders anywhere on this machine (the autograder's own).
    [result] = grade_all([submission], rubric=rubric, sandbox=sandbox,
                         options=GradeOptions(out_dir=out, regrade=True, cache_dir=cache_dir, single=True))
    try:
        path = write_gradescope_results(result, root / "results" / "results.json")
    except GradescopeInfrastructureError as exc:
        print(f"grader: infrastructure fault, no score written: {exc}", file=sys.stderr)
        return 3
    print(f"{result.student}: {result.score:g}/{result.max_score:g} -> {path}")
    return 0
