"""``POST /v1/kiosk/authenticate``: the self-service kiosk's decision.

Fields: the live capture as ``image`` and/or a passed ``liveness_session_id``, and one of
- ``document_image``: the ID card's chip photo (about 102x126 px): person vs document, at the
  operating point calibrated for chip photos (``calibration/<pack>-document.json``);
- ``subject_id``: 1:1 against the enrolled templates;
- neither: 1:N search of the gallery with the margin rule (``ambiguous`` -> manual review).

Without a passed liveness session the answer is never an automatic match
(``FACEGATE_KIOSK_REQUIRE_LIVENESS``, on by default): a photo held up to the camera must not
open the door. Every answer is recorded against the kiosk (its key's client id): audit trail,
``kiosk_events`` (for ``facegate kiosks report``) and ``/metrics``.
"""
from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from facegate.matching.operating_points import OperatingPoints
from facegate.errors import FacegateError
from facegate.storage.db import write_transaction
from facegate.workflows.kiosk import record_event
from facegate.service import auditing, metrics
from facegate.matching.decisions import decide
from facegate.service.deps import ServiceState, require, state
from facegate.service.pipeline import analyse_face
from facegate.service.routers.verify import check_liveness, subject_status
from facegate.service.uploads import image_field, number_field, openapi_body, read_fields, text_field

router = APIRouter(tags=["kiosk"])


def document_points(st: ServiceState) -> OperatingPoints:
    if getattr(st, "document_points", None) is None:
        st.document_points = OperatingPoints.for_pack(st.engine.pack, "document") or st.engine.operating_points
    return st.document_points


def _live_face(st: ServiceState, image: bytes | None, liveness: dict | None):
    """(embedding, quality, liveness reasons) of the person at the kiosk."""
    reasons = []
    live_embedding = None
    if liveness is not None:
        if liveness.get("passed"):
            live_embedding = liveness.pop("embedding", None)
        else:
            reasons.append("liveness_failed")
    elif st.settings.kiosk_require_liveness:
        reasons.append("no_liveness")
    if image is None:
        if live_embedding is None:
            raise FacegateError("invalid_request", "send the live capture as 'image' or a passed liveness_session_id",
                                field="image")
        return live_embedding, 1.0, reasons
    face = analyse_face(st.engine, image, policy="single")
    if live_embedding is not None:
        threshold, _ = st.engine.operating_points.threshold_for(st.settings.liveness_identity_fmr)
        if st.engine.similarity(live_embedding, face.embedding) < threshold:
            reasons.append("capture_face_mismatch")
    return face.embedding, face.quality.score, reasons


def _document(st: ServiceState, embedding, quality: float, document: bytes, fmr: float | None) -> dict:
    s = st.settings
    doc = analyse_face(st.engine, document, policy="largest", min_face_px=s.min_document_face_px,
                       min_quality=None, detect_min_face=min(s.min_face_px, s.min_document_face_px))
    points = document_points(st)
    result = decide(st.engine, s, st.engine.similarity(embedding, doc.embedding), quality, fmr, points=points)
    return {**result, "subject_id": None, "document_quality": doc.quality.as_dict(),
            "operating_point": {"table": points.source, "threshold": result["threshold"], "fmr": result["fmr"]}}


def _subject(st: ServiceState, subject_id: str, embedding, quality: float, fmr: float | None) -> dict:
    status = subject_status(st.db, subject_id)
    match = st.gallery.verify(subject_id, embedding, fmr)
    result = decide(st.engine, st.settings, match["score"], quality, fmr, subject_status=status)
    return {**result, "subject_id": subject_id if result["decision"] == "match" else None,
            "operating_point": {"table": st.engine.operating_points.source, "threshold": result["threshold"],
                                "fmr": result["fmr"]}}


def _search(st: ServiceState, embedding, quality: float, fmr: float | None, top_k: int) -> dict:
    found = st.gallery.identify(embedding, top_k, fmr)
    decision = {"match": "match", "no_match": "no_match"}.get(found["decision"], "manual_review")
    reasons = [] if decision != "manual_review" else ["ambiguous_margin"]
    if decision == "match" and quality < st.settings.review_min_quality:
        decision, reasons = "manual_review", ["low_quality"]
    best = found["candidates"][0] if found["candidates"] else None
    if decision == "match" and best and best.get("status") != "active":
        decision, reasons = "manual_review", [f"subject_{best.get('status')}"]
    return {"decision": decision, "score": found["best_score"], "threshold": found["threshold"], "fmr": found["fmr"],
            "review_reasons": reasons, "subject_id": found["subject_id"] if decision == "match" else None,
            "candidates": found["candidates"], "margin": found["margin"], "required_margin": found["required_margin"],
            "operating_point": {"table": st.engine.operating_points.source, "threshold": found["threshold"],
                                "fmr": found["fmr"]}}


