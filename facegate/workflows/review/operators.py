"""Operators: the people who sign in to the console (API keys stay for machines).

- Accounts (``facegate operators add|list|grant|unlock|link-sso|disable|reset-mfa``): each change
  is one write transaction with its audit row. Passwords are hashed with **argon2id**
  (``argon2-cffi``'s defaults: RFC 9106's second recommended parameters, 64 MiB, 3 passes); only
  the hash is stored, and hashing runs outside any write transaction.
- Two kinds, kept apart. A local operator signs in with a password and TOTP. A single sign-on
  operator *is* the identity provider's ``(issuer, sub)``, never a name: a provider user who
  renames themselves is still themselves and never becomes a local operator. An identity nobody
  registered is refused, unless ``console_oidc_auto_create``, which creates an operator with no
  role until an administrator grants one; roles are granted here, never taken from the provider.
- Second factor: **TOTP** (RFC 6238, ``pyotp``: 30 s steps, 6 digits, one step of clock drift
  either way). An operator without one enrols at the first sign-in: the secret belongs to the
  one session it was shown to (encrypted on that session's row), is shown once, and becomes the
  operator's (``operator_totp``, encrypted under the data key) when a code made with it is
  accepted. A code's time step is remembered, so a code is used once.
- Sessions live in the database (``operator_sessions``: the sha256 of the cookie's secret, never
  the secret), so any replica serves any request. Passing the second factor ends the session
  that asked for it and opens a new one (new secret, new CSRF token). A session ends after
  ``console_idle_min`` minutes unused or ``console_absolute_h`` hours after sign-in, at sign-out,
  and when the operator is disabled or their second factor reset.
- Failed sign-ins slow down, they never lock. A failure (wrong name, password or code) counts
  against the source address and against the name, whether or not an operator has it, so the
  answers never tell names apart; from a browser that holds the operator's device cookie (set
  after each complete sign-in) it counts against that cookie alone, so an outsider who knows a
  name slows guesses at it but cannot keep its operator out of their own browser. Past
  ``console_max_failures`` under a name (``console_source_max_failures`` from an address, which
  a service hall's operators may share) each try waits ``console_lockout_s``, doubling with each
  further failure up to ``console_throttle_max_s`` (``sign_in_throttled``, 429 + ``retry_after``). A
  count is forgotten a day after its last failure, and a complete sign-in forgets the name's and
  the device's; ``facegate operators unlock`` forgets them at once. Single sign-on honours the
  same wait.

Sign-ins, sign-outs and account changes are audited with the operator's name (``actor =
operator:<name>``); failures and throttled tries, which anyone can cause, at most
:data:`facegate.storage.audit.REFUSALS_PER_MINUTE` per source address. Times come from
:func:`facegate.clock.utcnow`.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pyotp
import segno
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from facegate.clock import iso, utcnow
from facegate.errors import FacegateError
from facegate.storage import audit, signin_failures
from facegate.storage.aad import pending_totp_aad, totp_aad
from facegate.storage.audit import Actor
from facegate.storage.db import write_transaction
from facegate.storage.schema import operator_sessions, operator_totp, operators
from facegate.vocab import OPERATOR_ROLES

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD, MAX_PASSWORD = 12, 256
ISSUER = "facegate"
TOUCH_S = 15.0            # last_seen is written at most this often per session
FORGET_S = 86_400.0       # a failure count is forgotten this long after its last failure
DEVICE_TTL_S = 90 * 86_400.0
_DEVICE_AAD = b"facegate:console-device:v1"

_hasher = PasswordHasher()                                   # argon2id
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))        # unknown names cost as much as known ones


def _aware(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise FacegateError("invalid_request", "an operator name is 2-64 of a-z 0-9 . _ - (starting with a letter "
                            "or digit)", field="name")
    return name


def check_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise FacegateError("invalid_request", f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters",
                            field="password")
    return password


def _check_role(role: str) -> str:
    if role not in OPERATOR_ROLES:
        raise FacegateError("invalid_request", f"role is one of {', '.join(OPERATOR_ROLES)}", field="role")
    return role


def _failed() -> FacegateError:
    return FacegateError("sign_in_failed", "the operator name, password or code is wrong")


@dataclass(frozen=True)
class ConsoleSession:
    operator: str
    role: str
    stage: str
    csrf: str
    id_hash: str
    created_at: datetime
    expires_at: datetime
    via: str = "password"

    def actor(self, request_id: str | None = None, source: str | None = None) -> Actor:
        return Actor(f"operator:{self.operator}", None, "console", request_id)

    def public(self) -> dict:
        return {"operator": self.operator, "role": self.role, "stage": self.stage, "csrf": self.csrf,
                "created_at": iso(self.created_at), "expires_at": iso(self.expires_at), "via": self.via}


@dataclass(frozen=True)
class SignedIn:
    """A complete sign-in: the new session's cookie secret, the session, and the device cookie."""
    secret: str
    session: ConsoleSession
    device: str


