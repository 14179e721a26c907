"""``POST /v1/identify``: who is this? (1:N over the gallery).

Fields: ``image``, optional ``top_k`` (default ``identify_top_k``) and ``fmr``. Candidates are
the subjects whose best template scores at or above the threshold, best first; an empty list
when nobody does. ``decision`` is ``match`` only when the best subject also beats the next one
by ``identify_margin`` (else ``ambiguous``): the gallery's rule.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from facegate.errors import FacegateError
from facegate.service import auditing, metrics
from facegate.service.deps import StateDep, require
from facegate.service.schemas import IdentifyOut
from facegate.service.uploads import image_field, number_field, openapi_body, read_fields
from facegate.workflows import verification

router = APIRouter(tags=["matching"])


@router.post("/v1/identify", response_model=IdentifyOut,
             openapi_extra=openapi_body(("image",), {"top_k": {"type": "integer"}, "fmr": {"type": "number"}},
                                        ("image",)))
async def identify(request: Request, st: StateDep, key=Depends(require("identify"))):
    s = st.settings
    try:
        fields = await read_fields(request, s.max_image_bytes)
        image = image_field(fields, "image", s.max_image_bytes)
        top_k = number_field(fields, "top_k", int, s.identify_top_k, 1, 100)
        fmr = number_field(fields, "fmr", float, None, 1e-7, 0.5)
        who = auditing.caller(request, key)

        def job():
            result = verification.identify(st.workflows, image, top_k, fmr)
            body = result.as_dict()
            decision_id = auditing.new_decision_id()
            metrics.DECISIONS.labels("identify", body["decision"]).inc()
            auditing.write(st, who, "identify", body["decision"], subject_id=body["subject_id"],
                           scores={"candidates": [[c["subject_id"], c["score"]] for c in body["candidates"]],
                                   "best_score": result.found.as_dict()["best_score"], "threshold": body["threshold"],
                                   "margin": body["margin"], "quality": round(result.face.quality.score, 3)},
                           detail={"decision_id": decision_id, "top_k": top_k})
            return {**body, "decision_id": decision_id, "request_id": who.request_id, "pack_id": st.engine.pack_id}

        return await st.pool.run(job)
    except FacegateError as exc:
        await auditing.record(st, request, key, "identify", exc.code)
        raise
