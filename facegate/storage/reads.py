"""The store's reads: templates decrypted for 1:1, for the re-ranking of 1:N candidates and for
building the index, the change log for replicas catching up, and counts. :class:`Store`
(:mod:`facegate.storage.store`) adds the writes, each in one transaction with its change-log and
audit rows.
"""
from __future__ import annotations

import numpy as np
import sqlalchemy as sa

from facegate.errors import FacegateError
from facegate.storage.aad import embedding_aad, image_aad, reference_aad
from facegate.storage.datakeys import DataKeys
from facegate.storage.schema import change_log, reference_photos, subjects, templates


class StoreReads:
    """Reads over ``db`` with ``keys`` (set by :class:`facegate.storage.store.Store`)."""

    db: sa.Engine
    keys: DataKeys

    @staticmethod
    def _subject_row(conn, subject_id: str):
        row = conn.execute(sa.select(subjects).where(subjects.c.subject_id == subject_id)).one_or_none()
        if row is None:
            raise FacegateError("unknown_subject", f"no subject {subject_id!r}", subject_id=subject_id)
        return row

    def foreign_pack_photos(self, pack_id: str, subject_id: str | None = None):
        """Stored photos of templates made by OTHER packs that have no re-enrolled copy in
        ``pack_id`` yet: yields (face_id, subject_id, photo bytes)."""
        q = (sa.select(templates.c.id, templates.c.pack_id, templates.c.image_enc, templates.c.key_id,
                       subjects.c.subject_id)
             .join(subjects, subjects.c.pk == templates.c.subject_pk)
             .where(templates.c.pack_id != pack_id, templates.c.image_enc.is_not(None)).order_by(templates.c.id))
        if subject_id is not None:
            q = q.where(subjects.c.subject_id == subject_id)
        with self.db.connect() as conn:
            done = set(conn.execute(sa.select(templates.c.source).where(
                templates.c.pack_id == pack_id, templates.c.source.startswith("reenrol:"))).scalars())
            rows = conn.execute(q).all()
        for r in rows:
            if f"reenrol:{r.id}" in done:
                continue
            yield r.id, r.subject_id, self.keys.decrypt(r.image_enc, r.key_id, image_aad(r.subject_id, r.pack_id))

    def foreign_pack_references(self, pack_id: str, after_id: int = 0, limit: int = 256) -> tuple[list[tuple], int | None]:
        """Reference photos of templates made by OTHER packs that have no re-embedded copy in
        ``pack_id`` yet, by template id from ``after_id``: ([(face_id, subject_id, jpeg, width,
        height)], the last template id looked at, None at the end)."""
        r = reference_photos
        q = (sa.select(r.c.template_id, r.c.photo_enc, r.c.key_id, r.c.width, r.c.height, subjects.c.subject_id)
             .join(templates, templates.c.id == r.c.template_id).join(subjects, subjects.c.pk == r.c.subject_pk)
             .where(templates.c.pack_id != pack_id, r.c.template_id > after_id)
             .order_by(r.c.template_id).limit(limit))
        with self.db.connect() as conn:
            rows = conn.execute(q).all()
            sources = [f"reembed:{x.template_id}" for x in rows]
            done = set(conn.execute(sa.select(templates.c.source).where(
                templates.c.pack_id == pack_id, templates.c.source.in_(sources))).scalars()) if sources else set()
        return ([(x.template_id, x.subject_id,
                  self.keys.decrypt(x.photo_enc, x.key_id, reference_aad(x.subject_id, x.template_id)), x.width, x.height)
                 for x in rows if f"reembed:{x.template_id}" not in done], rows[-1].template_id if rows else None)

    def _decrypt_rows(self, rows) -> list[tuple]:
        out = []
        for r in rows:
            plain = self.keys.decrypt(r.embedding_enc, r.key_id, embedding_aad(r.subject_id, r.pack_id))
            out.append((r, np.frombuffer(plain, dtype="<f4").astype(np.float32)))
        return out

    def _emb_select(self):
        return (sa.select(templates.c.id, templates.c.subject_pk, templates.c.pack_id, templates.c.embedding_enc,
                          templates.c.key_id, subjects.c.subject_id, subjects.c.status, subjects.c.name)
                .join(subjects, subjects.c.pk == templates.c.subject_pk))

    def subject_templates(self, subject_id: str, pack_id: str) -> list[tuple[int, np.ndarray]]:
        """The subject's decrypted templates of ``pack_id`` as (face_id, embedding).

        Raises ``unknown_subject``, ``not_enrolled`` (no templates) or ``pack_mismatch`` (only
        templates of other model packs: they can never be compared with this pack's)."""
        with self.db.connect() as conn:
            subj = self._subject_row(conn, subject_id)
            rows = conn.execute(self._emb_select().where(templates.c.subject_pk == subj.pk)
                                .order_by(templates.c.id)).all()
        if not rows:
            raise FacegateError("not_enrolled", f"subject {subject_id!r} has no enrolled face", subject_id=subject_id)
        mine = [r for r in rows if r.pack_id == pack_id]
        if not mine:
            others = sorted({r.pack_id for r in rows})
            raise FacegateError(
                "pack_mismatch",
                f"subject {subject_id!r} has {len(rows)} template(s) made by model pack {', '.join(others)}, but this "
                f"service runs {pack_id}; templates of different packs are never compared. Re-enrol the subject "
                f"from kept photos (facegate enrol {subject_id} PHOTO...), or run the old pack until re-enrolment "
                "is done.", subject_id=subject_id, template_packs=others, engine_pack=pack_id)
        return [(int(r.id), e) for r, e in self._decrypt_rows(mine)]

    def embeddings_for_subjects_of(self, face_ids: list[int], pack_id: str) -> list[dict]:
        """All ``pack_id`` templates of the subjects owning ``face_ids`` (decrypted): the exact
        re-ranking set for a 1:N candidate list. Ids that no longer exist are ignored."""
        if not face_ids:
            return []
        # pack_id is filtered here, not in SQL: nearly every template has the same pack, and an
        # index on it would tempt the planner into a full scan.
        owners = sa.select(templates.c.subject_pk).where(templates.c.id.in_([int(i) for i in face_ids]))
        with self.db.connect() as conn:
            rows = [r for r in conn.execute(self._emb_select().where(templates.c.subject_pk.in_(owners))).all()
                    if r.pack_id == pack_id]
        return [{"face_id": int(r.id), "subject_id": r.subject_id, "status": r.status, "name": r.name,
                 "embedding": e} for r, e in self._decrypt_rows(rows)]

    def embeddings_by_id(self, face_ids: list[int], pack_id: str, conn=None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, embeddings) of the existing ``pack_id`` templates among ``face_ids``."""
        ids_out, vecs = [], []
        own = conn is None
        conn = conn or self.db.connect()
        try:
            for i in range(0, len(face_ids), 1000):
                chunk = [int(x) for x in face_ids[i:i + 1000]]
                rows = [r for r in conn.execute(self._emb_select().where(templates.c.id.in_(chunk))).all()
                        if r.pack_id == pack_id]
                for r, e in self._decrypt_rows(rows):
                    ids_out.append(r.id)
                    vecs.append(e)
        finally:
            if own:
                conn.close()
        return _pack(ids_out, vecs)

    def added_since(self, conn: sa.Connection, seq: int, pack_id: str) -> list[dict]:
        """The ``pack_id`` templates added after change-log ``seq`` that still exist (decrypted):
        what an index synced up to ``seq`` has not seen yet."""
        q = (self._emb_select().join(change_log, sa.and_(change_log.c.template_id == templates.c.id,
                                                         change_log.c.op == "add"))
             .where(change_log.c.seq > int(seq), templates.c.pack_id == pack_id))
        return [{"face_id": int(r.id), "subject_id": r.subject_id, "embedding": e}
                for r, e in self._decrypt_rows(conn.execute(q).all())]

    def iter_embeddings(self, conn: sa.Connection, pack_id: str, batch: int = 5000):
        """Every ``pack_id`` template as batches of (ids int64, embeddings float32)."""
        last = 0
        while True:
            rows = conn.execute(self._emb_select().where(templates.c.pack_id == pack_id, templates.c.id > last)
                                .order_by(templates.c.id).limit(batch)).all()
            if not rows:
                return
            dec = self._decrypt_rows(rows)
            last = rows[-1].id
            yield _pack([r.id for r, _ in dec], [e for _, e in dec])

    def template_ids(self, pack_id: str, conn=None) -> np.ndarray:
        own = conn is None
        conn = conn or self.db.connect()
        try:
            ids = conn.execute(sa.select(templates.c.id).where(templates.c.pack_id == pack_id)
                               .order_by(templates.c.id)).scalars().all()
        finally:
            if own:
                conn.close()
        return np.asarray(ids, dtype=np.int64)

    def count_templates(self, pack_id: str | None = None, conn=None) -> int:
        q = sa.select(sa.func.count()).select_from(templates)
        if pack_id is not None:
            q = q.where(templates.c.pack_id == pack_id)
        if conn is not None:
            return int(conn.execute(q).scalar())
        with self.db.connect() as c:
            return int(c.execute(q).scalar())

    def pack_counts(self) -> dict[str, int]:
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(templates.c.pack_id, sa.func.count()).group_by(templates.c.pack_id)).all()
        return {p: int(n) for p, n in rows}

    def count_subjects(self) -> int:
        with self.db.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(subjects)).scalar())

    # ------------------------------------------------------------------ change log
    def last_seq(self, conn=None) -> int:
        q = sa.select(sa.func.max(change_log.c.seq))
        if conn is not None:
            return int(conn.execute(q).scalar() or 0)
        with self.db.connect() as c:
            return int(c.execute(q).scalar() or 0)

    def changes_since(self, seq: int, limit: int | None = None, conn=None) -> list[dict]:
        """Change-log rows with ``seq`` greater than the given one, oldest first."""
        q = sa.select(change_log).where(change_log.c.seq > int(seq)).order_by(change_log.c.seq)
        if limit:
            q = q.limit(limit)
        if conn is not None:
            return [dict(r) for r in conn.execute(q).mappings()]
        with self.db.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]


def _pack(ids: list[int], vecs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not ids:
        return np.empty(0, np.int64), np.empty((0, 0), np.float32)
    return np.asarray(ids, dtype=np.int64), np.ascontiguousarray(np.stack(vecs), dtype=np.float32)
