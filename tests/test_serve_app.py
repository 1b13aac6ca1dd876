"""grader serve's web layer through Starlette's TestClient (real FastAPI app, real SQLite file, real intake; no
grading: the worker is tested in tests/test_serve_live.py): links and sessions, ownership, CSRF, the attempt
limit, bad uploads, the deadline, the staff pages, and that the web process never imports torch."""
from __future__ import annotations

import csv
import io
import re
import sqlite3
import subprocess
import sys
import time
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from grader.cli import main as cli_main  # noqa: E402
from grader.serve.app import build_app  # noqa: E402
from grader.serve.config import KINDS, history_dir  # noqa: E402
from grader.serve.staff import lookup  # noqa: E402
from grader.serve.store import Store  # noqa: E402
from grader.serve.uploads import Refused, kind_of  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REFERENCE = (REPO / "reference" / "segmentation.py").read_bytes()
RUBRIC = REPO / "tests" / "rubric_small.yaml"


def _client(data: Path, **settings: object) -> TestClient:
    return TestClient(build_app(data, RUBRIC, **settings))


def _sign_in(client: TestClient, token: str) -> str:
    """Open the link; returns the page's CSRF value (staff land on /staff)."""
    page = client.get(f"/login?token={token}", follow_redirects=True)
    assert page.status_code == 200, page.text
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def _upload(client: TestClient, csrf: str, name: str = "segmentation.py", body: bytes = REFERENCE):
    return client.post("/submit", data={"csrf": csrf}, files={"file": (name, body)}, follow_redirects=True)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    (tmp_path / "roster.csv").write_text("student,email\nalice,alice@uni.edu\nbob,\n")
    assert cli_main(["serve", "tokens", "--data", str(tmp_path / "d"), "--roster", str(tmp_path / "roster.csv"),
                     "--base-url", "https://grader.example.edu/"]) == 0
    return tmp_path / "d"


def _tokens(data: Path) -> dict[str, str]:
    with open(data / "tokens.csv", newline="") as f:
        return {r["student"]: r["link"].split("token=")[1] for r in csv.DictReader(f)}


def test_tokens_csv_lists_one_link_per_student_stored_only_as_digests(data: Path, tmp_path: Path) -> None:
    with open(data / "tokens.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["student"], r["email"]) for r in rows] == [("alice", "alice@uni.edu"), ("bob", "")]
    assert all(r["link"].startswith("https://grader.example.edu/login?token=") for r in rows)
    tokens = _tokens(data)
    assert all(len(t) >= 43 for t in tokens.values())  # 32 random bytes: 256 bits
    assert (data / "tokens.csv").stat().st_mode & 0o077 == 0
    raw = (data / "serve.sqlite").read_bytes()
    assert not any(t.encode() in raw for t in tokens.values())
    # a second run gives new links and the old ones stop working
    assert cli_main(["serve", "tokens", "--data", str(data), "--roster", str(tmp_path / "roster.csv")]) == 0
    page = _client(data).get(f"/login?token={tokens['alice']}")
    assert page.status_code == 403 and "withdrawn" in page.text


@pytest.mark.parametrize("name", ["../evil", "index.html", "tokens.csv", "a b"])
def test_a_roster_name_that_cannot_be_a_folder_is_refused_with_its_line(tmp_path: Path, name: str,
                                                                         capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "roster.csv").write_text(f"student\nalice\n{name}\n")
    assert cli_main(["serve", "tokens", "--data", str(tmp_path / "d"), "--roster", str(tmp_path / "roster.csv")]) == 2
    assert "line 3" in capsys.readouterr().err


def test_forged_expired_and_revoked_links_get_a_clear_page(data: Path) -> None:
    client = _client(data)
    forged = client.get("/login?token=" + "A" * 43)
    assert forged.status_code == 403 and "This link is not valid" in forged.text
    store = Store(data)
    expired = client.get("/login?token=" + store.add_token("carol", days=-1))
    assert expired.status_code == 403 and "expired on" in expired.text
    unsigned = client.get("/")
    assert unsigned.status_code == 401 and "Open the personal link" in unsigned.text
    _sign_in(client, _tokens(data)["alice"])
    assert client.get("/").status_code == 200
    store.revoke("alice")  # revoking a link ends the sessions it opened
    after = client.get("/")
    assert after.status_code == 403 and "withdrawn" in after.text
    assert client.get("/api/status").status_code == 403


def test_a_second_student_sees_none_of_the_first_students_pages_or_files(data: Path) -> None:
    tokens = _tokens(data)
    alice, bob = _client(data), _client(data)
    assert _upload(alice, _sign_in(alice, tokens["alice"])).status_code == 200
    [sub] = Store(data).submissions("alice")
    folder = history_dir(data) / str(sub.id)  # as if graded: the report exists
    folder.mkdir(parents=True)
    (folder / "report.html").write_text("<p>alice's report</p>")
    with sqlite3.connect(data / "serve.sqlite") as db:
        db.execute("UPDATE submissions SET status='done', score=1, max_score=2 WHERE id=?", (sub.id,))
    assert "alice's report" in alice.get(f"/submissions/{sub.id}/report").text
    _sign_in(bob, tokens["bob"])
    assert bob.get(f"/submissions/{sub.id}/report").status_code == 404
    assert bob.get("/api/status").json()["submissions"] == []
    for url in ("/staff", "/staff/class/index.html", "/staff/class/alice/report.html", "/staff/grades.csv",
                f"/staff/submissions/{sub.id}/report"):
        assert bob.get(url).status_code == 403, url


def test_every_form_needs_its_sessions_csrf_value(data: Path) -> None:
    tokens = _tokens(data)
    alice, bob = _client(data), _client(data)
    _sign_in(alice, tokens["alice"])
    bobs = _sign_in(bob, tokens["bob"])
    for sent in ({}, {"csrf": "x"}, {"csrf": bobs}):
        answer = alice.post("/submit", data=sent, files={"file": ("segmentation.py", REFERENCE)})
        assert answer.status_code == 403 and "CSRF" in answer.text
    assert Store(data).submissions() == []


def test_the_sixth_upload_in_the_window_is_refused_with_the_next_free_time(data: Path) -> None:
    client = _client(data)
    csrf = _sign_in(client, _tokens(data)["alice"])
    store = Store(data)
    store.add_submission("alice", "py", now=time.time() - 25 * 3600)  # outside the window: not counted
    for i in range(5):
        assert _upload(client, csrf, body=REFERENCE + f"\n# {i}\n".encode()).status_code == 200
    first = store.submissions("alice")[1].created
    sixth = _upload(client, csrf)
    free = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(first + 24 * 3600))
    assert sixth.status_code == 429
    assert "5 of 5 graded attempts used in the last 24 h" in sixth.text and f"free at {free}" in sixth.text
    assert len(store.submissions("alice")) == 6
    assert client.get("/api/status").json()["attempts"]["next_free"] == free


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in entries.items():
            archive.writestr(name, body)
    return buffer.getvalue()


