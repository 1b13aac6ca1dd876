"""Host only. The semester around the grade: staff overrides, the late policy and extensions, the LMS exports
(Canvas gradebook import, a generic roster export) and the released per-student pages.

Autograded results (``result.json``) are facts recomputed at every regrade; what this package reads (the
output folder's ``overrides.csv``, ``extensions.csv``, ``submission_times.csv`` and the rubric's ``late:``
section) are separate layers, applied on top by ``grader.batch.scoring.final_grade`` and never written into a
result, so no regrade loses them.
"""
