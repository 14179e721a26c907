"""API keys: creation, listing, revocation and lookup, each change audited in its transaction.

A key is ``fg_<key id>.<secret>``; only the sha256 of the whole key is stored (table
``api_keys``), so a leaked database does not reveal usable keys. A key may carry a client id
(the kiosk or device it belongs to) and its own rate limit.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from facegate.clock import utcnow
from facegate.errors import FacegateError
from facegate.storage import audit, changefeed
from facegate.storage.db import write_transaction
from facegate.storage.schema import api_keys
from facegate.vocab import ROLES

KEY_PREFIX = "fg_"
MAX_PRESENTED = 200       # longer X-API-Key values are refused before hashing


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


def _key(row) -> ApiKey:
    m = row._mapping
    ts = lambda v: v.isoformat() if isinstance(v, datetime) else v  # noqa: E731
    return ApiKey(key_id=m["key_id"], role=m["role"], name=m["name"], client_id=m["client_id"],
                  rate_limit_per_minute=m["rate_limit_per_minute"], created_at=ts(m["created_at"]),
                  revoked_at=ts(m["revoked_at"]))


def _get(conn: sa.Connection, key_id: str) -> ApiKey:
    row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).one_or_none()
    if row is None:
        raise FacegateError("not_found", f"no API key {key_id!r}")
    return _key(row)


def insert_key(conn: sa.Connection, role: str, *, actor: str, name: str | None = None,
               client_id: str | None = None, rate_limit_per_minute: int | None = None) -> tuple[str, ApiKey]:
    """A new key, written and audited in the caller's write transaction: (secret, shown once; record)."""
    if role not in ROLES:
        raise FacegateError("invalid_request", f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    key_id = "k_" + secrets.token_hex(6)
    secret = f"{KEY_PREFIX}{key_id}.{secrets.token_urlsafe(32)}"
    conn.execute(api_keys.insert().values(key_id=key_id, name=name, role=role, key_hash=hash_key(secret),
                                          created_at=utcnow(), revoked_at=None,
                                          rate_limit_per_minute=rate_limit_per_minute, client_id=client_id))
    audit.append(conn, actor=actor, operation="key.create", outcome="created", key_id=key_id,
                 detail={"role": role, "name": name, "client_id": client_id})
    return secret, _get(conn, key_id)


def mark_revoked(conn: sa.Connection, key_id: str, *, actor: str) -> ApiKey:
    """Revoke a key in the caller's write transaction (audited; revoking twice changes nothing)."""
    key = _get(conn, key_id)
    if key.revoked_at is None:
        conn.execute(api_keys.update().where(api_keys.c.key_id == key_id).values(revoked_at=utcnow()))
        audit.append(conn, actor=actor, operation="key.revoke", outcome="revoked", key_id=key_id)
        changefeed.notify(conn, changefeed.KEYS, key_id)   # replicas drop it from their key caches at commit
    return _get(conn, key_id)


def create_key(db: sa.Engine, role: str, *, actor: str = "system", name: str | None = None,
               client_id: str | None = None, rate_limit_per_minute: int | None = None) -> tuple[str, ApiKey]:
    with write_transaction(db) as conn:
        return insert_key(conn, role, actor=actor, name=name, client_id=client_id,
                          rate_limit_per_minute=rate_limit_per_minute)


def revoke_key(db: sa.Engine, key_id: str, *, actor: str = "system") -> ApiKey:
    with write_transaction(db) as conn:
        return mark_revoked(conn, key_id, actor=actor)


def list_keys(db: sa.Engine) -> list[ApiKey]:
    with db.connect() as conn:
        return [_key(r) for r in conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at))]


def authenticate(db: sa.Engine, presented: str | None) -> ApiKey:
    """The active key for an ``X-API-Key`` value, or ``unauthorized``."""
    if not presented or not presented.startswith(KEY_PREFIX) or len(presented) > MAX_PRESENTED:
        raise FacegateError("unauthorized")
    with db.connect() as conn:
        row = conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == hash_key(presented))).one_or_none()
    if row is None or row._mapping["revoked_at"] is not None:
        raise FacegateError("unauthorized", "the API key is unknown or revoked")
    return _key(row)
