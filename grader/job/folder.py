"""The job folder: every input the sandbox may see, written ONCE per batch and shared read-only.

What goes in: job.json (each stage's config: the visible unit cases (the withheld ones' in ``unit/withheld.json``), and per net check its seed, epochs and array
files; a check whose kind has a ``retry`` also gets stage ``<id>.retry``'s config), the unit cases' arrays, and what each check kind's ``inputs`` writes (the overfit example — a
TRAINING image and its mask —, the training split, the evaluation IMAGES). What stays on the host, in the
returned ``JobPlan``: per check id the arrays only the host may see (evaluation labels ...), and the unit
cases with their metadata for feedback.

``build_job`` reads the dataset (torchvision), so it runs in the trusted preparation process
(``grader.job.prepare``), not in the grader's own process; ``unit_cases`` is numpy-only and runs in both.

Hidden cases no one can compute at home: a check not visible before release (``hidden``, ``after_due_date``)
draws its cases from its rubric seed COMBINED with the installation key (``grader.data.evalsecret``, the one
the evaluation split is drawn from): ``withheld_seed``. The rubric's seed alone, which a kit or a report may
show, no longer makes them; the combined seed is written nowhere (not in the job, a result or a page).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from grader.checks import KINDS, stage_of
from grader.checks.base import UNIT_STAGES, WITHHELD_UNIT_STAGE
from grader.checks.verdict import JobPlan
from grader.data.dataset import dataset_hash, embedded_voc_root, load_split
from grader.data.evalsecret import installation_secret
from grader.data.shapes import default_cache_dir
from grader.rubric import Rubric

__all__ = ["JOB_SCHEMA", "JobBuilder", "build_job", "case_secret", "data_root", "unit_cases", "withheld_seed"]

JOB_SCHEMA = 3  # 2: stages keyed by check id; unit checks grouped under stages.unit.checks
# 3: the withheld unit checks grouped apart: stages["unit.withheld"] = {"sealed": WITHHELD_CONFIG}, their config in
# that file, under J/unit (sealed like their arrays: grader.runner.seal_cases), never in job.json
WITHHELD_CONFIG = "unit/withheld.json"


def data_root(rubric: Rubric, *, cache_dir: Path | None = None) -> Path:
    """The folder that holds VOCdevkit/VOC2012: the real one, or the embedded one (generated once)."""
    ds = rubric.dataset
    if ds.kind == "voc":
        return Path(ds.voc_root).expanduser()
    return embedded_voc_root(cache_dir=cache_dir, n_train=ds.n_train, n_val=ds.n_val, size=ds.size, seed=ds.seed)


def _withheld(check: Any) -> bool:
    return check.visibility != "visible" and KINDS[check.kind].cases is not None and hasattr(check, "seed")


def withheld_seed(secret: bytes, check: Any) -> int:
    """The seed a withheld check's cases are drawn from: one-way in the key, the check id and the rubric seed."""
    digest = hashlib.sha256(b"seg-autograder withheld cases\0" + secret + f"\0{check.id}\0{check.seed}".encode())
    return int.from_bytes(digest.digest()[:8], "little")


def case_secret(rubric: Rubric, cache_dir: Path | None) -> bytes | None:
    """The installation key (``cache_dir``, else the default cache) when a withheld check draws cases, else None."""
    if not any(_withheld(c) for c in rubric.checks):
        return None
    return installation_secret(Path(cache_dir) if cache_dir is not None else default_cache_dir())


def unit_cases(rubric: Rubric, *, secret: bytes | None = None) -> dict[str, list]:
    """check id -> its unit cases, in rubric order: a visible check's seeded by the rubric alone, a withheld
    check's by its seed combined with ``secret`` (the installation key: ``case_secret``), required for them."""
    out = {}
    for check in rubric.checks:
        if KINDS[check.kind].cases is None:
            continue
        if _withheld(check):
            if secret is None:
                raise ValueError(f"check {check.id!r} is {check.visibility}: its cases are drawn from the "
                                 "installation key (grader.job.folder.case_secret), and none was given")
            check = dataclasses.replace(check, seed=withheld_seed(secret, check))
        out[check.id] = KINDS[check.kind].cases(check)
    return out


class JobBuilder:
    """What a kind's ``inputs`` writes through: the job folder, and the dataset (read on first use)."""

    def __init__(self, rubric: Rubric, job_dir: Path, cache_dir: Path | None) -> None:
        self.rubric, self.job_dir, self.cache_dir = rubric, job_dir, cache_dir
        self._root: Path | None = None
        self.dataset_hash = ""

    def save(self, rel: str, array: Any) -> str:
        """Write ``array`` as ``job_dir/rel`` (.npy, no pickle); returns ``rel`` for the stage config."""
        path = self.job_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array, allow_pickle=False)
        return rel

    def split(self, name: str, *, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(images (N, 3, S, S) uint8, masks (N, S, S) uint8) of a dataset split, resized to ``size``."""
        if self._root is None:
            self._root = data_root(self.rubric, cache_dir=self.cache_dir)
            self.dataset_hash = dataset_hash(self._root)
        return load_split(self._root, name, size=size)


def build_job(rubric: Rubric, *, job_dir: Path, cache_dir: Path | None = None, device: str = "cpu") -> JobPlan:
    """Write the job folder and return the plan, in THIS process (which then imports torchvision)."""
    if job_dir.exists():
        shutil.rmtree(job_dir)
    job_dir.mkdir(parents=True)
    builder = JobBuilder(rubric, job_dir, cache_dir)
    stages: dict[str, dict] = {"import": {}}
    host: dict[str, dict[str, np.ndarray]] = {}
    secret = case_secret(rubric, cache_dir)
    for check in rubric.checks:
        if _withheld(check):  # its cases (written by the kind's inputs) from the combined seed, as unit_cases
            check = dataclasses.replace(check, seed=withheld_seed(secret, check))
        config, host[check.id] = KINDS[check.kind].inputs(check, builder)
        config = {"id": check.id, "kind": check.kind, **config}
        stage = stage_of(check)
        if stage in UNIT_STAGES:  # the visible unit checks' stage, or the withheld ones'
            stages.setdefault(stage, {"checks": []})["checks"].append(config)
        else:
            stages[stage] = config
            retry = KINDS[check.kind].retry
            again = retry.config(check, config) if retry is not None else None
            if again is not None:  # its second chance: run only when the first verdict asks (grader.batch.pipeline)
                stages[KINDS[check.kind].retry_stage(check)] = again
    if WITHHELD_UNIT_STAGE in stages:  # its config (case ids, scalar arguments) sealed with its arrays, not in job.json
        (job_dir / WITHHELD_CONFIG).write_text(json.dumps(stages[WITHHELD_UNIT_STAGE], indent=1))
        stages[WITHHELD_UNIT_STAGE] = {"sealed": WITHHELD_CONFIG}
    config = {"schema": JOB_SCHEMA, "threads": rubric.threads, "device": device, "stages": stages}
    (job_dir / "job.json").write_text(json.dumps(config, indent=1))
    return JobPlan(job_dir=job_dir, cases=unit_cases(rubric, secret=secret), host={k: v for k, v in host.items() if v},
                   dataset_hash=builder.dataset_hash)