BAD_UPLOADS = {
    "not python (a picture)": ("photo.png", b"\x89PNG\r\n", 415, "cannot be graded"),
    "not python (binary as .py)": ("segmentation.py", b"\x00\xff\xfe binary", 400, "not"),
    "not python (syntax)": ("segmentation.py", b"def f(:\n", 400, "not valid Python"),
    "zip bomb": ("work.zip", _zip({"segmentation.py": REFERENCE, "data.py": b"0" * 15_000_000}), 422,
                 "is compressed more than 200:1"),
    "traversal name": ("work.zip", _zip({"segmentation.py": REFERENCE, "../../evil.py": b"x = 1\n"}), 422,
                       "points outside the archive"),
    "too large": ("segmentation.py", b"#" * (2 * 1024 * 1024), 413, "larger than the 1 MB limit"),
}


def test_bad_uploads_get_a_clear_message_cost_no_attempt_and_the_queue_goes_on(data: Path) -> None:
    client = _client(data, max_upload_mb=1)
    csrf = _sign_in(client, _tokens(data)["alice"])
    for what, (name, body, status, words) in BAD_UPLOADS.items():
        answer = _upload(client, csrf, name, body)
        assert answer.status_code == status, (what, answer.text)
        assert words in answer.text, (what, answer.text)
    assert Store(data).submissions() == []
    assert not any((data / ".serve" / "incoming").iterdir())  # nothing kept of a refused upload
    good = _upload(client, csrf, "my_work.zip", _zip({"hw/segmentation.py": REFERENCE}))
    assert good.status_code == 200 and "queued" in good.text
    notebook = _upload(client, csrf, "Cleo's notebook.ipynb", (REPO / "examples/submissions/cleo.ipynb").read_bytes())
    assert notebook.status_code == 200 and "queued" in notebook.text
    subs = Store(data).submissions("alice")
    assert [s.kind for s in subs] == ["zip", "ipynb"]
    assert (data / ".serve" / "uploads" / str(subs[0].id) / "alice.zip").is_file()
    assert "2 of 5" in client.get("/api/status").json()["attempts"]["text"]


def test_after_the_due_date_uploads_are_refused(data: Path) -> None:
    client = _client(data, due=time.time() - 60)
    csrf = _sign_in(client, _tokens(data)["alice"])
    answer = _upload(client, csrf)
    assert answer.status_code == 403 and "deadline has passed" in answer.text
    assert Store(data).submissions() == []


