"""A grader process that runs an endless loop in the Docker sandbox; the test sends it SIGINT or SIGTERM.

argv: repo_root work_dir. Prints "ready" before the (blocking) run; never expected to finish.
"""
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from grader.sandbox import image  # noqa: E402 (the repo root is put on sys.path just above)
from grader.sandbox.base import SandboxRequest  # noqa: E402
from grader.sandbox.docker import DockerSandbox, connect  # noqa: E402

work = Path(sys.argv[2])
client = connect()
sandbox = DockerSandbox(image=image.build_test_image(client), python=image.test_python(),
                        extra_mounts=image.test_mounts(), client=client)
request = SandboxRequest(submission_dir=work / "submission", job_dir=work / "job", out_dir=work / "out",
                         stage="import", timeout_s=120, memory_mb=256)
print("ready", flush=True)
sandbox.run_argv([image.test_python(), "-c", "while True: pass"], request)
print("finished (not expected)", flush=True)
