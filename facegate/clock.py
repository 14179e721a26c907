"""UTC time, as the database, the API and the audit trail use it.

Tests may fix "now": :func:`fixed` in-process, or ``FACEGATE_FIXED_NOW`` (ISO-8601) for a CLI
or server subprocess. Retention and the compliance report read the time only through
:func:`utcnow`, so "purged on time and not before" is tested at exact instants.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

from facegate.errors import FacegateError

_fixed: datetime | None = None


def utcnow() -> datetime:
    if _fixed is not None:
        return _fixed
    env = os.environ.get("FACEGATE_FIXED_NOW")
    if env:
        return parse_instant(env, "FACEGATE_FIXED_NOW")
    return datetime.now(timezone.utc)


@contextmanager
def fixed(at: datetime) -> Iterator[datetime]:
    """Within the block, :func:`utcnow` answers ``at`` (tests)."""
    global _fixed
    before, _fixed = _fixed, (at if at.tzinfo else at.replace(tzinfo=timezone.utc))
    try:
        yield _fixed
    finally:
        _fixed = before


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
