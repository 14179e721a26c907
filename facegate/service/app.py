"""The FastAPI application: ``create_app(settings)``.

Each worker process loads the models once at startup (lifespan), opens the database (bringing
its schema to the newest migration), builds the gallery index from it and then keeps the index
current by re-reading the change log: at once when the change feed announces a commit
(PostgreSQL: :mod:`facegate.storage.changefeed`), and every ``index_sync_s`` seconds in any
case (the fallback, and the only mechanism on SQLite). Every process is interchangeable: all
state a later request needs is in the database (rate buckets included), so any replica may
serve any request.

- ``/healthz``: 200 while the process is alive;
- ``/readyz``: 200 only when the models are loaded and the index is current, else 503 with
  ``"code": "not_ready"`` (a replica that lost its database says so within about
  ``index_sync_s`` and turns ready again by itself when the database is back);
- ``/metrics``: Prometheus; ``/docs``: OpenAPI.

CORS is off unless ``FACEGATE_CORS_ORIGINS`` lists origins (comma-separated). TLS: run behind a
reverse proxy, or pass uvicorn's ``--ssl-keyfile/--ssl-certfile`` (``facegate serve`` forwards
them).
"""
from __future__ import annotations

import asyncio
import os
import logging
import time
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from facegate.config import Settings
from facegate.engine import FaceEngine
from facegate.gallery.gallery import Gallery
from facegate.liveness.service import LivenessService
from facegate.models.runtime import PLACEMENTS
from facegate.service import capture_page, console_page, errors, metrics, openapi
from facegate.service.auth import KeyCache, RateLimiter
from facegate.service.deps import ServiceState
from facegate.service.inference import InferencePool
from facegate.service.middleware import ServiceMiddleware
from facegate.service.routers import (audit, certifications, compare, consent, console, identify, kiosk, liveness,
                                      subjects, verify)
from facegate.storage import changefeed, erasure, ratelimits, retention, signin_failures
from facegate.workflows.certification.ledger import CertificationLedger
from facegate.workflows.context import WorkflowContext
from facegate.workflows.review.desk import ReviewDesk
from facegate.workflows.review.operators import FORGET_S, Operators

log = logging.getLogger("facegate.service")

ROUTERS = (subjects, verify, identify, compare, audit, consent, certifications, kiosk, liveness, console)


def _load(settings: Settings) -> ServiceState:
    """Load the models, open the gallery (which opens and migrates the database) and build
    everything a request may need."""
    t0 = time.perf_counter()
    engine = FaceEngine.load(settings)
    gallery = Gallery(settings, engine)
    lv = LivenessService.load(engine, gallery.store, settings)
    ledger = CertificationLedger(settings, gallery.store, engine, gallery)
    st = ServiceState(settings=settings, db=gallery.store.db, engine=engine, gallery=gallery, liveness=lv,
                      ledger=ledger, review=ReviewDesk(settings, gallery.store, ledger,
                                       on_ended=lambda how, s: metrics.KIOSK_REVIEW_SECONDS.labels(how).observe(s)),
                      operators=Operators(settings, gallery.store, on_unaudited=metrics.REFUSALS_UNAUDITED.inc),
                      workflows=WorkflowContext(settings, engine, gallery, lv, observe=metrics.StageObserver()),
                      pool=InferencePool(settings.inference_concurrency, settings.inference_queue,
                                         settings.retry_after_s),
                      limiter=RateLimiter(gallery.store.db), keys=KeyCache(settings.key_cache_s))
    for placement in PLACEMENTS.values():
        metrics.MODEL_PLACEMENT.labels(placement.model, placement.runtime, placement.precision).set(1)
    st.sync_index()
    log.info("models and gallery loaded in %.1fs (pack %s, index %s)", time.perf_counter() - t0,
             engine.pack_id, gallery.opened_from)
    return st


