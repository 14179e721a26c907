"""The per-process service state and the FastAPI dependencies built on it.

``ServiceState`` is created once per worker process, completely, by the app's lifespan: the
face engine (models loaded once), the database, the gallery, liveness, the certification
ledger, the workflows' context, the bounded inference pool and the per-key caches. Route
handlers reach it through :func:`state` and authorise with :func:`require`.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from facegate.config import Settings
from facegate.engine import FaceEngine
from facegate.errors import FacegateError
from facegate.gallery.gallery import Gallery
from facegate.liveness.service import LivenessService
from facegate.service import auditing, auth, metrics
from facegate.service.auth import KeyCache, RateLimiter
from facegate.service.inference import InferencePool
from facegate.service.review_waits import ReviewWaits
from facegate.liveness import tokens
from facegate.storage.changefeed import Listener
from facegate.storage.apikeys import ApiKey
from facegate.workflows.certification.ledger import CertificationLedger
from facegate.workflows.context import WorkflowContext
from facegate.workflows.review.desk import ReviewDesk
from facegate.workflows.review.operators import Operators

log = logging.getLogger("facegate.service")

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="an API key from `facegate keys create`")
CAPTURE_TOKEN = HTTPBearer(auto_error=False, scheme_name="CaptureToken",
                           description="a liveness session's capture token (`capture_token` of POST "
                                       "/v1/liveness/sessions): opens that session's capture and status calls only")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:@/-]{1,64}$")


@dataclass
class ServiceState:
    settings: Settings
    db: sa.Engine
    engine: FaceEngine
    gallery: Gallery
    liveness: LivenessService
    ledger: CertificationLedger
    workflows: WorkflowContext
    pool: InferencePool
    limiter: RateLimiter                              # token buckets in the database, shared by all replicas
    review: ReviewDesk                                # decisions that went to a person (the console's queue)
    operators: Operators                              # console operators, their sign-in and sessions
    keys: KeyCache = field(default_factory=lambda: KeyCache(0))   # on only while the change feed is connected
    listener: Listener | None = None                  # the change feed (PostgreSQL); None on SQLite
    review_waits: ReviewWaits = field(default_factory=ReviewWaits)   # kiosks long-polling their review case
    last_sync: float = 0.0
    index_stats: dict = field(default_factory=dict)   # counts from the last sync, shown by /readyz
    staged_seen: dict = field(default_factory=dict)   # the index's early-stop totals already counted
    sync_error: str | None = None
    started: float = field(default_factory=time.time)

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
    if st is None:
        raise FacegateError("not_ready", "models are still loading")
    return st


StateDep = Annotated[ServiceState, Depends(state)]


def client_id(request: Request, key: ApiKey | None) -> str | None:
    """The kiosk/device a request is recorded against.

    A key that belongs to a device is pinned to it: its client id, or for a ``kiosk`` key
    without one its own key id (the kiosk id comes from the key, never from the caller). For
    such keys a different ``X-Client-Id`` header is refused (``client_id_mismatch``); other keys
    may name their device with the header."""
    header = request.headers.get("x-client-id")
    pinned = key and (key.client_id or (key.key_id if key.role == "kiosk" else None))
    if pinned:
        if header is not None and header != pinned:
            raise FacegateError("client_id_mismatch", f"this key belongs to client {pinned!r}; X-Client-Id "
                                f"{header[:64]!r} is not it", client_id=pinned)
        return pinned
    return header if header and _CLIENT_ID.match(header) else None


def require(permission: str):
    """Dependency: a valid ``X-API-Key`` whose role grants ``permission``, within its rate limit.
    A refusal (401/403) is audited (:func:`facegate.service.auditing.record_refusal`)."""

    async def dependency(request: Request, st: StateDep,
                         presented: str | None = Security(API_KEY_HEADER)) -> ApiKey:
        key = None
        try:
            key = st.keys.get(presented)
            if key is None:
                generation = st.keys.generation   # a revocation announced during the lookup keeps it out of the cache
                with metrics.stage("auth"):
                    key = await run_in_threadpool(auth.authenticate, st.db, presented)
                st.keys.put(presented, key, generation)
            request.state.key = key
            request.state.client_id = client_id(request, key)
            with metrics.stage("ratelimit"):
                await run_in_threadpool(st.limiter.take, key.key_id,
                                        key.rate_limit_per_minute or st.settings.rate_limit_per_minute)
            if not auth.may(key.role, permission):
                raise FacegateError("forbidden", f"role {key.role!r} may not {permission}",
                                    role=key.role, permission=permission)
            return key
        except FacegateError as exc:
            if exc.status in (401, 403):
                await run_in_threadpool(auditing.record_refusal, st, request, key, exc)
            raise

    return dependency


@dataclass(frozen=True)
class CaptureCaller:
    """Who calls a liveness session's capture routes: an API key, or the session's capture token
    (acting for the key that opened the session)."""
    key: ApiKey | None
    owner: str | None              # the key id sessions are owned by
    token_session: str | None = None

    @property
    def actor(self) -> str:
        return f"capture:{self.token_session}" if self.token_session else self.key.actor


def capture_access():
    """Dependency of a session's capture and status routes: ``X-API-Key`` with the ``liveness``
    permission, or ``Authorization: Bearer <capture token>`` of the session in the path."""
    by_key = require("liveness")

    async def dependency(request: Request, st: StateDep, session_id: str,
                         presented: str | None = Security(API_KEY_HEADER),
                         bearer: HTTPAuthorizationCredentials | None = Security(CAPTURE_TOKEN)) -> CaptureCaller:
        if presented or bearer is None:
            key = await by_key(request, st, presented)
            return CaptureCaller(key, key.key_id)
        token = bearer.credentials
        try:
            named = tokens.session_of(token)
            if named is None:
                raise FacegateError("unauthorized", "the bearer credential is not a capture token")
            if named != session_id:
                raise FacegateError("forbidden", "this capture token belongs to another liveness session")
            session = st.liveness.sessions.by_token(session_id, token)
        except FacegateError as exc:
            await run_in_threadpool(auditing.record_refusal, st, request, None, exc)
            raise
        with metrics.stage("ratelimit"):
            await run_in_threadpool(st.limiter.take, f"capture:{session_id}", st.settings.rate_limit_per_minute)
        request.state.client_id = None
        return CaptureCaller(None, session.owner, session_id)

    return dependency
