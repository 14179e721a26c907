"""The deployer's notice (告知): versioned texts in zh-CN and English.

A notice file is JSON (UTF-8, at most ``MAX_FILE_BYTES``) of the form::

    {"zh-CN": {"processor_name": "...", "processor_contact": "...", "purpose": "...", "method": "...",
               "retention": "...", "rights": "...", "alternative": "..."},
     "en":    {...the same fields...}}

Every field of ``vocab.NOTICE_FIELDS`` in both languages of ``vocab.NOTICE_LANGUAGES`` is
required, non-empty and at most ``MAX_FIELD_CHARS`` characters; nothing else is accepted.
:func:`publish` stores it as the next version with its audit row in one transaction; older
versions are kept (a consent names the version it was given to).
"""
from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa

from facegate.clock import iso, utcnow
from facegate.errors import FacegateError
from facegate.storage import audit
from facegate.storage.db import write_transaction
from facegate.storage.schema import notices
from facegate.vocab import NOTICE_FIELDS, NOTICE_LANGUAGES

MAX_FILE_BYTES = 64 * 1024
MAX_FIELD_CHARS = 4000


def validate(raw: bytes | str) -> dict:
    """The notice's body, or ``notice_invalid`` naming what is wrong."""
    data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    if len(data) > MAX_FILE_BYTES:
        raise FacegateError("notice_invalid", f"a notice file is at most {MAX_FILE_BYTES} bytes", limit=MAX_FILE_BYTES)
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise FacegateError("notice_invalid", "a notice file is UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise FacegateError("notice_invalid", "a notice file is a JSON object of languages")
    extra = sorted(set(body) - set(NOTICE_LANGUAGES))
    if extra:
        raise FacegateError("notice_invalid", f"unknown languages {extra}; use {list(NOTICE_LANGUAGES)}", field=extra[0])
    out: dict = {}
    for lang in NOTICE_LANGUAGES:
        texts = body.get(lang)
        if not isinstance(texts, dict):
            raise FacegateError("notice_invalid", f"the notice needs its {lang} texts", field=lang)
        unknown = sorted(set(texts) - set(NOTICE_FIELDS))
        if unknown:
            raise FacegateError("notice_invalid", f"unknown fields {unknown} in {lang}", field=f"{lang}.{unknown[0]}")
        out[lang] = {}
        for name in NOTICE_FIELDS:
            value = texts.get(name)
            if not isinstance(value, str) or not value.strip():
                raise FacegateError("notice_invalid", f"{lang}.{name} is required", field=f"{lang}.{name}")
            if len(value) > MAX_FIELD_CHARS:
                raise FacegateError("notice_invalid", f"{lang}.{name} is longer than {MAX_FIELD_CHARS} characters",
                                    field=f"{lang}.{name}", limit=MAX_FIELD_CHARS)
            out[lang][name] = value.strip()
    return out


def _out(row) -> dict:
    return {"version": int(row.version), "texts": json.loads(row.body), "sha256": row.sha256,
            "published_by": row.published_by, "published_at": iso(row.published_at)}


def publish(db: sa.Engine, raw: bytes | str, actor: str) -> dict:
    """Store a validated notice as the next version (audited ``notice.publish``)."""
    body = validate(raw)
    text = json.dumps(body, ensure_ascii=False, sort_keys=True)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    with write_transaction(db) as conn:
        last = conn.execute(sa.select(sa.func.max(notices.c.version))).scalar() or 0
        version = int(last) + 1
        conn.execute(notices.insert().values(version=version, body=text, sha256=digest, published_by=actor,
                                             published_at=utcnow()))
        audit.append(conn, actor=actor, operation="notice.publish", outcome="ok",
                     detail={"version": version, "sha256": digest})
        return _out(conn.execute(sa.select(notices).where(notices.c.version == version)).one())


def current_version(conn: sa.Connection) -> int | None:
    v = conn.execute(sa.select(sa.func.max(notices.c.version))).scalar()
    return None if v is None else int(v)


def current(db: sa.Engine) -> dict | None:
    """The newest notice, or None when none was published."""
    with db.connect() as conn:
        row = conn.execute(sa.select(notices).order_by(notices.c.version.desc()).limit(1)).one_or_none()
    return None if row is None else _out(row)


def history(db: sa.Engine) -> list[dict]:
    with db.connect() as conn:
        return [_out(r) for r in conn.execute(sa.select(notices).order_by(notices.c.version))]
