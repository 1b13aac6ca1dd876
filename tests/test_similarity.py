"""Similar submissions (grader.similarity.compare): a disguised copy and a copy behind padding are found, honest work,
the template and the notebook prelude are not, code is shown escaped, staff files stay owner-only, an unchanged
class is not compared again, hostile code never stops the comparison, and a failure of the comparison is data,
never the batch's crash or a change of any score."""
from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from itertools import combinations
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grader import api, cli
from grader.intake.discover import Submission, discover
from grader.core.results import SubmissionResult, write_result
from grader.rubric import RubricError, parse_rubric
from grader.similarity import normalise
from grader.similarity.compare import CODE_DIR, boilerplate, code_text, compare, load_code, similarity
from tests.quick_class import QUICK_RUBRIC
from tests.similarity_corpus import corpus, disguise, pad, solutions

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "submissions"
TEMPLATE = REPO / "student_template" / "segmentation.py"
THRESHOLD = parse_rubric((REPO / "rubric.yaml").read_text()).similarity.threshold
SCRIPT = 'BANNER = "</script><script>alert(1)</script>"\n'


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
    assert "def DoubleConv" not in disguised and "while " in disguised  # the disguise renamed and rewrote loops

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


# --- the normalised comparison (issue 22): padding, disguise, independent work, hostile code --------------------

def _notebook(*cells: str) -> str:
    return json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "source": c, "outputs": [],
                                  "execution_count": None} for c in cells],
                       "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def test_a_padded_copy_and_a_disguised_copy_are_flagged_and_no_independent_pair_is(tmp_path: Path) -> None:
    """The red team's two copies (issue 22): ben's code verbatim behind 414 KB of comment lines, and the reference
    rewritten (renames, reordered functions, for loops as while, merged expressions, new comments). Around them
    the truly independent solutions: ada, ben, cleo's notebook, dan, the reference, and a second notebook that is
    only the template (it shares the grader's notebook prelude with cleo, and nothing else)."""
    root, out = tmp_path / "class", tmp_path / "out"
    for student in ("ada", "ben", "dan"):
        shutil.copytree(EXAMPLES / student, root / student)
    shutil.copy(EXAMPLES / "cleo.ipynb", root / "cleo.ipynb")
    (root / "nia.ipynb").write_text(_notebook(TEMPLATE.read_text()))
    reference = (REPO / "reference" / "segmentation.py").read_text()
    _write(root / "ref", reference)
    padded = pad((EXAMPLES / "ben" / "segmentation.py").read_text(), kilobytes=414)
    assert len(padded) > 414_000 and padded.index("def transpose_conv2d") > 400_000
    _write(root / "pat", padded)
    disguised = disguise(reference, seed=7)
    assert "while " in disguised and "_conv_bn_relu" not in disguised
    _write(root / "zoe", disguised)
    _graded_class(out, root, tmp_path / "w")

    outcome = similarity(out, threshold=THRESHOLD, sources=[root])

    assert outcome.error is None and outcome.students == 8 and not outcome.missing and not outcome.cut
    scores = {(r["student_a"], r["student_b"]): float(r["similarity"]) for r in _rows(out)}
    flagged = {pair for pair, v in scores.items() if v >= THRESHOLD}
    assert flagged == {("ben", "pat"), ("ref", "zoe")}, scores
    assert outcome.flagged == 2
    assert scores[("ben", "pat")] == 1.0  # comments do not count: the padded copy is the copy
    page = (out / "similarity" / "ben__pat.html").read_text()
    assert "<mark>" in page and "padding padding" not in page and len(page) < 200_000  # pages show code, not padding


def test_on_the_generated_corpus_every_copy_reaches_the_threshold_and_no_independent_pair_does() -> None:
    """bench/similarity.py's measurement, at the rubric's threshold: 5 solutions x (itself, 3 disguised copies,
    a padded copy); a pair is a copy when both come from the same solution."""
    docs = corpus(seeds=3)
    codes = {name: load_code_of(text) for name, (_, text) in docs.items()}
    pairs = compare(codes, boilerplate(TEMPLATE.read_text()), floor=0.0, pages=0)
    score = {(p.student_a, p.student_b): p.similarity for p in pairs}
    missed, false = [], []
    for a, b in combinations(sorted(docs), 2):
        same = docs[a][0] == docs[b][0]
        value = score.get((a, b), 0.0)
        if same and value < THRESHOLD:
            missed.append((a, b, value))
        if not same and value >= THRESHOLD:
            false.append((a, b, value))
    assert not missed and not false, (missed, false)
    independent = [score.get(pair, 0.0) for pair in combinations(sorted(solutions()), 2)]
    assert max(independent) < THRESHOLD - 0.15  # a margin, not a coin toss


def load_code_of(text: str):
    """One document as ``load_code`` reads a folder holding it as segmentation.py."""
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "segmentation.py").write_text(text)
        return load_code(Path(folder))


