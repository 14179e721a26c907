"""What the console's other screens read: kiosks per day, the audit trail searched, a subject's
stored data. Read-only, bounded, no images. And the one rule for a CSV cell (:func:`csv_safe`),
which the console's and the CLI's certification exports both follow."""
from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from facegate.clock import iso, utcnow
from facegate.errors import FacegateError
from facegate.storage import audit
from facegate.storage.schema import (audit_log, certifications, kiosk_events, kiosks, reference_photos,
                                     review_cases, subjects, templates)

MAX_DAYS = 92
MAX_AUDIT_PAGE = 200


def csv_safe(value):
    """A cell a spreadsheet will not run as a formula: text starting with ``=``, ``+``, ``-``,
    ``@``, tab or CR gets a leading ``'`` (OWASP's CSV injection rule); anything else is unchanged."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def kiosks_per_day(db: sa.Engine, days: int = 14, now: datetime | None = None) -> dict:
    """Per kiosk per day: attempts, accepts (match), rejects (no_match), reviews, errors; and the
    disabled kiosks."""
    if not 1 <= int(days) <= MAX_DAYS:
        raise FacegateError("invalid_request", f"days is 1 to {MAX_DAYS}", field="days")
    since = (now or utcnow()) - timedelta(days=int(days))
    e = kiosk_events.c
    day = sa.func.date(e.created_at).label("day")
    q = (sa.select(e.kiosk_id, day, sa.func.count().label("attempts"),
                   *(sa.func.sum(sa.case((e.decision == d, 1), else_=0)).label(name)
                     for d, name in (("match", "accepts"), ("no_match", "rejects"), ("manual_review", "reviews"),
                                     ("error", "errors"))))
         .where(e.created_at >= since).group_by(e.kiosk_id, day).order_by(day.desc(), e.kiosk_id).limit(5000))
    with db.connect() as conn:
        rows = [{"kiosk_id": r.kiosk_id, "day": str(r.day), "attempts": int(r.attempts), "accepts": int(r.accepts or 0),
                 "rejects": int(r.rejects or 0), "reviews": int(r.reviews or 0), "errors": int(r.errors or 0)}
                for r in conn.execute(q).all()]
        disabled = [{"kiosk_id": r.kiosk_id, "location": r.location, "disabled_at": iso(r.disabled_at)}
                    for r in conn.execute(sa.select(kiosks).where(kiosks.c.status == "disabled")
                                          .order_by(kiosks.c.kiosk_id)).all()]
    return {"days": int(days), "rows": rows, "disabled": disabled}


def audit_search(db: sa.Engine, *, subject_id: str | None = None, operator: str | None = None,
                 operation: str | None = None, since: datetime | None = None, until: datetime | None = None,
                 after_seq: int = 0, limit: int = 100) -> dict:
    """Audit rows matching every given filter, oldest first from ``after_seq``, and the chain's status."""
    if not 1 <= int(limit) <= MAX_AUDIT_PAGE:
        raise FacegateError("invalid_request", f"limit is 1 to {MAX_AUDIT_PAGE}", field="limit")
    a = audit_log.c
    q = sa.select(audit_log).where(a.seq > int(after_seq)).order_by(a.seq).limit(int(limit))
    if subject_id:
        q = q.where(a.subject_id == subject_id)
    if operator:
        q = q.where(a.actor == f"operator:{operator}")
    if operation:
        q = q.where(a.operation == operation)
    if since:
        q = q.where(a.ts >= since.isoformat(timespec="microseconds"))
    if until:
        q = q.where(a.ts <= until.isoformat(timespec="microseconds"))
    with db.connect() as conn:
        rows = conn.execute(q).mappings().all()
    entries = [{k: v for k, v in r.items() if k not in ("prev_hash",)} | {"scores": audit._decoded(r["scores"]),
                                                                         "detail": audit._decoded(r["detail"])}
               for r in rows]
    return {"entries": entries, "next_after_seq": entries[-1]["seq"] if len(entries) == int(limit) else None}


def chain_status(db: sa.Engine) -> dict:
    with db.connect() as conn:
        return audit.verify(conn)


def subject_record(db: sa.Engine, subject_id: str) -> dict:
    """What is stored about a person: the subject row and counts of everything attached to it."""
    with db.connect() as conn:
        row = conn.execute(sa.select(subjects).where(subjects.c.subject_id == subject_id)).one_or_none()
        if row is None:
            raise FacegateError("unknown_subject", f"no subject {subject_id!r}", subject_id=subject_id)

        def count(table, col):
            return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(col == row.pk)).scalar())

        return {"subject_id": row.subject_id, "name": row.name, "status": row.status,
                "created_at": iso(row.created_at), "updated_at": iso(row.updated_at),
                "withdrawn_at": iso(row.withdrawn_at),
                "stored": {"templates": count(templates, templates.c.subject_pk),
                           "reference_photos": count(reference_photos, reference_photos.c.subject_pk),
                           "certifications": count(certifications, certifications.c.subject_pk),
                           "review_cases": count(review_cases, review_cases.c.subject_pk),
                           "consent": row.consent is not None, "metadata": row.metadata is not None}}
