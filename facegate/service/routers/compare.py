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
from facegate.service.deps import StateDep, require
from facegate.service.schemas import CompareOut
from facegate.service.uploads import image_field, number_field, openapi_body, read_fields
from facegate.workflows import verification

router = APIRouter(tags=["matching"])


@router.post("/v1/compare", response_model=CompareOut,
             openapi_extra=openapi_body(("image_a", "image_b"), {"fmr": {"type": "number"}},
                                        ("image_a", "image_b")))
async def compare(request: Request, st: StateDep, key=Depends(require("compare"))):
    s = st.settings
    try:
        fields = await read_fields(request, s.max_image_bytes)
        image_a = image_field(fields, "image_a", s.max_image_bytes)
        image_b = image_field(fields, "image_b", s.max_image_bytes)
        fmr = number_field(fields, "fmr", float, None, 1e-7, 0.5)
        who = auditing.caller(request, key)

        def job():
            result = verification.compare(st.workflows, image_a, image_b, fmr)
            d = result.decision
            decision_id = auditing.new_decision_id()
            metrics.DECISIONS.labels("compare", d.decision).inc()
            auditing.write(st, who, "compare", d.decision,
                           scores={"score": round(d.score, 6), "threshold": round(d.point.threshold, 6),
                                   "quality_a": round(result.live.quality.score, 3),
                                   "quality_b": round(result.document.quality.score, 3)},
                           detail={"decision_id": decision_id, "review_reasons": list(d.reasons)})
            return {**result.as_dict(), "decision_id": decision_id, "request_id": who.request_id,
                    "pack_id": st.engine.pack_id}

        return await st.pool.run(job)
    except FacegateError as exc:
        await auditing.record(st, request, key, "compare", exc.code)
        raise