def test_staff_see_the_queue_rerun_one_student_and_release(data: Path) -> None:
    alice = _client(data)
    _upload(alice, _sign_in(alice, _tokens(data)["alice"]))
    staff = _client(data)
    csrf = _sign_in(staff, Store(data).add_token("ta", role="staff"))
    queue = staff.get("/staff")
    assert "alice" in queue.text and "queued" in queue.text
    assert staff.post("/staff/rerun", data={"csrf": csrf, "student": "alice"}, follow_redirects=True).status_code == 200
    subs = Store(data).submissions("alice")
    assert [(s.counted, s.rerun) for s in subs] == [(1, 0), (0, 1)]
    assert staff.post("/staff/rerun", data={"student": "alice"}).status_code == 403  # CSRF
    staff.post("/staff/release", data={"csrf": csrf, "released": "1"})
    assert Store(data).setting("released") == "1"
    assert staff.get("/staff/grades.csv").status_code == 404  # nothing graded yet: a page says so
    (data / "grades.csv").write_text("student,score\nalice,1\n")
    assert staff.get("/staff/grades.csv").text.startswith("student,score")
    for evil in ("../serve.sqlite", "tokens.csv", ".serve/uploads/1/alice.py", "serve.sqlite", "%2e%2e/x"):
        assert staff.get(f"/staff/class/{evil}").status_code == 404, evil


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(["..", ".", "", ".serve", "serve.sqlite", "tokens.csv", "alice",
                                       "report.html", "index.html", "/", "uploads", "a/b"]) | st.text(max_size=12),
                      min_size=0, max_size=4))
def test_a_class_page_is_only_ever_a_listed_page_under_the_folder(tmp_path: Path, parts: list[str]) -> None:
    root = tmp_path / "root"
    if not root.exists():
        (root / "alice").mkdir(parents=True)
        (root / "alice" / "report.html").write_text("x")
        (root / "index.html").write_text("x")
        (root / "tokens.csv").write_text("secret")
        (root / "serve.sqlite").write_text("secret")
        (root / ".serve" / "uploads").mkdir(parents=True)
        (root / ".serve" / "uploads" / "x.html").write_text("secret")
    found = lookup(root, parts)
    if found is not None:
        assert found.resolve().is_relative_to(root.resolve())
        assert found.name in ("report.html", "index.html") and ".serve" not in found.parts


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=40) | st.none())
def test_an_uploads_name_only_ever_says_its_kind(name: str | None) -> None:
    try:
        assert kind_of(name) in KINDS
    except Refused as exc:
        assert exc.status == 415


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.text(max_size=80))
def test_any_token_is_a_clear_page_never_a_crash(data: Path, token: str) -> None:
    answer = _client(data).get("/login", params={"token": token})
    assert answer.status_code == 403 and "This link" in answer.text


