"""``POST /v1/compare``: two photos, one score — the kiosk's person vs ID-card chip photo.

``image_a`` is the live capture (exactly one face, the usual minimum face size);
``image_b`` is the document photo: the largest face is taken, small faces (down to
``min_document_face_px``, an ID-card chip portrait is ~102x126 px) are allowed, and a poor
quality on that side leads to ``manual_review`` rather than a refusal.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from facegate.errors import FacegateError
from facegate.service import auditing, metrics
from facegate.matching.decisions import decide
from facegate.service.deps import ServiceState, require, state
from facegate.service.pipeline import analyse_face
from facegate.service.schemas import CompareOut
from facegate.service.uploads import image_field, number_field, openapi_body, read_fields

router = APIRouter(tags=["matching"])


@router.post("/v1/compare", response_model=CompareOut,
             openapi_extra=openapi_body(("image_a", "image_b"), {"fmr": {"type": "number"}},
                                        ("image_a", "image_b")))
async def compare(request: Request, key=Depends(require("compare")), st: ServiceState = Depends(state)):
    s = st.settings
    try:
        fields = await read_fields(request, s.max_image_bytes)
        image_a = image_field(fields, "image_a", s.max_image_bytes)
        image_b = image_field(fields, "image_b", s.max_image_bytes)
        fmr = number_field(fields, "fmr", float, None, 1e-7, 0.5)

        who = auditing.caller(request, key)

        def job():
            live = analyse_face(st.engine, image_a, policy="single")
            doc = analyse_face(st.engine, image_b, policy="largest", min_face_px=s.min_document_face_px,
                               min_quality=None, detect_min_face=min(s.min_face_px, s.min_document_face_px))
            return answer(st, who, live, doc, fmr)

        return await st.pool.run(job)
    except FacegateError as exc:
        await auditing.record(st, request, key, "compare", exc.code)
        raise


def answer(st: ServiceState, who: auditing.Caller, live, doc, fmr: float | None) -> dict:
    """The decision, audited before it is returned."""
    score = st.engine.similarity(live.embedding, doc.embedding)
    result = decide(st.engine, st.settings, score, min(live.quality.score, doc.quality.score), fmr)
    decision_id = auditing.new_decision_id()
    metrics.DECISIONS.labels("compare", result["decision"]).inc()
    auditing.write(st, who, "compare", result["decision"],
                   scores={"score": result["score"], "threshold": result["threshold"],
                           "quality_a": round(live.quality.score, 3), "quality_b": round(doc.quality.score, 3)},
                   detail={"decision_id": decision_id, "review_reasons": result["review_reasons"]})
    return {**result, "quality_a": live.quality.as_dict(), "quality_b": doc.quality.as_dict(),
            "decision_id": decision_id, "request_id": who.request_id, "pack_id": st.engine.pack_id}