class Operators:
    """Operator accounts, sign-in and console sessions on the store's database and data keys.
    ``on_unaudited`` is called for each failure left out of the audit trail by the cap."""

    def __init__(self, settings, store, on_unaudited=None):
        self.settings = settings
        self.db = store.db
        self.keys = store.keys
        self.on_unaudited = on_unaudited

    # ------------------------------------------------------------------ accounts
    def add(self, name: str, role: str, password: str | None, *, display_name: str | None = None,
            actor: str = "system", sso_subject: str | None = None, sso_issuer: str | None = None) -> dict:
        check_name(name)
        _check_role(role)
        issuer = None
        if sso_subject is not None:
            if password is not None:
                raise FacegateError("invalid_request", "an operator signs in with a password or with single sign-on, "
                                    "not both", field="password")
            issuer = self._issuer(sso_issuer)
            if not isinstance(sso_subject, str) or not 0 < len(sso_subject) <= 255:
                raise FacegateError("invalid_request", "the provider's subject (sub) is 1-255 characters",
                                    field="sso_subject")
        pw_hash = _hasher.hash(check_password(password)) if password is not None else None
        now = utcnow()
        with write_transaction(self.db) as conn:
            if conn.execute(sa.select(operators.c.name).where(operators.c.name == name)).first():
                raise FacegateError("operator_exists", f"operator {name!r} already exists", name=name)
            self._identity_free(conn, issuer, sso_subject)
            conn.execute(operators.insert().values(name=name, display_name=(display_name or None), role=role,
                                                   status="active", password_hash=pw_hash, created_at=now,
                                                   sso_issuer=issuer, sso_subject=sso_subject))
            audit.append(conn, actor=actor, operation="operator.add", outcome="ok",
                         detail={"operator": name, "role": role, "password": pw_hash is not None,
                                 "sso": sso_subject is not None})
        return {"name": name, "role": role, "status": "active", "created_at": iso(now),
                "sso": sso_subject is not None}

    def _issuer(self, issuer: str | None) -> str:
        issuer = (issuer or self.settings.console_oidc_issuer or "").rstrip("/")
        if not issuer or len(issuer) > 512:
            raise FacegateError("invalid_request", "name the identity provider: --sso-issuer, or set "
                                "FACEGATE_CONSOLE_OIDC_ISSUER", field="sso_issuer")
        return issuer

    @staticmethod
    def _identity_free(conn, issuer: str | None, subject: str | None) -> None:
        if subject is None:
            return
        o = operators.c
        other = conn.execute(sa.select(o.name).where(o.sso_issuer == issuer, o.sso_subject == subject)).scalar()
        if other is not None:
            raise FacegateError("operator_exists", f"that single sign-on identity is operator {other!r}", name=other)

    def list(self) -> list[dict]:
        o, t = operators, operator_totp
        q = (sa.select(o.c.name, o.c.display_name, o.c.role, o.c.status, o.c.created_at, o.c.disabled_at,
                       o.c.sso_subject, t.c.confirmed_at)
             .outerjoin(t, t.c.operator == o.c.name).order_by(o.c.name))
        with self.db.connect() as conn:
            rows = conn.execute(q).all()
        now_s = utcnow().timestamp()
        counts = signin_failures.counts(self.db, [f"acct:{r.name}" for r in rows])
        out = []
        for r in rows:
            failures, _ = counts.get(f"acct:{r.name}", (0, 0.0))
            out.append({"name": r.name, "display_name": r.display_name, "role": r.role, "status": r.status,
                        "sso": r.sso_subject is not None, "failures": failures,
                        "wait_s": math.ceil(self._wait_s([f"acct:{r.name}"], now_s, counts)),
                        "created_at": iso(r.created_at), "disabled_at": iso(r.disabled_at),
                        "mfa": r.confirmed_at is not None})
        return out

    def _get(self, conn, name: str):
        row = conn.execute(sa.select(operators).where(operators.c.name == name)).one_or_none()
        if row is None:
            raise FacegateError("unknown_operator", f"no operator {name!r}", name=name)
        return row

    def _end_sessions(self, conn, name: str, now: datetime) -> int:
        s = operator_sessions.c
        return conn.execute(operator_sessions.update().where(s.operator == name, s.ended_at.is_(None))
                            .values(ended_at=now, totp_pending_enc=None, key_id=None)).rowcount

    def disable(self, name: str, actor: str = "system") -> dict:
        now = utcnow()
        with write_transaction(self.db) as conn:
            self._get(conn, check_name(name))
            conn.execute(operators.update().where(operators.c.name == name).values(status="disabled", disabled_at=now))
            ended = self._end_sessions(conn, name, now)
            audit.append(conn, actor=actor, operation="operator.disable", outcome="ok",
                         detail={"operator": name, "sessions_ended": ended})
        return {"name": name, "status": "disabled", "sessions_ended": ended}

    def reset_mfa(self, name: str, actor: str = "system") -> dict:
        """Forget the second factor: the operator enrols a new one at the next sign-in."""
        now = utcnow()
        with write_transaction(self.db) as conn:
            self._get(conn, check_name(name))
            had = conn.execute(operator_totp.delete().where(operator_totp.c.operator == name)).rowcount
            ended = self._end_sessions(conn, name, now)
            audit.append(conn, actor=actor, operation="operator.reset_mfa", outcome="ok",
                         detail={"operator": name, "had_mfa": bool(had), "sessions_ended": ended})
        return {"name": name, "mfa": False, "sessions_ended": ended}

    def grant(self, name: str, role: str, actor: str = "system") -> dict:
        """Give an operator a role (a single sign-on operator created without one gets it here)."""
        _check_role(role)
        with write_transaction(self.db) as conn:
            row = self._get(conn, check_name(name))
            conn.execute(operators.update().where(operators.c.name == name).values(role=role))
            audit.append(conn, actor=actor, operation="operator.grant", outcome="ok",
                         detail={"operator": name, "role": role, "was": row.role})
        return {"name": name, "role": role, "was": row.role}

    def link_sso(self, name: str, subject: str, issuer: str | None = None, actor: str = "system") -> dict:
        """Make an operator without a password the provider's identity ``(issuer, subject)``."""
        issuer = self._issuer(issuer)
        if not isinstance(subject, str) or not 0 < len(subject) <= 255:
            raise FacegateError("invalid_request", "the provider's subject (sub) is 1-255 characters",
                                field="sso_subject")
        with write_transaction(self.db) as conn:
            row = self._get(conn, check_name(name))
            if row.password_hash is not None:
                raise FacegateError("invalid_request", f"{name!r} signs in with a password; single sign-on "
                                    "operators are added apart (operators add --sso-subject)", field="name")
            self._identity_free(conn, issuer, subject)
            conn.execute(operators.update().where(operators.c.name == name)
                         .values(sso_issuer=issuer, sso_subject=subject))
            audit.append(conn, actor=actor, operation="operator.link_sso", outcome="ok",
                         detail={"operator": name, "issuer": issuer, "subject": subject})
        return {"name": name, "sso_issuer": issuer, "sso_subject": subject}

    def unlock(self, name: str, source: str | None = None, actor: str = "system") -> dict:
        """Forget the failures counted against a name and its devices (and a source address)."""
        with self.db.connect() as conn:
            self._get(conn, check_name(name))
        cleared = signin_failures.clear(self.db, [f"acct:{name}"] + ([f"src:{source}"] if source else []),
                                        prefixes=[f"dev:{name}:"])
        audit.record(self.db, actor=actor, operation="operator.unlock", outcome="ok",
                     detail={"operator": name, "source": source, "counts_cleared": cleared})
        return {"name": name, "counts_cleared": cleared}

    # ------------------------------------------------------------------ failures and their waits
    @staticmethod
    def _keys(name: str, source: str | None, device_id: str | None) -> list[str]:
        if device_id:
            return [f"dev:{name}:{device_id}"[:200]]
        return [f"src:{source or 'unknown'}"[:200], f"acct:{name}"[:200]]

    def _delay(self, key: str, failures: int) -> float:
        s = self.settings
        free = s.console_source_max_failures if key.startswith("src:") else s.console_max_failures
        if failures < free:
            return 0.0
        return min(s.console_throttle_max_s, s.console_lockout_s * 2.0 ** (failures - free))

    def _wait_s(self, keys: list[str], now_s: float, counts: dict | None = None) -> float:
        counts = signin_failures.counts(self.db, keys) if counts is None else counts
        wait = 0.0
        for key in keys:
            failures, last = counts.get(key, (0, 0.0))
            if failures and now_s - last < FORGET_S:
                wait = max(wait, last + self._delay(key, failures) - now_s)
        return wait

    def _throttled(self, wait: float) -> FacegateError:
        return FacegateError("sign_in_throttled", "too many failed sign-ins; wait before trying again",
                             retry_after=max(1, math.ceil(wait)))

    def _refuse(self, keys: list[str], now_s: float, *, count: bool, actor: str, operation: str,
                source: str | None, detail: dict) -> FacegateError:
        """Count a failure against ``keys`` (unless only throttled), audit it under the cap, and
        return the answer: the wait when there is one now, else ``sign_in_failed``."""
        if count:
            signin_failures.fail(self.db, keys, now_s, FORGET_S)
        wait = self._wait_s(keys, now_s)
        outcome = "sign_in_throttled" if wait > 0 and not count else "sign_in_failed"
        written = audit.record_capped(self.db, source or "unknown", actor=actor, client_id="console",
                                      operation=operation, outcome=outcome,
                                      detail={"source": source, **detail, "wait_s": math.ceil(wait)})
        if not written and self.on_unaudited:
            self.on_unaudited()
        return self._throttled(wait) if wait > 0 else _failed()

    def device_id(self, name: str, cookie: str | None, now_s: float | None = None) -> str | None:
        """The id of a device cookie that this operator's complete sign-in set, while it is fresh."""
        if not cookie or len(cookie) > 1024:
            return None
        value = self.keys.unseal(cookie, _DEVICE_AAD)
        now_s = utcnow().timestamp() if now_s is None else now_s
        if (not value or value.get("op") != name or not isinstance(value.get("id"), str)
                or not isinstance(value.get("t"), (int, float)) or value["t"] + DEVICE_TTL_S < now_s):
            return None
        return value["id"]

    def _device_cookie(self, name: str, now_s: float) -> str:
        return self.keys.seal({"op": name, "id": secrets.token_urlsafe(12), "t": now_s}, _DEVICE_AAD)

    def _signed_in(self, name: str, keys: list[str], secret: str, session: ConsoleSession, now_s: float) -> SignedIn:
        signin_failures.clear(self.db, [k for k in keys if not k.startswith("src:")])
        return SignedIn(secret, session, self._device_cookie(name, now_s))

    # ------------------------------------------------------------------ sign-in
    def sign_in(self, name: str, password: str, source: str | None = None,
                device: str | None = None) -> tuple[str, ConsoleSession]:
        """Check the password; a session waiting for its second factor (``mfa``, or ``enrol``
        when the operator has none yet). Returns (the cookie's secret, the session)."""
        now = utcnow()
        now_s = now.timestamp()
        name = (name if isinstance(name, str) else "")[:64]
        valid = bool(NAME.match(name)) and isinstance(password, str) and len(password) <= MAX_PASSWORD
        password = password if valid else "x" * MIN_PASSWORD
        keys = self._keys(name, source, self.device_id(name, device, now_s) if valid else None)
        refusal = {"actor": f"operator:{name}", "operation": "console.sign_in", "source": source}
        if self._wait_s(keys, now_s) > 0:
            raise self._refuse(keys, now_s, count=False, **refusal, detail={"why": "throttled"})
        row = None
        if valid:
            with self.db.connect() as conn:
                row = conn.execute(sa.select(operators).where(operators.c.name == name)).one_or_none()
        usable = row is not None and row.status == "active" and row.password_hash is not None and row.role
        try:
            _hasher.verify(row.password_hash if usable else _DUMMY_HASH, password)
            ok = bool(usable)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if not ok:
            why = ("password" if usable else "unknown" if row is None else
                   "disabled" if row.status != "active" else "no_password")
            raise self._refuse(keys, now_s, count=True, **refusal, detail={"why": why})
        new_hash = _hasher.hash(password) if _hasher.check_needs_rehash(row.password_hash) else None
        with write_transaction(self.db) as conn:
            row = conn.execute(sa.select(operators).where(operators.c.name == name)).one_or_none()
            if row is None or row.status != "active" or not row.role:
                raise _failed()
            if new_hash:
                conn.execute(operators.update().where(operators.c.name == name).values(password_hash=new_hash))
            has_mfa = conn.execute(sa.select(operator_totp.c.confirmed_at)
                                   .where(operator_totp.c.operator == name)).scalar() is not None
            secret, session = self._open(conn, row, "mfa" if has_mfa else "enrol", "password", now)
            audit.append(conn, actor=f"operator:{name}", client_id="console", operation="console.sign_in",
                         outcome="password_ok", detail={"source": source, "next": session.stage})
        return secret, session

    def _open(self, conn, row, stage: str, via: str, now: datetime,
              expires: datetime | None = None, created: datetime | None = None) -> tuple[str, ConsoleSession]:
        secret = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        created = created or now
        expires = expires or now + timedelta(hours=self.settings.console_absolute_h)
        conn.execute(operator_sessions.insert().values(id_hash=_sha(secret), operator=row.name, stage=stage,
                                                       csrf=csrf, via=via, created_at=created, last_seen=now,
                                                       expires_at=expires))
        return secret, ConsoleSession(row.name, row.role, stage, csrf, _sha(secret), created, expires, via)

    def open_sso(self, issuer: str, subject: str, preferred_name: str | None = None, source: str | None = None,
                 device: str | None = None) -> SignedIn:
        """A session for the identity provider's ``(issuer, subject)`` (the provider did the
        factors): the operator registered for that identity, with the role granted here."""
        now = utcnow()
        now_s = now.timestamp()
        o = operators.c
        with self.db.connect() as conn:
            row = conn.execute(sa.select(operators).where(o.sso_issuer == issuer, o.sso_subject == subject)).one_or_none()
        if row is None:
            if not self.settings.console_oidc_auto_create:
                raise FacegateError("sso_not_registered", "this single sign-on identity is not an operator here; an "
                                    "administrator adds it (facegate operators add NAME --role ROLE --sso-subject SUB)",
                                    sso_subject=subject[:255])
            name = self._create_sso(issuer, subject, preferred_name, now)
            raise FacegateError("sso_not_registered", f"operator {name!r} was created for this identity with no "
                                f"role; an administrator grants one (facegate operators grant {name} --role ROLE)",
                                name=name)
        if row.status != "active":
            raise FacegateError("sign_in_failed", "this operator is disabled")
        if not row.role:
            raise FacegateError("sso_not_registered", f"operator {row.name!r} has no role yet; an administrator "
                                f"grants one (facegate operators grant {row.name} --role ROLE)", name=row.name)
        keys = self._keys(row.name, source, self.device_id(row.name, device, now_s))
        if (wait := self._wait_s(keys, now_s)) > 0:
            raise self._throttled(wait)
        with write_transaction(self.db) as conn:
            secret, session = self._open(conn, row, "active", "oidc", now)
            audit.append(conn, actor=f"operator:{row.name}", client_id="console", operation="console.sign_in",
                         outcome="ok", detail={"source": source, "via": "oidc", "role": row.role})
        return self._signed_in(row.name, keys, secret, session, now_s)

    def _create_sso(self, issuer: str, subject: str, preferred_name: str | None, now: datetime) -> str:
        wanted = (preferred_name or "").lower()[:64]
        fallback = "sso-" + hashlib.sha256(f"{issuer}\n{subject}".encode()).hexdigest()[:12]
        with write_transaction(self.db) as conn:
            taken = NAME.match(wanted) is None or conn.execute(
                sa.select(operators.c.name).where(operators.c.name == wanted)).first() is not None
            name = fallback if taken else wanted
            existing = conn.execute(sa.select(operators.c.name).where(
                operators.c.sso_issuer == issuer, operators.c.sso_subject == subject)).scalar()
            if existing is not None:
                return existing
            conn.execute(operators.insert().values(name=name, display_name=preferred_name[:256] if preferred_name else None,
                                                   role=None, status="active", created_at=now, sso_issuer=issuer,
                                                   sso_subject=subject))
            audit.append(conn, actor="oidc", operation="operator.add", outcome="ok",
                         detail={"operator": name, "role": None, "password": False, "sso": True,
                                 "auto_created": True})
        return name

    # ------------------------------------------------------------------ second factor
    def enrolment(self, session: ConsoleSession) -> dict:
        """The TOTP secret to enrol, as text and as a QR code (an SVG data URI), for a session in
        ``enrol``: shown once, to this session only."""
        if session.stage != "enrol":
            raise FacegateError("forbidden", "the second factor is already enrolled")
        s = operator_sessions.c
        with write_transaction(self.db) as conn:
            if conn.execute(sa.select(operator_totp.c.confirmed_at)
                            .where(operator_totp.c.operator == session.operator)).scalar() is not None:
                raise FacegateError("forbidden", "the second factor is already enrolled")
            shown = conn.execute(sa.select(s.totp_pending_enc).where(s.id_hash == session.id_hash)).scalar()
            if shown is not None:
                raise FacegateError("enrolment_shown", "the secret was shown once to this sign-in; sign out and in "
                                    "again for a new one")
            secret = pyotp.random_base32()
            blob, kid = self.keys.encrypt(secret.encode(), pending_totp_aad(session.operator, session.id_hash))
            conn.execute(operator_sessions.update().where(s.id_hash == session.id_hash)
                         .values(totp_pending_enc=blob, key_id=kid))
            audit.append(conn, actor=f"operator:{session.operator}", client_id="console",
                         operation="console.mfa_enrolment", outcome="shown", detail={})
        uri = pyotp.TOTP(secret).provisioning_uri(name=session.operator, issuer_name=ISSUER)
        qr = segno.make(uri, error="m")
        return {"secret": secret, "uri": uri, "qr_svg": qr.svg_data_uri(scale=5, border=2)}

    def _code_secret(self, session: ConsoleSession) -> str | None:
        """The secret a code is checked against: this session's pending one while enrolling, else
        the operator's confirmed one."""
        s, t = operator_sessions.c, operator_totp.c
        with self.db.connect() as conn:
            if session.stage == "enrol":
                row = conn.execute(sa.select(s.totp_pending_enc.label("blob"), s.key_id.label("kid"))
                                   .where(s.id_hash == session.id_hash)).one_or_none()
                aad = pending_totp_aad(session.operator, session.id_hash)
            else:
                row = conn.execute(sa.select(t.secret_enc.label("blob"), t.key_id.label("kid"))
                                   .where(t.operator == session.operator, t.confirmed_at.is_not(None))).one_or_none()
                aad = totp_aad(session.operator)
        if row is None or row.blob is None:
            return None
        try:
            return self.keys.decrypt(row.blob, row.kid, aad).decode()
        except FacegateError:
            return None

    @staticmethod
    def _step(secret: str | None, code: str, now: datetime) -> int | None:
        if secret is None or not re.fullmatch(r"\d{6}", code):
            return None
        totp = pyotp.TOTP(secret)
        for drift in (0, -1, 1):
            at = now + timedelta(seconds=30 * drift)
            if hmac.compare_digest(totp.at(at), code):
                return int(at.timestamp()) // 30
        return None

    def verify_code(self, session: ConsoleSession, code: str, source: str | None = None,
                    device: str | None = None) -> SignedIn:
        """The second step: a valid TOTP code ends this session and opens an ``active`` one with a
        new secret and CSRF token (and confirms an enrolment)."""
        if session.stage not in ("mfa", "enrol"):
            raise FacegateError("forbidden", "this session is already signed in")
        now = utcnow()
        now_s = now.timestamp()
        name = session.operator
        code = (code or "").strip().replace(" ", "") if isinstance(code, str) else ""
        keys = self._keys(name, source, self.device_id(name, device, now_s))
        refusal = {"actor": f"operator:{name}", "operation": "console.mfa", "source": source}
        if self._wait_s(keys, now_s) > 0:
            raise self._refuse(keys, now_s, count=False, **refusal, detail={"why": "throttled"})
        secret = self._code_secret(session)
        step = self._step(secret, code, now)
        why = "not_shown" if secret is None else "code"
        opened = None
        if step is not None:
            t, s = operator_totp.c, operator_sessions.c
            with write_transaction(self.db) as conn:
                row = self._get(conn, name)
                live = conn.execute(sa.select(s.ended_at).where(s.id_hash == session.id_hash)).one_or_none()
                if live is None or live.ended_at is not None or row.status != "active" or not row.role:
                    raise FacegateError("session_expired", "the console session has expired; sign in again")
                if session.stage == "enrol":
                    if conn.execute(sa.select(t.confirmed_at).where(t.operator == name)).scalar() is not None:
                        raise FacegateError("forbidden", "another sign-in enrolled a second factor first")
                    conn.execute(operator_totp.delete().where(t.operator == name))
                    blob, kid = self.keys.encrypt(secret.encode(), totp_aad(name))
                    conn.execute(operator_totp.insert().values(operator=name, secret_enc=blob, key_id=kid,
                                                               confirmed_at=now, last_step=step, created_at=now))
                    used = 1
                else:
                    used = conn.execute(operator_totp.update().where(
                        t.operator == name, sa.or_(t.last_step.is_(None), t.last_step < step)).values(last_step=step)
                    ).rowcount
                if used:
                    conn.execute(operator_sessions.update().where(s.id_hash == session.id_hash)
                                 .values(ended_at=now, totp_pending_enc=None, key_id=None))
                    opened = self._open(conn, row, "active", session.via, now, expires=session.expires_at,
                                        created=session.created_at)
                    audit.append(conn, actor=f"operator:{name}", client_id="console", operation="console.sign_in",
                                 outcome="ok", detail={"source": source,
                                                       "mfa": "enrolled" if session.stage == "enrol" else "totp"})
                else:
                    why = "replayed"
        if opened is None:
            raise self._refuse(keys, now_s, count=True, **refusal, detail={"why": why})
        return self._signed_in(name, keys, opened[0], opened[1], now_s)

    # ------------------------------------------------------------------ sessions
    def session(self, secret: str | None) -> ConsoleSession:
        """The live session of a cookie's secret (``session_expired`` otherwise), marked used."""
        if not secret or len(secret) > 128:
            raise FacegateError("session_expired", "sign in to the console")
        now = utcnow()
        s, o = operator_sessions.c, operators.c
        with self.db.connect() as conn:
            row = conn.execute(sa.select(operator_sessions, operators.c.role, operators.c.status.label("op_status"))
                               .join(operators, o.name == s.operator)
                               .where(s.id_hash == _sha(secret))).one_or_none()
        idle = timedelta(minutes=self.settings.console_idle_min)
        if (row is None or row.ended_at is not None or row.op_status != "active" or not row.role
                or _aware(row.expires_at) <= now or _aware(row.last_seen) + idle <= now):
            if row is not None and row.ended_at is None:
                with write_transaction(self.db) as conn:
                    conn.execute(operator_sessions.update().where(s.id_hash == row.id_hash)
                                 .values(ended_at=now, totp_pending_enc=None, key_id=None))
                    audit.append(conn, actor=f"operator:{row.operator}", client_id="console",
                                 operation="console.session_expired", outcome="session_expired",
                                 detail={"idle": _aware(row.last_seen) + idle <= now})
            raise FacegateError("session_expired", "the console session has expired; sign in again")
        if (now - _aware(row.last_seen)).total_seconds() >= TOUCH_S:
            with write_transaction(self.db) as conn:
                conn.execute(operator_sessions.update().where(s.id_hash == row.id_hash).values(last_seen=now))
        return ConsoleSession(row.operator, row.role, row.stage, row.csrf, row.id_hash, _aware(row.created_at),
                              _aware(row.expires_at), row.via)

    @staticmethod
    def check_csrf(session: ConsoleSession, token: str | None) -> None:
        if not token or not hmac.compare_digest(session.csrf.encode(), str(token).encode()[:256]):
            raise FacegateError("csrf_failed", "the CSRF token is missing, stale or from another session")

    def sign_out(self, session: ConsoleSession, source: str | None = None) -> None:
        now = utcnow()
        with write_transaction(self.db) as conn:
            conn.execute(operator_sessions.update().where(operator_sessions.c.id_hash == session.id_hash)
                         .values(ended_at=now, totp_pending_enc=None, key_id=None))
            audit.append(conn, actor=f"operator:{session.operator}", client_id="console",
                         operation="console.sign_out", outcome="ok", detail={"source": source})