def test_the_web_process_never_imports_torch_or_numpy(data: Path) -> None:
    code = f"""
import re, sys
from fastapi.testclient import TestClient
from grader.serve.app import build_app
client = TestClient(build_app({str(data)!r}, {str(RUBRIC)!r}))
page = client.get("/login?token={_tokens(data)['alice']}", follow_redirects=True)
csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
answer = client.post("/submit", data={{"csrf": csrf}}, files={{"file": ("segmentation.py", open({str(REPO / 'reference' / 'segmentation.py')!r}, "rb").read())}})
assert answer.status_code in (200, 303), answer.text
client.get("/api/status").raise_for_status()
print(sorted(m for m in ("torch", "numpy") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_pages_never_leak_the_link_and_the_server_binds_loopback_by_default(data: Path) -> None:
    client = _client(data)
    answer = client.get(f"/login?token={_tokens(data)['alice']}", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/"  # the token leaves the address bar
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    home = client.get("/")
    assert home.headers["referrer-policy"] == "no-referrer" and home.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in home.headers["content-security-policy"]
    from grader.cli import build_parser

    assert build_parser().parse_args(["serve", "--data", str(data)]).host == "127.0.0.1"


def test_one_running_submission_per_student_and_a_restart_requeues_only_the_running(tmp_path: Path) -> None:
    store = Store(tmp_path)
    a1, b1, a2 = (store.add_submission(s, "py") for s in ("alice", "bob", "alice"))
    assert [s.id for s in store.claim(10)] == [a1, b1]  # alice's second waits for her first
    assert store.claim(10) == []
    store.finish(b1, score=1, max_score=2, result_status="graded", message="")
    assert store.requeue_running() == 1  # a worker died: alice's first goes back, bob's result stays
    assert {s.id: s.status for s in store.submissions()} == {a1: "queued", b1: "done", a2: "queued"}
    [again] = store.claim(10)
    assert again.id == a1 and again.runs == 2
    store.finish(b1, score=0, max_score=2, result_status="graded", message="")  # finishing twice changes nothing
    assert store.submission(b1).score == 1


def test_the_released_report_is_drawn_when_staff_release_and_shown_only_then(data: Path) -> None:
    from report_samples import FAILING_UNIT, SECRET_AFTER_DUE, sample_result

    from grader.core.results import write_result
    from grader.serve.config import ServeConfig
    from grader.serve.worker import Worker

    store = Store(data)
    store.add_submission("bob", "py")
    [sub] = store.claim(1)
    result = sample_result(FAILING_UNIT)
    write_result(data / "bob", result)  # what the batch wrote for bob
    worker = Worker(ServeConfig(data=str(data), rubric=str(RUBRIC)))
    try:
        worker.record(sub, result)  # the progress callback of the batch
        assert store.submission(sub.id).status == "done"
        from grader.core.results import read_result  # the upload's time, for the gradebook's late policy

        stamp = read_result(data / "bob" / "result.json").provenance["submitted_at"]
        assert abs(datetime.fromisoformat(stamp).timestamp() - sub.created) < 1
        assert not (history_dir(data) / str(sub.id) / "report-released.html").exists()
        bob = _client(data)
        _sign_in(bob, _tokens(data)["bob"])
        [row] = bob.get("/api/status").json()["submissions"]  # before release: the visible checks' part only
        visible = [c for c in result.checks if c.visibility == "visible"]
        assert (row["score"], row["max_score"]) == (sum(c.score for c in visible), sum(c.max_score for c in visible))
        assert row["max_score"] < result.max_score
        before = bob.get(f"/submissions/{sub.id}/report")
        assert before.status_code == 200 and "Transpose convolution" in before.text
        assert SECRET_AFTER_DUE not in before.text
        store.set_setting("released", "1")
        assert SECRET_AFTER_DUE not in bob.get(f"/submissions/{sub.id}/report").text  # not drawn yet: less
        worker.released = True
        worker.render_released()
        assert SECRET_AFTER_DUE in bob.get(f"/submissions/{sub.id}/report").text
        [row] = bob.get("/api/status").json()["submissions"]
        assert (row["score"], row["max_score"]) == (result.score, result.max_score)
    finally:
        import shutil

        shutil.rmtree(worker.scratch, ignore_errors=True)


def test_signing_out_ends_the_session_itself_not_just_the_cookie(data: Path) -> None:
    client = _client(data)
    csrf = _sign_in(client, _tokens(data)["alice"])
    cookie = client.cookies.get("seg_session")
    assert client.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    stolen = _client(data)
    stolen.cookies.set("seg_session", cookie)
    answer = stolen.get("/")
    assert answer.status_code == 403 and "session has ended" in answer.text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["segmentation.py", "work.zip", "nb.ipynb", "x.PY", "a.txt"]),
       body=st.binary(max_size=2048) | st.sampled_from([b"PK\x03\x04" + bytes(40), b'{"cells": 5}', b"\xff" * 64]))
def test_any_upload_is_queued_or_refused_with_a_clear_page_never_a_crash(data: Path, name: str, body: bytes) -> None:
    client = _client(data, attempts=1000)
    answer = _upload(client, _sign_in(client, _tokens(data)["alice"]), name, body)
    assert answer.status_code in (200, 400, 413, 415, 422), answer.text
    if answer.status_code != 200:
        assert re.search(r'id="error" role="alert">[^<]{20,}', answer.text), answer.text


def test_under_the_rubrics_late_policy_a_late_upload_is_accepted_and_marked_until_the_hard_deadline(
        data: Path, tmp_path: Path) -> None:
    import yaml

    from grader.cli import build_parser
    from grader.serve.command import _config

    rubric = yaml.safe_load(RUBRIC.read_text())
    rubric["late"] = {"due": "2026-12-01T23:59:00+00:00", "penalty_percent": 10, "per": "day",
                      "hard_deadline": "2026-12-04T23:59:00+00:00"}
    (tmp_path / "late.yaml").write_text(yaml.safe_dump(rubric))
    config = _config(build_parser().parse_args(["serve", "--data", str(data), "--rubric", str(tmp_path / "late.yaml")]))
    assert time.gmtime(config.late_due)[:5] == (2026, 12, 1, 23, 59) and config.closes == config.late_closes
    client = _client(data, late_due=time.time() - 60, late_closes=time.time() + 3600)
    csrf = _sign_in(client, _tokens(data)["alice"])
    answer = _upload(client, csrf)
    assert answer.status_code == 200 and "queued (late)" in answer.text and "accepted as late" in answer.text
    assert client.get("/api/status").json()["submissions"][0]["late"] is True
    closed = _client(data, late_due=time.time() - 7200, late_closes=time.time() - 60)
    refused = _upload(closed, _sign_in(closed, _tokens(data)["alice"]))
    assert refused.status_code == 403 and "deadline has passed" in refused.text
