"""UTC time, as the database, the API and the audit trail use it."""
from __future__ import annotations

from datetime import datetime, timezone

from facegate.errors import FacegateError


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(ts: datetime | None) -> str | None:
    """ISO-8601 with a ``Z``; naive datetimes (SQLite hands them back) were stored as UTC."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_instant(text: str | None, field: str = "as_of") -> datetime | None:
    """An ISO-8601 date or time from a caller (naive = UTC); ``invalid_request`` otherwise."""
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise FacegateError("invalid_request", f"{field} must be an ISO-8601 date or time", field=field)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
