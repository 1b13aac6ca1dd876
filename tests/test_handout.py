"""The student kit (``grader handout``): installable on its own, holding no solution, and grading as staff do.

The kit is built once per module from the test rubric. "Installed on its own", as a student does it: ``pip
install KIT`` into a FRESH venv (``tests/venvs.py``: its third-party packages reached through a .pth line, so the
repository's editable install, which maps ``grader`` to this checkout, is never processed): the kit's
``grader`` lies in that venv's site-packages and ``reference`` cannot be imported (asserted). Checked as root
and as an ordinary user.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from grader.checks import KINDS
from grader.kit.handout import KitError, build_kit, kit_rubric, public_rubric
from grader.kit.notebook import code_chunks
from grader.rubric import Rubric, load_rubric, rubric_yaml
from venvs import base_python, become_user, fresh_venv, open_for_user, pip_install, user_env, user_home, user_view

REPO = Path(__file__).resolve().parent.parent
TEXT = (".py", ".ipynb", ".json", ".md", ".yaml", ".toml", ".txt", ".cfg")
# Lines any implementation writes, which the grader's own host code also holds (its numpy metric policy, the
# overfit check moving the example to the device): not the reference's, so not a leak.
GENERIC_LINES = {"keep = target != ignore_index", "image, target = image.to(device), target.to(device)"}
QUICK_KINDS = {"transpose_conv", "bilinear_kernel", "confusion_matrix", "mean_iou", "pixel_accuracy", "model_shapes"}


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory, test_rubric: Rubric) -> Path:
    return build_kit(tmp_path_factory.mktemp("handout") / "KIT", rubric=test_rubric)


@pytest.fixture(scope="module")
def installed(kit: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install KIT`` into a fresh venv; returns the venv's site-packages (the kit's grader is there)."""
    python = base_python(for_others=False)
    assert python is not None
    venv = fresh_venv(tmp_path_factory.mktemp("kit-install") / "venv", python)
    pip_install(venv, kit)
    return _site_packages(venv.parent.parent)


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _kit_python(installed: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(installed.parents[2] / "bin" / "python"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def _kit_files(kit: Path) -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8", errors="replace") for p in kit.rglob("*")
            if p.is_file() and p.suffix in TEXT}


def _reference_functions() -> list[ast.AST]:
    tree = ast.parse((REPO / "reference" / "segmentation.py").read_text())
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]


def _bodies(node: ast.AST) -> str:
    return ast.dump(ast.Module(body=[s for s in node.body if not _is_docstring(s)], type_ignores=[]))


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def test_kit_holds_no_line_of_the_reference(kit: Path) -> None:
    reference = (REPO / "reference" / "segmentation.py").read_text()
    template = (REPO / "student_template" / "segmentation.py").read_text()
    distinctive = {ln.strip() for ln in reference.splitlines()  # the reference's own lines, not the API's
                   if len(ln.strip()) >= 25 and ln.strip() not in template
                   and not ln.strip().startswith(("#", '"""', "import ", "from "))} - GENERIC_LINES
    assert len(distinctive) > 20  # the check can fail: the reference has many lines of its own
    ref_bodies = {_bodies(n) for n in _reference_functions() if len(n.body) > 1}
    files = _kit_files(kit)
    assert any(p.name == "segmentation.ipynb" for p in files) and any(p.suffix == ".json" for p in files)
    for path, text in files.items():
        leaked = [ln for ln in distinctive if ln in text]
        assert not leaked, f"{path} holds reference lines: {leaked[:3]}"
        sources = [text] if path.suffix == ".py" else [
            "".join(c["source"]) for c in json.loads(text)["cells"] if c["cell_type"] == "code"] \
            if path.suffix == ".ipynb" else []
        for source in sources:
            nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
            assert not ref_bodies & {_bodies(n) for n in nodes}, f"{path} holds a reference function's body"
    assert not list(kit.rglob("reference")) and not list(kit.rglob("*.npz")) and not list(kit.rglob("*.png"))


