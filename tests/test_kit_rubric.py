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
