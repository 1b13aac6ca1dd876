"""A batch's shared job, prepared in a trusted HOST subprocess, so the grader's own process never imports torch.

``python -m grader.job.prepare --rubric R --job-dir J --host-dir H --cache-dir C --device D`` (spawned by
``prepare_job``) is trusted code: it imports torch, torchvision and ``reference/`` (in a student kit, which
has none, it loads the public cases' outputs shipped with the kit: ``grader.kit.checkout``), never student code. It
builds the job folder J for the sandbox (``grader.job.folder.build_job``) and writes into H what only the host
may see: the expected output of every unit case (``expected/<case id>.npy``, numbers as 0-d arrays), the
evaluation labels and images, the overfit example, and ``host.json`` (dataset hash, case ids). The parent
reads H back with ``np.load(allow_pickle=False)`` into the same ``JobPlan`` and ``Expected`` it used to
compute in process: importing torch alone cost the grader ~520 MB of RSS and seconds per command.

H lies beside J in the batch's scratch folder, owner-only, and is one of the sandbox's hidden paths.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import grader
from grader.checks.verdict import JobPlan
from grader.job.expected import Expected, load_expected, save_expected
from grader.job.cache import cache_key, reuse_or_build
from grader.data.evalsecret import secret_fingerprint
from grader.job.folder import case_secret, unit_cases
from grader.rubric import Rubric, parse_rubric, rubric_yaml
from grader.sandbox.base import InfrastructureError

__all__ = ["HOST_SCHEMA", "PREPARE_TIMEOUT_S", "Prepared", "prepare_job", "write_host_dir", "main"]

HOST_SCHEMA = 2  # 2: host-only arrays per check id (checks/<id>/<name>.npy)
PREPARE_TIMEOUT_S = 1800.0  # generating the embedded set or reading all of VOC takes minutes, not hours
_STDERR_TAIL = 2000  # characters of the child's stderr quoted in the error


@dataclass(frozen=True)
class Prepared:
    plan: JobPlan
    expected: dict[str, Expected]  # case id -> the reference's output
    host_dir: Path  # host-only: hide it from the sandbox


# ---------------------------------------------------------------------------- the grader's process
def prepare_job(rubric: Rubric, *, job_dir: Path, host_dir: Path, cache_dir: Path | None = None,
                device: str = "cpu", timeout_s: float = PREPARE_TIMEOUT_S) -> Prepared:
    """Build ``job_dir`` and ``host_dir`` in a trusted subprocess; load the host data back (no torch here).
    With a ``cache_dir``, a job of the embedded dataset is built once and copied from there afterwards
    (``grader.job.cache``: keyed by the rubric, the device, the grader's and the reference's source, versions)."""
    job_dir, host_dir = Path(job_dir).resolve(), Path(host_dir).resolve()
    cache = Path(cache_dir).resolve() if cache_dir is not None else None
    text = _handover_text(rubric)

    def build(job: Path, host: Path) -> None:
        rubric_file = _fresh_host_dir(host) / "rubric.yaml"
        rubric_file.write_text(text, encoding="utf-8")
        argv = [sys.executable, "-m", "grader.job.prepare", "--rubric", str(rubric_file), "--job-dir", str(job),
                "--host-dir", str(host), "--device", device]
        if cache is not None:
            argv += ["--cache-dir", str(cache)]
        _run_child(argv, timeout_s)

    try:
        secret = case_secret(rubric, cache)  # withheld checks' cases are drawn from the installation key
    except OSError as exc:
        raise InfrastructureError(f"cannot read the installation key for the hidden cases: {exc}") from exc
    key = cache_key(rubric, text, device, cache_dir=cache) if cache is not None else None
    if key is not None and secret is not None:  # a new key draws new hidden cases: a new entry
        key = hashlib.sha256(f"{key}\0{secret_fingerprint(secret)}".encode()).hexdigest()[:32]
    if key is None:
        build(job_dir, host_dir)
    else:
        reuse_or_build(key, cache, build, job_dir=job_dir, host_dir=host_dir)
    return _load_host_dir(rubric, job_dir, host_dir, secret)


def _handover_text(rubric: Rubric) -> str:
    text = rubric_yaml(rubric)
    if dataclasses.replace(parse_rubric(text), source_hash=rubric.source_hash) != rubric:
        raise InfrastructureError("the rubric cannot be handed to the preparation process: it does not survive "
                                  "a YAML round trip (was it built in code with settings YAML cannot express?)")
    return text


def _fresh_host_dir(host_dir: Path) -> Path:
    """An empty owner-only folder: where the sandbox runs as nobody, file modes hide it too."""
    shutil.rmtree(host_dir, ignore_errors=True)
    host_dir.mkdir(parents=True)
    os.chmod(host_dir, 0o700)
    return host_dir


def _package_root() -> Path:
    """The folder holding the ``grader`` package: the child's working directory, so ``-m`` puts it (not the
    TA's current folder, which may hold students' files) first on the child's sys.path."""
    return Path(grader.__file__).resolve().parent.parent


