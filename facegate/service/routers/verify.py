"""``POST /v1/verify``: is this the enrolled subject? (1:1 against the subject's templates).

Fields: ``subject_id``, ``image``; optional ``liveness_session_id`` (a passed liveness session
of this key, checked and consumed when a liveness store is installed) and ``fmr`` (operating
point). The answer is ``match`` / ``no_match`` / ``manual_review`` (see
:mod:`facegate.matching.decisions`): the face is one factor, never the only way in.
"""
from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request

from facegate.errors import FacegateError
from facegate.service import auditing, metrics
from facegate.matching.decisions import decide
from facegate.service.deps import ServiceState, require, state
from facegate.service.pipeline import analyse_face
from facegate.service.schemas import VerifyOut
from facegate.service.uploads import image_field, number_field, openapi_body, read_fields, text_field

router = APIRouter(tags=["matching"])


def subject_status(db, subject_id: str) -> str:
    from facegate.storage.schema import subjects
    with db.connect() as conn:
        status = conn.execute(sa.select(subjects.c.status).where(subjects.c.subject_id == subject_id)).scalar()
    if status is None:
        raise FacegateError("unknown_subject", f"no subject {subject_id!r}", subject_id=subject_id)
    return status


def check_liveness(st: ServiceState, session_id: str | None, key) -> dict | None:
    """The liveness result for ``session_id`` (None when none was given).

    ``st.liveness`` (installed by the liveness router's ``install(state)``) must offer
    ``consume(session_id, key) -> {"session_id", "passed": bool, "embedding": optional face
    embedding of the live person, ...}``, raising FacegateError for unknown, expired, used or
    other keys' sessions. With an embedding, the verified photo must show the same person.
    """
    if not session_id:
        return None
    if st.liveness is None:
        raise FacegateError("invalid_request", "liveness sessions are not enabled on this server",
                            field="liveness_session_id")
    return dict(st.liveness.consume(session_id, key))


def liveness_reasons(st: ServiceState, liveness: dict | None, embedding) -> list[str]:
    if liveness is None:
        return []
    if not liveness.get("passed", False):
        return ["liveness_failed"]
    live = liveness.pop("embedding", None)
    if live is not None:
        threshold, _ = st.engine.operating_points.threshold_for(st.settings.liveness_identity_fmr)
        if st.engine.similarity(live, embedding) < threshold:
            return ["liveness_face_mismatch"]
    return []


@router.post("/v1/verify", response_model=VerifyOut,
             openapi_extra=openapi_body(("image",), {"subject_id": {"type": "string"},
                                                     "liveness_session_id": {"type": "string"},
                                                     "fmr": {"type": "number"}}, ("subject_id", "image")))
async def verify(request: Request, key=Depends(require("verify")), st: ServiceState = Depends(state)):
    s = st.settings
    subject_id = None
    try:
        fields = await read_fields(request, s.max_image_bytes)
        subject_id = text_field(fields, "subject_id", required=True, max_len=128)
        image = image_field(fields, "image", s.max_image_bytes)
        fmr = number_field(fields, "fmr", float, None, 1e-7, 0.5)
        liveness = check_liveness(st, text_field(fields, "liveness_session_id", max_len=128), key)

        who = auditing.caller(request, key)

        def job():
            with metrics.stage("search"):   # unknown_subject before any inference
                status = subject_status(st.db, subject_id)
            face = analyse_face(st.engine, image, policy="single")
            with metrics.stage("search"):
                match = st.gallery.verify(subject_id, face.embedding, fmr)
            return answer(st, who, subject_id, face, match, status, fmr, liveness)

        return await st.pool.run(job)
    except FacegateError as exc:
        await auditing.record(st, request, key, "verify", exc.code, subject_id=subject_id)
        raise


def answer(st: ServiceState, who: auditing.Caller, subject_id: str, face, match: dict, status: str,
           fmr: float | None, liveness: dict | None) -> dict:
    """The decision, audited before it is returned."""
    result = decide(st.engine, st.settings, match["score"], face.quality.score, fmr, subject_status=status)
    live_reasons = liveness_reasons(st, liveness, face.embedding)
    if live_reasons:
        result.update(match=False, decision="manual_review", review_reasons=result["review_reasons"] + live_reasons)
    if liveness is not None:
        liveness = {k: v for k, v in liveness.items() if k in ("session_id", "passed", "score", "reason", "checks")}
    decision_id = auditing.new_decision_id()
    metrics.DECISIONS.labels("verify", result["decision"]).inc()
    auditing.write(st, who, "verify", result["decision"], subject_id=subject_id,
                   scores={"score": result["score"], "threshold": result["threshold"],
                           "quality": round(face.quality.score, 3)},
                   detail={"decision_id": decision_id, "face_id": match.get("face_id"),
                           "review_reasons": result["review_reasons"],
                           "liveness_session_id": liveness and liveness.get("session_id")})
    return {**result, "quality": face.quality.as_dict(), "subject_id": subject_id, "face_id": match.get("face_id"),
            "liveness": liveness, "decision_id": decision_id, "request_id": who.request_id,
            "pack_id": st.engine.pack_id}
