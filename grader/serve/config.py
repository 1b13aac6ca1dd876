"""The service's settings (one frozen object, sent to the worker as JSON) and the layout of ``DIR``."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["ServeConfig", "parse_due", "when", "KINDS", "SERVICE_DIR", "uploads_dir", "history_dir",
           "incoming_dir", "RESERVED"]

KINDS = ("py", "zip", "ipynb")  # what a student may upload; the upload's own name is never used otherwise
SERVICE_DIR = ".serve"  # beside the students' folders; no student id can start with a dot (safe_student_id)
RESERVED = frozenset({"serve.sqlite", "tokens.csv", "serve.sqlite-wal", "serve.sqlite-shm"})


@dataclass(frozen=True)
class ServeConfig:
    data: str  # DIR: results, the SQLite file, uploads
    rubric: str
    sandbox: str = "local"
    image: str | None = None
    executor: str = "pool"
    ray_address: str | None = None
    jobs: int = 1
    gpus: tuple[str, ...] = ()
    jobs_per_gpu: int = 1
    cache_dir: str | None = None
    attempts: int = 5  # graded attempts per student per window
    window_hours: float = 24.0
    max_upload_mb: float = 20.0
    due: float | None = None  # epoch seconds; uploads after it are refused
    late_due: float | None = None  # the rubric's late: policy: uploads after it are accepted, marked late
    late_closes: float | None = None  # ... until its hard deadline (None: no end), unless --due closes earlier
    session_hours: float = 12.0
    batch_max: int = 0  # submissions the worker grades in one batch (0: 4 x jobs)
    poll_s: float = 0.25  # how often the worker looks for queued submissions (SQLite: cheap)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeConfig":
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        raw = {k: v for k, v in raw.items() if k in known}
        raw["gpus"] = tuple(raw.get("gpus", ()))
        return cls(**raw)

    @property
    def data_dir(self) -> Path:
        return Path(self.data)

    @property
    def closes(self) -> float | None:
        """When uploads stop: ``--due``, else the late policy's hard deadline, else never."""
        return self.due if self.due is not None else self.late_closes

    def is_late(self, moment: float) -> bool:
        return self.late_due is not None and moment > self.late_due

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def uploads_dir(data: Path) -> Path:
    return Path(data) / SERVICE_DIR / "uploads"


def history_dir(data: Path) -> Path:
    return Path(data) / SERVICE_DIR / "history"


def incoming_dir(data: Path) -> Path:
    return Path(data) / SERVICE_DIR / "incoming"


def parse_due(text: str) -> float:
    """An ISO 8601 date-time (``2026-12-20T23:59``, ``2026-12-20 23:59+01:00``); without an offset it is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--due {text!r} is not a date and time: write it as 2026-12-20T23:59 (UTC) or "
                         "2026-12-20T23:59+01:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def when(epoch: float | None) -> str:
    """A time as students read it (UTC, to the minute)."""
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