def _record_error(st: ServiceState, kiosk_id: str, mode: str, code: str, latency_ms: float) -> None:
    with write_transaction(st.db) as conn:
        record_event(conn, kiosk_id, mode, "error", code, latency_ms)


@router.post("/v1/kiosk/authenticate",
             openapi_extra=openapi_body(("image", "document_image"),
                                        {"liveness_session_id": {"type": "string"}, "subject_id": {"type": "string"},
                                         "top_k": {"type": "integer"}, "fmr": {"type": "number"}}, ()))
async def authenticate(request: Request, key=Depends(require("kiosk:authenticate")),
                       st: ServiceState = Depends(state)):
    s = st.settings
    t0 = time.perf_counter()
    who = auditing.caller(request, key)
    kiosk_id = who.client_id or key.key_id
    mode = "unknown"
    try:
        fields = await read_fields(request, s.max_image_bytes)
        image = image_field(fields, "image", s.max_image_bytes, required=False)
        document = image_field(fields, "document_image", s.max_image_bytes, required=False)
        subject_id = text_field(fields, "subject_id", max_len=128)
        top_k = number_field(fields, "top_k", int, s.identify_top_k, 1, 50)
        fmr = number_field(fields, "fmr", float, None, 1e-7, 0.5)
        if document is not None and subject_id:
            raise FacegateError("invalid_request", "send document_image or subject_id, not both")
        mode = "document" if document is not None else "subject" if subject_id else "search"
        liveness = check_liveness(st, text_field(fields, "liveness_session_id", max_len=128), key)

        def job():
            embedding, quality, live_reasons = _live_face(st, image, liveness)
            if mode == "document":
                result = _document(st, embedding, quality, document, fmr)
            elif mode == "subject":
                result = _subject(st, subject_id, embedding, quality, fmr)
            else:
                result = _search(st, embedding, quality, fmr, top_k)
            if live_reasons:
                result.update(decision="manual_review", subject_id=None,
                              review_reasons=result["review_reasons"] + live_reasons)
            result["match"] = result["decision"] == "match"
            latency_ms = (time.perf_counter() - t0) * 1000
            reason = (result["review_reasons"] or [None])[0] if result["decision"] != "match" else None
            if result["decision"] == "no_match":
                reason = reason or "face_mismatch"
            decision_id = auditing.new_decision_id()
            with write_transaction(st.db) as conn:
                record_event(conn, kiosk_id, mode, result["decision"], reason, latency_ms)
            auditing.write(st, who, "kiosk.authenticate", result["decision"], subject_id=result.get("subject_id") or subject_id,
                           scores={"score": result["score"], "threshold": result["threshold"]},
                           detail={"decision_id": decision_id, "mode": mode, "kiosk_id": kiosk_id,
                                   "review_reasons": result["review_reasons"],
                                   "liveness_session_id": liveness and liveness.get("session_id")})
            metrics.KIOSK_DECISIONS.labels(kiosk_id, mode, result["decision"]).inc()
            metrics.KIOSK_SECONDS.labels(kiosk_id).observe(latency_ms / 1000)
            live = None if liveness is None else {k: liveness.get(k) for k in ("session_id", "passed", "score", "checks")}
            return {**result, "mode": mode, "kiosk_id": kiosk_id, "liveness": live, "decision_id": decision_id,
                    "request_id": who.request_id, "latency_ms": round(latency_ms, 1), "pack_id": st.engine.pack_id}

        return await st.pool.run(job)
    except FacegateError as exc:
        metrics.KIOSK_DECISIONS.labels(kiosk_id, mode, "error").inc()
        await run_in_threadpool(_record_error, st, kiosk_id, mode, exc.code, (time.perf_counter() - t0) * 1000)
        await auditing.record(st, request, key, "kiosk.authenticate", exc.code, detail={"kiosk_id": kiosk_id,
                                                                                          "mode": mode})
        raise
