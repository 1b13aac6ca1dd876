"""The late policy (the rubric's ``late:`` section), extensions, and how late one submission was.

::

    late:
      due: 2026-12-01 23:59          # with an offset (2026-12-01 23:59:00-05:00), or naive + timezone
      timezone: America/New_York     # an IANA zone; daylight saving applied on the due date
      grace_minutes: 15              # a submission at most this late is on time
      penalty_percent: 10            # per started period, of the score (after staff adjustments)
      per: day                       # or hour
      max_penalty_percent: 50        # the cap
      hard_deadline: 2026-12-04 23:59   # optional: after it the score is 0

Lateness is measured from the due date (grace only forgives, it does not move the due date); a started
period counts whole (Canvas's rule). An extension (``extensions.csv``: student, due) replaces the due date
of that student and moves the hard deadline by the same amount. Pure functions, no I/O.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from grader.checks.base import RubricError

__all__ = ["LatePolicy", "Lateness", "parse_moment", "lateness"]

_PERIOD_S = {"hour": 3600.0, "day": 86400.0}


def parse_moment(value: Any, *, zone: str | None, where: str) -> datetime:
    """A time with its zone: an aware ``datetime`` (YAML reads one), ISO 8601 text with an offset or ``Z``
    (Gradescope's ``2026-12-01 23:59:00.123456 -0500`` too), or a naive time read in ``zone``.
    ValueError names ``where`` and says how to write it."""
    when = value
    if isinstance(value, str):
        when = _from_text(value.strip())
        if when is not None and re.fullmatch(r"\d{4}-\d\d-\d\d", value.strip()):  # a date alone: to its end
            when = when.replace(hour=23, minute=59, second=59)
    elif isinstance(value, date) and not isinstance(value, datetime):
        when = datetime(value.year, value.month, value.day, 23, 59, 59)  # a date alone: the end of that day
    if not isinstance(when, datetime):
        raise ValueError(f"{where}: {str(value)[:60]!r} is not a date and time; write e.g. 2026-12-01T23:59:00-05:00")
    if when.tzinfo is None:
        if not zone:
            raise ValueError(f"{where}: {str(value)[:60]!r} has no time zone; add an offset (-05:00, Z) or give "
                             "the late policy's timezone (e.g. America/New_York)")
        when = when.replace(tzinfo=_zone(zone, "late.timezone"))
    return when


def _from_text(text: str) -> datetime | None:
    cleaned = text.replace("Z", "+00:00").replace("z", "+00:00")
    head, _, tail = cleaned.rpartition(" ")
    if head and tail[:1] in "+-" and tail[1:].replace(":", "").isdigit():  # "... -0500": the zone, spaced
        cleaned = head + (tail if ":" in tail else f"{tail[:3]}:{tail[3:]}")
    if "." in cleaned:  # nanoseconds (Gradescope): Python reads at most 6 digits
        base, _, rest = cleaned.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        cleaned = f"{base}.{rest[:min(digits, 6)]}{rest[digits:]}" if digits else base + rest
    try:
        return datetime.fromisoformat(cleaned)
    except ValueError:
        return None


def _zone(name: str, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{where}: {name!r} is not a time zone; use an IANA name such as Europe/Berlin") from None


@dataclass(frozen=True)
class LatePolicy:
    due: Any  # required; normalised to an aware datetime by __post_init__
    timezone: str | None = None
    grace_minutes: float = 0.0
    penalty_percent: float = 0.0
    per: Literal["hour", "day"] = "day"
    max_penalty_percent: float = 100.0
    hard_deadline: Any = None

    def __post_init__(self) -> None:
        try:
            if self.timezone is not None:
                _zone(self.timezone, "late.timezone")
            object.__setattr__(self, "due", parse_moment(self.due, zone=self.timezone, where="late.due"))
            if self.hard_deadline is not None:
                hard = parse_moment(self.hard_deadline, zone=self.timezone, where="late.hard_deadline")
                if hard < self.due:
                    raise ValueError("late.hard_deadline: is before late.due")
                object.__setattr__(self, "hard_deadline", hard)
        except ValueError as exc:
            raise RubricError(str(exc)) from None
        for name, top in (("grace_minutes", None), ("penalty_percent", 100.0), ("max_penalty_percent", 100.0)):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (top is not None and value > top):
                raise RubricError(f"late.{name}: {value} must be between 0 and {top or 'any'}")

    def to_json(self) -> dict[str, Any]:
        return {"due": self.due.isoformat(), "timezone": self.timezone, "grace_minutes": self.grace_minutes,
                "penalty_percent": self.penalty_percent, "per": self.per,
                "max_penalty_percent": self.max_penalty_percent,
                "hard_deadline": self.hard_deadline.isoformat() if self.hard_deadline else None}


@dataclass(frozen=True)
class Lateness:
    """How late one submission was under the policy, and the share of its score the penalty takes."""

    submitted_at: str | None  # ISO 8601, or None when no time is known
    due: str | None  # this student's due date (an extension's when there is one)
    extended: bool
    late_by_s: float  # 0 when on time or within grace
    percent: float  # of the score, 0..100
    note: str  # one sentence for the student's report

    @property
    def late(self) -> bool:
        return self.late_by_s > 0


def _span(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours" if hours >= 1 else f"{seconds / 60:.0f} minutes"


def lateness(policy: LatePolicy | None, submitted: datetime | None, *, extension: datetime | None = None,
             lms_late: bool = False) -> Lateness:
    """The lateness of a submission made at ``submitted`` (None: unknown, never late)."""
    if policy is None:
        return Lateness(submitted.isoformat() if submitted else None, None, False, 0.0, 0.0, "")
    due = extension or policy.due
    shown_due = due.isoformat(timespec="minutes")
    if submitted is None:
        note = "No submission time is known, so this submission is not counted late."
        if lms_late:
            note += " (The LMS marked it late; staff can give its time in submission_times.csv.)"
        return Lateness(None, shown_due, extension is not None, 0.0, 0.0, note)
    late_s = (submitted - due).total_seconds()
    stamp = submitted.isoformat(timespec="minutes")
    base = dict(submitted_at=submitted.isoformat(), due=shown_due, extended=extension is not None)
    if late_s <= policy.grace_minutes * 60:
        return Lateness(**base, late_by_s=0.0, percent=0.0, note=f"Submitted {stamp}, on time (due {shown_due}).")
    hard = policy.hard_deadline and policy.hard_deadline + (due - policy.due)
    if hard and submitted > hard:
        return Lateness(**base, late_by_s=late_s, percent=100.0,
                        note=f"Submitted {stamp}, after the hard deadline {hard.isoformat(timespec='minutes')}: "
                             "the score is 0.")
    periods = math.ceil(late_s / _PERIOD_S[policy.per])
    percent = min(policy.max_penalty_percent, periods * policy.penalty_percent)
    return Lateness(**base, late_by_s=late_s, percent=percent,
                    note=f"Submitted {stamp}, {_span(late_s)} after the due date {shown_due}: {periods} "
                         f"{policy.per}(s) late, {percent:g} % of the score deducted.")