def _run_child(argv: list[str], timeout_s: float) -> None:
    try:
        done = subprocess.run(argv, check=False, cwd=_package_root(), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise InfrastructureError(f"preparing the job (expected outputs, dataset) took longer than {timeout_s:g} s"
                                  f"{_tail(exc.stderr)}") from exc
    except OSError as exc:
        raise InfrastructureError(f"cannot start the job preparation process {argv[0]}: {exc}") from exc
    if done.returncode != 0:
        raise InfrastructureError(f"preparing the job (expected outputs, dataset) failed with exit code "
                                  f"{done.returncode}{_tail(done.stderr)}")


def _tail(stderr: str | bytes | None) -> str:
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else (stderr or "")
    text = text.strip()
    return f":\n{text[-_STDERR_TAIL:]}" if text else " (no error output)"


def _load_host_dir(rubric: Rubric, job_dir: Path, host_dir: Path, secret: bytes | None) -> Prepared:
    cases = unit_cases(rubric, secret=secret)  # numpy-only, seeded by the rubric (and key): rebuilt, checked
    ids = [case.id for cs in cases.values() for case in cs]
    try:
        meta = json.loads((host_dir / "host.json").read_text())
        if meta.get("schema") != HOST_SCHEMA or meta.get("case_ids") != ids:
            raise ValueError("the preparation process made other unit cases than the grader (schema "
                             f"{meta.get('schema')}, {len(meta.get('case_ids') or [])} cases vs {len(ids)})")
        expected = load_expected(host_dir / "expected", ids)
        host = {check_id: {name: _load_array(host_dir, check_id, name) for name in names}
                for check_id, names in meta["host_arrays"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InfrastructureError(f"the prepared host data in {host_dir} is unreadable: {exc}") from exc
    plan = JobPlan(job_dir=job_dir, cases=cases, host=host, dataset_hash=str(meta.get("dataset_hash", "")))
    return Prepared(plan=plan, expected=expected, host_dir=host_dir)


def _host_array_path(host_dir: Path, check_id: str, name: str) -> Path:
    for part in (check_id, name):  # both come from our own rubric and kinds; still never a path outside H
        if not part or part.startswith(".") or any(c in part for c in "/\\\0"):
            raise ValueError(f"{part!r} cannot name a host array file")
    return host_dir / "checks" / check_id / f"{name}.npy"


def _load_array(host_dir: Path, check_id: str, name: str) -> np.ndarray:
    return np.load(_host_array_path(host_dir, check_id, name), allow_pickle=False)


# ---------------------------------------------------------------------- the preparation process
def write_host_dir(plan: JobPlan, expected: dict[str, Expected], host_dir: Path) -> None:
    """What only the host may see, as plain .npy files and one JSON file (``host.json`` last: complete)."""
    save_expected(host_dir / "expected", expected)
    for check_id, arrays in plan.host.items():
        for name, value in arrays.items():
            path = _host_array_path(host_dir, check_id, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, value, allow_pickle=False)
    meta = {"schema": HOST_SCHEMA, "dataset_hash": plan.dataset_hash,
            "case_ids": [case.id for cs in plan.cases.values() for case in cs],
            "host_arrays": {check_id: sorted(arrays) for check_id, arrays in plan.host.items()}}
    (host_dir / "host.json").write_text(json.dumps(meta, indent=1))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m grader.job.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--rubric", type=Path, required=True, help="the rubric's YAML file")
    parser.add_argument("--job-dir", type=Path, required=True, help="the job folder to build (sandbox-visible)")
    parser.add_argument("--host-dir", type=Path, required=True, help="where host-only data goes (hidden)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="dataset cache (default: the user's)")
    parser.add_argument("--device", default="cpu", help="the device the runner should use (job.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    import torch

    from grader.data.dataset import VOCDatasetMissing
    from grader.job.expected import expected_outputs, shipped_expected
    from grader.kit.checkout import reference_dir, shipped_expected_dir
    from grader.job.folder import build_job
    from grader.rubric import RubricError, load_rubric

    args = _parser().parse_args(argv)
    torch.set_num_threads(1)  # fixed, so the reference's float sums come out the same on every machine
    try:
        rubric = load_rubric(args.rubric)
        plan = build_job(rubric, job_dir=args.job_dir, cache_dir=args.cache_dir, device=args.device)
    except (RubricError, VOCDatasetMissing, ValueError) as exc:  # configuration errors: the message says it all
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    try:  # the reference computes them; a student kit, which has none, ships the public cases' outputs
        expected = expected_outputs(plan.cases) if reference_dir() is not None else \
            shipped_expected(plan.cases, shipped_expected_dir())
    except ValueError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    write_host_dir(plan, expected, args.host_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
