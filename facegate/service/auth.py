"""What each role may do, how a presented key is looked up, and the per-key rate limit.

Keys themselves (creation, revocation, lookup) live in :mod:`facegate.storage.apikeys`, the
token buckets in :mod:`facegate.storage.ratelimits`; this module holds the policy. Roles:

- ``admin``: everything, including erasing subjects, reading the audit trail and keys;
- ``operator``: enrol and update subjects and faces (no erase, no keys, no matching);
- ``kiosk`` and ``app``: verify, identify, compare and liveness.
"""
from __future__ import annotations

import math
import threading
import time

import sqlalchemy as sa

from facegate.errors import FacegateError
from facegate.storage import apikeys, ratelimits
from facegate.storage.apikeys import ApiKey, hash_key

PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"*"}),
    "operator": frozenset({"subjects:read", "subjects:write", "faces:write", "certifications:read",
                           "certify:manual", "consent:write", "consent:withdraw"}),
    # The kiosk software (on the kiosk's own computer, not in its browser) searches the gallery
    # for people without an ID card; the pension app's backend never needs to: a device
    # credential must not turn any photo into a subject id with a score.
    "kiosk": frozenset({"verify", "identify", "compare", "liveness", "kiosk:authenticate"}),
    "app": frozenset({"verify", "compare", "liveness", "certify"}),
}
# Roles whose 1:1 verify is bound to their own liveness session for the subject (see verify_scope).
SESSION_BOUND_VERIFY = frozenset({"app"})


def may(role: str, permission: str) -> bool:
    granted = PERMISSIONS.get(role, frozenset())
    return "*" in granted or permission in granted


def verify_scope(key: ApiKey, subject_id: str, session_subject: str | None) -> None:
    """The app answers for pensioners it is certifying, not for anyone: its verify needs a
    liveness session it opened naming that subject (``session_subject``: the subject of the
    session the request names, None without one; ``forbidden`` otherwise)."""
    if key.role in SESSION_BOUND_VERIFY and session_subject != subject_id:
        raise FacegateError("forbidden", f"role {key.role!r} verifies only the subject of a liveness session it "
                            "opened for that subject (send its liveness_session_id)", role=key.role,
                            permission="verify")


def authenticate(db: sa.Engine, presented: str | None) -> ApiKey:
    """The active key for ``presented`` (:func:`facegate.storage.apikeys.authenticate`); a
    database that cannot be reached answers 503 ``not_ready`` (retry) rather than 500."""
    try:
        return apikeys.authenticate(db, presented)
    except sa.exc.OperationalError as exc:
        raise _unavailable(exc) from None


def _unavailable(exc: Exception) -> FacegateError:
    return FacegateError("not_ready", "the database cannot be reached; retry shortly", retry_after=1,
                         error=type(getattr(exc, "orig", None) or exc).__name__)


class KeyCache:
    """Authenticated keys by hash, so that most requests skip the key table, **only while a
    revocation reaches this process at once**.

    The rule: a key may be served from the cache only while the change feed is connected
    (:class:`facegate.storage.changefeed.Listener` on PostgreSQL), because the feed announces
    every revocation (:func:`drop`) at its commit. While it is not connected (SQLite, which
    has no feed; PostgreSQL before the feed connects or after it broke) the cache is off and
    every request reads the key table, so a revoked key is refused on the very next request
    either way. When the feed (re)connects the cache starts empty (:func:`reset`): a
    revocation may have been missed meanwhile. ``ttl`` (``FACEGATE_KEY_CACHE_S``) only bounds
    how long an entry lives; revocation does not depend on it.

    A lookup that started before a revocation was announced must not put its (now stale) key
    back afterwards: :attr:`generation` is read before the lookup and :meth:`put` ignores the
    key when a drop or reset happened since. Costs: benchmarks/results/replicas.md.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float, enabled: bool = False):
        self.ttl = ttl
        self._enabled = enabled
        self._keys: dict[str, tuple[ApiKey, float]] = {}
        self._lock = threading.Lock()
        self.generation = 0

    @property
    def enabled(self) -> bool:
        return self._enabled and self.ttl > 0

    def get(self, presented: str | None) -> ApiKey | None:
        if not presented or not self.enabled:
            return None
        h = hash_key(presented)
        with self._lock:
            hit = self._keys.get(h)
            if hit is None or hit[1] < time.monotonic():
                self._keys.pop(h, None)
                return None
            return hit[0]

    def put(self, presented: str, key: ApiKey, generation: int | None = None) -> None:
        """Cache ``key``, unless the cache is off or a drop/reset happened after ``generation``
        (read before the lookup)."""
        if not self.enabled:
            return
        with self._lock:
            if not self._enabled or (generation is not None and generation != self.generation):
                return
            if len(self._keys) >= self.MAX_ENTRIES:
                self._keys.clear()
            self._keys[hash_key(presented)] = (key, time.monotonic() + self.ttl)

    def drop(self, key_id: str) -> None:
        """Forget ``key_id`` (it was revoked)."""
        with self._lock:
            self.generation += 1
            for h in [h for h, (k, _) in self._keys.items() if k.key_id == key_id]:
                del self._keys[h]

    def reset(self, enabled: bool) -> None:
        """Empty the cache and switch it on (the feed connected) or off (the feed broke)."""
        with self._lock:
            self.generation += 1
            self._keys.clear()
            self._enabled = enabled

    def __len__(self) -> int:
        return len(self._keys)


class RateLimiter:
    """Token bucket per key: ``limit`` requests per minute, bursts up to ``limit``; over it,
    ``rate_limited`` (429) with ``retry_after`` (whole seconds, at least 1: ``Retry-After``).

    The buckets live in the database (:mod:`facegate.storage.ratelimits`, one atomic statement
    per request), so the limit holds across worker processes and replicas: N processes do not
    give a key N times its limit. A limit of 0 or less means no limit (no statement).
    """

    def __init__(self, db: sa.Engine):
        self.db = db

    def take(self, bucket: str, per_minute: int) -> None:
        if per_minute <= 0:
            return
        try:
            taken = ratelimits.take(self.db, bucket, per_minute)
        except sa.exc.OperationalError as exc:
            raise _unavailable(exc) from None
        if not taken.allowed:
            raise FacegateError("rate_limited", f"more than {per_minute} requests per minute for this key",
                                retry_after=max(1, math.ceil(taken.retry_after_s)), limit_per_minute=per_minute)
