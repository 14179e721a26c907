"""Operators: the people who sign in to the console (API keys stay for machines).

- Accounts (``facegate operators add|list|disable|reset-mfa``): each change is one write
  transaction with its audit row. Passwords are hashed with **argon2id** (``argon2-cffi``'s
  defaults: RFC 9106's second recommended parameters, 64 MiB, 3 passes); only the hash is stored.
- Second factor: **TOTP** (RFC 6238, ``pyotp``: 30 s steps, 6 digits, one step of clock drift
  either way). An operator without one enrols at the first sign-in: the console shows the
  secret as a QR code (``segno``, an inline SVG) and the enrolment is confirmed by the first
  code accepted. The secret is stored encrypted under the data key (``operator_totp``, in
  :data:`facegate.storage.aad.ENCRYPTED`). A code's time step is remembered, so a code is used once.
- Sessions live in the database (``operator_sessions``: the sha256 of the cookie's secret,
  never the secret), so any replica serves any request. A session ends after
  ``console_idle_min`` minutes unused or ``console_absolute_h`` hours after sign-in, at
  sign-out, and when the operator is disabled or their second factor reset. Each session has
  its own CSRF token, required on every state-changing call.
- Lockout with back-off: after ``console_max_failures`` wrong passwords or codes in a row the
  operator is locked for ``console_lockout_s`` seconds, doubling with each further failure (at
  most a day); a successful sign-in resets the count.

Every sign-in, failure, sign-out and refusal is audited with the operator's name
(``actor = operator:<name>``). Times come from :func:`facegate.clock.utcnow`.
"""
from __future__ import annotations

import hashlib
import hmac
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
from facegate.storage import audit
from facegate.storage.aad import totp_aad
from facegate.storage.audit import Actor
from facegate.storage.db import write_transaction
from facegate.storage.schema import operator_sessions, operator_totp, operators
from facegate.vocab import OPERATOR_ROLES

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD, MAX_PASSWORD = 12, 256
MAX_LOCK_S = 86_400.0
ISSUER = "facegate"
TOUCH_S = 15.0            # last_seen is written at most this often per session

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


