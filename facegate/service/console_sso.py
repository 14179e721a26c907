"""Console single sign-on: OpenID Connect, authorization code flow with PKCE (``authlib``).

Configured by ``FACEGATE_CONSOLE_OIDC_ISSUER``, ``..._CLIENT_ID``, ``..._CLIENT_SECRET`` (and
optionally ``..._REDIRECT_URI``, ``..._ROLE_CLAIM``, ``..._ROLE_MAP``, ``..._NAME_CLAIM``):

1. ``GET /console/api/oidc/start``: a fresh ``state``, ``nonce`` and PKCE verifier (S256) are
   sealed (AES-GCM under the data key) into a short-lived HttpOnly cookie (``SameSite=Lax``: the
   provider's redirect back is a cross-site navigation), so any replica can finish the login;
   the browser goes to the provider's authorization endpoint (from its discovery document).
2. ``GET /console/api/oidc/callback``: the state must match the cookie's; the code is exchanged
   (client_secret_basic, with the verifier); the ID token's signature (the provider's JWKS, ``joserfc``),
   issuer, audience, expiry and nonce are checked; the role claim is mapped to a console role
   (none: refused). The operator (``preferred_username``) gets a console session at once: the
   provider did the factors. Failures are audited and send the browser to the sign-in page.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time

import warnings

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

with warnings.catch_warnings():       # authlib 1.6+ notes that its httpx integration moves to httpx2 in 2.0
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

from facegate.errors import FacegateError
from facegate.vocab import OPERATOR_ROLES

LOGIN_COOKIE = "fg_oidc"
LOGIN_TTL_S = 600
_AAD = b"facegate:oidc-login:v1"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
_DISCOVERY: dict[str, tuple[float, dict]] = {}


def enabled(settings) -> bool:
    return bool(settings.console_oidc_issuer and settings.console_oidc_client_id)


def discovery(issuer: str) -> dict:
    hit = _DISCOVERY.get(issuer)
    if hit and hit[0] > time.monotonic():
        return hit[1]
    meta = httpx.get(issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=10).raise_for_status().json()
    _DISCOVERY[issuer] = (time.monotonic() + 300, meta)
    return meta


def _client(settings, redirect_uri: str) -> OAuth2Client:
    return OAuth2Client(settings.console_oidc_client_id, settings.console_oidc_client_secret or None,
                        scope="openid profile", redirect_uri=redirect_uri, code_challenge_method="S256",
                        token_endpoint_auth_method="client_secret_basic", timeout=10)


def seal(keys, value: dict) -> str:
    blob, kid = keys.encrypt(json.dumps(value).encode(), _AAD)
    return base64.urlsafe_b64encode(kid.encode() + b"." + blob).decode()


def unseal(keys, text: str | None) -> dict:
    try:
        raw = base64.urlsafe_b64decode((text or "").encode())
        kid, blob = raw.split(b".", 1)
        value = json.loads(keys.decrypt(blob, kid.decode(), _AAD))
    except (ValueError, FacegateError):
        raise FacegateError("sign_in_failed", "the single sign-on attempt is unknown or expired") from None
    if value.get("t", 0) + LOGIN_TTL_S < time.time():
        raise FacegateError("sign_in_failed", "the single sign-on attempt expired")
    return value


def start(settings, keys, redirect_uri: str) -> tuple[str, str]:
    """(the provider's authorization URL, the sealed login cookie)."""
    meta = discovery(settings.console_oidc_issuer)
    verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(24)
    url, state = _client(settings, redirect_uri).create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
    return url, seal(keys, {"state": state, "nonce": nonce, "verifier": verifier, "redirect": redirect_uri,
                            "t": time.time()})


def role_of(settings, claims: dict) -> str | None:
    value = claims.get(settings.console_oidc_role_claim)
    values = value if isinstance(value, list) else [value] if value else []
    mapping = dict(p.split("=", 1) for p in settings.console_oidc_role_map.split(",") if "=" in p)
    for v in values:
        role = mapping.get(str(v), str(v) if not mapping else None)
        if role in OPERATOR_ROLES:
            return role
    return None


def name_of(settings, claims: dict) -> str:
    name = str(claims.get(settings.console_oidc_name_claim) or "").lower()
    if _NAME.match(name):
        return name
    return "sso-" + hashlib.sha256(str(claims["sub"]).encode()).hexdigest()[:12]


def finish(settings, keys, sealed: str | None, code: str | None, state: str | None) -> tuple[str, str, dict]:
    """Check the callback and the ID token; (operator name, role, claims)."""
    login = unseal(keys, sealed)
    if not state or not secrets.compare_digest(str(state), login["state"]) or not code or len(code) > 2048:
        raise FacegateError("sign_in_failed", "the single sign-on answer does not belong to this browser")
    meta = discovery(settings.console_oidc_issuer)
    client = _client(settings, login["redirect"])
    token = client.fetch_token(meta["token_endpoint"], grant_type="authorization_code", code=code,
                               code_verifier=login["verifier"])
    keys_ = KeySet.import_key_set(httpx.get(meta["jwks_uri"], timeout=10).raise_for_status().json())
    try:
        decoded = jwt.decode(token["id_token"], keys_, algorithms=["RS256", "PS256", "ES256", "EdDSA"])
        claims = decoded.claims
        jwt.JWTClaimsRegistry(leeway=30, iss={"essential": True, "value": meta["issuer"]},
                              aud={"essential": True, "value": settings.console_oidc_client_id},
                              sub={"essential": True}, exp={"essential": True},
                              nonce={"essential": True, "value": login["nonce"]}).validate(claims)
    except (JoseError, ValueError, KeyError) as exc:
        raise FacegateError("sign_in_failed", f"the ID token was refused ({type(exc).__name__})") from None
    role = role_of(settings, claims)
    if role is None:
        raise FacegateError("forbidden", f"the identity provider's {settings.console_oidc_role_claim!r} claim names "
                            "no console role")
    return name_of(settings, claims), role, dict(claims)
