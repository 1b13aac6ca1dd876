"""The service's state in one SQLite file (``DIR/serve.sqlite``): tokens, sessions, submissions, settings.

The web process and the worker each open short connections (WAL mode, a busy timeout), so the file is the
only thing they share. Tokens and session ids are stored as SHA-256 digests: a copy of the file lets nobody
in. A submission is ``queued`` -> ``running`` -> ``done`` (or ``failed`` after repeated infrastructure
faults); a worker that starts puts ``running`` ones back to ``queued`` (the previous worker died mid-way) and
never touches ``done`` ones, so nothing finished is graded twice.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

__all__ = ["DB_NAME", "Store", "Identity", "Submission", "TokenProblem", "digest", "new_secret"]

DB_NAME = "serve.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY, student TEXT NOT NULL, role TEXT NOT NULL,
    email TEXT NOT NULL DEFAULT '', created REAL NOT NULL, expires REAL NOT NULL, revoked REAL);
CREATE TABLE IF NOT EXISTS sessions (hash TEXT PRIMARY KEY, token TEXT NOT NULL, csrf TEXT NOT NULL,
    created REAL NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS submissions (id INTEGER PRIMARY KEY AUTOINCREMENT, student TEXT NOT NULL,
    kind TEXT NOT NULL, status TEXT NOT NULL, stage TEXT NOT NULL DEFAULT '', created REAL NOT NULL,
    started REAL, finished REAL, runs INTEGER NOT NULL DEFAULT 0, counted INTEGER NOT NULL DEFAULT 1,
    rerun INTEGER NOT NULL DEFAULT 0, score REAL, max_score REAL, result_status TEXT, message TEXT,
    visible_score REAL, visible_max REAL);
CREATE INDEX IF NOT EXISTS by_student ON submissions (student, created);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = ("id", "student", "kind", "status", "stage", "created", "started", "finished", "runs", "counted",
            "rerun", "score", "max_score", "result_status", "message", "visible_score", "visible_max")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    """256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Identity:
    """Who a session belongs to."""

    student: str
    role: str  # "student" | "staff"
    csrf: str


class TokenProblem(Exception):
    """A link that lets nobody in; ``str`` says why, for the page."""


@dataclass(frozen=True)
class Submission:
    id: int
    student: str
    kind: str
    status: str
    stage: str
    created: float
    started: float | None
    finished: float | None
    runs: int
    counted: int
    rerun: int
    score: float | None
    max_score: float | None
    result_status: str | None
    message: str | None
    visible_score: float | None = None  # the visible checks' part: what a student sees before release
    visible_max: float | None = None


