"""Intake: every accepted format, every archive attack, the LMS layouts, and hash stability.

Everything is built under tmp_path with real files and real zips (evil ones via ZipInfo tricks).
"""
from __future__ import annotations

import io
import json
import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from grader.intake.discover import (IntakeLimits, Rejected, Submission, discover, hash_folder, prepare_submission,
                           safe_student_id)

CODE = "def transpose_conv2d(x, w):\n    return x\n"
HELPER = "ALPHA = 1\n"


def make_folder(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def make_zip(path: Path, files: dict[str, str | bytes], *, method: int = zipfile.ZIP_DEFLATED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)  # keeps the name verbatim (no sanitising)
            info.compress_type = method
            zf.writestr(info, content)
    return path


def zip_bytes(files: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def notebook(*sources: str, markdown: str = "# Title") -> str:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": [markdown]}]
    cells += [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
               "source": s.splitlines(keepends=True)} for s in sources]
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def accepted(result: Submission | Rejected) -> Submission:
    assert isinstance(result, Submission), result
    return result


def rejected(result: Submission | Rejected, *words: str) -> Rejected:
    assert isinstance(result, Rejected), result
    for word in words:
        assert word in result.reason, (word, result.reason)
    return result


# ------------------------------------------------------------------------------------- formats
def test_folder_is_copied_clean_and_the_original_is_untouched(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "alice", {"segmentation.py": CODE, "helpers/util.py": HELPER,
                                           "__pycache__/segmentation.cpython-311.pyc": b"\0",
                                           ".DS_Store": b"\0", "helpers/.ipynb_checkpoints/x.py": "1"})
    sub = accepted(prepare_submission(src, student="alice", workdir=tmp_path / "work"))
    assert sub.path.parent == tmp_path / "work" and sub.path.name == f"alice-{sub.content_hash[:8]}"
    assert files_of(sub.path) == {"helpers/util.py": HELPER.encode(), "segmentation.py": CODE.encode()}
    assert (src / "__pycache__").exists() and (src / ".DS_Store").exists()


def test_folder_nested_inside_one_folder_is_found(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "bob", {"hw3/segmentation.py": CODE, "hw3/util.py": HELPER,
                                         "__MACOSX/hw3/._segmentation.py": b"\0"})
    sub = accepted(prepare_submission(src, student="bob", workdir=tmp_path / "work"))
    assert set(files_of(sub.path)) == {"segmentation.py", "util.py"}


def test_single_py_is_renamed_segmentation_py(tmp_path: Path) -> None:
    src = make_folder(tmp_path, {"my_solution.py": CODE}) / "my_solution.py"
    sub = accepted(prepare_submission(src, student="carol", workdir=tmp_path / "work"))
    assert files_of(sub.path) == {"segmentation.py": CODE.encode()}
    assert any("renamed" in n for n in sub.notes)


def test_zip_of_the_folder_hashes_like_the_folder(tmp_path: Path) -> None:
    files = {"segmentation.py": CODE, "util.py": HELPER}
    folder = make_folder(tmp_path / "dave", files)
    wrapped = make_zip(tmp_path / "dave.zip", {f"dave/{k}": v for k, v in files.items()})
    flat = make_zip(tmp_path / "flat.zip", files)
    hashes = {accepted(prepare_submission(p, student="dave", workdir=tmp_path / "work")).content_hash
              for p in (folder, wrapped, flat)}
    assert len(hashes) == 1


def test_notebook_becomes_segmentation_py_with_magics_commented_out(tmp_path: Path) -> None:
    nb = notebook("%matplotlib inline\nimport os\n!pip install torch\n",
                  "if 'google.colab' in str(os):\n    !pip install x\nratio = (7\n% 3)\n",
                  "%%bash\nls -la\n", "%%time\nDONE = True\n" + CODE)
    src = make_folder(tmp_path, {"solution.ipynb": nb}) / "solution.ipynb"
    sub = accepted(prepare_submission(src, student="erin", workdir=tmp_path / "work"))
    prelude = (sub.path / "segmentation.py").read_text()
    script = "".join(p.read_text() for p in sorted((sub.path / "notebook_cells").glob("cell_*.py")))
    compile(script, "segmentation.py", "exec")  # valid Python after the magics are gone
    namespace: dict = {"__file__": str(sub.path / "segmentation.py")}
    exec(compile(prelude, "segmentation.py", "exec"), namespace)  # the grader's prelude runs every cell
    assert namespace["ratio"] == 7 % 3 and namespace["DONE"] is True  # '% 3' continuation kept
    assert namespace["__grader_notebook__"]["failed_cells"] == []
    assert "# %matplotlib inline" in script and "pass  # !pip install x" in script and "# ls -la" in script
    assert "# Title" not in script  # markdown is not code
    assert any("commented out" in n for n in sub.notes)


def test_folder_holding_only_an_archive_or_a_notebook_is_unwrapped(tmp_path: Path) -> None:
    make_zip(tmp_path / "f/hw.zip", {"hw/segmentation.py": CODE})
    make_folder(tmp_path / "g", {"solution.ipynb": notebook(CODE)})
    assert files_of(accepted(prepare_submission(tmp_path / "f", student="f", workdir=tmp_path / "w")).path) == {
        "segmentation.py": CODE.encode()}
    assert "def transpose_conv2d" in (
        accepted(prepare_submission(tmp_path / "g", student="g", workdir=tmp_path / "w")).path
        / "segmentation.py").read_text()


def test_missing_segmentation_py_says_what_was_found_and_expected(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "h", {"model.py": CODE, "train.py": CODE, "README.md": "hi"})
    bad = rejected(prepare_submission(src, student="h", workdir=tmp_path / "w"), "segmentation.py",
                   "model.py", "train.py", "expected")
    assert bad.student == "h"
    rejected(prepare_submission(make_folder(tmp_path, {"r.pdf": b"%PDF"}) / "r.pdf", student="r",
                                workdir=tmp_path / "w"), "r.pdf", "expected")
    rejected(prepare_submission(make_folder(tmp_path, {"s.ipynb": "{not json"}) / "s.ipynb", student="s",
                                workdir=tmp_path / "w"), "not a valid Jupyter notebook")


def test_symlinks_in_a_submitted_folder_are_skipped_not_followed(tmp_path: Path) -> None:
    secret = make_folder(tmp_path / "outside", {"secret.txt": "password"}) / "secret.txt"
    src = make_folder(tmp_path / "i", {"segmentation.py": CODE})
    os.symlink(secret, src / "data.txt")
    os.symlink(secret.parent, src / "linked_dir")
    sub = accepted(prepare_submission(src, student="i", workdir=tmp_path / "w"))
    assert set(files_of(sub.path)) == {"segmentation.py"}
    assert any("data.txt" in n and "symbolic link" in n for n in sub.notes)


# ------------------------------------------------------------------------------------- attacks
def _evil_zip(path: Path, name: str, content: bytes = b"x = 1\n", mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("segmentation.py", CODE)
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.create_system = 3  # Unix: external_attr's high bits are st_mode
            info.external_attr = mode << 16
        zf.writestr(info, content)
    return path


@pytest.mark.parametrize(("entry", "mode", "words"), [
    ("../evil.py", None, ("outside", "zip-slip")),
    ("a/../../evil.py", None, ("outside",)),
    ("/tmp/evil.py", None, ("absolute",)),
    ("C:\\evil.py", None, ("absolute",)),
    ("link.py", stat.S_IFLNK | 0o777, ("symbolic link",)),
])
def test_evil_entries_are_rejected_and_nothing_escapes(tmp_path: Path, entry: str, mode: int | None,
                                                       words: tuple[str, ...]) -> None:
    src = _evil_zip(tmp_path / "in" / "evil.zip", entry, b"/etc/passwd" if mode else b"pwned = 1\n", mode)
    rejected(prepare_submission(src, student="mallory", workdir=tmp_path / "in" / "work"), *words)
    assert not list(tmp_path.rglob("evil.py")) and not list(tmp_path.rglob("link.py"))
    assert not list((tmp_path / "in" / "work").iterdir())  # no staging left behind either


def test_compression_bomb_is_rejected_by_ratio(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "bomb.zip", {"segmentation.py": CODE, "zeros.bin": bytes(5 * 1024 * 1024)})
    rejected(prepare_submission(src, student="b", workdir=tmp_path / "w"), "compressed more than")


def test_declared_total_over_the_limit_is_rejected(tmp_path: Path) -> None:
    blob = os.urandom(300 * 1024)
    src = make_zip(tmp_path / "big.zip", {"segmentation.py": CODE, **{f"d{i}.bin": blob for i in range(4)}})
    rejected(prepare_submission(src, student="b", workdir=tmp_path / "w",
                                limits=IntakeLimits(max_total_mb=1)), "in total")


def test_single_file_over_the_limit_is_rejected(tmp_path: Path) -> None:
    weights = os.urandom(600 * 1024).translate(bytes(i % 4 for i in range(256)))  # zips about 3:1
    src = make_zip(tmp_path / "big.zip", {"segmentation.py": CODE, "w.pt": weights})
    rejected(prepare_submission(src, student="b", workdir=tmp_path / "w",
                                limits=IntakeLimits(max_file_mb=0.5)), "w.pt", "limit per file")
    folder = make_folder(tmp_path / "f", {"segmentation.py": CODE, "w.pt": os.urandom(600 * 1024)})
    rejected(prepare_submission(folder, student="f", workdir=tmp_path / "w",
                                limits=IntakeLimits(max_file_mb=0.5)), "w.pt")


def test_too_many_entries_are_rejected(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "many.zip", {"segmentation.py": CODE, **{f"m{i}.py": "" for i in range(10)}})
    rejected(prepare_submission(src, student="m", workdir=tmp_path / "w", limits=IntakeLimits(max_files=5)),
             "11 files", "at most 5")


def _understate(data: bytearray, name: bytes, size: int) -> None:
    """Rewrite the uncompressed size of entry ``name`` in its local and central headers."""
    for sig, name_len_at, name_at, size_at in ((b"PK\x03\x04", 26, 30, 22), (b"PK\x01\x02", 28, 46, 24)):
        at = data.find(sig)
        while at != -1:
            (n,) = struct.unpack_from("<H", data, at + name_len_at)
            if data[at + name_at: at + name_at + n] == name:
                struct.pack_into("<I", data, at + size_at, size)
            at = data.find(sig, at + 4)


def test_headers_that_understate_the_size_are_caught_while_extracting(tmp_path: Path) -> None:
    data = bytearray(zip_bytes({"segmentation.py": CODE, "pad.bin": bytes(2 * 1024 * 1024)}))
    _understate(data, b"pad.bin", 100)
    src = tmp_path / "liar.zip"
    src.write_bytes(bytes(data))
    rejected(prepare_submission(src, student="l", workdir=tmp_path / "w"))
    assert not list(tmp_path.rglob("pad.bin"))


def test_corrupt_zip_and_other_archive_formats_are_rejected(tmp_path: Path) -> None:
    good = zip_bytes({"segmentation.py": CODE * 50})
    (tmp_path / "trunc.zip").write_bytes(good[: len(good) // 2])
    (tmp_path / "noise.zip").write_bytes(os.urandom(2048))
    (tmp_path / "hw.rar").write_bytes(b"Rar!")
    for name, word in (("trunc.zip", "zip"), ("noise.zip", "zip"), ("hw.rar", "not accepted")):
        rejected(prepare_submission(tmp_path / name, student="c", workdir=tmp_path / "w"), word)


def test_archives_nested_more_than_one_level_are_rejected(tmp_path: Path) -> None:
    one = zip_bytes({"segmentation.py": CODE})
    make_zip(tmp_path / "ok.zip", {"inner.zip": one})  # a zip in the zip: accepted
    accepted(prepare_submission(tmp_path / "ok.zip", student="n", workdir=tmp_path / "w"))
    make_zip(tmp_path / "deep.zip", {"inner.zip": zip_bytes({"innermost.zip": one})})
    rejected(prepare_submission(tmp_path / "deep.zip", student="n", workdir=tmp_path / "w"), "nested")


# --------------------------------------------------------------------------------- class layouts
GRADESCOPE_YML = """\
submission_1001:
  :submitters:
  - :name: Alice Adams
    :sid: '111'
    :email: alice@uni.edu
  :created_at: 2024-03-02 09:30:00.123456789 -08:00
  :score: 0.0
  :history:
  - :id: 900
    :created_at: 2024-02-28 10:00:00.000000000 -08:00
submission_1002:
  :submitters:
  - :name: Alice Adams
    :sid: '111'
    :email: alice@uni.edu
  :created_at: '2024-03-01 10:00:00.000000000 -08:00'
  :results: !ruby/hash:ActiveSupport::HashWithIndifferentAccess
    tests: []
submission_1003:
  :submitters:
  - :name: Bob Brown
    :email: bob@uni.edu
  - :name: Cy Chen
    :sid: '333'
  :created_at: 2024-03-01 12:00:00.000000000 -08:00
"""


def _gradescope_export(root: Path) -> Path:
    return make_folder(root, {"submission_metadata.yml": GRADESCOPE_YML,
                              "submission_1001/segmentation.py": CODE,
                              "submission_1002/segmentation.py": "OLD = 1\n",
                              "submission_1003/hw/segmentation.py": CODE + HELPER})


def test_gradescope_export_latest_submission_counts_and_groups_count_for_everyone(tmp_path: Path) -> None:
    export = _gradescope_export(tmp_path / "assignment_7_export")
    results = discover([export], workdir=tmp_path / "w")
    assert [r.student for r in results] == ["111", "333", "bob_uni.edu"]
    alice, cy, bob = map(accepted, results)
    assert files_of(alice.path) == {"segmentation.py": CODE.encode()}
    assert any("submission_1002" in n and "ignored" in n for n in alice.notes)
    assert any("history" in n for n in alice.notes)
    assert bob.content_hash == cy.content_hash and any("group" in n for n in bob.notes)


def test_gradescope_unreadable_metadata_falls_back_to_folder_names(tmp_path: Path) -> None:
    export = make_folder(tmp_path / "export", {"submission_metadata.yml": "a: [unclosed",
                                               "submission_9/segmentation.py": CODE})
    (sub,) = discover([export], workdir=tmp_path / "w")
    assert accepted(sub).student == "submission_9" and any("could not be read" in n for n in sub.notes)


def test_gradescope_export_zip_matches_the_folder(tmp_path: Path) -> None:
    export = _gradescope_export(tmp_path / "src" / "assignment_7_export")
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as zf:
        for path in sorted(export.parent.rglob("*")):  # folders too, as `zip -r` writes them
            zf.write(path, path.relative_to(export.parent).as_posix())
    from_zip = discover([tmp_path / "export.zip"], workdir=tmp_path / "w1")
    from_dir = discover([export], workdir=tmp_path / "w2")
    assert [(r.student, r.content_hash) for r in from_zip] == [(r.student, r.content_hash) for r in from_dir]


def test_canvas_download_latest_resubmission_counts(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "canvas", {
        "doejohn_1001_5001_segmentation.py": "OLD = 1\n",
        "doejohn_1001_5002_segmentation-1.py": CODE,
        "roejane_LATE_1002_6001_hw.ipynb": notebook(CODE),
        "smithann_1003_7001_segmentation.py": "OLD = 2\n",
        "smithann_1003_7001_segmentation-2.py": CODE,
        "smithann_1003_7001_util.py": HELPER,
    })
    doe, roe, smith = map(accepted, discover([folder], workdir=tmp_path / "w"))
    assert (doe.student, roe.student, smith.student) == ("doejohn", "roejane", "smithann")
    assert files_of(doe.path) == {"segmentation.py": CODE.encode()}
    assert any("doejohn_1001_5001_segmentation.py" in n for n in doe.notes)
    assert any("late" in n for n in roe.notes)
    assert files_of(smith.path) == {"segmentation.py": CODE.encode(), "util.py": HELPER.encode()}


def test_a_bad_archive_among_good_ones_only_rejects_that_one(tmp_path: Path) -> None:
    cls = tmp_path / "class"
    make_folder(cls, {"ann/segmentation.py": CODE, "cat.py": CODE, "dan.ipynb": notebook(CODE),
                      "notes.pdf": b"%PDF"})
    make_zip(cls / "ben.zip", {"ben/segmentation.py": CODE})
    _evil_zip(cls / "eve.zip", "../../evil.py")
    (cls / "fay.zip").write_bytes(b"not a zip")
    results = {r.student: r for r in discover([cls], workdir=tmp_path / "w")}
    assert sorted(results) == ["ann", "ben", "cat", "dan", "eve", "fay", "notes"]
    assert {s for s, r in results.items() if isinstance(r, Submission)} == {"ann", "ben", "cat", "dan"}
    rejected(results["eve"], "outside")
    rejected(results["fay"], "zip")


def test_a_bomb_inside_a_class_zip_only_rejects_that_student(tmp_path: Path) -> None:
    make_zip(tmp_path / "class.zip", {"class/submission_metadata.yml": "{}\n",  # an LMS export: a class
                                      "class/ann/segmentation.py": CODE,
                                      "class/bob/segmentation.py": CODE,
                                      "class/bob/zeros.bin": bytes(5 * 1024 * 1024),
                                      "class/cal/work.zip": zip_bytes({"segmentation.py": CODE})})
    results = {r.student: r for r in discover([tmp_path / "class.zip"], workdir=tmp_path / "w")}
    assert isinstance(results["ann"], Submission) and isinstance(results["cal"], Submission)
    rejected(results["bob"], "compressed more than")


def test_evil_names_in_a_class_zip_reject_only_their_owner(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "class.zip", "w") as zf:
        zf.writestr("submission_metadata.yml", "{}\n")  # an LMS export: a class
        zf.writestr("ann/segmentation.py", CODE)
        zf.writestr("bob/segmentation.py", CODE)
        zf.writestr(zipfile.ZipInfo("bob/../../y.py"), "pwned = 1\n")
        zf.writestr(zipfile.ZipInfo("../x.py"), "pwned = 1\n")
    results = {r.student: r for r in discover([tmp_path / "class.zip"], workdir=tmp_path / "w")}
    assert sorted(results) == ["ann", "bob", "class"]
    accepted(results["ann"])
    rejected(results["bob"], "outside")
    rejected(results["class"], "../x.py")  # belongs to no student: reported under the archive's name
    assert not list(tmp_path.rglob("x.py")) and not list(tmp_path.rglob("y.py"))


# ------------------------------------------------------------------------------ ids and hashes
def test_student_ids_are_sanitised_and_unique(tmp_path: Path) -> None:
    assert safe_student_id("Zoë O'Neil") == "Zoe_O_Neil"
    assert safe_student_id("../../etc") == "etc" and safe_student_id("..") == "student"
    make_folder(tmp_path / "cls", {"a b/segmentation.py": CODE, "a_b.py": CODE})
    results = discover([tmp_path / "cls"], workdir=tmp_path / "w")
    assert [r.student for r in results] == ["a_b", "a_b-2"]
    assert all(r.path.parent == tmp_path / "w" for r in results)


def test_hash_ignores_mtimes_and_tracks_content(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "s", {"segmentation.py": CODE, "pkg/util.py": HELPER})
    first = accepted(prepare_submission(src, student="s", workdir=tmp_path / "w1"))
    for p in src.rglob("*"):
        os.utime(p, (1_000_000, 1_000_000))
    again = accepted(prepare_submission(src, student="s", workdir=tmp_path / "w2"))
    assert first.content_hash == again.content_hash == hash_folder(first.path)
    (src / "pkg/util.py").write_text("ALPHA = 2\n")
    assert accepted(prepare_submission(src, student="s", workdir=tmp_path / "w3")).content_hash != first.content_hash


def test_a_workdir_inside_the_class_folder_is_not_a_student(tmp_path: Path) -> None:
    cls = make_folder(tmp_path / "cls", {"ann/segmentation.py": CODE, "bob.py": CODE})
    first = discover([cls], workdir=cls / "graded")
    again = discover([cls], workdir=cls / "graded")
    assert [r.student for r in first] == [r.student for r in again] == ["ann", "bob"]


def test_rerun_into_the_same_workdir_is_idempotent(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "s", {"segmentation.py": CODE})
    a = accepted(prepare_submission(src, student="s", workdir=tmp_path / "w"))
    b = accepted(prepare_submission(src, student="s", workdir=tmp_path / "w"))
    assert a == b and [p.name for p in (tmp_path / "w").iterdir()] == [a.path.name]


def test_a_student_named_like_a_file_of_the_output_folder_is_renamed() -> None:
    from grader.intake.discover import safe_student_id

    assert safe_student_id("similarity") == "student_similarity"
    assert safe_student_id("index.html") == "student_index.html"
    assert safe_student_id("simi larity") == "simi_larity"
