"""The FastAPI application: ``create_app(settings)``.

Each worker process loads the models once at startup (lifespan), opens the database (bringing
its schema to the newest migration), builds the gallery index from it and then keeps the index
current by re-reading the change log every ``index_sync_s`` seconds.

- ``/healthz``: 200 while the process is alive;
- ``/readyz``: 200 only when the models are loaded and the index is current, else 503;
- ``/metrics``: Prometheus; ``/docs``: OpenAPI.

CORS is off unless ``FACEGATE_CORS_ORIGINS`` lists origins (comma-separated). TLS: run behind a
reverse proxy, or pass uvicorn's ``--ssl-keyfile/--ssl-certfile`` (``facegate serve`` forwards
them).
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from facegate.config import Settings
from facegate.engine import FaceEngine
from facegate.gallery.gallery import Gallery
from facegate.liveness.service import LivenessService
from facegate.service import errors, metrics
from facegate.service.auth import KeyCache
from facegate.service.deps import ServiceState
from facegate.service.inference import InferencePool
from facegate.service.middleware import ServiceMiddleware
from facegate.service.routers import audit, certifications, compare, identify, kiosk, liveness, subjects, verify
from facegate.workflows.certification.ledger import CertificationLedger
from facegate.workflows.context import WorkflowContext

log = logging.getLogger("facegate.service")

ROUTERS = (subjects, verify, identify, compare, audit, certifications, kiosk, liveness)


def _load(settings: Settings) -> ServiceState:
    """Load the models, open the gallery (which opens and migrates the database) and build
    everything a request may need."""
    t0 = time.perf_counter()
    engine = FaceEngine.load(settings)
    gallery = Gallery(settings, engine)
    lv = LivenessService.load(engine, gallery.store, settings)
    st = ServiceState(settings=settings, db=gallery.store.db, engine=engine, gallery=gallery, liveness=lv,
                      ledger=CertificationLedger(settings, gallery.store, engine, gallery),
                      workflows=WorkflowContext(settings, engine, gallery, lv, observe=metrics.StageObserver()),
                      pool=InferencePool(settings.inference_concurrency, settings.inference_queue,
                                         settings.retry_after_s),
                      keys=KeyCache(settings.key_cache_s))
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


async def _sync_loop(st: ServiceState) -> None:
    while True:
        await asyncio.sleep(st.settings.index_sync_s)
        try:
            await run_in_threadpool(st.sync_index)
            await run_in_threadpool(_gallery_gauges, st)
        except Exception:  # logged by sync_index; /readyz turns 503 until a sync succeeds
            pass


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.load()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        st = await run_in_threadpool(_load, settings)
        app.state.facegate = st
        await run_in_threadpool(_gallery_gauges, st)
        task = asyncio.create_task(_sync_loop(st))
        try:
            yield
        finally:
            task.cancel()
            st.pool.shutdown()
            await run_in_threadpool(st.gallery.close)

    app = FastAPI(title="facegate", version="1", lifespan=lifespan,
                  description="Face verification identity service. Every /v1 call needs an X-API-Key header; "
                              "errors are RFC 9457 problem+json with a stable `code`.")
    errors.install(app)

    for module in ROUTERS:
        app.include_router(module.router)

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
            body["ready"] = body["index_current"]
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def prometheus():
        data, ctype = metrics.render()
        return Response(data, media_type=ctype)

    if settings.cors_origins.strip():
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
                           allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["X-API-Key", "Content-Type", "X-Request-Id", "X-Client-Id"])
    app.add_middleware(ServiceMiddleware, max_request_bytes=settings.max_request_bytes)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory facegate.service.app:app_from_env`` (settings from the environment)."""
    return create_app(Settings.load())
