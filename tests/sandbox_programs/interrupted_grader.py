"""A grader process that runs an endless loop in the Docker sandbox; the test sends it SIGINT or SIGTERM.
Like a batch, it owns the signal handling (``aborting_on_signals``) and closes the engine in ``finally``.

argv: repo_root work_dir mode [budget_s]. mode "command": one container for the command (``run_argv``); mode
"submission": the submission's container with its fork server, and a spare started beside it (``run``).
Prints "ready" before the (blocking) run; never expected to finish.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from grader.batch.interrupts import aborting_on_signals  # noqa: E402 (the repo root is put on sys.path just above)
from grader.sandbox.container import image  # noqa: E402
from grader.sandbox.base import SandboxRequest  # noqa: E402
from grader.sandbox.container.engine import DockerSandbox  # noqa: E402
from grader.sandbox.container.daemon import connect  # noqa: E402

work, mode = Path(sys.argv[2]), sys.argv[3]
timeout_s = float(sys.argv[4]) if len(sys.argv) > 4 else 120.0  # the stage's budget
client = connect()
sandbox = DockerSandbox(image=image.build_test_image(client), python=image.test_python(),
                        extra_mounts=image.test_mounts(), client=client)
request = SandboxRequest(submission_dir=work / "submission", job_dir=work / "job", out_dir=work / "out",
                         stage="import", timeout_s=timeout_s, memory_mb=1024)  # torch fits
(request.job_dir / "job.json").write_text(json.dumps({"threads": 1, "device": "cpu", "stages": {}}))
(request.submission_dir / "segmentation.py").write_text("while True:\n    pass\n")
print("ready", flush=True)
try:
    with aborting_on_signals(sandbox.abort):
        if mode == "command":
            sandbox.run_argv([image.test_python(), "-c", "while True: pass"], request)
        else:
            sandbox.run(request)
finally:
    sandbox.close()
print("finished (not expected)", flush=True)
