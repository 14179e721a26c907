"""Template families: a template's second opinions, the same photo embedded by another model of
the pack (SFace beside fr_feature), stored encrypted in ``template_family`` beside the template.

    store.add_template(sid, embedding, pack_id, family={"sface": second})   # one transaction
    store.family_embeddings([face ids], pack_id, "sface")                    # {face_id: embedding}
    store.add_family(pack_id, "sface", [(face_id, embedding)], actor="cli")  # the backfill's batch

A family row is bound (AAD) to its subject, pack, model and template, goes with its template
(erasure, template deletion, ON DELETE CASCADE) and is re-encrypted by key rotation
(:data:`facegate.storage.aad.ENCRYPTED`).
"""
from __future__ import annotations

import hashlib

import numpy as np
import sqlalchemy as sa

from facegate.clock import utcnow
from facegate.errors import FacegateError
from facegate.storage import audit
from facegate.storage.aad import family_aad, image_aad
from facegate.storage.db import write_transaction
from facegate.storage.schema import import_items, subjects, template_family, templates


def _vector(embedding) -> np.ndarray:
    vec = np.asarray(embedding, dtype="<f4").reshape(-1)
    if vec.size == 0 or not np.all(np.isfinite(vec)):
        raise FacegateError("invalid_request", "embedding must be a finite float vector")
    return vec


def insert_family(conn: sa.Connection, keys, *, template_id: int, subject_pk: int, subject_id: str, pack_id: str,
                  family: dict[str, np.ndarray]) -> list[str]:
    """Encrypt and insert ``family`` (model -> embedding) beside template ``template_id``, in the
    caller's transaction; returns the models written."""
    now = utcnow()
    rows = []
    for model, emb in sorted(family.items()):
        blob, kid = keys.encrypt(_vector(emb).tobytes(), family_aad(subject_id, pack_id, model, template_id))
        rows.append(dict(template_id=int(template_id), subject_pk=int(subject_pk), pack_id=pack_id, model=model,
                         embedding_enc=blob, key_id=kid, created_at=now))
    if rows:
        conn.execute(template_family.insert(), rows)
    return [r["model"] for r in rows]


class FamilyStore:
    """Reads and writes of ``template_family`` (mixed into :class:`facegate.storage.store.Store`)."""

    def family_embeddings(self, face_ids: list[int], pack_id: str, model: str) -> dict[int, np.ndarray]:
        """``model``'s embeddings (decrypted) of the templates ``face_ids`` that have one."""
        out: dict[int, np.ndarray] = {}
        if not face_ids:
            return out
        q = (sa.select(template_family.c.template_id, template_family.c.embedding_enc, template_family.c.key_id,
                       subjects.c.subject_id)
             .join(subjects, subjects.c.pk == template_family.c.subject_pk))
        with self.db.connect() as conn:
            for i in range(0, len(face_ids), 1000):
                chunk = [int(x) for x in face_ids[i:i + 1000]]
                for r in conn.execute(q.where(template_family.c.template_id.in_(chunk),
                                              template_family.c.pack_id == pack_id,
                                              template_family.c.model == model)).all():
                    plain = self.keys.decrypt(r.embedding_enc, r.key_id,
                                              family_aad(r.subject_id, pack_id, model, r.template_id))
                    out[int(r.template_id)] = np.frombuffer(plain, dtype="<f4").astype(np.float32)
        return out

    def family_counts(self, pack_id: str, model: str) -> dict[str, int]:
        """Templates of ``pack_id`` with and without a ``model`` second opinion."""
        has = sa.exists().where(template_family.c.template_id == templates.c.id, template_family.c.model == model)
        with self.db.connect() as conn:
            total = int(conn.execute(sa.select(sa.func.count()).select_from(templates)
                                     .where(templates.c.pack_id == pack_id)).scalar())
            with_model = int(conn.execute(sa.select(sa.func.count()).select_from(templates)
                                          .where(templates.c.pack_id == pack_id, has)).scalar())
        return {"templates": total, "with_second": with_model, "without_second": total - with_model}

    def templates_without_family(self, pack_id: str, model: str, after_id: int, limit: int) -> list[dict]:
        """Up to ``limit`` templates of ``pack_id`` with id above ``after_id`` and no ``model``
        second opinion, oldest first, with where their photo can be found: the stored photo
        (``image_enc``) or the import journal's path and key."""
        has = sa.exists().where(template_family.c.template_id == templates.c.id, template_family.c.model == model)
        q = (sa.select(templates.c.id, templates.c.subject_pk, templates.c.image_enc, templates.c.key_id,
                       subjects.c.subject_id, import_items.c.path, import_items.c.item_key)
             .join(subjects, subjects.c.pk == templates.c.subject_pk)
             .outerjoin(import_items, sa.and_(import_items.c.template_id == templates.c.id,
                                              import_items.c.status == "done"))
             .where(templates.c.pack_id == pack_id, templates.c.id > int(after_id), ~has)
             .order_by(templates.c.id).limit(int(limit)))
        with self.db.connect() as conn:
            rows = conn.execute(q).all()
        return [{"face_id": int(r.id), "subject_pk": int(r.subject_pk), "subject_id": r.subject_id,
                 "image_enc": r.image_enc, "key_id": r.key_id, "path": r.path, "item_key": r.item_key}
                for r in rows]

    def template_photo(self, row: dict, pack_id: str) -> bytes | None:
        """The photo a template was made from: the stored one, else the imported file when it
        still holds the same bytes (its import key matches); None when neither is available."""
        if row["image_enc"] is not None:
            return self.keys.decrypt(row["image_enc"], row["key_id"], image_aad(row["subject_id"], pack_id))
        if row["path"] and row["item_key"]:
            try:
                data = open(row["path"], "rb").read()
            except OSError:
                return None
            key = hashlib.sha256(row["subject_id"].encode() + b"\0" + hashlib.sha256(data).digest()).hexdigest()
            return data if key == row["item_key"] else None
        return None

    def add_family(self, pack_id: str, model: str, items: list[tuple[int, np.ndarray]], actor: str = "system",
                   detail: dict | None = None) -> int:
        """The backfill's write: ``model`` second opinions for existing templates (face_id,
        embedding), with one audit row, in one transaction. Templates erased meanwhile, or
        already given one by another process, are skipped; returns how many were written."""
        written = 0
        with write_transaction(self.db) as conn:
            ids = [int(f) for f, _ in items]
            owners = {int(r.id): (int(r.subject_pk), r.subject_id) for r in conn.execute(
                sa.select(templates.c.id, templates.c.subject_pk, subjects.c.subject_id)
                .join(subjects, subjects.c.pk == templates.c.subject_pk)
                .where(templates.c.id.in_(ids), templates.c.pack_id == pack_id)).all()} if ids else {}
            done = set(conn.execute(sa.select(template_family.c.template_id).where(
                template_family.c.template_id.in_(ids), template_family.c.model == model)).scalars()) if ids else set()
            for face_id, emb in items:
                if int(face_id) not in owners or int(face_id) in done:
                    continue
                pk, sid = owners[int(face_id)]
                insert_family(conn, self.keys, template_id=int(face_id), subject_pk=pk, subject_id=sid,
                              pack_id=pack_id, family={model: emb})
                written += 1
            audit.append(conn, actor=actor, operation="template.family_backfill", outcome="ok",
                         detail={"pack_id": pack_id, "model": model, "written": written} | (detail or {}))
        return written
