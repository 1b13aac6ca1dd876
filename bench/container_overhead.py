"""What the hardened container costs per run: start + teardown of `python -c pass`, Docker vs a subprocess.

Usage: python bench/container_overhead.py [--runs 10] [--image TAG]
Without --image it builds and uses the local test image (the host's Python mounted read-only), so both
sides run the very same interpreter and the difference is the container alone.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from grader.sandbox.container import image  # noqa: E402 (after the sys.path line above)
from grader.sandbox.base import SandboxRequest  # noqa: E402
from grader.sandbox.container.engine import DockerSandbox  # noqa: E402
from grader.sandbox.container.daemon import connect  # noqa: E402

__all__ = ["time_docker", "time_subprocess", "main"]


def time_docker(*, runs: int, image_tag: str | None) -> list[float]:
    """Seconds per run, from create to removal, of `python -c pass` in the hardened container."""
    client = connect()
    if image_tag is None:
        sandbox = DockerSandbox(image=image.build_test_image(client), python=image.test_python(),
                                extra_mounts=image.test_mounts(), client=client)
    else:
        sandbox = DockerSandbox(image=image_tag, client=client)
    timings = []
    with tempfile.TemporaryDirectory() as work:
        for name in ("job", "submission", "out"):
            (Path(work) / name).mkdir()
        request = SandboxRequest(submission_dir=Path(work) / "submission", job_dir=Path(work) / "job",
                                 out_dir=Path(work) / "out", stage="import", timeout_s=60, memory_mb=512)
        for _ in range(runs + 1):  # the first run warms the page cache and is dropped
            started = time.perf_counter()
            run = sandbox.run_argv([sandbox.python, "-c", "pass"], request)
            timings.append(time.perf_counter() - started)
            assert run.exit_code == 0, run.stderr
    return timings[1:]


def time_subprocess(*, runs: int) -> list[float]:
    """Seconds per run of the same `python -c pass` as a plain child process."""
    timings = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        subprocess.run([image.test_python(), "-c", "pass"], check=True)
        timings.append(time.perf_counter() - started)
    return timings[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--image", default=None, help="an image with `python` on PATH (default: test image)")
    args = parser.parse_args()
    docker_s = statistics.median(time_docker(runs=args.runs, image_tag=args.image))
    local_s = statistics.median(time_subprocess(runs=args.runs))
    print(f"docker container (start+teardown): median {docker_s * 1000:.0f} ms over {args.runs} runs")
    print(f"plain subprocess:                  median {local_s * 1000:.0f} ms over {args.runs} runs")
    print(f"ratio: {docker_s / local_s:.1f}x  (overhead {1000 * (docker_s - local_s):.0f} ms per run)")


if __name__ == "__main__":
    main()
