"""``grader handout --out KIT``: the student kit, a self-check that holds no solution (Otter's student version).

Staff run it from the repository checkout (it needs ``reference/``). KIT holds:

- ``assignment/segmentation.py`` (the template) and ``assignment/segmentation.ipynb`` (the same code as cells,
  with the assignment's text in markdown cells: made here from the template, never edited by hand);
- ``README.md``: what to implement, how to self-check, what is graded later (named, with points, never cases);
- an installable copy of the ``grader`` package (``pyproject.toml``; ``pip install KIT`` gives ``grader check``)
  plus ``grader/kitdata/``: the kit's rubric (the VISIBLE checks only, and a practice run of full training on
  a public split), the reference's output of every public unit case computed now, and ``kit.json``.

What never goes in: ``reference/``, the hidden checks (ids, seeds, cases), the evaluation labels (the kit's
full training runs on a split the student's own grader generates from a public seed: ``kit_rubric``).
The expected outputs are computed in a trusted subprocess (``python -m grader.kit.handout``), as
``grader.job.prepare`` does: the grader's own process never imports torch or the reference.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from grader import __version__
from grader.kit.checkout import reference_dir
from grader.kit.notebook import notebook_of, readme_sections
from grader.rubric import Rubric, load_rubric, rubric_yaml

__all__ = ["KitError", "PRACTICE_SUFFIX", "PRACTICE_SEED_OFFSET", "build_kit", "kit_rubric", "public_rubric",
           "main"]

PRACTICE_SUFFIX = "_practice"  # a practice check's id: the graded full-training check's id + this
PRACTICE_SEED_OFFSET = 1  # the practice dataset's public seed: the graded one's + this (a different picture set)
_REPO = Path(__file__).resolve().parents[2]
_TIMEOUT_S = 900.0


class KitError(RuntimeError):
    """The kit cannot be written (no reference/, a non-empty output folder): the message says what to do."""


def public_rubric(rubric: Rubric) -> Rubric:
    """The checks a student may run before the deadline: the visible ones, each requiring only visible ones."""
    visible = tuple(c for c in rubric.checks if c.visibility == "visible")
    ids = {c.id for c in visible}
    return dataclasses.replace(rubric, checks=tuple(
        dataclasses.replace(c, requires=tuple(r for r in c.requires if r in ids)) for c in visible))


def kit_rubric(rubric: Rubric) -> Rubric:
    """The kit's rubric: the visible checks, plus for each after-due-date full-training check a visible
    PRACTICE copy, on the embedded dataset drawn from a public seed (never the graded split, whose
    evaluation labels come from the staff's installation secret). Hidden checks leave no trace."""
    public = public_rubric(rubric)
    ids = {c.id for c in public.checks}
    practice = tuple(dataclasses.replace(
        c, id=c.id + PRACTICE_SUFFIX, visibility="visible", requires=tuple(r for r in c.requires if r in ids),
        name=f"{c.name} (practice split, NOT the graded one)")
        for c in rubric.checks if c.kind == "full_training" and c.visibility == "after_due_date")
    embedded = type(rubric.dataset)()  # the embedded set's own split names (a VOC rubric may name others)
    dataset = dataclasses.replace(rubric.dataset, kind="embedded", voc_root=None,
                                  seed=rubric.dataset.seed + PRACTICE_SEED_OFFSET, train_split=embedded.train_split,
                                  eval_split=embedded.eval_split, contrast_split=None)
    # the similarity threshold is the staff's (how alike is "too alike"): the kit keeps the default
    return dataclasses.replace(public, checks=public.checks + practice, dataset=dataset,
                               similarity=type(rubric.similarity)())


def build_kit(out: Path, *, rubric: Rubric, repo: Path = _REPO) -> Path:
    """Write the kit into ``out`` (missing or empty). Returns ``out``."""
    if reference_dir() is None:
        raise KitError("grader handout is a staff command: run it from the repository checkout, which holds "
                       "reference/ (it computes the public cases' expected outputs)")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KitError(f"{out} exists and is not an empty folder: choose a new --out")
    kit = kit_rubric(rubric)
    text = rubric_yaml(kit)
    with tempfile.TemporaryDirectory(prefix="seg-handout-") as tmp:
        package = Path(tmp) / "kit"
        shutil.copytree(repo / "grader", package / "grader",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "kitdata"))
        data = package / "grader" / "kitdata"
        data.mkdir()
        (data / "rubric.yaml").write_text(text, encoding="utf-8")
        case_ids = _compute_expected(data / "rubric.yaml", data / "expected")
        (data / "kit.json").write_text(json.dumps({"schema": 1, "grader_version": __version__,
                                                   "case_ids": case_ids}, indent=1))
        (package / "pyproject.toml").write_text(_pyproject(_dependencies(repo)), encoding="utf-8")
        template = (repo / "student_template" / "segmentation.py").read_text(encoding="utf-8")
        guide = (repo / "student_template" / "README.md").read_text(encoding="utf-8")
        (package / "assignment").mkdir()
        (package / "assignment" / "segmentation.py").write_text(template, encoding="utf-8")
        notebook = notebook_of(template, guide, title=rubric.assignment)
        (package / "assignment" / "segmentation.ipynb").write_text(json.dumps(notebook, indent=1) + "\n")
        (package / "README.md").write_text(student_readme(rubric, kit, guide), encoding="utf-8")
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(package, out, dirs_exist_ok=True)
    return out


