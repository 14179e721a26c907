"""Token buckets in the database (table ``rate_buckets``), shared by every process and replica.

A bucket holds ``tokens`` as of ``updated`` (epoch seconds). Taking one is **one atomic
statement** on one row::

    INSERT ... VALUES (bucket, cap - 1, now)                       -- a new bucket starts full
    ON CONFLICT (bucket) DO UPDATE SET tokens = level - 1, updated = now
        WHERE level >= 1                                           -- level = min(cap, tokens + elapsed * rate)
    RETURNING tokens

A row comes back when the token was taken; none when the bucket is empty. Decisions, and why:

- **One statement in its own short transaction, not**
  :func:`facegate.storage.db.write_transaction`: the upsert is atomic on its row (PostgreSQL
  locks the row and re-evaluates ``WHERE`` on the newest version; SQLite has one writer), so
  nothing else needs to be serialised, and the global write lock would queue every request
  behind every enrolment. On PostgreSQL it runs in autocommit, which spares the ``BEGIN`` and
  ``COMMIT`` round trips.
- **A refusal changes nothing.** Refilling is linear in time, so leaving the row alone is the
  same as storing the refilled level (which is under 1, hence under the cap): a client that
  keeps knocking is not punished beyond the limit. The refusal path reads the row once more
  for ``Retry-After``.
- **Time comes from the database's clock** (``clock_timestamp()`` / ``julianday('now')``), so
  replicas whose clocks disagree cannot mint tokens; ``now=`` is for tests. Elapsed time is
  never negative.
- ``cap`` = the limit per minute and ``rate`` = limit / 60 per second, so an untouched bucket is
  full again after 60 s at most: :func:`prune` deletes buckets idle longer than that, which
  is the same as keeping them (a missing bucket starts full).

Needs ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``: PostgreSQL >= 9.5, SQLite >= 3.35.
Cost per call: benchmarks/results/replicas.md.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import sqlalchemy as sa

REFILL_S = 60.0       # a bucket refills from empty to full within this long, whatever its limit

_CLOCK = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}
_SQLITE_NORMAL = 1    # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA
_LEAST = {"postgresql": "LEAST", "sqlite": "MIN"}
_GREATEST = {"postgresql": "GREATEST", "sqlite": "MAX"}


@dataclass(frozen=True)
class Take:
    """The outcome of :func:`take`: ``allowed``; the tokens left (after the take when allowed);
    and, when refused, the seconds until one whole token is there again."""
    allowed: bool
    tokens: float
    retry_after_s: float = 0.0


def _dialect(db: sa.Engine | sa.Connection) -> str:
    name = db.dialect.name
    if name not in _CLOCK:
        raise ValueError(f"rate buckets need PostgreSQL or SQLite, not {name}")
    return name


@lru_cache(maxsize=None)
def _statements(dialect: str, clock_given: bool) -> tuple[sa.TextClause, sa.TextClause]:
    now = ":now" if clock_given else _CLOCK[dialect]
    least, greatest = _LEAST[dialect], _GREATEST[dialect]
    level = (f"{least}(CAST(:cap AS DOUBLE PRECISION), rate_buckets.tokens + "
             f"{greatest}(0.0, {now} - rate_buckets.updated) * :rate)")
    take = sa.text(
        "INSERT INTO rate_buckets (bucket, tokens, updated) "
        f"VALUES (:bucket, CAST(:cap AS DOUBLE PRECISION) - 1.0, {now}) "
        "ON CONFLICT (bucket) DO UPDATE "
        f"SET tokens = {level} - 1.0, updated = {now} "
        f"WHERE {level} >= 1.0 "
        "RETURNING tokens")
    peek = sa.text(f"SELECT {level} AS level FROM rate_buckets WHERE bucket = :bucket")
    return take, peek


@contextmanager
def short_transaction(db: sa.Engine) -> Iterator[sa.Connection]:
    """PostgreSQL: autocommit (each statement its own transaction: no BEGIN/COMMIT round trips).
    SQLite: a plain transaction (its connections are set up for explicit BEGINs by
    :mod:`facegate.storage.db`, which SQLAlchemy's AUTOCOMMIT switch would undo on return),
    committed without waiting for the disk (``synchronous=NORMAL`` for this transaction
    only): a bucket lost in a power cut returns at most the tokens of its last moments, which
    does not justify an fsync on every request (the connection's own setting is restored)."""
    if db.dialect.name == "postgresql":
        with db.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")
        return
    with db.connect() as conn:
        raw = conn.connection.dbapi_connection
        level = raw.execute("PRAGMA synchronous").fetchone()[0]
        if level > _SQLITE_NORMAL:
            raw.execute(f"PRAGMA synchronous={_SQLITE_NORMAL}")
        try:
            with conn.begin():
                yield conn
        finally:
            if level > _SQLITE_NORMAL:
                raw.execute(f"PRAGMA synchronous={int(level)}")


def take(db: sa.Engine, bucket: str, per_minute: float, *, now: float | None = None) -> Take:
    """Take one token from ``bucket`` (``per_minute`` tokens a minute, bursts up to
    ``per_minute``), creating it full when missing."""
    if per_minute <= 0:
        raise ValueError("per_minute must be positive (a limit of 0 means no limit: do not call take)")
    cap, rate = float(per_minute), float(per_minute) / REFILL_S
    stmt, peek = _statements(_dialect(db), now is not None)
    params = {"bucket": bucket, "cap": cap, "rate": rate}
    if now is not None:
        params["now"] = float(now)
    with short_transaction(db) as conn:
        left = conn.execute(stmt, params).scalar()
        if left is not None:
            return Take(True, float(left))
        level = conn.execute(peek, params).scalar()
    level = 0.0 if level is None else float(level)
    return Take(False, level, max(0.0, (1.0 - level) / rate))


def prune(db: sa.Engine, *, now: float | None = None) -> int:
    """Delete buckets idle for longer than :data:`REFILL_S` (they are full, as a missing one
    is); returns how many."""
    dialect = _dialect(db)
    clock = ":now" if now is not None else _CLOCK[dialect]
    with short_transaction(db) as conn:
        result = conn.execute(sa.text(f"DELETE FROM rate_buckets WHERE updated < {clock} - :idle"),
                              {"idle": REFILL_S, **({"now": float(now)} if now is not None else {})})
        return int(result.rowcount or 0)
