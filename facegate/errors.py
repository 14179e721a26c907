"""Stable error codes shared by the engine, the CLI and the HTTP API.

Every error a caller can cause is a :class:`FacegateError` with a ``code`` that never changes
between releases and the HTTP status the API answers with.
"""
from __future__ import annotations

# code -> (HTTP status, default message)
ERROR_CODES: dict[str, tuple[int, str]] = {
    "unsupported_image": (415, "The upload is not a decodable JPEG, PNG, WebP or BMP image."),
    "image_too_large": (413, "The image exceeds the byte or pixel limit."),
    "no_face": (422, "No face was found in the image."),
    "multiple_faces": (422, "More than one face was found where exactly one was required."),
    "face_too_small": (422, "The face is too small for a reliable match."),
    "low_quality": (422, "The face image quality is too low for a reliable match."),
    "unknown_subject": (404, "No such subject."),
    "unknown_face": (404, "No such face template."),
    "subject_exists": (409, "A subject with this id already exists."),
    "duplicate_identity": (409, "This face is already enrolled under another subject."),
    "pack_mismatch": (409, "Templates were made by a different model pack; re-enrol."),
    "not_enrolled": (404, "The subject has no enrolled face template."),
    "data_key_unavailable": (500, "The data key that decrypts stored templates is missing or wrong."),
    "data_dir_not_writable": (500, "The data folder belongs to another user: chown it to the service's uid."),
    "invalid_request": (422, "The request is malformed."),
    "unauthorized": (401, "A valid X-API-Key header is required."),
    "forbidden": (403, "This key's role may not perform this operation."),
    "client_id_mismatch": (403, "This key belongs to another client than X-Client-Id names."),
    "rate_limited": (429, "Too many requests for this key."),
    "overloaded": (503, "The service is at capacity; retry later."),
    "not_found": (404, "Not found."),
    "model_unavailable": (503, "A required model is not installed."),
    "model_checksum_mismatch": (500, "A model file does not match its manifest checksum."),
    "not_ready": (503, "The service is not ready."),
    "liveness_session_unknown": (404, "No such liveness session, or it expired."),
    "liveness_session_expired": (410, "The liveness challenge or result has expired."),
    "liveness_session_closed": (409, "The liveness session was already judged or used."),
    "frames_out_of_order": (409, "These frames start before the last frame received; send a capture's chunks in order."),
    "liveness_failed": (422, "The liveness session did not pass or belongs to another subject."),
    "liveness_session_limit": (429, "This key has too many liveness captures in progress."),
    "capture_too_large": (413, "The liveness capture exceeds its size budget."),
    "sign_in_failed": (401, "The operator name, password or code is wrong."),
    "sign_in_throttled": (429, "Too many failed sign-ins from here or for this name; wait retry_after seconds."),
    "enrolment_shown": (409, "The second factor's secret was shown once to this sign-in; sign in again for a new one."),
    "sso_not_registered": (403, "This single sign-on identity is not an operator here, or has no role yet."),
    "session_expired": (401, "The console session has expired or was ended; sign in again."),
    "csrf_failed": (403, "The request's CSRF token is missing, stale or belongs to another session."),
    "unknown_operator": (404, "No such operator."),
    "case_expired": (409, "The kiosk stopped waiting for this case; the person was sent to a counter."),
    "operator_exists": (409, "An operator with this name already exists."),
    "unknown_case": (404, "No such review case."),
    "case_claimed": (409, "Another reviewer holds this case."),
    "case_decided": (409, "This case was already decided."),
    "notice_invalid": (422, "The notice file is missing a required field or language, or exceeds its bounds."),
    "notice_missing": (409, "No notice is published; consent cannot be asked (facegate notices publish FILE)."),
    "notice_version_stale": (409, "The consent names a notice version that is not the current one."),
    "consent_required": (403, "No consent of the current notice version is recorded for this purpose."),
    "consent_declined": (403, "The person declined consent; use the way without a face."),
    "consent_withdrawn": (410, "The person withdrew consent; their face information was erased."),
    "guardian_consent_required": (403, "The subject is under 14: a guardian's consent record is required."),
    "method_not_allowed": (405, "This route does not accept that HTTP method."),
    "internal_error": (500, "An unexpected error occurred; it has been logged."),
}


class FacegateError(Exception):
    """An error with a stable machine-readable ``code``."""

    def __init__(self, code: str, message: str | None = None, **detail):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        self.code = code
        self.status, default = ERROR_CODES[code]
        self.message = message or default
        self.detail = detail
        super().__init__(f"{code}: {self.message}")

    def to_dict(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.detail:
            out.update(self.detail)
        return out
