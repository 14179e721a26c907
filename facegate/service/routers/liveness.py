"""Active liveness over HTTP: a challenge session, its capture, the verdict.

1. ``POST /v1/liveness/sessions`` (optional ``subject_id``, ``purpose``; with an API key) ->
   ``session_id``, the ordered ``challenge``, a ``nonce``, ``expires_at`` and the session's
   ``capture_token`` (the credential a phone or kiosk browser uses for steps 2-3).
2. The capture, before ``expires_at``, with the ``nonce``:
   ``POST /v1/liveness/sessions/{id}/frames`` (multipart: JPEG files in ``frames``, their times
   in seconds in ``timestamps`` as a comma list; several requests append to the capture) and/or
   ``POST /v1/liveness/sessions/{id}/video`` (multipart: one short mp4/webm in ``video``).
   Either accepts ``complete=true`` to judge at once.
3. ``POST /v1/liveness/sessions/{id}/complete`` -> the result: ``live``, ``score``, per-action
   detections with times, the passive PAD score (or ``"passive: unavailable"``), capture and
   identity figures, and machine-readable ``reasons`` when not live.

A passed session can be given once to ``POST /v1/verify`` as ``liveness_session_id`` within
``liveness_result_ttl_s``; verify then checks that the session's face is the verified person.
Sessions belong to the API key that opened them and live in the database
(:mod:`facegate.liveness.sessions`), so any replica serves any step.
"""
from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from facegate.errors import FacegateError
from facegate.service import auditing, metrics
from facegate.service.deps import CaptureCaller, ServiceState, StateDep, capture_access, require
from facegate.storage.audit import Actor
from facegate.workflows.consent.consent import notice_for_capture
from facegate.service.schemas import CaptureProgress, LivenessResult, LivenessSession
from facegate.service.uploads import flag_field, read_fields, read_parts, text_field

router = APIRouter(tags=["liveness"])

MAX_FRAMES_PER_REQUEST = 120
MAX_VIDEO_BYTES = 25 * 1024 * 1024


def _actor(request: Request, caller: CaptureCaller) -> Actor:
    if caller.key is not None:
        return auditing.caller(request, caller.key)
    return Actor(caller.actor, caller.owner, None, getattr(request.state, "request_id", None))


def _timestamps(value, count: int) -> list[float]:
    if value is None or value == "":
        raise FacegateError("invalid_request", "field 'timestamps' (seconds, one per frame) is required",
                            field="timestamps")
    try:
        if isinstance(value, list):
            times = [float(v) for v in value]
        else:
            text = str(value).strip()
            times = [float(v) for v in (json.loads(text) if text.startswith("[") else text.split(","))]
    except (TypeError, ValueError):
        raise FacegateError("invalid_request", "timestamps must be numbers (seconds)", field="timestamps")
    if len(times) != count:
        raise FacegateError("invalid_request", f"{count} frames but {len(times)} timestamps", field="timestamps")
    return times


async def _judge(st: ServiceState, request: Request, caller: CaptureCaller, session_id: str,
                 nonce: str | None) -> dict:
    lv = st.liveness
    session = lv.sessions.pending(session_id, nonce, caller.owner)
    result = await st.pool.run(lv.sessions.complete, session_id, lv.judge, nonce, caller.owner)
    metrics.DECISIONS.labels("liveness", "live" if result["live"] else "not_live").inc()
    await run_in_threadpool(auditing.write, st, _actor(request, caller), "liveness",
                            "live" if result["live"] else "not_live", session.subject_id,
                            {"score": result["score"], "passive": result["passive"].get("score")},
                            {"liveness_session_id": session_id, "challenge": result["challenge"],
                             "reasons": result["reasons"], "purpose": session.purpose})
    return result


@router.post("/v1/liveness/sessions", status_code=201, response_model=LivenessSession)
async def create_session(request: Request, st: StateDep, key=Depends(require("liveness"))):
    lv = st.liveness
    fields = {}
    if request.headers.get("content-type"):
        body = await request.body()
        if body.strip():
            fields = await read_fields(request, st.settings.max_image_bytes)
    subject_id = text_field(fields, "subject_id", max_len=128)
    purpose = text_field(fields, "purpose", max_len=64)
    s = lv.sessions.create(subject_id=subject_id, purpose=purpose, owner=key.key_id)
    await auditing.record(st, request, key, "liveness_session", "created", subject_id=subject_id,
                          detail={"liveness_session_id": s.id, "challenge": s.challenge, "purpose": purpose})
    return s.public() | {"passive": lv.judge.passive_status, "capture_token": s.capture_token}


@router.get("/v1/liveness/sessions/{session_id}", response_model=LivenessSession)
async def get_session(session_id: str, st: StateDep, caller: CaptureCaller = Depends(capture_access())):
    s = st.liveness.sessions.get(session_id, caller.owner)
    asked = await run_in_threadpool(notice_for_capture, st.db, session_id, st.settings)
    return s.public() | ({"result": s.result} if s.result else {}) | {"consent": asked}


@router.post("/v1/liveness/sessions/{session_id}/frames", response_model=CaptureProgress | LivenessResult)
async def add_frames(session_id: str, request: Request, st: StateDep,
                     caller: CaptureCaller = Depends(capture_access())):
    s = st.settings
    fields, files = await read_parts(request, s.max_image_bytes, MAX_FRAMES_PER_REQUEST)
    nonce = text_field(fields, "nonce", required=True, max_len=64)
    frames = [data for name, data in files if name == "frames"]
    if not frames:
        raise FacegateError("invalid_request", "send JPEG files in the multipart field 'frames'", field="frames")
    times = _timestamps(fields.get("timestamps"), len(frames))
    return await _append(st, request, caller, session_id, nonce, fields,
                         lambda: st.liveness.add_jpegs(session_id, list(zip(times, frames)), nonce, caller.owner))


@router.post("/v1/liveness/sessions/{session_id}/video", response_model=CaptureProgress | LivenessResult)
async def add_video(session_id: str, request: Request, st: StateDep,
                    caller: CaptureCaller = Depends(capture_access())):
    fields, files = await read_parts(request, MAX_VIDEO_BYTES, 1)
    nonce = text_field(fields, "nonce", required=True, max_len=64)
    videos = [data for name, data in files if name == "video"]
    if len(videos) != 1:
        raise FacegateError("invalid_request", "send one mp4/webm file in the multipart field 'video'", field="video")
    return await _append(st, request, caller, session_id, nonce, fields,
                         lambda: st.liveness.add_video(session_id, videos[0], nonce, caller.owner))


async def _append(st: ServiceState, request: Request, caller: CaptureCaller, session_id: str, nonce: str,
                  fields: dict, add) -> dict:
    """Add to the session's capture in the inference pool; judge at once with ``complete=true``."""
    st.liveness.sessions.pending(session_id, nonce, caller.owner)
    total = await st.pool.run(add)
    if flag_field(fields, "complete"):
        return await _judge(st, request, caller, session_id, nonce)
    return {"session_id": session_id, "frames_received": total, "status": "pending"}


@router.post("/v1/liveness/sessions/{session_id}/complete", response_model=LivenessResult)
async def complete(session_id: str, request: Request, st: StateDep,
                   caller: CaptureCaller = Depends(capture_access())):
    fields = {}
    if request.headers.get("content-type"):
        body = await request.body()
        if body.strip():
            fields = await read_fields(request, st.settings.max_image_bytes)
    nonce = text_field(fields, "nonce", required=True, max_len=64)
    return await _judge(st, request, caller, session_id, nonce)
