"""Similar submissions (grader.similarity.compare): a disguised copy is found, honest work and the template are not,
code is shown escaped, staff files stay owner-only, an unchanged class is not compared again, and a failure
of the comparison is data, never the batch's crash or a change of any score."""
from __future__ import annotations

import ast
import builtins
import csv
import os
import random
import shutil
import stat
from pathlib import Path

import pytest

from grader import api, cli
from grader.intake.discover import Submission, discover
from grader.core.results import SubmissionResult, write_result
from grader.rubric import RubricError, parse_rubric
from grader.similarity.compare import CODE_DIR, code_text, similarity
from tests.quick_class import QUICK_RUBRIC

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "submissions"
TEMPLATE = REPO / "student_template" / "segmentation.py"
THRESHOLD = 0.6
SCRIPT = 'BANNER = "</script><script>alert(1)</script>"\n'


def disguise(source: str, seed: int = 0) -> str:
    """What a student hiding a copy does: every identifier renamed (functions, classes, arguments, variables;
    not imports, builtins or attributes), docstrings and comments replaced, top-level definitions reordered,
    and the layout normalised by ``ast.unparse``."""
    tree = ast.parse(source)
    imported = {(a.asname or a.name).split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
    keep = imported | set(dir(builtins)) | {"self"}
    names: dict[str, str] = {}

    def new(name: str) -> str:
        return name if name in keep or name.startswith("__") else names.setdefault(name, f"zz{len(names)}_q")

    class Rename(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.Name:
            node.id = new(node.id)
            return node

        def visit_arg(self, node: ast.arg) -> ast.arg:
            node.arg = new(node.arg)
            return node

        def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
            node.name = new(node.name)
            self.generic_visit(node)
            return node

        def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:
            node.name = new(node.name)
            self.generic_visit(node)
            return node

    body = Rename().visit(tree).body
    heads = [s for s in body if isinstance(s, (ast.Import, ast.ImportFrom))]
    defs = [s for s in body if isinstance(s, (ast.FunctionDef, ast.ClassDef))]
    rest = [s for s in body if s not in heads and s not in defs]
    random.Random(seed).shuffle(defs)
    for node in ast.walk(ast.Module(body=defs, type_ignores=[])):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node) is not None:
            node.body = node.body[1:] or [ast.Pass()]
    return "\n\n".join(f"# step {i}: written by me\n{ast.unparse(s)}" for i, s in enumerate(heads + rest + defs)) + "\n"


def _graded_class(out: Path, root: Path, workdir: Path) -> dict[str, str]:
    """A result.json per student of ``root`` keyed by the intake's content hash, as a batch writes it
    (the comparison reads only the status and the hash; no sandbox is needed to test it)."""
    hashes = {}
    for entry in discover([root], workdir=workdir):
        assert isinstance(entry, Submission), entry
        write_result(out / entry.student, SubmissionResult(entry.student, "graded", 7.0, 10.0, (),
                                                           provenance={"submission_hash": entry.content_hash}))
        hashes[entry.student] = entry.content_hash
    return hashes


def _write(folder: Path, text: str, name: str = "segmentation.py") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


@pytest.fixture()
def klass(tmp_path: Path) -> Path:
    """ada and ben (independent, correct), cleo's notebook, zed (ada disguised), tim (the bare template)."""
    root = tmp_path / "class"
    for student in ("ada", "ben"):
        shutil.copytree(EXAMPLES / student, root / student)
    shutil.copy(EXAMPLES / "cleo.ipynb", root / "cleo.ipynb")
    _write(root / "zed", disguise((EXAMPLES / "ada" / "segmentation.py").read_text(), seed=3))
    _write(root / "tim", TEMPLATE.read_text())
    return root


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "similarity.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_the_disguised_copy_ranks_first_and_nothing_honest_reaches_the_threshold(klass: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _graded_class(out, klass, tmp_path / "w")
    disguised = (klass / "zed" / "segmentation.py").read_text()
    assert "def transpose_conv2d" not in disguised and "# " in disguised  # the disguise did rename and recomment

    outcome = similarity(out, threshold=THRESHOLD, sources=[klass])

    assert outcome.error is None and outcome.computed and outcome.students == 5 and not outcome.missing
    rows = _rows(out)
    assert list(rows[0]) == ["student_a", "student_b", "similarity"]
    assert (rows[0]["student_a"], rows[0]["student_b"]) == ("ada", "zed")
    assert float(rows[0]["similarity"]) >= THRESHOLD
    values = [float(r["similarity"]) for r in rows]
    assert values == sorted(values, reverse=True) and all(0 < v <= 1 for v in values)
    others = {(r["student_a"], r["student_b"]): float(r["similarity"]) for r in rows[1:]}
    assert all(v < THRESHOLD for v in others.values()), others  # ada/ben, cleo, and every pair with tim
    assert not any("tim" in pair for pair in others)  # the template is boilerplate: it shares nothing
    assert outcome.flagged == 1
    # the notebook was compared as its code cells
    assert "def " in code_text(out / "cleo" / CODE_DIR) and '"cell_type"' not in code_text(out / "cleo" / CODE_DIR)


def test_the_index_lists_the_pair_and_no_student_page_or_grade_mentions_it(klass: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _graded_class(out, klass, tmp_path / "w")
    results_before = {s: (out / s / "result.json").read_bytes() for s in ("ada", "zed")}
    api.report(out)  # reports and grades.csv drawn before the comparison
    outcome = api.similarity(out, sources=[klass])

    assert outcome.flagged == 1
    index = (out / "index.html").read_text()
    section = index[index.index('id="similar"'):]
    section = section[:section.index("</section>")]
    assert 'href="similarity/ada__zed.html"' in section and "ben" not in section
    assert (out / "similarity" / "ada__zed.html").is_file()
    api.report(out)  # a redraw of everything: the section stays, students' pages and grades do not change
    assert 'href="similarity/ada__zed.html"' in (out / "index.html").read_text()
    for student in ("ada", "zed"):
        assert "similar" not in (out / student / "report.html").read_text().lower()
        assert (out / student / "result.json").read_bytes() == results_before[student]
    assert "zed" not in (out / "ada" / "report.html").read_text()
    assert "similar" not in (out / "grades.csv").read_text().lower()


def test_code_in_the_side_by_side_page_is_escaped_and_staff_files_are_owner_only(tmp_path: Path) -> None:
    root, out = tmp_path / "class", tmp_path / "out"
    ada = (EXAMPLES / "ada" / "segmentation.py").read_text() + SCRIPT
    _write(root / "ada", ada)
    _write(root / "ada", "HELPER = '<b>not bold</b>'\n", name="helpers.py")  # a second file is compared too
    _write(root / "eve", disguise(ada, seed=1))
    _graded_class(out, root, tmp_path / "w")

    similarity(out, threshold=THRESHOLD, sources=[root])

    page = (out / "similarity" / "ada__eve.html").read_text()
    assert "<script>alert" not in page and "</script><script>" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page and "helpers.py" in page
    assert "<mark>" in page and "script-src 'none'" in page
    for path in [out / "similarity.csv", out / "similarity.json", out / "similarity" / "ada__eve.html",
                 out / "ada" / CODE_DIR / "segmentation.py", out / "ada" / CODE_DIR / "helpers.py"]:
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, path
    for folder in (out / "similarity", out / "ada" / CODE_DIR):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder


def test_an_unchanged_class_is_not_compared_again_and_a_changed_one_is(klass: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _graded_class(out, klass, tmp_path / "w1")
    assert similarity(out, threshold=THRESHOLD, sources=[klass]).computed
    stamp = (out / "similarity.csv").stat().st_mtime_ns

    again = similarity(out, threshold=THRESHOLD, sources=[klass])
    assert not again.computed and again.error is None and (out / "similarity.csv").stat().st_mtime_ns == stamp

    (out / "similarity" / "old__pair.html").write_text("a pair of an earlier class")
    # ben hands in ada's code: a new content hash in result.json, so a new code copy and a new comparison
    shutil.copy(klass / "ada" / "segmentation.py", klass / "ben" / "segmentation.py")
    _graded_class(out, klass, tmp_path / "w2")
    changed = similarity(out, threshold=THRESHOLD, sources=[klass])
    assert changed.computed and _rows(out)[0]["student_a"] == "ada" and _rows(out)[0]["student_b"] == "ben"
    assert float(_rows(out)[0]["similarity"]) == 1.0
    assert not (out / "similarity" / "old__pair.html").exists()  # a page of a pair no longer listed goes
    # a new threshold is a new key: the index changes without a regrade
    assert similarity(out, threshold=0.99, sources=[klass]).computed


def test_a_student_without_code_is_listed_and_a_failure_is_data(klass: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _graded_class(out, klass, tmp_path / "w")
    outcome = api.similarity(out)  # graded elsewhere: no code copies and no --from
    assert outcome.missing == ("ada", "ben", "cleo", "tim", "zed") and outcome.pairs == 0
    assert "Not compared" in (out / "index.html").read_text()

    shutil.rmtree(out / "similarity", ignore_errors=True)
    (out / "similarity").write_text("in the way")  # the pages' folder cannot be made
    outcome = api.similarity(out, sources=[klass])
    assert outcome.error and "similarity" in outcome.error
    assert "The comparison failed" in (out / "index.html").read_text()
    assert (out / "ada" / "result.json").is_file()


def test_grade_compares_the_batch_and_the_command_reports_it_up_to_date(tmp_path: Path, capsys) -> None:
    root, out = tmp_path / "class", tmp_path / "out"
    ada = (EXAMPLES / "ada" / "segmentation.py").read_text()
    _write(root / "ada", ada)
    _write(root / "zed", disguise(ada, seed=5))
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text(QUICK_RUBRIC + "similarity: {threshold: 0.5}\n")

    results = api.grade([root], rubric=rubric, out_dir=out)

    assert [r.status for r in results] == ["graded", "graded"]
    assert (out / "ada" / CODE_DIR / "segmentation.py").read_text() == ada
    assert 'href="similarity/ada__zed.html"' in (out / "index.html").read_text()
    assert cli.main(["similarity", str(out), "--rubric", str(rubric)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_the_rubric_threshold_is_validated_and_defaults_to_0_6() -> None:
    assert parse_rubric(QUICK_RUBRIC).similarity.threshold == 0.6
    assert parse_rubric(QUICK_RUBRIC + "similarity: {threshold: 0.8}\n").similarity.threshold == 0.8
    with pytest.raises(RubricError, match=r"similarity\.threshold"):
        parse_rubric(QUICK_RUBRIC + "similarity: {threshold: 1.5}\n")
    with pytest.raises(RubricError, match=r"similarity\.floor"):
        parse_rubric(QUICK_RUBRIC + "similarity: {floor: 0.1}\n")


def test_the_index_shows_similarity_json_as_data(tmp_path: Path) -> None:
    """similarity.json is read like any other input: names escaped, a link only into similarity/."""
    out = tmp_path / "out"
    write_result(out / "ada", SubmissionResult("ada", "graded", 1.0, 1.0, (), provenance={"submission_hash": "x"}))
    (out / "similarity.json").write_text(
        '{"schema": 1, "key": "k", "threshold": 0.6, "floor": 0.2, "students": 2, "missing": [], "pairs": 2,'
        ' "error": null, "flagged_count": 3, "flagged": ['
        '{"student_a": "<script>x</script>", "student_b": "b", "similarity": 0.9, "href": "javascript:alert(1)"},'
        '{"student_a": "a", "student_b": "b", "similarity": 0.7, "href": "similarity/a__b.html"}]}')
    api.report(out)
    index = (out / "index.html").read_text()
    assert "<script>x</script>" not in index and "&lt;script&gt;x&lt;/script&gt;" in index
    assert "javascript:" not in index and 'href="similarity/a__b.html"' in index
    assert "1 more pair(s)" in index
    (out / "similarity.json").write_text("{not json")
    api.report(out)
    assert "similarity.json unreadable" in (out / "index.html").read_text()
