"""Prometheus metrics of the service, exposed at ``/metrics``.

With several uvicorn workers each process counts its own requests; a scrape reaches one of
them. Set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder before ``facegate serve`` to have
prometheus_client aggregate all workers.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)

REQUESTS = Counter("facegate_requests_total", "HTTP requests answered", ["method", "route", "status"])
REQUEST_SECONDS = Histogram("facegate_request_seconds", "HTTP request latency", ["route"],
                            buckets=(.005, .01, .025, .05, .075, .1, .15, .2, .3, .5, .75, 1, 2, 5, 10))
STAGE_SECONDS = Histogram("facegate_stage_seconds", "Latency of one pipeline stage",
                          ["stage"],  # decode | detect | align | embed | second_opinion | search | queue | auth | audit
                          buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
ERRORS = Counter("facegate_errors_total", "Error answers by stable code", ["code"])
DECISIONS = Counter("facegate_decisions_total", "Match decisions", ["operation", "decision"])
GALLERY_SUBJECTS = Gauge("facegate_gallery_subjects", "Subjects in this process's gallery index",
                         multiprocess_mode="max")
GALLERY_TEMPLATES = Gauge("facegate_gallery_templates", "Templates in this process's gallery index",
                          multiprocess_mode="max")
KIOSK_DECISIONS = Counter("facegate_kiosk_decisions_total", "Kiosk authentications by kiosk, mode and decision",
                          ["kiosk", "mode", "decision"])
KIOSK_SECONDS = Histogram("facegate_kiosk_seconds", "Kiosk authentication latency", ["kiosk"],
                          buckets=(.05, .1, .15, .2, .3, .5, .75, 1, 2, 5))
INFERENCE_PENDING = Gauge("facegate_inference_pending", "Inference jobs running or queued",
                          multiprocess_mode="livesum")
REFUSALS_UNAUDITED = Counter("facegate_refusals_unaudited_total",
                             "Refused calls (401/403) not written to the audit trail: over the per-source limit")
INDEX_STAGED = Counter("facegate_index_staged_searches_total",
                       "Single 1:N searches of an ivf_pq_refine index run with the early stop, by outcome",
                       ["outcome"])   # stopped_early | full_depth


UNREGISTERED_KIOSK = "unregistered"


def kiosk_label(kiosk_id: str, registered: bool) -> str:
    """The ``kiosk`` label: a registered kiosk's id; every other caller of the kiosk route shares
    one series, so no request can add series to /metrics."""
    return kiosk_id if registered else UNREGISTERED_KIOSK


def count_staged_searches(totals: dict, seen: dict) -> None:
    """Add to INDEX_STAGED what the index's running totals (``VectorIndex.stats()["staged_searches"]``)
    gained since ``seen``, which is updated in place. A total below the one seen means the
    index was replaced (a rebuild starts its counters at zero): all of it is new."""
    now = {"stopped_early": totals["stopped_early"], "full_depth": totals["searches"] - totals["stopped_early"]}
    for outcome, value in now.items():
        before = seen.get(outcome, 0)
        INDEX_STAGED.labels(outcome).inc(value - before if value >= before else value)
    seen.update(now)


@contextmanager
def stage(name: str):
    """Time a block as pipeline stage ``name``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(name).observe(time.perf_counter() - t0)


class StageObserver:
    """The workflows' observer (:class:`facegate.workflows.context.Observer`): stage latencies
    into ``facegate_stage_seconds``, from each analysed face's own times."""

    def stage(self, name: str):
        return stage(name)

    def face(self, face) -> None:
        for name in ("decode", "detect", "align", "embed"):
            STAGE_SECONDS.labels(name).observe(getattr(face.times, name))
        if face.second_embedding is not None:          # a 1:N search's second opinion (SFace)
            STAGE_SECONDS.labels("second_opinion").observe(face.times.second)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
