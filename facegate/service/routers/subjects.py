"""Subjects and their face templates.

- ``POST /v1/subjects`` (JSON ``{"subject_id", "name", "status", "metadata", "consent"}``)
- ``GET /v1/subjects`` (query ``status``, ``prefix``, ``limit``, ``offset``)
- ``GET /v1/subjects/{id}``, ``PATCH /v1/subjects/{id}``
- ``DELETE /v1/subjects/{id}``: erasure of the subject and all its templates (admin only)
- ``POST /v1/subjects/{id}/faces`` (field ``image``; optional ``source``, ``allow_duplicate``)
- ``DELETE /v1/subjects/{id}/faces/{face_id}``

The store audits each change in its own transaction (actor ``key:<key id>``); the API adds an
``api.*`` entry with the request id and client/device id.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from facegate.errors import FacegateError
from facegate.service import auditing
from facegate.service.deps import ServiceState, require, state
from facegate.service.schemas import (EnrolOut, SubjectCreate, SubjectOut, SubjectPage, SubjectStatus,
                                      SubjectUpdate)
from facegate.storage import consents
from facegate.vocab import PURPOSES
from facegate.service.uploads import flag_field, image_field, openapi_body, read_fields, text_field

router = APIRouter(tags=["subjects"])


def enrolment_allowed(st: ServiceState, subject_id: str, purpose: str | None) -> None:
    with st.db.connect() as conn:
        consents.require_enrolment(conn, subject_id, consents.purpose_of(purpose, st.settings), st.settings)

SubjectId = Path(min_length=1, max_length=128)


def subject_out(subject: dict) -> dict:
    faces = [{"face_id": t["face_id"], "quality": t.get("quality"), "source": t.get("source"),
              "pack_id": t.get("pack_id"), "created_at": t.get("created_at")} for t in subject.get("templates", [])]
    return {k: subject.get(k) for k in ("subject_id", "name", "status", "metadata", "consent", "minor",
                                        "withdrawn_at", "created_at", "updated_at")} | {"faces": faces}


@router.post("/v1/subjects", response_model=SubjectOut, status_code=201)
async def create_subject(body: SubjectCreate, request: Request, key=Depends(require("subjects:write")),
                         st: ServiceState = Depends(state)):
    try:
        subject = await run_in_threadpool(st.gallery.store.add_subject, body.subject_id, name=body.name,
                                          status=body.status, metadata=body.metadata, consent=body.consent,
                                          actor=key.actor, minor=body.minor)
    except FacegateError as exc:
        await auditing.record(st, request, key, "api.subject.create", exc.code, subject_id=body.subject_id)
        raise
    await auditing.record(st, request, key, "api.subject.create", "created", subject_id=body.subject_id)
    return subject_out(subject)


@router.get("/v1/subjects", response_model=SubjectPage)
async def list_subjects(status: SubjectStatus | None = None, prefix: str | None = Query(None, max_length=128),
                        limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=2**62),
                        key=Depends(require("subjects:read")), st: ServiceState = Depends(state)):
    page = await run_in_threadpool(st.gallery.store.list_subjects, status=status, limit=limit, offset=offset,
                                   prefix=prefix)
    return {"total": page["total"], "limit": limit, "offset": offset,
            "subjects": [subject_out(s) | {"faces": [], "n_faces": s.get("n_templates", 0)} for s in page["subjects"]]}


@router.get("/v1/subjects/{subject_id}", response_model=SubjectOut)
async def get_subject(subject_id: str = SubjectId, key=Depends(require("subjects:read")),
                      st: ServiceState = Depends(state)):
    return subject_out(await run_in_threadpool(st.gallery.store.get_subject, subject_id))


@router.patch("/v1/subjects/{subject_id}", response_model=SubjectOut)
async def update_subject(body: SubjectUpdate, request: Request, subject_id: str = SubjectId,
                         key=Depends(require("subjects:write")), st: ServiceState = Depends(state)):
    changes = body.model_dump(exclude_unset=True)
    if changes.get("status", "") is None:
        raise FacegateError("invalid_request", "status cannot be null", field="status")

    def update():
        st.gallery.store.update_subject(subject_id, actor=key.actor, **changes)
        return st.gallery.store.get_subject(subject_id)

    try:
        subject = await run_in_threadpool(update)
    except FacegateError as exc:
        await auditing.record(st, request, key, "api.subject.update", exc.code, subject_id=subject_id)
        raise
    await auditing.record(st, request, key, "api.subject.update", "updated", subject_id=subject_id,
                          detail={"changed": sorted(changes)})
    return subject_out(subject)


@router.delete("/v1/subjects/{subject_id}", status_code=204)
async def erase_subject(request: Request, subject_id: str = SubjectId, key=Depends(require("subjects:erase")),
                        st: ServiceState = Depends(state)):
    try:
        result = await run_in_threadpool(st.gallery.erase, subject_id, actor=key.actor, reason="api")
    except FacegateError as exc:
        await auditing.record(st, request, key, "api.subject.erase", exc.code, subject_id=subject_id)
        raise
    await auditing.record(st, request, key, "api.subject.erase", "erased", subject_id=subject_id,
                          detail={"templates_removed": result.get("templates_removed")})
    return Response(status_code=204)


@router.post("/v1/subjects/{subject_id}/faces", response_model=EnrolOut, status_code=201,
             openapi_extra=openapi_body(("image",), {"source": {"type": "string"},
                                                     "allow_duplicate": {"type": "boolean"},
                                                     "purpose": {"type": "string", "enum": list(PURPOSES)}},
                                        ("image",)))
async def enrol_face(request: Request, subject_id: str = SubjectId, key=Depends(require("faces:write")),
                     st: ServiceState = Depends(state)):
    s = st.settings
    try:
        fields = await read_fields(request, s.max_image_bytes)
        image = image_field(fields, "image", s.max_image_bytes)
        source = text_field(fields, "source", max_len=200) or f"api:{key.key_id}"
        allow_duplicate = flag_field(fields, "allow_duplicate")
        purpose = text_field(fields, "purpose", max_len=32)
        if purpose is not None and purpose not in PURPOSES:
            raise FacegateError("invalid_request", f"purpose must be one of {', '.join(PURPOSES)}", field="purpose")
        await run_in_threadpool(st.gallery.store.get_subject, subject_id)   # unknown_subject before inference
        await run_in_threadpool(enrolment_allowed, st, subject_id, purpose)  # consent before inference

        def job():
            return st.gallery.enrol(subject_id, image, source=source, allow_duplicate=allow_duplicate,
                                    actor=key.actor, purpose=purpose)

        enrolled = await st.pool.run(job)
    except FacegateError as exc:
        dups = exc.detail.get("duplicate_of") or []
        await auditing.record(st, request, key, "api.face.enrol", exc.code, subject_id=subject_id,
                              scores={"duplicate_of": [[d["subject_id"], d["score"]] for d in dups]} if dups else None)
        raise
    await auditing.record(st, request, key, "api.face.enrol", "enrolled", subject_id=subject_id,
                          scores={"quality": (enrolled.get("quality") or {}).get("score")},
                          detail={"face_id": enrolled["face_id"], "allow_duplicate": allow_duplicate})
    return {"subject_id": subject_id, "face_id": enrolled["face_id"], "quality": enrolled.get("quality") or {},
            "pack_id": enrolled["pack_id"],
            "duplicate_of": [{"subject_id": d["subject_id"], "score": d["score"]} for d in enrolled.get("duplicate_of") or []],
            "request_id": request.state.request_id}


@router.delete("/v1/subjects/{subject_id}/faces/{face_id}", status_code=204)
async def delete_face(request: Request, subject_id: str = SubjectId, face_id: int = Path(ge=1, le=2**62),
                      key=Depends(require("faces:write")), st: ServiceState = Depends(state)):
    try:
        await run_in_threadpool(st.gallery.store.get_subject, subject_id)
        await run_in_threadpool(st.gallery.delete_template, face_id, actor=key.actor, subject_id=subject_id)
    except FacegateError as exc:
        await auditing.record(st, request, key, "api.face.delete", exc.code, subject_id=subject_id,
                              detail={"face_id": face_id})
        raise
    await auditing.record(st, request, key, "api.face.delete", "deleted", subject_id=subject_id,
                          detail={"face_id": face_id})
    return Response(status_code=204)