def test_renaming_reordering_mirroring_recommenting_and_reformatting_leave_the_fingerprints_unchanged() -> None:
    """Everything but loop rewrites and merged expressions: the very same set (those two keep most of it)."""
    for name, source in solutions().items():
        original = load_code_of(source).features
        for seed in range(3):
            assert load_code_of(disguise(source, seed, loops=False, merge=False)).features == original, (name, seed)


def test_comments_and_docstrings_go_before_the_token_cap() -> None:
    code = "def f(a, b):\n    '''doc'''\n    return a + b * 2 - f(b, a)\n"
    padded = "# x\n" * 200_000 + '"""' + "doc " * 100_000 + '"""\n' + code.replace("doc", "d" * 500_000)
    stripped = normalise.strip(padded, budget=50)
    assert stripped.tokens == normalise.strip(code).tokens and not stripped.cut
    assert "return a + b * 2" in stripped.code and "doc" not in stripped.code and "#" not in stripped.code
    assert normalise.features(stripped.code) == normalise.features(normalise.strip(code).code)
    long = normalise.strip("x = 1\n" * 10_000, budget=300)  # the cap is on tokens, at the end of a line
    assert long.cut and long.tokens == 300 and long.code == "x = 1\n" * 100


def test_the_fingerprints_are_the_same_in_every_process(tmp_path: Path) -> None:
    """Python's hash() is salted per process; the fingerprints are not (same class, same pairs)."""
    program = ("import sys; from grader.similarity import normalise as n; "
               "print(sorted(n.features(n.strip(open(sys.argv[1]).read()).code)))")
    runs = [subprocess.run([sys.executable, "-c", program, str(EXAMPLES / "ada" / "segmentation.py")],
                           capture_output=True, text=True, check=True, cwd=REPO,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    assert runs[0] == runs[1] and len(runs[0]) > 1000


_HOSTILE = st.one_of(
    st.binary(max_size=3000).map(lambda b: b.decode("latin-1")),
    st.text(max_size=3000),
    st.integers(1, 200_000).map(lambda n: "x = " + "(" * n + "1" + ")" * n + "\n"),
    st.integers(1, 100_000).map(lambda n: "y = " + "-" * n + "1\n" + "z = [" * 3 + "\n"),
    st.integers(1, 3000).map(lambda n: "".join(" " * i + "if x:\n" for i in range(n)) + " " * n + "pass\n"),
    st.sampled_from(['"""never closed\n', "def f(:\n  return\n", "\tif x:\n  y\n\tz\n", "\\\n" * 50, "\x00\x00",
                     "x = '''" + "a" * 200_000, "#" * 300_000, "\n" * 200_000, "a" * 2_000_000]),
)


@settings(max_examples=60, deadline=None)
@given(text=_HOSTILE)
def test_hostile_text_never_raises_and_the_cap_holds(text: str) -> None:
    stripped = normalise.strip(text, budget=2000)
    assert stripped.tokens <= 4000 and len(stripped.code) <= len(text) + 10
    assert all(isinstance(f, int) for f in normalise.features(stripped.code))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile=_HOSTILE, name=st.sampled_from(["helper.py", "segmentation.py"]))
def test_hostile_code_in_a_class_never_stops_the_comparison(tmp_path: Path, hostile: str, name: str) -> None:
    """Huge, binary, deeply nested or unparsable code in one submission: the class is still compared, and
    the copy next to it still found."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        root, out = Path(tmp) / "class", Path(tmp) / "out"
        ada = (EXAMPLES / "ada" / "segmentation.py").read_text()
        _write(root / "ada", ada)
        _write(root / "zed", disguise(ada, seed=2))
        _write(root / "eve", "def transpose_conv2d(x, w):\n    return x\n")
        (root / "eve" / name).write_bytes(hostile.encode("utf-8", "surrogatepass"))
        _graded_class(out, root, Path(tmp) / "w")
        outcome = similarity(out, threshold=THRESHOLD, sources=[root])
        assert outcome.error is None and outcome.students == 3 and not outcome.missing
        assert outcome.flagged >= 1 and _rows(out)[0]["student_a"] == "ada" and _rows(out)[0]["student_b"] == "zed"


def test_a_submission_past_the_token_cap_is_compared_up_to_it_and_listed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(normalise, "MAX_TOKENS", 4000)  # ada has about 2,000 tokens; a fast test
    root, out = tmp_path / "class", tmp_path / "out"
    ada = (EXAMPLES / "ada" / "segmentation.py").read_text()
    _write(root / "ada", ada)
    _write(root / "max", ada + "x = 1\n" * (normalise.MAX_TOKENS // 3 + 10))  # the copy first, then statements
    _graded_class(out, root, tmp_path / "w")
    outcome = similarity(out, threshold=THRESHOLD, sources=[root])
    assert outcome.cut == ("max",) and outcome.flagged == 1
    assert json.loads((out / "similarity.json").read_text())["cut"] == ["max"]
    assert load_code(out / "max" / CODE_DIR).text.count("x = 1\n") < normalise.MAX_TOKENS // 3
