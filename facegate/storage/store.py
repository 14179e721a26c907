"""The system of record: subjects, encrypted templates, the change log and the import journal
(the reads are in :mod:`facegate.storage.reads`).

    store = Store.open(settings)               # migrates the schema, loads the data keys
    store.add_subject("P-1001", name="Ana", consent={"who": "clerk 7", "purpose": "pension"})
    face = store.add_template("P-1001", embedding, pack_id=engine.pack_id, quality=0.8)
    store.subject_templates("P-1001", engine.pack_id)    # [(face_id, embedding)]

Every write runs in one write transaction that also appends its change-log rows (template adds
and removes, for index replicas) and an audit row (never biometrics).
"""
from __future__ import annotations

import json
import logging
import uuid
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import sqlalchemy as sa

from facegate.clock import iso, utcnow
from facegate.config import Settings
from facegate.errors import FacegateError
from facegate.storage import audit, changefeed
from facegate.storage.aad import embedding_aad, image_aad, reference_aad
from facegate.storage.datakeys import DataKeys
from facegate.storage.db import open_database, write_transaction
from facegate.storage.family import FamilyStore, insert_family
from facegate.storage.reads import StoreReads
from facegate.storage.erasure import erase_face_data
from facegate.storage.schema import (consent_records, import_items, reference_photos, review_cases,
                                     store_info, subjects, template_family, templates)
from facegate.vocab import SUBJECT_STATUSES

log = logging.getLogger(__name__)

_UNSET = object()


def json_in(value) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def json_out(text: str | None):
    return json.loads(text) if text else None


def subject_dict(row) -> dict:
    m = row._mapping
    return {"subject_id": m["subject_id"], "name": m["name"], "status": m["status"],
            "metadata": json_out(m["metadata"]), "consent": json_out(m["consent"]),
            "minor": bool(m["minor"]), "withdrawn_at": iso(m["withdrawn_at"]),
            "created_at": iso(m["created_at"]), "updated_at": iso(m["updated_at"])}


