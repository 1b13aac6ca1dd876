"""``grader serve``: the course's own submission service, a web front over the same batch path.

Host only. The web process (``grader.serve.app``: FastAPI on uvicorn, Jinja2 pages) takes uploads through the
same intake as ``grader grade``, keeps the queue in SQLite (``grader.serve.store``: ``DIR/serve.sqlite``) and
never grades: a separate worker process (``grader.serve.worker``) takes queued submissions and grades them with
``grader.api.grade`` into ``DIR`` (the same result folders, index.html and grades.csv as ``grader grade``).
The web process imports neither torch nor numpy. Layout of ``DIR``::

    serve.sqlite         tokens (hashed), sessions, the queue, each submission's status and score
    tokens.csv           the students' personal links (``grader serve tokens``): staff mail them
    <student>/           the latest graded submission, as ``grader grade`` writes it; index.html, grades.csv
    .serve/uploads/<id>/ each upload as received (one file: <student>.py | .zip | .ipynb)
    .serve/history/<id>/ each graded submission's result.json and its two reports (before and after release)
"""