def _gallery_gauges(st: ServiceState) -> None:
    stats = st.gallery.stats()
    st.index_stats = {k: stats.get(k) for k in ("subjects", "templates_in_db", "templates_in_index", "applied_seq",
                                                 "last_seq", "consistent")}
    metrics.GALLERY_SUBJECTS.set(stats["subjects"])
    metrics.GALLERY_TEMPLATES.set(stats["templates_in_index"])
    staged = stats["index"].get("staged_searches")
    if staged is not None:
        metrics.count_staged_searches(staged, st.staged_seen)
    for case_id in st.review.expire_waiting():
        st.review_waits.wake(case_id)
    waiting = st.review.kiosk_waiting()
    metrics.KIOSK_REVIEWS_WAITING.set(waiting["waiting"])
    metrics.KIOSK_REVIEW_OLDEST_WAIT.set(waiting["oldest_wait_s"])


def _health_gauges(st: ServiceState) -> None:
    keys = st.gallery.store.keys
    try:
        key_changed_at = keys.path.stat().st_mtime if keys.path is not None else None
    except OSError:
        key_changed_at = None
    stats = st.index_stats
    metrics.observe_health(
        database_up=st.sync_error is None and st.last_sync > 0,
        index_lag=(stats.get("last_seq") or 0) - (stats.get("applied_seq") or 0),
        sync_age_s=time.monotonic() - st.last_sync if st.last_sync else 0.0,
        feed_connected=st.listener.connected.is_set() if st.listener is not None else None,
        key_id=keys.current_id, key_changed_at=key_changed_at)


async def _sync_loop(st: ServiceState, wake: asyncio.Event) -> None:
    """Keep the index current: sync when ``wake`` is set (the change feed heard a commit, or
    (re)connected, or lost its connection) and at least every ``index_sync_s`` seconds.
    Wake-ups that arrive during a sync make one more sync, not one each. The gauges (which
    count rows) are refreshed at most every ``index_sync_s``, idle rate buckets pruned once a
    minute."""
    interval = st.settings.index_sync_s
    gauges_at = pruned_at = time.monotonic()
    while True:
        with suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval)
        wake.clear()
        try:
            await run_in_threadpool(st.sync_index)
            st.index_stats["applied_seq"] = st.gallery.applied_seq
            now = time.monotonic()
            if now - gauges_at >= interval:
                gauges_at = now
                await run_in_threadpool(_gallery_gauges, st)
            if now - pruned_at >= ratelimits.REFILL_S:
                pruned_at = now
                await run_in_threadpool(ratelimits.prune, st.db)
                await run_in_threadpool(signin_failures.prune, st.db, time.time(), FORGET_S)
        except Exception:  # logged by sync_index; /readyz turns 503 until a sync succeeds
            pass


def _stored_individuals(st: ServiceState) -> int:
    n = erasure.recent_count(st.db, st.settings.stored_count_interval_s)
    metrics.STORED_INDIVIDUALS.set(n)
    return n


async def _compliance_loop(st: ServiceState) -> None:
    """The filing count and the retention purge, inside the service: the stored-individuals
    gauge every minute (counted again once per ``stored_count_interval_s`` across replicas:
    :func:`facegate.storage.erasure.recent_count`), with a warning log at or over ``stored_individuals_warn`` (again after
    it fell below); the purge every ``retention_interval_s`` (0: off) on one replica at a time
    (:func:`facegate.storage.retention.run`: a lease row, one run per interval across replicas)."""
    s = st.settings
    holder = f"replica:{os.uname().nodename}:{os.getpid()}"
    warned = False
    while True:
        try:
            n = await run_in_threadpool(_stored_individuals, st)
            over = n >= s.stored_individuals_warn
            if over and not warned:
                log.warning("face information of %d individuals is stored (warning at %d; the filing threshold is "
                            "%d): see facegate compliance report", n, s.stored_individuals_warn, s.filing_threshold)
            warned = over
            if s.retention_interval_s > 0:
                out = await run_in_threadpool(retention.run, st.gallery.store, holder, False, "retention:" + holder,
                                              s.retention_interval_s)
                for name, count in (out.get("counts") or {}).items():
                    if count:
                        metrics.RETENTION_PURGED.labels(name).inc(count)
                if any((out.get("counts") or {}).values()):
                    await run_in_threadpool(st.gallery.after_erasure)
        except Exception:
            log.exception("compliance loop")
        await asyncio.sleep(min(60.0, max(1.0, s.retention_interval_s)) if s.retention_interval_s > 0 else 60.0)


