"""API keys, roles and per-key rate limits.

A key is ``fg_<key id>.<secret>``; only the sha256 of the whole key is stored (table
``api_keys``), so a leaked database does not reveal usable keys. Roles:

- ``admin``: everything, including erasing subjects, reading the audit trail and keys;
- ``operator``: enrol and update subjects and faces (no erase, no keys, no matching);
- ``kiosk`` and ``app``: verify, identify, compare and liveness.
"""
from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

from facegate.errors import FacegateError

ROLES = ("admin", "operator", "kiosk", "app")
MATCHING = frozenset({"verify", "identify", "compare", "liveness"})
PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"*"}),
    "operator": frozenset({"subjects:read", "subjects:write", "faces:write", "certifications:read",
                           "certify:manual"}),
    "kiosk": MATCHING | {"kiosk:authenticate"},
    "app": MATCHING | {"certify"},
}
KEY_PREFIX = "fg_"


def may(role: str, permission: str) -> bool:
    granted = PERMISSIONS.get(role, frozenset())
    return "*" in granted or permission in granted


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    role: str
    name: str | None = None
    client_id: str | None = None
    rate_limit_per_minute: int | None = None
    created_at: str | None = None
    revoked_at: str | None = None

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"

    def as_dict(self) -> dict:
        return {"key_id": self.key_id, "role": self.role, "name": self.name, "client_id": self.client_id,
                "rate_limit_per_minute": self.rate_limit_per_minute, "created_at": self.created_at,
                "revoked_at": self.revoked_at}


def _table():
    from facegate.storage.schema import api_keys
    return api_keys


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _row_to_key(row) -> ApiKey:
    m = row._mapping
    ts = lambda v: v.isoformat() if isinstance(v, datetime) else v  # noqa: E731
    return ApiKey(key_id=m["key_id"], role=m["role"], name=m["name"], client_id=m["client_id"],
                  rate_limit_per_minute=m["rate_limit_per_minute"], created_at=ts(m["created_at"]),
                  revoked_at=ts(m["revoked_at"]))


def create_key(db: sa.Engine, role: str, name: str | None = None, client_id: str | None = None,
               rate_limit_per_minute: int | None = None) -> tuple[str, ApiKey]:
    """A new key: returns the secret (shown once) and its record."""
    if role not in ROLES:
        raise FacegateError("invalid_request", f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    key_id = "k_" + secrets.token_hex(6)
    secret = f"{KEY_PREFIX}{key_id}.{secrets.token_urlsafe(32)}"
    table = _table()
    with db.begin() as conn:
        conn.execute(table.insert().values(key_id=key_id, name=name, role=role, key_hash=hash_key(secret),
                                           created_at=_now(), revoked_at=None,
                                           rate_limit_per_minute=rate_limit_per_minute, client_id=client_id))
        row = conn.execute(sa.select(table).where(table.c.key_id == key_id)).one()
    return secret, _row_to_key(row)


def list_keys(db: sa.Engine) -> list[ApiKey]:
    table = _table()
    with db.connect() as conn:
        return [_row_to_key(r) for r in conn.execute(sa.select(table).order_by(table.c.created_at))]


def revoke_key(db: sa.Engine, key_id: str) -> ApiKey:
    table = _table()
    with db.begin() as conn:
        row = conn.execute(sa.select(table).where(table.c.key_id == key_id)).one_or_none()
        if row is None:
            raise FacegateError("not_found", f"no API key {key_id!r}")
        if row._mapping["revoked_at"] is None:
            conn.execute(table.update().where(table.c.key_id == key_id).values(revoked_at=_now()))
        row = conn.execute(sa.select(table).where(table.c.key_id == key_id)).one()
    return _row_to_key(row)


def authenticate(db: sa.Engine, presented: str | None) -> ApiKey:
    """The active key for an ``X-API-Key`` value, or ``unauthorized``."""
    if not presented or not presented.startswith(KEY_PREFIX) or len(presented) > 200:
        raise FacegateError("unauthorized")
    table = _table()
    with db.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.key_hash == hash_key(presented))).one_or_none()
    if row is None or row._mapping["revoked_at"] is not None:
        raise FacegateError("unauthorized", "the API key is unknown or revoked")
    return _row_to_key(row)


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
