"""The per-process service state and the FastAPI dependencies built on it.

``ServiceState`` is created once per worker process by the app's lifespan: the face engine
(models loaded once), the database, the gallery, the bounded inference pool and the rate
limiter. Route handlers reach it through :func:`state` and authorise with :func:`require`.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool

from facegate.config import Settings
from facegate.errors import FacegateError
from facegate.service import auth, metrics
from facegate.service.auth import ApiKey, KeyCache, RateLimiter
from facegate.service.inference import InferencePool

log = logging.getLogger("facegate.service")

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="an API key from `facegate keys create`")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:@/-]{1,64}$")


@dataclass
class ServiceState:
    settings: Settings
    db: object                     # sqlalchemy Engine
    engine: object = None          # FaceEngine, set once the models are loaded
    gallery: object = None
    pool: InferencePool | None = None
    limiter: RateLimiter = field(default_factory=RateLimiter)
    keys: KeyCache = field(default_factory=lambda: KeyCache(0))
    liveness: object = None        # optional: liveness session store, see routers/verify.py
    ledger: object = None          # certification ledger, made on first use (routers/certifications.py)
    document_points: object = None  # operating points for ID-card chip photos (routers/kiosk.py)
    last_sync: float = 0.0
    index_stats: dict = field(default_factory=dict)   # counts from the last sync, shown by /readyz
    staged_seen: dict = field(default_factory=dict)   # the index's early-stop totals already counted
    sync_error: str | None = None
    started: float = field(default_factory=time.time)

    @property
    def models_loaded(self) -> bool:
        return self.engine is not None and self.gallery is not None

    def sync_index(self) -> None:
        """Apply gallery changes made by other processes (the change_log) to this index."""
        try:
            self.gallery.sync()
            self.last_sync = time.monotonic()
            self.sync_error = None
        except Exception as exc:  # the database may be briefly unavailable; /readyz reports it
            self.sync_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("gallery sync failed: %s", self.sync_error)
            raise

    def index_current(self) -> bool:
        return (self.sync_error is None and self.last_sync > 0
                and time.monotonic() - self.last_sync <= max(5.0, 3 * self.settings.index_sync_s))


def state(request: Request) -> ServiceState:
    st = getattr(request.app.state, "facegate", None)
    if st is None or not st.models_loaded:
        raise FacegateError("not_ready", "models are still loading")
    return st


def client_id(request: Request, key: ApiKey | None) -> str | None:
    """The kiosk/device id: header ``X-Client-Id`` if well-formed, else the key's."""
    header = request.headers.get("x-client-id")
    if header and _CLIENT_ID.match(header):
        return header
    return key.client_id if key else None


def require(permission: str):
    """Dependency: a valid ``X-API-Key`` whose role grants ``permission``, within its rate limit."""

    async def dependency(request: Request, st: ServiceState = Depends(state),
                         presented: str | None = Security(API_KEY_HEADER)) -> ApiKey:
        key = st.keys.get(presented)
        if key is None:
            with metrics.stage("auth"):
                key = await run_in_threadpool(auth.authenticate, st.db, presented)
            st.keys.put(presented, key)
        request.state.key = key
        st.limiter.take(key.key_id, key.rate_limit_per_minute or st.settings.rate_limit_per_minute)
        if not auth.may(key.role, permission):
            raise FacegateError("forbidden", f"role {key.role!r} may not {permission}",
                                role=key.role, permission=permission)
        return key

    return dependency
