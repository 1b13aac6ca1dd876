"""The job folder: every input the sandbox may see, written ONCE per batch and shared read-only.

What goes in: job.json (stages, seeds, budgets the runner needs), the unit cases' arrays, the overfit
example (a TRAINING image and its mask), the training split, and the evaluation IMAGES. What stays on the
host, in the returned ``JobPlan``: the evaluation labels and the cases' metadata for feedback.

``build_job`` reads the dataset (torchvision), so it runs in the trusted preparation process
(``grader.prepare``), not in the grader's own process; ``unit_cases`` is numpy-only and runs in both.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grader.cases import UnitCase, make_cases
from grader.dataset import dataset_hash, embedded_voc_root, load_split
from grader.rubric import STAGE_OF_KIND, Rubric

__all__ = ["JobPlan", "build_job", "data_root", "unit_cases"]

JOB_SCHEMA = 1


@dataclass(frozen=True)
class JobPlan:
    job_dir: Path  # readable by the sandbox
    cases: dict[str, list[UnitCase]]  # check id -> its unit cases (host copy, with metadata)
    overfit_target: np.ndarray | None  # (H, W) uint8: the example's mask (it was also given to the student)
    overfit_image: np.ndarray | None  # (3, H, W) uint8
    eval_images: np.ndarray | None  # (M, 3, S, S) uint8, for the report's pictures
    eval_labels: np.ndarray | None  # (M, S, S) uint8 — NEVER written into job_dir
    dataset_hash: str


def data_root(rubric: Rubric, *, cache_dir: Path | None = None) -> Path:
    """The folder that holds VOCdevkit/VOC2012: the real one, or the embedded one (generated once)."""
    ds = rubric.dataset
    if ds.kind == "voc":
        return Path(ds.voc_root).expanduser()
    return embedded_voc_root(cache_dir=cache_dir, n_train=ds.n_train, n_val=ds.n_val, size=ds.size, seed=ds.seed)


def unit_cases(rubric: Rubric) -> dict[str, list[UnitCase]]:
    """check id -> its unit cases, in rubric order (deterministic: seeded by the rubric alone)."""
    return {c.id: make_cases(c) for c in rubric.checks if STAGE_OF_KIND[c.kind] == "unit"}


def build_job(rubric: Rubric, *, job_dir: Path, cache_dir: Path | None = None, device: str = "cpu") -> JobPlan:
    """Write the job folder and return the plan, in THIS process (which then imports torchvision)."""
    if job_dir.exists():
        shutil.rmtree(job_dir)
    (job_dir / "unit").mkdir(parents=True)
    stages: dict[str, dict] = {"import": {}}
    cases = unit_cases(rubric)
    if cases:
        stages["unit"] = {"cases": [_write_case(job_dir, case) for cs in cases.values() for case in cs]}
    plan = dict(overfit_target=None, overfit_image=None, eval_images=None, eval_labels=None, dataset_hash="")
    kinds = {c.kind: c for c in rubric.checks}
    if "model_shapes" in kinds:
        spec = kinds["model_shapes"]
        stages["model"] = {"seed": spec.seed, "num_classes": rubric.num_classes,
                           "input_sizes": [list(s) for s in spec.input_sizes]}
    if "overfit" in kinds or "full_training" in kinds:
        root = data_root(rubric, cache_dir=cache_dir)
        plan["dataset_hash"] = dataset_hash(root)
        if "overfit" in kinds:
            stages["overfit"], image, target = _overfit_stage(rubric, root, job_dir)
            plan.update(overfit_image=image, overfit_target=target)
        if "full_training" in kinds:
            stages["train"], images, labels = _train_stage(rubric, root, job_dir)
            plan.update(eval_images=images, eval_labels=labels)
    config = {"schema": JOB_SCHEMA, "threads": rubric.threads, "device": device, "stages": stages}
    (job_dir / "job.json").write_text(json.dumps(config, indent=1))
    return JobPlan(job_dir=job_dir, cases=cases, **plan)


def _write_case(job_dir: Path, case: UnitCase) -> dict:
    files = []
    for name, arr in case.arrays.items():
        rel = f"unit/{case.id}-{name}.npy"
        np.save(job_dir / rel, arr, allow_pickle=False)
        files.append(rel)
    return {"id": case.id, "function": case.function, "arrays": files, "args": list(case.args),
            "kwargs": case.kwargs}


def _overfit_stage(rubric: Rubric, root: Path, job_dir: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    spec = next(c for c in rubric.checks if c.kind == "overfit")
    images, masks = load_split(root, rubric.dataset.train_split, size=spec.image_size)
    image, target = images[spec.example_index], masks[spec.example_index]
    np.save(job_dir / "overfit_image.npy", image, allow_pickle=False)
    np.save(job_dir / "overfit_target.npy", target, allow_pickle=False)
    stage = {"seed": spec.seed, "num_classes": rubric.num_classes, "epochs": spec.epochs,
             "image": "overfit_image.npy", "target": "overfit_target.npy"}
    return stage, image, target


def _train_stage(rubric: Rubric, root: Path, job_dir: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    spec = next(c for c in rubric.checks if c.kind == "full_training")
    ds = rubric.dataset
    train_images, train_masks = load_split(root, ds.train_split, size=ds.size)
    eval_images, eval_labels = load_split(root, ds.eval_split, size=ds.size)
    train_images, train_masks = train_images[:ds.max_train_images], train_masks[:ds.max_train_images]
    eval_images, eval_labels = eval_images[:ds.max_eval_images], eval_labels[:ds.max_eval_images]
    for name, arr in (("train_images", train_images), ("train_masks", train_masks), ("eval_images", eval_images)):
        np.save(job_dir / f"{name}.npy", arr, allow_pickle=False)
    stage = {"seed": spec.seed, "num_classes": rubric.num_classes, "epochs": spec.epochs,
             "batch_size": spec.batch_size, "train_images": "train_images.npy",
             "train_masks": "train_masks.npy", "eval_images": "eval_images.npy"}
    return stage, eval_images, eval_labels
