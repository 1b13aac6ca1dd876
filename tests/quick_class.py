"""A quick unit-only rubric and a class of copies of the reference and the template: the engine tests
(Ray, resume) grade it many times, so each submission takes only a few seconds."""
from __future__ import annotations

from pathlib import Path

__all__ = ["QUICK_RUBRIC", "QUICK_SCORES", "write_quick_class"]

REPO = Path(__file__).resolve().parent.parent
QUICK_RUBRIC = """\
assignment: "quick unit-only rubric (engine tests)"
num_classes: 21
threads: 1
budgets:
  import: {timeout_s: 60, memory_mb: 4096}
  unit: {timeout_s: 60, memory_mb: 4096}
checks:
  - {id: transpose_conv, kind: transpose_conv, name: "Transpose convolution", points: 10, seed: 1, cases: 4}
  - {id: bilinear_kernel, kind: bilinear_kernel, name: "Bilinear kernel", points: 5}
  - {id: mean_iou, kind: mean_iou, name: "Mean IoU", points: 5, seed: 3, cases: 4}
"""
QUICK_SCORES = {"ref_a": 20.0, "ref_b": 20.0, "tpl_a": 0.0, "tpl_b": 0.0}  # reference full marks, template zero


def write_quick_class(root: Path, *, import_delay_s: float = 0.0) -> Path:
    """One folder per student of QUICK_SCORES; a comment makes each copy's content hash its own.
    ``import_delay_s``: each import of a submission sleeps that long (a batch that lasts long enough to be
    interrupted mid-way; the scores stay the same)."""
    bases = {"ref": REPO / "reference" / "segmentation.py", "tpl": REPO / "student_template" / "segmentation.py"}
    delay = f"\nimport time as _time\n_time.sleep({import_delay_s})\n" if import_delay_s else ""
    for student in QUICK_SCORES:
        folder = root / student
        folder.mkdir(parents=True)
        (folder / "segmentation.py").write_text(bases[student[:3]].read_text() + delay + f"\n# {student}\n")
    return root
