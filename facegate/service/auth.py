"""What each role may do, and the per-process caches in front of the key table.

Keys themselves (creation, revocation, lookup) live in :mod:`facegate.storage.apikeys`. Roles:

- ``admin``: everything, including erasing subjects, reading the audit trail and keys;
- ``operator``: enrol and update subjects and faces (no erase, no keys, no matching);
- ``kiosk`` and ``app``: verify, identify, compare and liveness.
"""
from __future__ import annotations

import math
import threading
import time

from facegate.errors import FacegateError
from facegate.storage.apikeys import ApiKey, hash_key

MATCHING = frozenset({"verify", "identify", "compare", "liveness"})
PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"*"}),
    "operator": frozenset({"subjects:read", "subjects:write", "faces:write", "certifications:read",
                           "certify:manual"}),
    "kiosk": MATCHING | {"kiosk:authenticate"},
    "app": MATCHING | {"certify"},
}


def may(role: str, permission: str) -> bool:
    granted = PERMISSIONS.get(role, frozenset())
    return "*" in granted or permission in granted


class KeyCache:
    """Recently authenticated keys by hash, so most requests skip the database; a revocation
    takes effect within ``ttl`` seconds."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._keys: dict[str, tuple[ApiKey, float]] = {}
        self._lock = threading.Lock()

    def get(self, presented: str | None) -> ApiKey | None:
        if not presented or self.ttl <= 0:
            return None
        h = hash_key(presented)
        with self._lock:
            hit = self._keys.get(h)
            if hit is None or hit[1] < time.monotonic():
                self._keys.pop(h, None)
                return None
            return hit[0]

    def put(self, presented: str, key: ApiKey) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._keys) > 10_000:
                self._keys.clear()
            self._keys[hash_key(presented)] = (key, time.monotonic() + self.ttl)


class RateLimiter:
    """Token bucket per key: ``limit`` requests per minute, bursts up to ``limit``.

    Kept in process memory: with N uvicorn workers a key can reach N times its limit.
    """

    def __init__(self):
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key_id: str, per_minute: int) -> None:
        if per_minute <= 0:
            return
        rate = per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[key_id] = (tokens, now)
                retry = max(1, math.ceil((1.0 - tokens) / rate))
                raise FacegateError("rate_limited", f"more than {per_minute} requests per minute for this key",
                                    retry_after=retry, limit_per_minute=per_minute)
            self._buckets[key_id] = (tokens - 1.0, now)