class Operators:
    """Operator accounts, sign-in and console sessions on the store's database and data keys."""

    def __init__(self, settings, store):
        self.settings = settings
        self.db = store.db
        self.keys = store.keys

    # ------------------------------------------------------------------ accounts
    def add(self, name: str, role: str, password: str | None, *, display_name: str | None = None,
            actor: str = "system") -> dict:
        check_name(name)
        if role not in OPERATOR_ROLES:
            raise FacegateError("invalid_request", f"role is one of {', '.join(OPERATOR_ROLES)}", field="role")
        pw_hash = _hasher.hash(check_password(password)) if password is not None else None
        now = utcnow()
        with write_transaction(self.db) as conn:
            if conn.execute(sa.select(operators.c.name).where(operators.c.name == name)).first():
                raise FacegateError("operator_exists", f"operator {name!r} already exists", name=name)
            conn.execute(operators.insert().values(name=name, display_name=(display_name or None), role=role,
                                                   status="active", password_hash=pw_hash, failures=0,
                                                   created_at=now))
            audit.append(conn, actor=actor, operation="operator.add", outcome="ok",
                         detail={"operator": name, "role": role, "password": pw_hash is not None})
        return {"name": name, "role": role, "status": "active", "created_at": iso(now)}

    def list(self) -> list[dict]:
        o, t = operators, operator_totp
        q = (sa.select(o.c.name, o.c.display_name, o.c.role, o.c.status, o.c.failures, o.c.locked_until,
                       o.c.created_at, o.c.disabled_at, t.c.confirmed_at)
             .outerjoin(t, t.c.operator == o.c.name).order_by(o.c.name))
        with self.db.connect() as conn:
            return [{"name": r.name, "display_name": r.display_name, "role": r.role, "status": r.status,
                     "failures": r.failures, "locked_until": iso(r.locked_until), "created_at": iso(r.created_at),
                     "disabled_at": iso(r.disabled_at), "mfa": r.confirmed_at is not None}
                    for r in conn.execute(q).all()]

    def _get(self, conn, name: str):
        row = conn.execute(sa.select(operators).where(operators.c.name == name)).one_or_none()
        if row is None:
            raise FacegateError("unknown_operator", f"no operator {name!r}", name=name)
        return row

    def _end_sessions(self, conn, name: str, now: datetime) -> int:
        s = operator_sessions.c
        return conn.execute(operator_sessions.update().where(s.operator == name, s.ended_at.is_(None))
                            .values(ended_at=now)).rowcount

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
            conn.execute(operators.update().where(operators.c.name == name).values(failures=0, locked_until=None))
            audit.append(conn, actor=actor, operation="operator.reset_mfa", outcome="ok",
                         detail={"operator": name, "had_mfa": bool(had), "sessions_ended": ended})
        return {"name": name, "mfa": False, "sessions_ended": ended}

    # ------------------------------------------------------------------ sign-in
    def _fail(self, conn, row, now: datetime, what: str, source: str | None) -> FacegateError:
        """Count a failure (locking after ``console_max_failures``) and audit it; returns the error to raise."""
        s = self.settings
        failures = int(row.failures or 0) + 1
        locked_until = None
        if failures >= s.console_max_failures:
            lock_s = min(MAX_LOCK_S, s.console_lockout_s * 2 ** (failures - s.console_max_failures))
            locked_until = now + timedelta(seconds=lock_s)
        conn.execute(operators.update().where(operators.c.name == row.name)
                     .values(failures=failures, locked_until=locked_until))
        audit.append(conn, actor=f"operator:{row.name}", client_id="console", operation=what,
                     outcome="sign_in_failed", detail={"failures": failures, "source": source,
                                                       "locked_until": iso(locked_until)})
        if locked_until is not None:
            return FacegateError("operator_locked", "too many failed attempts; try again later",
                                 retry_after=max(1, int((locked_until - now).total_seconds())))
        return FacegateError("sign_in_failed", "the operator name, password or code is wrong")

    def _locked(self, conn, row, now: datetime, what: str, source: str | None) -> FacegateError | None:
        """The refusal of a locked operator, audited (the caller raises it after committing)."""
        until = _aware(row.locked_until)
        if until is not None and until > now:
            audit.append(conn, actor=f"operator:{row.name}", client_id="console", operation=what,
                         outcome="operator_locked", detail={"source": source, "locked_until": iso(until)})
            return FacegateError("operator_locked", "too many failed attempts; try again later",
                                 retry_after=max(1, int((until - now).total_seconds())))
        return None

    def sign_in(self, name: str, password: str, source: str | None = None) -> tuple[str, ConsoleSession]:
        """Check the password; a session waiting for its second factor (``mfa``, or ``enrol``
        when the operator has none yet). Returns (the cookie's secret, the session)."""
        now = utcnow()
        name = name if isinstance(name, str) else ""
        valid = bool(NAME.match(name)) and isinstance(password, str) and len(password) <= MAX_PASSWORD
        password = password if valid else "x" * MIN_PASSWORD
        failed = None
        with write_transaction(self.db) as conn:
            row = conn.execute(sa.select(operators).where(operators.c.name == name)).one_or_none() if valid else None
            name = name[:64]
            if row is None or row.status != "active" or row.password_hash is None:
                try:
                    _hasher.verify(_DUMMY_HASH, password)
                except VerificationError:
                    pass
                audit.append(conn, actor=f"operator:{name}", client_id="console", operation="console.sign_in",
                             outcome="sign_in_failed",
                             detail={"source": source, "why": "unknown" if row is None else
                                     ("disabled" if row.status != "active" else "no_password")})
                failed = FacegateError("sign_in_failed", "the operator name, password or code is wrong")
            elif (failed := self._locked(conn, row, now, "console.sign_in", source)) is None:
                try:
                    _hasher.verify(row.password_hash, password)
                except (VerifyMismatchError, VerificationError, InvalidHashError):
                    failed = self._fail(conn, row, now, "console.sign_in", source)
                else:
                    if _hasher.check_needs_rehash(row.password_hash):
                        conn.execute(operators.update().where(operators.c.name == name)
                                     .values(password_hash=_hasher.hash(password)))
                    has_mfa = conn.execute(sa.select(operator_totp.c.confirmed_at)
                                           .where(operator_totp.c.operator == name)).scalar() is not None
                    secret, session = self._open(conn, row, "mfa" if has_mfa else "enrol", "password", now)
                    audit.append(conn, actor=f"operator:{name}", client_id="console", operation="console.sign_in",
                                 outcome="password_ok", detail={"source": source, "next": session.stage})
        if failed is not None:
            raise failed
        return secret, session

    def _open(self, conn, row, stage: str, via: str, now: datetime) -> tuple[str, ConsoleSession]:
        secret = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = now + timedelta(hours=self.settings.console_absolute_h)
        conn.execute(operator_sessions.insert().values(id_hash=_sha(secret), operator=row.name, stage=stage,
                                                       csrf=csrf, via=via, created_at=now, last_seen=now,
                                                       expires_at=expires))
        return secret, ConsoleSession(row.name, row.role, stage, csrf, _sha(secret), now, expires, via)

    def open_sso(self, name: str, role: str, source: str | None = None) -> tuple[str, ConsoleSession]:
        """A session for an operator signed in by the identity provider (OIDC): the provider did
        the factors; the operator row is created or its role updated from the provider's claim."""
        check_name(name)
        if role not in OPERATOR_ROLES:
            raise FacegateError("forbidden", "the identity provider gave no console role")
        now = utcnow()
        with write_transaction(self.db) as conn:
            row = conn.execute(sa.select(operators).where(operators.c.name == name)).one_or_none()
            if row is None:
                conn.execute(operators.insert().values(name=name, role=role, status="active", failures=0,
                                                       created_at=now))
            elif row.status != "active":
                audit.append(conn, actor=f"operator:{name}", client_id="console", operation="console.sign_in",
                             outcome="sign_in_failed", detail={"source": source, "via": "oidc", "why": "disabled"})
                raise FacegateError("sign_in_failed", "this operator is disabled")
            elif row.role != role:
                conn.execute(operators.update().where(operators.c.name == name).values(role=role))
            row = self._get(conn, name)
            secret, session = self._open(conn, row, "active", "oidc", now)
            audit.append(conn, actor=f"operator:{name}", client_id="console", operation="console.sign_in",
                         outcome="ok", detail={"source": source, "via": "oidc", "role": role})
        return secret, session

    # ------------------------------------------------------------------ second factor
    def _secret(self, conn, name: str, create: bool) -> tuple[str | None, object]:
        row = conn.execute(sa.select(operator_totp).where(operator_totp.c.operator == name)).one_or_none()
        if row is None:
            if not create:
                return None, None
            secret = pyotp.random_base32()
            blob, kid = self.keys.encrypt(secret.encode(), totp_aad(name))
            conn.execute(operator_totp.insert().values(operator=name, secret_enc=blob, key_id=kid,
                                                       created_at=utcnow()))
            row = conn.execute(sa.select(operator_totp).where(operator_totp.c.operator == name)).one()
        return self.keys.decrypt(row.secret_enc, row.key_id, totp_aad(name)).decode(), row

    def enrolment(self, session: ConsoleSession) -> dict:
        """The TOTP secret to enrol, as text and as a QR code (an SVG data URI), for a session in ``enrol``."""
        if session.stage != "enrol":
            raise FacegateError("forbidden", "the second factor is already enrolled")
        with write_transaction(self.db) as conn:
            secret, row = self._secret(conn, session.operator, create=True)
            if row.confirmed_at is not None:
                raise FacegateError("forbidden", "the second factor is already enrolled")
        uri = pyotp.TOTP(secret).provisioning_uri(name=session.operator, issuer_name=ISSUER)
        qr = segno.make(uri, error="m")
        return {"secret": secret, "uri": uri, "qr_svg": qr.svg_data_uri(scale=5, border=2)}

    def verify_code(self, session: ConsoleSession, code: str, source: str | None = None) -> ConsoleSession:
        """The second step: a valid TOTP code turns the session ``active`` (and confirms an enrolment)."""
        if session.stage not in ("mfa", "enrol"):
            raise FacegateError("forbidden", "this session is already signed in")
        now = utcnow()
        code = (code or "").strip().replace(" ", "") if isinstance(code, str) else ""
        failed = None
        with write_transaction(self.db) as conn:
            row = self._get(conn, session.operator)
            failed = self._locked(conn, row, now, "console.mfa", source)
            secret, trow = self._secret(conn, session.operator, create=False)
            step = None
            if secret is not None and re.fullmatch(r"\d{6}", code):
                totp = pyotp.TOTP(secret)
                for drift in (0, -1, 1):
                    at = now + timedelta(seconds=30 * drift)
                    if hmac.compare_digest(totp.at(at), code):
                        step = int(at.timestamp()) // 30
                        break
            if failed is not None:
                pass
            elif step is None or (trow.last_step is not None and step <= trow.last_step):
                failed = self._fail(conn, row, now, "console.mfa", source)
            else:
                values = {"last_step": step}
                if trow.confirmed_at is None:
                    values["confirmed_at"] = now
                conn.execute(operator_totp.update().where(operator_totp.c.operator == session.operator)
                             .values(**values))
                conn.execute(operators.update().where(operators.c.name == session.operator)
                             .values(failures=0, locked_until=None))
                conn.execute(operator_sessions.update().where(operator_sessions.c.id_hash == session.id_hash)
                             .values(stage="active", last_seen=now))
                audit.append(conn, actor=f"operator:{session.operator}", client_id="console",
                             operation="console.sign_in", outcome="ok",
                             detail={"source": source, "mfa": "enrolled" if "confirmed_at" in values else "totp"})
        if failed is not None:
            raise failed
        return ConsoleSession(session.operator, row.role, "active", session.csrf, session.id_hash,
                              session.created_at, session.expires_at, session.via)

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
        if (row is None or row.ended_at is not None or row.op_status != "active"
                or _aware(row.expires_at) <= now or _aware(row.last_seen) + idle <= now):
            if row is not None and row.ended_at is None:
                with write_transaction(self.db) as conn:
                    conn.execute(operator_sessions.update().where(s.id_hash == row.id_hash).values(ended_at=now))
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
                         .values(ended_at=now))
            audit.append(conn, actor=f"operator:{session.operator}", client_id="console",
                         operation="console.sign_out", outcome="ok", detail={"source": source})
