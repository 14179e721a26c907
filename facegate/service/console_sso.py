"""Console single sign-on: OpenID Connect, authorization code flow with PKCE (``authlib``).

Configured by ``FACEGATE_CONSOLE_OIDC_ISSUER``, ``..._CLIENT_ID``, ``..._CLIENT_SECRET`` (and
optionally ``..._REDIRECT_URI``, ``..._NAME_CLAIM``, ``..._AUTO_CREATE``):

1. ``GET /console/api/oidc/start``: a fresh ``state``, ``nonce`` and PKCE verifier (S256) are
   sealed (AES-GCM under the data key) into a short-lived HttpOnly cookie (``SameSite=Lax``: the
   provider's redirect back is a cross-site navigation), so any replica can finish the login;
   the browser goes to the provider's authorization endpoint (from its discovery document, whose
   ``issuer`` must be the configured one).
2. ``GET /console/api/oidc/callback``: the state must match the cookie's; the code is exchanged
   (client_secret_basic, with the verifier); the ID token's signature (the provider's JWKS,
   ``joserfc``), issuer (the configured one), audience, expiry and nonce are checked. The
   operator is the one registered for the token's ``(iss, sub)``
   (:meth:`facegate.workflows.review.operators.Operators.open_sso`), never the one whose name a
   claim gives, and keeps the role granted here. Failures are audited (capped per source) and
   send the browser to the sign-in page with the error's code.
"""
from __future__ import annotations

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

LOGIN_COOKIE = "fg_oidc"
LOGIN_TTL_S = 600
_AAD = b"facegate:oidc-login:v1"
_DISCOVERY: dict[str, tuple[float, dict]] = {}


def enabled(settings) -> bool:
    return bool(settings.console_oidc_issuer and settings.console_oidc_client_id)


def configured_issuer(settings) -> str:
    return settings.console_oidc_issuer.rstrip("/")


def discovery(issuer: str) -> dict:
    hit = _DISCOVERY.get(issuer)
    if hit and hit[0] > time.monotonic():
        return hit[1]
    meta = httpx.get(issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=10).raise_for_status().json()
    if str(meta.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise FacegateError("not_ready", "the identity provider's discovery document names another issuer than "
                            "FACEGATE_CONSOLE_OIDC_ISSUER", retry_after=60)
    _DISCOVERY[issuer] = (time.monotonic() + 300, meta)
    return meta


def _client(settings, redirect_uri: str) -> OAuth2Client:
    return OAuth2Client(settings.console_oidc_client_id, settings.console_oidc_client_secret or None,
                        scope="openid profile", redirect_uri=redirect_uri, code_challenge_method="S256",
                        token_endpoint_auth_method="client_secret_basic", timeout=10)


def unseal(keys, text: str | None) -> dict:
    value = keys.unseal(text, _AAD) if text and len(text) <= 4096 else None
    if value is None:
        raise FacegateError("sign_in_failed", "the single sign-on attempt is unknown or expired")
    if value.get("t", 0) + LOGIN_TTL_S < time.time():
        raise FacegateError("sign_in_failed", "the single sign-on attempt expired")
    return value


def start(settings, keys, redirect_uri: str) -> tuple[str, str]:
    """(the provider's authorization URL, the sealed login cookie)."""
    meta = discovery(settings.console_oidc_issuer)
    verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(24)
    url, state = _client(settings, redirect_uri).create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
    return url, keys.seal({"state": state, "nonce": nonce, "verifier": verifier, "redirect": redirect_uri,
                           "t": time.time()}, _AAD)


def finish(settings, keys, sealed: str | None, code: str | None, state: str | None) -> tuple[str, str, str | None]:
    """Check the callback and the ID token; (issuer, sub, the name claim's value)."""
    login = unseal(keys, sealed)
    if not state or not secrets.compare_digest(str(state), login["state"]) or not code or len(code) > 2048:
        raise FacegateError("sign_in_failed", "the single sign-on answer does not belong to this browser")
    issuer = configured_issuer(settings)
    meta = discovery(settings.console_oidc_issuer)
    client = _client(settings, login["redirect"])
    token = client.fetch_token(meta["token_endpoint"], grant_type="authorization_code", code=code,
                               code_verifier=login["verifier"])
    keys_ = KeySet.import_key_set(httpx.get(meta["jwks_uri"], timeout=10).raise_for_status().json())
    try:
        decoded = jwt.decode(token["id_token"], keys_, algorithms=["RS256", "PS256", "ES256", "EdDSA"])
        claims = decoded.claims
        jwt.JWTClaimsRegistry(leeway=30, iss={"essential": True, "values": [issuer, issuer + "/"]},
                              aud={"essential": True, "value": settings.console_oidc_client_id},
                              sub={"essential": True}, exp={"essential": True},
                              nonce={"essential": True, "value": login["nonce"]}).validate(claims)
    except (JoseError, ValueError, KeyError) as exc:
        raise FacegateError("sign_in_failed", f"the ID token was refused ({type(exc).__name__})") from None
    subject = str(claims["sub"])
    if not 0 < len(subject) <= 255:
        raise FacegateError("sign_in_failed", "the ID token's subject is empty or too long")
    name = claims.get(settings.console_oidc_name_claim)
    return issuer, subject, str(name)[:256] if isinstance(name, str) and name else None
