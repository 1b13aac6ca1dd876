"""Fixture submissions, named by their expected outcome, built from the reference or the template.

Each ``fixtures/submissions/<name>/fixture.yaml`` says which file it starts from (``base``), the exact
text replacements that plant its bug (each must match once, so a drifting reference breaks the fixture
loudly instead of silently grading a correct copy), code to append, and the expected outcome.
"""
from __future__ import annotations

from pathlib import Path

import yaml

__all__ = ["FIXTURES", "fixture_names", "materialize", "expectation"]

FIXTURES = Path(__file__).parent / "fixtures" / "submissions"
REPO = Path(__file__).resolve().parent.parent
_BASES = {"reference": REPO / "reference" / "segmentation.py",
          "template": REPO / "student_template" / "segmentation.py"}


def fixture_names() -> list[str]:
    return sorted(p.parent.name for p in FIXTURES.glob("*/fixture.yaml"))


def _spec(name: str) -> dict:
    return yaml.safe_load((FIXTURES / name / "fixture.yaml").read_text())


def materialize(name: str, dest: Path) -> Path:
    """Write fixture ``name`` as a submission folder ``dest/name/segmentation.py``."""
    spec = _spec(name)
    text = _BASES[spec["base"]].read_text()
    for old, new in spec.get("replace", []):
        if text.count(old) != 1:
            raise AssertionError(f"fixture {name}: {old!r} occurs {text.count(old)} times in {spec['base']}")
        text = text.replace(old, new)
    text += spec.get("append", "")
    folder = dest / name
    folder.mkdir(parents=True)
    (folder / "segmentation.py").write_text(text)
    return folder


def expectation(name: str) -> dict:
    return _spec(name)["expected"]
