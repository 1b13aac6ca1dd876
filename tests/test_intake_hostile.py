"""Intake under broken or hostile input: each bad entry becomes that entry's ``Rejected`` (or a note), never an
exception out of ``discover``, and nothing outside the export (or, in Gradescope mode, the upload) is followed.

Real files, real zips, a real FIFO; the YAML alias bomb runs in a child process with a memory rlimit and a
timeout, so a regression fails the test instead of eating the machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from grader.intake.discover import Rejected, Submission, discover
from test_intake import CODE, HELPER, accepted, files_of, make_folder, rejected

REPO = Path(__file__).resolve().parent.parent
LEAK = "LEAKED = 'outside the export'\n"


def _meta(*records: tuple[str, str]) -> str:
    """submission_metadata.yml as Gradescope writes it: one record per (folder key, sid)."""
    return "".join(f"{key}:\n  :submitters:\n  - :name: Someone\n    :sid: '{sid}'\n"
                   f"  :created_at: 2024-03-02 09:30:00.000000000 -08:00\n" for key, sid in records)


# ------------------------------------------------------------------------------------------ Canvas
@pytest.mark.parametrize("orig", [".", "..", "..-1"])
def test_canvas_file_named_dot_or_dotdot_is_dropped_with_a_note(tmp_path: Path, orig: str) -> None:
    folder = make_folder(tmp_path / "canvas", {"doejohn_1001_5001_segmentation.py": CODE,
                                               f"doejohn_1001_5001_{orig}": HELPER,
                                               "roejane_1002_6001_segmentation.py": CODE})
    doe, roe = discover([folder], workdir=tmp_path / "w")
    assert files_of(accepted(doe).path) == {"segmentation.py": CODE.encode()}
    assert any(repr(orig.split("-")[0]) in n and "rename" in n for n in doe.notes), doe.notes
    assert accepted(roe).student == "roejane"


# -------------------------------------------------------------------------- Gradescope metadata
@pytest.mark.parametrize("when", ["2024-13-45 10:00:00", "'2024-13-45 10:00:00.000000000 -08:00'", "[1, 2]"])
def test_gradescope_invalid_date_keeps_the_student_id(tmp_path: Path, when: str) -> None:
    meta = _meta(("submission_1", "111")).replace("2024-03-02 09:30:00.000000000 -08:00", when)
    export = make_folder(tmp_path / "export", {"submission_metadata.yml": meta, "submission_1/segmentation.py": CODE})
    (sub,) = discover([export], workdir=tmp_path / "w")
    assert accepted(sub).student == "111"
    assert any("created_at" in n and "not a date" in n for n in sub.notes), sub.notes


@pytest.mark.parametrize("depth", [500, 20_000])
def test_gradescope_deeply_nested_metadata_is_refused_quickly(tmp_path: Path, depth: int) -> None:
    deep = "x: " + "[" * depth + "]" * depth + "\n"
    export = make_folder(tmp_path / "export", {"submission_metadata.yml": deep, "submission_1/segmentation.py": CODE})
    start = time.monotonic()
    (sub,) = discover([export], workdir=tmp_path / "w")
    assert time.monotonic() - start < 10
    assert accepted(sub).student == "submission_1"
    assert any("nest" in n and "folder names" in n for n in sub.notes), sub.notes


_BOMB_CHILD = """
import resource, sys, time
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from grader.intake.discover import discover
start = time.monotonic()
(sub,) = discover([Path(sys.argv[1])], workdir=Path(sys.argv[2]))
print(type(sub).__name__, sub.student, round(time.monotonic() - start, 2), *sub.notes, sep="\\n")
"""


def test_gradescope_yaml_alias_bomb_is_refused_in_bounded_time_and_memory(tmp_path: Path) -> None:
    levels = ["a: &a [" + ", ".join(["lol"] * 10) + "]"]
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]" for i in range(8)]
    export = make_folder(tmp_path / "export", {"submission_metadata.yml": "\n".join(levels) + "\n",
                                               "submission_1/segmentation.py": CODE})
    proc = subprocess.run([sys.executable, "-c", _BOMB_CHILD, str(export), str(tmp_path / "w")], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kind, student, seconds, *notes = proc.stdout.splitlines()
    assert (kind, student) == ("Submission", "submission_1") and float(seconds) < 5
    assert any("alias" in n for n in notes), notes


def test_gradescope_metadata_fifo_does_not_block(tmp_path: Path) -> None:
    export = make_folder(tmp_path / "export", {"submission_1/segmentation.py": CODE})
    os.mkfifo(export / "submission_metadata.yml")
    found: list = []
    worker = threading.Thread(target=lambda: found.append(discover([export], workdir=tmp_path / "w")), daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # unblock the reader so the test process can end, then fail
        os.close(os.open(export / "submission_metadata.yml", os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=5)
        pytest.fail("discover blocked opening a FIFO named submission_metadata.yml")
    ((sub,),) = found
    assert accepted(sub).student == "submission_1" and any("not a regular file" in n for n in sub.notes)


def test_gradescope_keys_must_name_a_folder_directly_inside_the_export(tmp_path: Path) -> None:
    outside = make_folder(tmp_path / "outside", {"segmentation.py": LEAK})
    keys = [("submission_1", "111"), ("../outside", "666"), (str(outside), "667"),
            ("submission_1/../../outside", "668"), (".", "669"), ("submission_metadata.yml", "670")]
    export = make_folder(tmp_path / "class" / "export", {"submission_metadata.yml": _meta(*keys),
                                                         "submission_1/segmentation.py": CODE})
    results = {r.student: r for r in discover([export], workdir=tmp_path / "w")}
    assert sorted(results) == ["111", "666", "667", "668", "669", "670"]
    assert accepted(results["111"]).path.joinpath("segmentation.py").read_text() == CODE
    for sid in ("666", "667", "668", "669", "670"):
        rejected(results[sid], "not a folder directly inside the export", "from Gradescope again")
    assert not any(isinstance(r, Submission) and LEAK in (r.path / "segmentation.py").read_text()
                   for r in results.values())


# ------------------------------------------------------------------------------- Gradescope mode
def test_single_mode_never_reads_an_upload_as_a_class_export(tmp_path: Path) -> None:
    upload = make_folder(tmp_path / "submission", {
        "submission_metadata.yml": _meta((str(REPO / "reference"), "1"), ("../../reference", "2"))})
    (only,) = discover([upload], workdir=tmp_path / "w", single=True)
    rejected(only, "no segmentation.py")
    assert only.student == "submission"


def test_single_mode_does_not_parse_canvas_names(tmp_path: Path) -> None:
    upload = make_folder(tmp_path / "submission", {"doejohn_1001_5001_segmentation.py": CODE})
    (only,) = discover([upload], workdir=tmp_path / "w", single=True)
    assert accepted(only).student == "submission"
    assert files_of(only.path) == {"segmentation.py": CODE.encode()}


def test_gradescope_mode_does_not_follow_metadata_out_of_the_upload(tmp_path: Path) -> None:
    from test_cli import UNIT_ONLY

    root = tmp_path / "autograder"
    make_folder(root / "submission", {"submission_metadata.yml": _meta((str(REPO / "reference"), "1"))})
    (tmp_path / "unit.yaml").write_text(UNIT_ONLY)
    proc = subprocess.run([sys.executable, "-m", "grader", "grade", "--gradescope", "--gradescope-root", str(root),
                           "--rubric", str(tmp_path / "unit.yaml"), "-q"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((root / "results" / "results.json").read_text())
    assert data["score"] == 0 and "segmentation.py" in data["output"]


# -------------------------------------------------------------------------- notebooks and zips
@pytest.mark.parametrize("content", ["[" * 100_000 + "]" * 100_000, '{"worksheets": [1, {"cells": 3}]}',
                                     '{"cells": [{"cell_type": "code", "source": [1, null]}]}',
                                     '{"cells": 7, "worksheets": 5}', '{"cells": [{"cell_type": "code", "source": {}}]}'])
def test_malformed_notebooks_are_rejected_not_raised(tmp_path: Path, content: str) -> None:
    make_folder(tmp_path / "cls", {"ann.ipynb": content, "bob/segmentation.py": CODE})
    ann, bob = discover([tmp_path / "cls"], workdir=tmp_path / "w")
    rejected(ann, "ann.ipynb")
    accepted(bob)


def test_a_zip_nested_thousands_of_folders_deep_is_rejected(tmp_path: Path) -> None:
    cls = make_folder(tmp_path / "cls", {"bob/segmentation.py": CODE})
    with zipfile.ZipFile(cls / "ann.zip", "w") as zf:
        zf.writestr("a/" * 1500 + "segmentation.py", CODE)
    ann, bob = discover([cls], workdir=tmp_path / "w")
    rejected(ann, "nested more than")
    accepted(bob)


def test_unexpected_failures_become_that_entrys_rejection(tmp_path: Path) -> None:
    """A folder the grader cannot list (mode 000) among good ones: that entry is rejected, the rest graded."""
    if os.geteuid() == 0:
        pytest.skip("root reads a mode-000 folder")
    cls = make_folder(tmp_path / "cls", {"ann/segmentation.py": CODE, "bob/x/segmentation.py": CODE})
    (cls / "bob").chmod(0)
    try:
        ann, bob = discover([cls], workdir=tmp_path / "w")
    finally:
        (cls / "bob").chmod(0o755)
    accepted(ann)
    assert isinstance(bob, Rejected) and bob.reason

