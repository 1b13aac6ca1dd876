"""Host only. Grading a class: intake, executors (pool, Ray), one submission's pipeline, scoring."""
