"""Failed console sign-ins counted per key (table ``sign_in_failures``), shared by every replica.

A key is what a failure is held against: a source address, a sign-in name (whether or not an
operator has it) or a device cookie. Counting one is one atomic upsert on its row in a short
transaction of its own (:func:`facegate.storage.ratelimits.short_transaction`), never under the
database-wide write lock, so a stream of failed sign-ins does not queue other writes. A count
whose last failure is older than ``forget_s`` starts again at one. What the counts mean (the
delays) is decided by :mod:`facegate.workflows.review.operators`.
"""
from __future__ import annotations

import sqlalchemy as sa

from facegate.storage.ratelimits import short_transaction
from facegate.storage.schema import sign_in_failures

_FAIL = sa.text(
    "INSERT INTO sign_in_failures (key, failures, last_at) VALUES (:key, 1, :now) "
    "ON CONFLICT (key) DO UPDATE SET "
    "failures = CASE WHEN :now - sign_in_failures.last_at >= :forget THEN 1 "
    "ELSE sign_in_failures.failures + 1 END, last_at = :now "
    "RETURNING failures")


def counts(db: sa.Engine, keys: list[str]) -> dict[str, tuple[int, float]]:
    """key -> (failures, epoch seconds of the last one), for the keys that have any."""
    if not keys:
        return {}
    c = sign_in_failures.c
    with db.connect() as conn:
        rows = conn.execute(sa.select(c.key, c.failures, c.last_at).where(c.key.in_(keys))).all()
    return {r.key: (int(r.failures), float(r.last_at)) for r in rows}


def fail(db: sa.Engine, keys: list[str], now: float, forget_s: float) -> dict[str, int]:
    """Count one failure against each key; key -> its count now."""
    out = {}
    with short_transaction(db) as conn:
        for key in keys:
            out[key] = int(conn.execute(_FAIL, {"key": key, "now": float(now), "forget": float(forget_s)}).scalar())
    return out


def clear(db: sa.Engine, keys: list[str] = (), prefixes: list[str] = ()) -> int:
    """Forget the keys, and every key that starts with one of ``prefixes``; how many rows went."""
    c = sign_in_failures.c
    conditions = ([c.key.in_(list(keys))] if keys else []) + [c.key.startswith(p, autoescape=True) for p in prefixes]
    if not conditions:
        return 0
    with short_transaction(db) as conn:
        return int(conn.execute(sign_in_failures.delete().where(sa.or_(*conditions))).rowcount or 0)


def prune(db: sa.Engine, now: float, forget_s: float) -> int:
    """Delete counts nobody added to for ``forget_s`` (they would start again at one anyway)."""
    with short_transaction(db) as conn:
        result = conn.execute(sign_in_failures.delete().where(sign_in_failures.c.last_at < now - forget_s))
        return int(result.rowcount or 0)