class Store:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / DB_NAME
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
        finally:
            db.close()
        os.chmod(self.path, 0o600)  # digests only, but nobody else's business

    @contextmanager
    def connect(self, *, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction (``immediate``: write-locked from the start, for check-then-insert)."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # ------------------------------------------------------------------ tokens and sessions
    def add_token(self, student: str, *, role: str = "student", email: str = "", days: float = 180) -> str:
        """A new personal link's secret for ``student`` (earlier ones stay valid until revoked)."""
        token, now = new_secret(), time.time()
        with self.connect() as db:
            db.execute("INSERT INTO tokens VALUES (?,?,?,?,?,?,NULL)",
                       (digest(token), student, role, email, now, now + days * 86400))
        return token

    def revoke(self, student: str) -> int:
        """Revoke every link of ``student`` (and so their sessions). Returns how many."""
        with self.connect() as db:
            return db.execute("UPDATE tokens SET revoked=? WHERE student=? AND revoked IS NULL",
                              (time.time(), student)).rowcount

    def _token_row(self, db: sqlite3.Connection, token_hash: str) -> tuple[str, str, float, float | None]:
        row = db.execute("SELECT student, role, expires, revoked FROM tokens WHERE hash=?", (token_hash,)).fetchone()
        if row is None:
            raise TokenProblem("This link is not valid. Check that you opened the whole link from your e-mail; "
                               "if it still fails, ask the course staff for a new one.")
        student, role, expires, revoked = row
        if revoked is not None:
            raise TokenProblem("This link was withdrawn by the course staff. Ask them for a new one.")
        if expires < time.time():
            raise TokenProblem(f"This link expired on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(expires))}. "
                               "Ask the course staff for a new one.")
        return row

    def open_session(self, token: str, *, hours: float) -> str:
        """Trade a link's token for a new session id (raises ``TokenProblem``)."""
        session, now = new_secret(), time.time()
        with self.connect() as db:
            self._token_row(db, digest(token))
            db.execute("INSERT INTO sessions VALUES (?,?,?,?,?)",
                       (digest(session), digest(token), new_secret(), now, now + hours * 3600))
            db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
        return session

    def end_session(self, session: str) -> None:
        with self.connect() as db:
            db.execute("DELETE FROM sessions WHERE hash=?", (digest(session),))

    def identity(self, session: str) -> Identity:
        """Who holds this session (raises ``TokenProblem`` if it is unknown, expired or its link revoked)."""
        with self.connect() as db:
            row = db.execute("SELECT token, csrf, expires FROM sessions WHERE hash=?", (digest(session),)).fetchone()
            if row is None or row[2] < time.time():
                raise TokenProblem("Your session has ended. Open your personal link again to sign in.")
            student, role, _, _ = self._token_row(db, row[0])
        return Identity(student=student, role=role, csrf=row[1])

    def students(self) -> list[str]:
        with self.connect() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT student FROM tokens WHERE role='student' "
                                             "ORDER BY student")]

    # ------------------------------------------------------------------ submissions
    def add_submission(self, student: str, kind: str, *, counted: bool = True, rerun: bool = False,
                       now: float | None = None, db: sqlite3.Connection | None = None) -> int:
        values = (student, kind, "queued", "queued", now or time.time(), int(counted), int(rerun))
        sql = "INSERT INTO submissions (student, kind, status, stage, created, counted, rerun) VALUES (?,?,?,?,?,?,?)"
        if db is not None:
            return db.execute(sql, values).lastrowid
        with self.connect() as conn:
            return conn.execute(sql, values).lastrowid

    def submissions(self, student: str | None = None, *, status: tuple[str, ...] = ()) -> list[Submission]:
        sql, args = f"SELECT {','.join(_COLUMNS)} FROM submissions WHERE 1=1", []
        if student is not None:
            sql, args = sql + " AND student=?", [student]
        if status:
            sql += f" AND status IN ({','.join('?' * len(status))})"
            args += list(status)
        with self.connect() as db:
            return [Submission(*row) for row in db.execute(sql + " ORDER BY id", args)]

    def submission(self, sub_id: int) -> Submission | None:
        with self.connect() as db:
            row = db.execute(f"SELECT {','.join(_COLUMNS)} FROM submissions WHERE id=?", (sub_id,)).fetchone()
        return Submission(*row) if row else None

    def counted_since(self, db: sqlite3.Connection, student: str, since: float) -> list[float]:
        """Creation times of the student's counted attempts since ``since``, oldest first."""
        return [r[0] for r in db.execute("SELECT created FROM submissions WHERE student=? AND counted=1 AND "
                                         "created>? ORDER BY created", (student, since))]

    def requeue_running(self) -> int:
        with self.connect() as db:
            return db.execute("UPDATE submissions SET status='queued', stage='queued (restarted)' "
                              "WHERE status='running'").rowcount

    def claim(self, limit: int) -> list[Submission]:
        """Mark the oldest queued submission of up to ``limit`` students with none running as running."""
        with self.connect(immediate=True) as db:
            busy = {r[0] for r in db.execute("SELECT student FROM submissions WHERE status='running'")}
            picked: list[int] = []
            for sub_id, student in db.execute("SELECT id, student FROM submissions WHERE status='queued' ORDER BY id"):
                if student not in busy and len(picked) < limit:
                    busy.add(student)
                    picked.append(sub_id)
            for sub_id in picked:
                db.execute("UPDATE submissions SET status='running', stage='preparing', started=?, runs=runs+1 "
                           "WHERE id=?", (time.time(), sub_id))
        return [s for s in (self.submission(i) for i in picked) if s is not None]

    def set_stage(self, sub_id: int, stage: str) -> None:
        with self.connect() as db:
            db.execute("UPDATE submissions SET stage=? WHERE id=? AND status='running'", (stage, sub_id))

    def finish(self, sub_id: int, *, score: float, max_score: float, result_status: str, message: str,
               visible: tuple[float, float] | None = None) -> None:
        """Record a graded submission (``visible``: the score and maximum of its visible checks)."""
        shown = visible or (score, max_score)
        with self.connect() as db:
            db.execute("UPDATE submissions SET status='done', stage='finished', finished=?, score=?, max_score=?, "
                       "result_status=?, message=?, visible_score=?, visible_max=? WHERE id=? AND status='running'",
                       (time.time(), score, max_score, result_status, message, shown[0], shown[1], sub_id))

    def fail_or_requeue(self, sub_id: int, message: str, *, max_runs: int = 3) -> None:
        """An infrastructure fault: queued again, or ``failed`` (never a zero) after ``max_runs`` tries."""
        with self.connect() as db:
            db.execute("UPDATE submissions SET status=CASE WHEN runs>=? THEN 'failed' ELSE 'queued' END, "
                       "stage=CASE WHEN runs>=? THEN 'not graded' ELSE 'queued (retry)' END, message=? "
                       "WHERE id=? AND status='running'", (max_runs, max_runs, message, sub_id))

    # ------------------------------------------------------------------ settings
    def setting(self, key: str, default: str = "") -> str:
        with self.connect() as db:
            row = db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_setting(self, key: str, value: str) -> None:
        with self.connect() as db:
            db.execute("INSERT INTO settings VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                       (key, value))