def _compute_expected(rubric_file: Path, folder: Path) -> list[str]:
    """The reference's output of every unit case of the kit's rubric, computed in a trusted subprocess."""
    argv = [sys.executable, "-m", "grader.kit.handout", "--expected", str(folder), "--rubric", str(rubric_file)]
    try:
        done = subprocess.run(argv, cwd=_REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KitError(f"computing the expected outputs failed: {exc}") from exc
    if done.returncode != 0:
        raise KitError(f"computing the expected outputs failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def _dependencies(repo: Path) -> list[str]:
    """The project's own requirements, without its extras (dev, ray): from pyproject.toml (Python 3.11+),
    else from the installed project's metadata."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            return [r for r in metadata.requires("seg-autograder") or [] if "extra ==" not in r]
        except metadata.PackageNotFoundError as exc:
            raise KitError("install the project first (pip install -e .): the kit copies its dependencies") from exc
    return list(tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"])


def _pyproject(wanted: list[str]) -> str:
    """The kit's own pyproject: the ``grader`` package (and its kit data), the project's dependencies."""
    deps = ",\n".join(f"    {json.dumps(d)}" for d in wanted)
    return f"""[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "seg-autograder-kit"
version = "{__version__}"
description = "Self-check kit of the semantic-segmentation assignment: the public checks, no solution."
requires-python = ">=3.10"
dependencies = [
{deps},
]

[project.scripts]
grader = "grader.cli:main"

[tool.setuptools.packages.find]
include = ["grader*"]

[tool.setuptools.package-data]
grader = ["report/templates/*.html.j2", "report/templates/*.css", "kitdata/*.json", "kitdata/*.yaml",
          "kitdata/expected/*.npy"]
"""


def _points(points: float) -> str:
    return f"{points:g} point{'s' if points != 1 else ''}"


def student_readme(rubric: Rubric, kit: Rubric, guide: str) -> str:
    """The kit's README: the assignment, the two commands, what the self-check runs, what is graded later."""
    what, _ = readme_sections(guide)
    checks = "\n".join(f"| {c.name} | {_points(c.points)} |" for c in kit.checks)
    later = [c for c in rubric.checks if c.visibility != "visible"]
    when = {"hidden": "hidden: after release you see its name and score only",
            "after_due_date": "after the due date: shown in full once released"}
    later_rows = "\n".join(f"| {c.name} | {_points(c.points)} | {when[c.visibility]} |" for c in later)
    return f"""{what.rstrip()}

## For students: check your work

```
pip install ./KIT                  # this folder (once; a virtual environment is a good idea)
cd KIT/assignment && grader check .     # or: grader check segmentation.ipynb
```

`grader check` runs the public checks on your `segmentation.py` (or your notebook) in a sandbox, with the same
code that grades the class, prints each check with a message and the path of an HTML report. A notebook is
run cell by cell: a cell that raises (a plot of a file you do not have here) is skipped and named in the
report; the functions your other cells define are checked. The unit checks compare your functions with the
reference's outputs on the public cases, which this kit ships (never the reference itself).

| public check | points |
|---|---|
{checks}

The practice full-training check trains your `SegNet` with your `train` on a small set of generated
pictures drawn from a public seed, and reports the validation mIoU on it: it is **not** the graded split,
and its score here is only a guide.

{_pretrained_section(rubric)}
## Graded later

These checks run only when the course staff grade the submissions; their cases are not in this kit, and
passing a public check does not mean passing its hidden counterpart.

| check | points | when you see it |
|---|---|---|
{later_rows if later else "| (none) | | |"}
"""


def _pretrained_section(rubric: Rubric) -> str:
    """Which pretrained weights grading provides (rubric ``pretrained:``): grading has no network."""
    if not rubric.pretrained:
        return ("## Pretrained weights\n\nGrading has no network and this course provides no pretrained weights: "
                "build your encoder with `weights=None` (code that downloads weights fails when graded).\n")
    names = "\n".join(f"- `{p.label}`" for p in rubric.pretrained)
    return f"""## Pretrained weights

Grading has no network. These pretrained weights are provided, offline, to code that loads them the usual way
(e.g. `torchvision.models.resnet18(weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1)`):

{names}

At home torchvision downloads them itself the first time (into `~/.cache/torch/hub/checkpoints`), and
`grader check` then finds them there. Any other weight fails when graded, with a message naming these.
"""


def main(argv: list[str] | None = None) -> int:
    """The trusted child: ``--expected DIR --rubric R`` writes the reference's output of every unit case of R
    into DIR (``grader.job.expected``'s .npy files) and prints their ids as JSON."""
    parser = argparse.ArgumentParser(prog="python -m grader.kit.handout")
    parser.add_argument("--expected", type=Path, required=True)
    parser.add_argument("--rubric", type=Path, required=True)
    args = parser.parse_args(argv)
    import torch

    from grader.job.expected import expected_outputs, save_expected
    from grader.job.folder import unit_cases

    torch.set_num_threads(1)  # as grader.job.prepare: the same float sums as staff grading
    cases = unit_cases(load_rubric(args.rubric))
    save_expected(args.expected, expected_outputs(cases))
    print(json.dumps([case.id for case_list in cases.values() for case in case_list]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