def test_kit_names_hidden_checks_but_never_their_ids_seeds_or_cases(kit: Path, test_rubric: Rubric) -> None:
    hidden = [c for c in test_rubric.checks if c.visibility == "hidden"]
    assert hidden, "the test rubric must have a hidden check for this test to mean anything"
    blob = "\n".join(_kit_files(kit).values())
    for check in hidden:
        assert check.id not in blob
        assert f"seed: {check.seed}" not in blob and f'"{check.id}-' not in blob
        assert not list(kit.rglob(f"{check.id}-*")), "no expected output of a hidden case"
    readme = (kit / "README.md").read_text()
    for check in test_rubric.checks:
        if check.visibility != "visible":
            assert f"| {check.name} | {check.points:g} points |" in readme
    kit_checks = yaml.safe_load((kit / "grader" / "kitdata" / "rubric.yaml").read_text())["checks"]
    assert {c["visibility"] for c in kit_checks if "visibility" in c} <= {"visible"}


def test_real_rubric_kit_drops_every_hidden_check() -> None:
    rubric = load_rubric(REPO / "rubric.yaml")
    text = rubric_yaml(kit_rubric(rubric))
    for check in rubric.checks:
        if check.visibility == "hidden":
            assert check.id not in text and f"seed: {check.seed}\n" not in text
    practice = [c for c in kit_rubric(rubric).checks if c.kind == "full_training"]
    assert practice and all("NOT the graded" in c.name and c.visibility == "visible" for c in practice)
    assert kit_rubric(rubric).dataset.seed != rubric.dataset.seed  # a public split, not the graded one


