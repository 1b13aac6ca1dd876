"""Who a result belongs to in the LMS, and when it was submitted, as intake recorded them in the provenance.

Intake (``grader.intake``) records the ids the LMS knows (a Canvas user id from the bulk download's file
names, a Gradescope SID and e-mail from ``submission_metadata.yml``) and the submission time (Gradescope's
``:created_at:``); this module is the one place that reads them back, so the exports agree.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from grader.core.results import SubmissionResult
from grader.gradebook.late import parse_moment

__all__ = ["lms_ids", "canvas_user_id", "release_id", "submitted_at", "lms_late", "aliases"]

_CANVAS_LATE_NOTE = "Canvas marked this submission late"


def _fields(result: SubmissionResult) -> dict[str, Any]:
    """Intake's identity fields (``source``, ``lms``: canvas|gradescope, ``lms_id``, ``email``), under the
    provenance's ``identity`` (or top-level), and any explicit ``canvas_user_id`` / ``gradescope_sid``."""
    provenance = result.provenance or {}
    nested = provenance.get("identity")
    fields = dict(nested) if isinstance(nested, dict) else {}
    for key in ("source", "lms", "lms_id", "email", "canvas_user_id", "gradescope_sid"):
        if key in provenance and key not in fields:
            fields[key] = provenance[key]
    return {k: str(v).strip() for k, v in fields.items() if isinstance(v, (str, int)) and not isinstance(v, bool)}


def _from_canvas(source: str, lms_id: str) -> bool:
    """Whether intake read ``lms_id`` from a Canvas bulk download's file name (``lastfirst[_LATE]_uid_...``):
    for a result written before intake recorded ``lms``."""
    return re.match(rf"^[^_/]+_(?:(?:LATE|late)_)?{re.escape(lms_id)}_", source.rsplit("/", 1)[-1]) is not None


def lms_ids(result: SubmissionResult) -> dict[str, str]:
    """The LMS identities intake recorded: some of canvas_user_id, gradescope_sid, email (non-empty text)."""
    fields = _fields(result)
    ids = {k: fields[k] for k in ("canvas_user_id", "gradescope_sid", "email") if fields.get(k)}
    lms_id = fields.get("lms_id", "")
    if lms_id and not {"canvas_user_id", "gradescope_sid"} & set(ids):
        lms = fields.get("lms") or ("canvas" if _from_canvas(fields.get("source", ""), lms_id) else "gradescope")
        ids["canvas_user_id" if lms == "canvas" else "gradescope_sid"] = lms_id
    return ids


def canvas_user_id(result: SubmissionResult) -> str | None:
    return lms_ids(result).get("canvas_user_id")


def release_id(result: SubmissionResult) -> tuple[str, str]:
    """(kind, id) a released page is named by: the Canvas user id, else the Gradescope SID, else the e-mail,
    else the folder name."""
    ids = lms_ids(result)
    for kind in ("canvas_user_id", "gradescope_sid", "email"):
        if ids.get(kind):
            return kind, ids[kind]
    return "student", result.student


def submitted_at(result: SubmissionResult) -> datetime | None:
    """When the LMS says it was submitted (an aware time), or None when unknown or unreadable."""
    value = (result.provenance or {}).get("submitted_at")
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_moment(value, zone=None, where="submitted_at")
    except ValueError:
        return None


def lms_late(result: SubmissionResult) -> bool:
    """Whether the LMS flagged it late (Canvas's ``LATE`` in the download's file name)."""
    provenance = result.provenance or {}
    if provenance.get("lms_late") is True:
        return True
    notes = provenance.get("intake_notes")
    return isinstance(notes, list) and _CANVAS_LATE_NOTE in notes


def aliases(results: list[SubmissionResult]) -> dict[str, str]:
    """Every name a staff file may use for a student -> the folder name: the folder name itself and each LMS
    id (an id two students share is dropped: it names neither)."""
    out: dict[str, str] = {r.student: r.student for r in results}
    shared: set[str] = set()
    for r in results:
        for value in lms_ids(r).values():
            if value in out and out[value] != r.student:
                shared.add(value)
            out.setdefault(value, r.student)
    return {k: v for k, v in out.items() if k not in shared or k == v}
