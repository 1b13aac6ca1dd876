"""The kit's rubric holds nothing that only staff decide: hidden checks, the similarity threshold."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from grader.kit.handout import kit_rubric
from grader.rubric import load_rubric, rubric_yaml

REPO = Path(__file__).resolve().parent.parent


def test_the_kit_rubric_keeps_the_default_similarity_threshold_whatever_staff_set() -> None:
    rubric = load_rubric(REPO / "rubric.yaml")
    staff = dataclasses.replace(rubric, similarity=dataclasses.replace(rubric.similarity, threshold=0.37))
    kit = kit_rubric(staff)
    assert kit.similarity == type(rubric.similarity)()
    assert "0.37" not in rubric_yaml(kit)
    assert all(c.visibility == "visible" for c in kit.checks)


def test_a_voc_rubrics_kit_practises_on_the_embedded_sets_own_splits() -> None:
    """A course grading on real VOC with its own split names: the kit's embedded practice set has only train,
    val and public_val, so the kit rubric names those (it would not validate, or find its files, otherwise)."""
    from grader.rubric import parse_rubric

    rubric = load_rubric(REPO / "rubric.yaml")
    voc = dataclasses.replace(rubric, dataset=dataclasses.replace(
        rubric.dataset, kind="voc", voc_root="/data/voc", train_split="trainaug", eval_split="val",
        contrast_split="val_public"))
    kit = parse_rubric(rubric_yaml(kit_rubric(voc)))  # what the kit ships reads back and validates
    assert (kit.dataset.kind, kit.dataset.train_split, kit.dataset.eval_split) == ("embedded", "train", "val")
    assert kit.dataset.public_split == "public_val"