def test_kit_notebook_is_the_template_with_the_assignment_text(kit: Path) -> None:
    template = (REPO / "student_template" / "segmentation.py").read_text()
    nb = json.loads((kit / "assignment" / "segmentation.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert ast.dump(ast.parse(code)) == ast.dump(ast.parse(template))
    markdown = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "## `transpose_conv2d`" in markdown and "scatter-add" in markdown and "grader check" in markdown
    assert (kit / "assignment" / "segmentation.py").read_text() == template
    assert [name for name, _ in code_chunks(template)][1:] == [
        n.name for n in ast.parse(template).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]


def test_kit_readme_tells_students_what_to_run(kit: Path) -> None:
    readme = (kit / "README.md").read_text()
    assert "## For students" in readme and "pip install" in readme and "grader check ." in readme
    assert "NOT the graded one" in readme and "## Graded later" in readme


def test_handout_refuses_a_folder_in_use(tmp_path: Path, test_rubric: Rubric) -> None:
    (tmp_path / "KIT").mkdir()
    (tmp_path / "KIT" / "notes.txt").write_text("mine")
    with pytest.raises(KitError, match="not an empty folder"):
        build_kit(tmp_path / "KIT", rubric=test_rubric)


def _quick(rubric_file: Path, out: Path) -> Path:
    """The rubric at ``rubric_file`` with only its quick checks (unit kinds and model shapes)."""
    data = yaml.safe_load(rubric_file.read_text())
    data["checks"] = [c for c in data["checks"] if c["kind"] in QUICK_KINDS]
    for c in data["checks"]:
        c.pop("requires", None)
    out.write_text(yaml.safe_dump(data))
    return out


def test_installed_kit_checks_like_staff_grading(installed: Path, kit: Path, tmp_path: Path, cache_dir: Path,
                                                 test_rubric: Rubric) -> None:
    probe = _kit_python(installed, "-c", "import importlib.util as u, grader; print(grader.__file__); "
                        "print(u.find_spec('reference'))", cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == [str(installed / "grader" / "__init__.py"), "None"]
    rubric = _quick(installed / "grader" / "kitdata" / "rubric.yaml", tmp_path / "quick.yaml")
    me = tmp_path / "me"
    me.mkdir()
    shutil.copy(REPO / "reference" / "segmentation.py", me)
    done = _kit_python(installed, "-m", "grader", "check", ".", "-q", "--rubric", str(rubric), "--cache-dir",
                       str(cache_dir), "--out", str(tmp_path / "ref-out"), cwd=me)
    assert done.returncode == 0, done.stderr
    total = sum(c.points for c in load_rubric(rubric).checks)
    assert f"{total:g} / {total:g} points on the public checks" in done.stdout
    page = Path(done.stdout.split("Full report: ", 1)[1].strip())
    assert page.is_file() and page.is_relative_to(tmp_path / "ref-out") and page.name == "report.html"
    shutil.copy(kit / "assignment" / "segmentation.py", me)
    done = _kit_python(installed, "-m", "grader", "check", ".", "-q", "--rubric", str(rubric), "--cache-dir",
                       str(cache_dir), "--out", str(tmp_path / "tpl-out"), cwd=me)
    assert done.returncode == 0 and f"0 / {total:g} points" in done.stdout, done.stderr
    assert done.stdout.count("NotImplementedError: TODO") >= len(load_rubric(rubric).checks)
    # the example class: the kit's grader and staff's give the same score to every check the kit has
    kit_out = tmp_path / "kit-grades"
    done = _kit_python(installed, "-m", "grader", "grade", str(REPO / "examples" / "submissions"), "-q", "-j", "2",
                       "--rubric", str(rubric), "--cache-dir", str(cache_dir), "--out", str(kit_out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    from grader import api

    staff = api.grade([REPO / "examples" / "submissions"], rubric=public_rubric(test_rubric), out_dir=tmp_path / "st",
                      cache_dir=cache_dir, jobs=2, render=False)
    assert len(staff) == len(list((REPO / "examples" / "submissions").iterdir()))  # one per example
    for result in staff:
        ours = json.loads((kit_out / result.student / "result.json").read_text())
        kit_scores = {c["id"]: c["score"] for c in ours["checks"]}
        assert kit_scores == {c.id: c.score for c in result.checks if c.id in kit_scores}, result.student
        assert len(kit_scores) == sum(1 for c in load_rubric(rubric).checks)


@pytest.mark.skipif(os.getuid() != 0, reason="switches to an ordinary user: needs root")
def test_a_student_who_is_an_ordinary_user_gets_full_marks_for_the_reference_and_zero_for_the_template(
        kit: Path, tmp_path: Path) -> None:
    """The kit as a student installs it on a laptop: an ordinary user, a fresh venv, ``pip install KIT``, then
    ``grader check`` (confined in a user namespace) on the reference and on the template."""
    python = base_python(for_others=True)
    if python is None:
        pytest.skip(f"no Python {sys.version_info[:2]} an ordinary user may run")
    home = user_home(tmp_path / "student")
    pip_install(fresh_venv(home / "venv", python), kit)
    rubric = _quick(_site_packages(home / "venv") / "grader" / "kitdata" / "rubric.yaml", home / "quick.yaml")
    total = sum(c.points for c in load_rubric(rubric).checks)
    for name, source, says in (("ref", REPO / "reference" / "segmentation.py", f"{total:g} / {total:g} points"),
                               ("tpl", kit / "assignment" / "segmentation.py", f"0 / {total:g} points")):
        (home / name).mkdir()
        shutil.copy(source, home / name / "segmentation.py")
        open_for_user(home)
        view = user_view()
        done = subprocess.run([str(view / "venv" / "bin" / "python"), "-m", "grader", "check", str(view / name), "-q",
                               "--rubric", str(view / "quick.yaml"), "--cache-dir", str(view / "cache"), "--out",
                               str(view / f"{name}-out")], cwd="/", env=user_env(view),
                              preexec_fn=become_user(home), capture_output=True, text=True, timeout=900)
        assert done.returncode == 0 and says in done.stdout, done.stdout + done.stderr
        result = json.loads((home / f"{name}-out" / name / "result.json").read_text())
        assert "in a user namespace" in result["provenance"]["sandbox"]["isolation"]  # confined, as that user
        assert "NOT isolated" not in result["provenance"]["sandbox"]["isolation"]


def test_the_installable_package_holds_no_reference(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=600)
    [wheel] = tmp_path.glob("seg_autograder-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("grader/") for n in names)
    assert not [n for n in names if n.startswith("reference/") or "/reference/" in n]
    assert "COPY grader/ ./grader/" in (REPO / "Dockerfile").read_text()  # the image copies the package only


def test_quick_kinds_are_the_ones_needing_no_dataset() -> None:
    assert QUICK_KINDS <= set(KINDS)