def _start_feed(st: ServiceState, wake: asyncio.Event) -> changefeed.Listener | None:
    """PostgreSQL: listen for commits (wake the sync loop), key revocations (drop the key from
    the cache, which is on only while the feed is connected) and decided kiosk review cases (wake
    the kiosks waiting for them). SQLite: no feed (None)."""
    if not changefeed.supported(st.db.url):
        return None
    loop = asyncio.get_running_loop()

    def wake_sync() -> None:
        loop.call_soon_threadsafe(wake.set)

    def on_notify(channel: str, payload: str) -> None:
        if channel == changefeed.KEYS:
            st.keys.drop(payload)
        elif channel == changefeed.CHANGES:
            wake_sync()
        elif channel == changefeed.REVIEWS and payload.isdigit():
            st.review_waits.wake(int(payload))

    def on_resync() -> None:           # connected: hints may have been missed before
        st.keys.reset(enabled=True)
        st.review_waits.wake()
        wake_sync()

    def on_lost(_error: str) -> None:  # revocations cannot reach us now: read every key; is the database gone?
        st.keys.reset(enabled=False)
        wake_sync()

    return changefeed.Listener(st.db.url, changefeed.CHANNELS, on_notify, on_resync=on_resync,
                               on_lost=on_lost).start()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.load()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        st = await run_in_threadpool(_load, settings)
        app.state.facegate = st
        await run_in_threadpool(_gallery_gauges, st)
        wake = asyncio.Event()
        st.listener = _start_feed(st, wake)
        task = asyncio.create_task(_sync_loop(st, wake))
        compliance = asyncio.create_task(_compliance_loop(st))
        try:
            yield
        finally:
            compliance.cancel()
            if st.listener is not None:
                await run_in_threadpool(st.listener.stop)
            task.cancel()
            st.pool.shutdown()
            await run_in_threadpool(st.gallery.close)

    app = FastAPI(title="facegate", version="1", lifespan=lifespan,
                  description="Face verification identity service. Every /v1 call needs an X-API-Key header; "
                              "errors are RFC 9457 problem+json with a stable `code`.")
    errors.install(app)

    for module in ROUTERS:
        app.include_router(module.router)
    openapi.install(app, settings)
    capture_page.mount(app, settings.cors_origins)
    console_page.mount(app)

    @app.get("/healthz", tags=["operations"])
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz(request: Request):
        st: ServiceState | None = getattr(request.app.state, "facegate", None)
        body = {"ready": False, "models_loaded": st is not None, "index_current": False}
        if st is not None:
            body["index_current"] = st.index_current()
            body["pack_id"] = st.engine.pack_id
            body["index"] = st.index_stats
            body["liveness"] = st.liveness.status()
            if st.sync_error:
                body["error"] = st.sync_error
            if st.listener is not None:
                body["change_feed"] = st.listener.status()
            body["ready"] = body["index_current"]
        if not body["ready"]:
            body["code"] = "not_ready"
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def prometheus(request: Request):
        st: ServiceState | None = getattr(request.app.state, "facegate", None)
        if st is not None:
            await run_in_threadpool(_health_gauges, st)
        data, ctype = metrics.render()
        return Response(data, media_type=ctype)

    if settings.cors_origins.strip():
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
                           allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["X-API-Key", "Authorization", "Content-Type", "X-Request-Id",
                                          "X-Client-Id"])
    app.add_middleware(ServiceMiddleware, max_request_bytes=settings.max_request_bytes)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory facegate.service.app:app_from_env`` (settings from the environment)."""
    return create_app(Settings.load())
