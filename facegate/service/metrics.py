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
KIOSK_REVIEWS_WAITING = Gauge("facegate_kiosk_reviews_waiting", "Kiosk review cases a person is waiting for "
                              "(read from the database: the same on every replica)", multiprocess_mode="max")
KIOSK_REVIEW_OLDEST_WAIT = Gauge("facegate_kiosk_review_oldest_wait_seconds", "How long the person waiting longest "
                                 "at a kiosk for a reviewer has waited", multiprocess_mode="max")
KIOSK_REVIEW_SECONDS = Histogram("facegate_kiosk_review_seconds", "From a kiosk case's opening to its end, by how it "
                                 "ended (decided | expired)", ["ended"],
                                 buckets=(5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600))
MODEL_PLACEMENT = Gauge("facegate_model_placement", "1 for the runtime and precision each model runs on in this "
                        "process (FACEGATE_RUNTIME, FACEGATE_PRECISION)", ["model", "runtime", "precision"],
                        multiprocess_mode="max")
INFERENCE_PENDING = Gauge("facegate_inference_pending", "Inference jobs running or queued",
                          multiprocess_mode="livesum")
REFUSALS_UNAUDITED = Counter("facegate_refusals_unaudited_total",
                             "Refused calls (401/403) not written to the audit trail: over the per-source limit")
INDEX_STAGED = Counter("facegate_index_staged_searches_total",
                       "Single 1:N searches of an ivf_pq_refine index run with the early stop, by outcome",
                       ["outcome"])   # stopped_early | full_depth
# Health, set from the process's state at each scrape (observe_health); the alerts in
# deploy/prometheus/alerts.yml read them.
DATABASE_UP = Gauge("facegate_database_up", "1 when this process's last read of the database (its index sync) "
                    "succeeded, else 0", multiprocess_mode="min")
INDEX_LAG = Gauge("facegate_index_lag_changes", "Gallery changes in the database's change log not yet applied to "
                  "this process's index", multiprocess_mode="max")
INDEX_SYNC_AGE = Gauge("facegate_index_sync_age_seconds", "Seconds since this process's index last caught up "
                       "with the database", multiprocess_mode="max")
CHANGE_FEED = Gauge("facegate_change_feed_connected", "PostgreSQL: 1 while the change feed (LISTEN) is connected, "
                    "else 0; no sample on SQLite, which has no feed", ["database"], multiprocess_mode="min")
DATA_KEY_CHANGED = Gauge("facegate_data_key_file_changed_timestamp_seconds",
                         "Unix time the data key file last changed (made, or rotated: the new key is written "
                         "first); no sample when the key comes from FACEGATE_DATA_KEY", ["key_id"],
                         multiprocess_mode="min")

STORED_INDIVIDUALS = Gauge("facegate_stored_individuals", "Individuals whose face information is stored now "
                           "(templates, second opinions, certification captures, live faces): the filing count "
                           "against FACEGATE_FILING_THRESHOLD (docs/compliance.md)", multiprocess_mode="max")
RETENTION_PURGED = Counter("facegate_retention_purged_total", "Rows purged by this process's retention runs",
                           ["data_class"])

UNREGISTERED_KIOSK = "unregistered"


def observe_health(*, database_up: bool, index_lag: int, sync_age_s: float, feed_connected: bool | None,
                   key_id: str, key_changed_at: float | None) -> None:
    """Set the health gauges. ``feed_connected`` None: no change feed (SQLite);
    ``key_changed_at`` None: the data key is not in a file."""
    DATABASE_UP.set(1 if database_up else 0)
    INDEX_LAG.set(max(0, index_lag))
    INDEX_SYNC_AGE.set(max(0.0, sync_age_s))
    if feed_connected is not None:
        CHANGE_FEED.labels("postgresql").set(1 if feed_connected else 0)
    DATA_KEY_CHANGED.clear()
    if key_changed_at is not None:
        DATA_KEY_CHANGED.labels(key_id).set(key_changed_at)


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
