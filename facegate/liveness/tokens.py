"""Capture tokens: the short-lived credential a phone or kiosk browser holds instead of an API key.

A token is ``fgc_<session id>.<secret>``. It is made when a liveness session is opened (by the
app's backend or the kiosk software, with its API key), only its sha256 is stored, and it opens
that one session's capture and status calls until the session's capture deadline. It never
opens a decision (verify, identify, certification, kiosk authentication), which stay
server-side with the API key.
"""
from __future__ import annotations

import hashlib
import secrets

PREFIX = "fgc_"
MAX_LENGTH = 200


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def capture_token(session_id: str) -> tuple[str, str]:
    """(the token, shown once; its hash, stored)."""
    token = f"{PREFIX}{session_id}.{secrets.token_urlsafe(32)}"
    return token, _hash(token)


def session_of(token: str | None) -> str | None:
    """The session id a well-formed token names (None for anything else)."""
    if not token or not token.startswith(PREFIX) or len(token) > MAX_LENGTH or "." not in token:
        return None
    return token[len(PREFIX):].rsplit(".", 1)[0] or None


def token_matches(token: str, stored_hash: str | None) -> bool:
    return stored_hash is not None and secrets.compare_digest(_hash(token), stored_hash)