class Store(FamilyStore, StoreReads):
    """Subjects and templates in SQLite or PostgreSQL (``Settings.database``)."""

    def __init__(self, settings: Settings, db: sa.Engine, keys: DataKeys):
        self.settings = settings
        self.db = db
        self.keys = keys
        self.store_id = self._store_id()

    @classmethod
    def open(cls, settings: Settings | None = None) -> "Store":
        settings = settings or Settings.load()
        return cls(settings, open_database(settings.database), DataKeys.load(settings))

    def close(self) -> None:
        self.db.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def backend(self) -> str:
        return self.db.dialect.name

    def _store_id(self) -> str:
        with self.db.connect() as conn:
            sid = conn.execute(sa.select(store_info.c.value).where(store_info.c.name == "store_id")).scalar()
        if sid:
            return sid
        with write_transaction(self.db) as conn:
            sid = conn.execute(sa.select(store_info.c.value).where(store_info.c.name == "store_id")).scalar()
            if not sid:
                sid = uuid.uuid4().hex
                conn.execute(store_info.insert().values(name="store_id", value=sid))
        return sid

    @contextmanager
    def snapshot(self) -> Iterator[sa.Connection]:
        """A read transaction that sees one consistent state for all its queries."""
        with self.db.connect() as conn:
            if self.backend == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    # ------------------------------------------------------------------ subjects
    @staticmethod
    def _check_status(status: str) -> None:
        if status not in SUBJECT_STATUSES:
            raise FacegateError("invalid_request", f"status must be one of {', '.join(SUBJECT_STATUSES)}")

    def add_subject(self, subject_id: str, name: str | None = None, status: str = "active",
                    metadata: dict | None = None, consent: dict | None = None, actor: str = "system",
                    minor: bool = False) -> dict:
        subject_id = (subject_id or "").strip()
        if not subject_id or len(subject_id) > 128:
            raise FacegateError("invalid_request", "subject_id must be 1-128 characters")
        self._check_status(status)
        now = utcnow()
        with write_transaction(self.db) as conn:
            exists = conn.execute(sa.select(subjects.c.pk).where(subjects.c.subject_id == subject_id)).scalar()
            if exists is not None:
                raise FacegateError("subject_exists", f"subject {subject_id!r} already exists", subject_id=subject_id)
            conn.execute(subjects.insert().values(subject_id=subject_id, name=name, status=status,
                                                  metadata=json_in(metadata), consent=json_in(consent),
                                                  minor=bool(minor), status_since=now, created_at=now, updated_at=now))
            audit.append(conn, actor=actor, operation="subject.create", outcome="ok", subject_id=subject_id,
                         detail={"status": status, "consent": consent is not None} | ({"minor": True} if minor else {}))
            return subject_dict(self._subject_row(conn, subject_id))

    def ensure_subjects(self, entries: dict[str, str | None], actor: str = "system") -> int:
        """Create the subjects (id -> name) that do not exist yet; returns how many were created."""
        if not entries:
            return 0
        created = 0
        ids = list(entries)
        now = utcnow()
        with write_transaction(self.db) as conn:
            have = set()
            for i in range(0, len(ids), 500):
                have.update(conn.execute(sa.select(subjects.c.subject_id)
                                         .where(subjects.c.subject_id.in_(ids[i:i + 500]))).scalars())
            new = [s for s in ids if s not in have]
            if new:
                conn.execute(subjects.insert(), [dict(subject_id=s, name=entries[s], status="active", metadata=None,
                                                      consent=None, status_since=now, created_at=now, updated_at=now)
                                                 for s in new])
                audit.append(conn, actor=actor, operation="subject.create_batch", outcome="ok",
                             detail={"created": len(new)})
                created = len(new)
        return created

    def require_subject(self, subject_id: str) -> None:
        """Raise ``unknown_subject`` unless the subject exists."""
        with self.db.connect() as conn:
            if conn.execute(sa.select(subjects.c.pk).where(subjects.c.subject_id == subject_id)).scalar() is None:
                raise FacegateError("unknown_subject", f"no subject {subject_id!r}", subject_id=subject_id)

    def subject_status(self, subject_id: str) -> str:
        """The subject's status before a decision about them: ``unknown_subject`` when there is no
        such subject, ``consent_withdrawn`` when they withdrew consent (their faces are erased)."""
        with self.db.connect() as conn:
            row = self._subject_row(conn, subject_id)
        if row.withdrawn_at is not None:
            raise FacegateError("consent_withdrawn", subject_id=subject_id)
        return row.status

    def get_subject(self, subject_id: str) -> dict:
        with self.db.connect() as conn:
            row = self._subject_row(conn, subject_id)
            out = subject_dict(row)
            out["templates"] = self._template_meta(conn, row.pk)
        return out

    def list_subjects(self, status: str | None = None, limit: int = 100, offset: int = 0,
                      prefix: str | None = None) -> dict:
        q = sa.select(subjects)
        cq = sa.select(sa.func.count()).select_from(subjects)
        if status:
            self._check_status(status)
            q, cq = q.where(subjects.c.status == status), cq.where(subjects.c.status == status)
        if prefix:
            q, cq = q.where(subjects.c.subject_id.startswith(prefix, autoescape=True)), cq.where(subjects.c.subject_id.startswith(prefix, autoescape=True))   # a literal prefix: % and _ are not patterns
        tcount = (sa.select(templates.c.subject_pk, sa.func.count().label("n"))
                  .group_by(templates.c.subject_pk).subquery())
        q = (q.add_columns(sa.func.coalesce(tcount.c.n, 0).label("n_templates"))
             .outerjoin(tcount, tcount.c.subject_pk == subjects.c.pk)
             .order_by(subjects.c.subject_id).limit(limit).offset(offset))
        with self.db.connect() as conn:
            total = conn.execute(cq).scalar()
            items = [subject_dict(r) | {"n_templates": int(r.n_templates)} for r in conn.execute(q)]
        return {"total": int(total), "limit": limit, "offset": offset, "subjects": items}

    def update_subject(self, subject_id: str, *, name=_UNSET, status: str | None = None, metadata=_UNSET,
                       consent=_UNSET, minor: bool | None = None, actor: str = "system",
                       reason: str | None = None) -> dict:
        values: dict = {}
        if minor is not None:
            values["minor"] = bool(minor)
        if name is not _UNSET:
            values["name"] = name
        if status is not None:
            self._check_status(status)
            values["status"] = status
        if metadata is not _UNSET:
            values["metadata"] = json_in(metadata)
        if consent is not _UNSET:
            values["consent"] = json_in(consent)
        with write_transaction(self.db) as conn:
            row = self._subject_row(conn, subject_id)
            if values:
                values["updated_at"] = utcnow()
                if "status" in values and values["status"] != row.status:
                    values["status_since"] = values["updated_at"]
                conn.execute(subjects.update().where(subjects.c.pk == row.pk).values(**values))
                changed = sorted(k for k in values if k not in ("updated_at", "status_since"))
                detail = {"changed": changed}
                if "status" in values:
                    detail |= {"from": row.status, "to": status}
                if reason:
                    detail["reason"] = reason
                audit.append(conn, actor=actor, operation="subject.update", outcome="ok", subject_id=subject_id,
                             detail=detail)
            return subject_dict(self._subject_row(conn, subject_id))

    def set_status(self, subject_id: str, status: str, actor: str = "system") -> dict:
        return self.update_subject(subject_id, status=status, actor=actor)

    def erase_subject(self, subject_id: str, actor: str = "system", reason: str | None = None,
                      operation: str = "subject.erase") -> dict:
        """Delete the subject, its templates (with change-log removes) and its import journal rows.
        The audit row records that it happened and how many templates went, nothing biometric."""
        with write_transaction(self.db) as conn:
            row = self._subject_row(conn, subject_id)
            tmpl = conn.execute(sa.select(templates.c.id, templates.c.pack_id)
                                .where(templates.c.subject_pk == row.pk)).all()
            erased = erase_face_data(conn, row.pk, subject_id)     # every kind of face data, one function
            # a later subject under the same id must not inherit this person's consent
            conn.execute(consent_records.update().where(consent_records.c.subject_id == subject_id,
                                                        consent_records.c.withdrawn_at.is_(None))
                         .values(withdrawn_at=utcnow(), withdrawn_by=actor))
            conn.execute(review_cases.delete().where(review_cases.c.subject_pk == row.pk))    # their decisions' records
            conn.execute(import_items.delete().where(import_items.c.subject_id == subject_id))
            conn.execute(subjects.delete().where(subjects.c.pk == row.pk))
            audit.append(conn, actor=actor, operation=operation, outcome="ok", subject_id=subject_id,
                         detail={"templates_removed": len(tmpl), "family_removed": erased["template_family"],
                                 "erased": erased, "reason": reason})
        if self.backend == "sqlite":
            self.checkpoint()
        return {"subject_id": subject_id, "templates_removed": len(tmpl), "face_ids": [t.id for t in tmpl]}

    def delete_subject(self, subject_id: str, actor: str = "system", reason: str | None = None) -> dict:
        return self.erase_subject(subject_id, actor=actor, reason=reason, operation="subject.delete")

    def checkpoint(self) -> None:
        """SQLite: copy the WAL into the database file and truncate it, so deleted rows (zeroed by
        secure_delete) do not linger in the log."""
        with self.db.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    # ------------------------------------------------------------------ templates
    @staticmethod
    def _template_meta(conn, subject_pk: int) -> list[dict]:
        rows = conn.execute(sa.select(templates.c.id, templates.c.pack_id, templates.c.key_id, templates.c.quality,
                                      templates.c.quality_detail, templates.c.source, templates.c.created_at,
                                      (templates.c.image_enc.is_not(None)).label("has_image"))
                            .where(templates.c.subject_pk == subject_pk).order_by(templates.c.id)).all()
        family: dict[int, list[str]] = {}
        for t, model in conn.execute(sa.select(template_family.c.template_id, template_family.c.model)
                                     .where(template_family.c.subject_pk == subject_pk)
                                     .order_by(template_family.c.model)).all():
            family.setdefault(int(t), []).append(model)
        return [{"face_id": r.id, "pack_id": r.pack_id, "key_id": r.key_id, "quality": r.quality,
                 "quality_detail": json_out(r.quality_detail), "source": r.source,
                 "created_at": iso(r.created_at), "image_stored": bool(r.has_image),
                 "second_opinions": family.get(int(r.id), [])} for r in rows]

    def add_template(self, subject_id: str, embedding: np.ndarray, pack_id: str, quality: float | None = None,
                     quality_detail: dict | None = None, source: str | None = None, image: bytes | None = None,
                     import_item: dict | None = None, actor: str = "system", audit_detail: dict | None = None,
                     check=None, family: dict[str, np.ndarray] | None = None,
                     reference: tuple[bytes, int, int] | None = None) -> dict:
        """Store one template (encrypted), with its ``family`` (model -> the same photo's
        embedding by the pack's other models, :mod:`facegate.storage.family`) when given. ``image``
        is stored (encrypted) only when ``Settings.store_images``. ``import_item`` (item_key, path) marks an import row done in
        the same transaction. ``check(conn)`` runs first inside the write transaction, holding the
        database-wide write lock: whatever it raises leaves nothing written. ``reference`` (JPEG,
        width, height): the photo's face crop, kept encrypted unless ``Settings.keep_reference`` is off."""
        vec = np.asarray(embedding, dtype="<f4").reshape(-1)
        if not np.all(np.isfinite(vec)) or vec.size == 0:
            raise FacegateError("invalid_request", "embedding must be a finite float vector")
        now = utcnow()
        with write_transaction(self.db) as conn:
            subj = self._subject_row(conn, subject_id)
            if check is not None:
                check(conn)
            blob, kid = self.keys.encrypt(vec.tobytes(), embedding_aad(subject_id, pack_id))
            image_enc = None
            if image is not None and self.settings.store_images:
                image_enc, _ = self.keys.encrypt(bytes(image), image_aad(subject_id, pack_id))
            res = conn.execute(templates.insert().values(
                subject_pk=subj.pk, pack_id=pack_id, embedding_enc=blob, key_id=kid, quality=quality,
                quality_detail=json_in(quality_detail), source=source, image_enc=image_enc, created_at=now))
            face_id = int(res.inserted_primary_key[0])
            if reference is not None and self.settings.keep_reference:
                photo, pkid = self.keys.encrypt(bytes(reference[0]), reference_aad(subject_id, face_id))
                conn.execute(reference_photos.insert().values(
                    template_id=face_id, subject_pk=subj.pk, photo_enc=photo, key_id=pkid,
                    width=int(reference[1]), height=int(reference[2]), created_at=now))
            models = insert_family(conn, self.keys, template_id=face_id, subject_pk=subj.pk, subject_id=subject_id,
                                   pack_id=pack_id, family=family or {})
            changefeed.log_changes(conn, "add", [(face_id, subj.pk, pack_id)])
            if import_item is not None:
                self._mark_import(conn, import_item["item_key"], subject_id, import_item["path"], "done", face_id, None)
            audit.append(conn, actor=actor, operation="template.add", outcome="ok", subject_id=subject_id,
                         detail={"face_id": face_id, "pack_id": pack_id, "source": source,
                                 "quality": None if quality is None else round(float(quality), 3),
                                 "reference_photo": reference is not None and self.settings.keep_reference}
                         | ({"family": models} if models else {}) | (audit_detail or {}))
        return {"face_id": face_id, "subject_id": subject_id, "pack_id": pack_id, "key_id": kid,
                "created_at": iso(now)}

    def delete_template(self, face_id: int, actor: str = "system", subject_id: str | None = None) -> dict:
        with write_transaction(self.db) as conn:
            row = conn.execute(sa.select(templates.c.id, templates.c.subject_pk, templates.c.pack_id,
                                         subjects.c.subject_id)
                               .join(subjects, subjects.c.pk == templates.c.subject_pk)
                               .where(templates.c.id == int(face_id))).one_or_none()
            if row is None or (subject_id is not None and row.subject_id != subject_id):
                raise FacegateError("unknown_face", f"no face template {face_id}", face_id=int(face_id))
            changefeed.log_changes(conn, "remove", [(row.id, row.subject_pk, row.pack_id)])
            conn.execute(template_family.delete().where(template_family.c.template_id == row.id))
            conn.execute(reference_photos.delete().where(reference_photos.c.template_id == row.id))
            conn.execute(templates.delete().where(templates.c.id == row.id))
            audit.append(conn, actor=actor, operation="template.delete", outcome="ok", subject_id=row.subject_id,
                         detail={"face_id": row.id})
        return {"face_id": int(face_id), "subject_id": row.subject_id}

    def reference_photos_of(self, subject_id: str) -> list[dict]:
        """The subject's reference photos, newest first, decrypted: ``{"face_id", "jpeg", "width",
        "height", "created_at"}`` (empty when none was kept)."""
        r = reference_photos
        with self.db.connect() as conn:
            subj = self._subject_row(conn, subject_id)
            rows = conn.execute(sa.select(r).where(r.c.subject_pk == subj.pk).order_by(r.c.template_id.desc())).all()
        return [{"face_id": int(x.template_id), "width": x.width, "height": x.height, "created_at": iso(x.created_at),
                 "jpeg": self.keys.decrypt(x.photo_enc, x.key_id, reference_aad(subject_id, x.template_id))}
                for x in rows]

    def list_templates(self, subject_id: str) -> list[dict]:
        with self.db.connect() as conn:
            return self._template_meta(conn, self._subject_row(conn, subject_id).pk)

    # ------------------------------------------------------------------ import journal
    @staticmethod
    def _mark_import(conn, item_key: str, subject_id: str, path: str, status: str, face_id: int | None,
                     error: str | None) -> None:
        conn.execute(import_items.delete().where(import_items.c.item_key == item_key))
        conn.execute(import_items.insert().values(item_key=item_key, subject_id=subject_id, path=str(path),
                                                  status=status, template_id=face_id, error=error,
                                                  updated_at=utcnow()))

    def record_import_error(self, item_key: str, subject_id: str, path: str, code: str) -> None:
        with write_transaction(self.db) as conn:
            self._mark_import(conn, item_key, subject_id, path, "error", None, code)

    def import_done(self, item_keys: list[str]) -> set[str]:
        done: set[str] = set()
        with self.db.connect() as conn:
            for i in range(0, len(item_keys), 500):
                done.update(conn.execute(sa.select(import_items.c.item_key).where(
                    import_items.c.item_key.in_(item_keys[i:i + 500]), import_items.c.status == "done")).scalars())
        return done

    # ------------------------------------------------------------------ audit
    def audit(self, **fields) -> int:
        return audit.record(self.db, **fields)

    def audit_verify(self) -> dict:
        with self.snapshot() as conn:
            return audit.verify(conn)
