"""The gallery: the store (system of record) plus a FAISS index of its templates for 1:N.

    gallery = Gallery(settings, engine)
    gallery.enrol("P-1001", photo_bytes)              # duplicate check, then store + index
    gallery.verify("P-1001", probe.embedding)         # 1:1, best over the subject's templates
    gallery.identify(probe.embedding, top_k=5)        # 1:N, top subjects with a margin rule

With the pack's second opinion (SFace) every enrolment also stores the photo's SFace template
beside the main one (``template_family``), and a 1:N search whose probe brings its SFace embedding
rescores the index's shortlist with the mean of the two cosines, decided at the fused table's
point (``rule: fused``); a shortlist holding a subject without an SFace template yet (enrolled
before, backfill not done) is decided by the main model alone (``rule: single``, with the reason).

The database is the truth. The index is a cache of the engine pack's templates, persisted as a
snapshot that records the change-log ``seq`` it reflects; opening loads the snapshot and
replays newer change-log rows, and rebuilds from the database when there is no snapshot, it
cannot be read, or it disagrees with the database (template count). Index entries are only
added by replaying the change log, whose rows commit with their templates, so a crash at any
point loses nothing and duplicates nothing: the next open replays from the snapshot's seq.
The snapshot holds every template (or its codes), so it is sealed with the data key
(:mod:`facegate.storage.sealed`; mode 0600); one written before sealing is sealed on open.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegate.config import Settings
from facegate.errors import FacegateError
from facegate.images import face_crop_jpeg
from facegate.storage import consents
from facegate.storage.store import Store
from facegate.gallery.second_opinion import Ranking, decision_fmr, points_for, rescore
from facegate.gallery.vectors import VectorIndex
from facegate.matching.decisions import Candidate, Identification, OperatingPoint, decide_1toN, threshold
from facegate.matching.scores import exact_scores
from facegate.storage.sealed import is_sealed

log = logging.getLogger(__name__)

SAVE_EVERY_CHANGES = 2000          # snapshot after this many replayed changes (and on close)
# Removed templates leave zeroed tombstone slots in the graph and fast-scan kinds (searched
# past, never returned); a start-up finding this many rebuilds from the database to drop them.
TOMBSTONE_REBUILD_MIN = 10_000
TOMBSTONE_REBUILD_FRACTION = 0.2
REPLAY_PAGE = 20000


def _quality_dict(quality) -> tuple[float | None, dict | None]:
    if quality is None:
        return None, None
    if isinstance(quality, dict):
        return quality.get("score"), quality
    d = quality.as_dict()
    return d.get("score"), d


class _DuplicateFound(Exception):
    """Raised inside the insert's transaction (rolling it back) by the serialised re-check."""

    def __init__(self, found: list[dict]):
        super().__init__("duplicate found under the write lock")
        self.found = found


@dataclass(frozen=True)
class SubjectMatch:
    """A probe against one subject's templates: the best exact score, at a 1:1 operating point."""
    subject_id: str
    score: float
    face_id: int
    templates: int
    point: OperatingPoint

    @property
    def match(self) -> bool:
        return self.point.matches(self.score)

    def as_dict(self) -> dict:
        return {"subject_id": self.subject_id, "score": round(self.score, 6), "match": self.match,
                "threshold": round(self.point.threshold, 6), "fmr": self.point.fmr, "face_id": self.face_id,
                "templates": self.templates}


class Gallery:
    """Store + vector index for one engine (one model pack)."""

    def __init__(self, settings: Settings, engine, store: Store | None = None):
        self.settings = settings
        self.engine = engine
        self.pack_id = engine.pack_id
        self.store = store or Store.open(settings)
        self._own_store = store is None
        self._lock = threading.RLock()
        self._unsaved = 0
        self._last_sync = 0.0
        self.index: VectorIndex
        self.applied_seq = 0
        self.opened_from = self._open_index()
        foreign = {p: n for p, n in self.store.pack_counts().items() if p != self.pack_id}
        if foreign:
            log.warning("the store holds %s template(s) of other model packs (%s); they are not searched and "
                        "verify answers pack_mismatch for subjects that only have those: re-enrol them",
                        sum(foreign.values()), ", ".join(foreign))

    # ------------------------------------------------------------------ index lifecycle
    @property
    def dim(self) -> int:
        return int(getattr(self.engine.embedder, "dim", 512))

    @property
    def snapshot_path(self) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.pack_id)
        return Path(self.settings.data_dir) / "index" / f"{self.store.store_id}-{safe}.faiss"

    def _open_index(self) -> str:
        """Load the snapshot and catch up, or rebuild; returns how ('snapshot' or 'rebuild: why')."""
        path = self.snapshot_path
        if path.exists():
            try:
                index, seq = VectorIndex.load(path, self.store.keys)
            except Exception as exc:           # unreadable, truncated or sealed by a retired key: the DB has everything
                log.warning("index snapshot %s unreadable (%s); rebuilding from the database", path, exc)
                return "rebuild: " + self.rebuild(reason="unreadable snapshot")
            with self.store.snapshot() as conn:
                last = self.store.last_seq(conn)
                if seq > last:
                    return "rebuild: " + self.rebuild(reason=f"snapshot seq {seq} is ahead of the database ({last})")
                self.index, self.applied_seq = index, seq
                replayed = self._replay(conn)
                expected = self.store.count_templates(self.pack_id, conn)
            if len(self.index) != expected:
                return "rebuild: " + self.rebuild(
                    reason=f"snapshot+replay has {len(self.index)} templates, the database {expected}")
            wanted = VectorIndex.for_size(self.dim, expected, kind=self.settings.index_kind).kind
            if wanted != self.index.kind:
                return "rebuild: " + self.rebuild(reason=f"{expected} templates call for a {wanted} index, "
                                                         f"the snapshot is {self.index.kind}")
            if self.index.tombstones > max(TOMBSTONE_REBUILD_MIN, TOMBSTONE_REBUILD_FRACTION * expected):
                return "rebuild: " + self.rebuild(reason=f"{self.index.tombstones} removed templates still occupy "
                                                         "index slots")
            log.info("index snapshot %s at seq %d, replayed %d change(s)", path, seq, replayed)
            if replayed:
                self._unsaved += replayed
                self.maybe_save(force=replayed >= SAVE_EVERY_CHANGES)
            if not is_sealed(path):             # written before snapshots were sealed: seal it now
                self.save()
            return "snapshot"
        return "rebuild: " + self.rebuild(reason="no snapshot")

    def rebuild(self, reason: str = "requested") -> str:
        """Build the index from every template in the database, in one consistent read."""
        t0 = time.perf_counter()
        with self._lock:
            with self.store.snapshot() as conn:
                seq = self.store.last_seq(conn)
                n = self.store.count_templates(self.pack_id, conn)
                index = VectorIndex.for_size(self.dim, n, kind=self.settings.index_kind)
                for ids, vecs in self.store.iter_embeddings(conn, self.pack_id):
                    index.add(ids, vecs)
            self.index, self.applied_seq = index, seq
            self._unsaved = 0
            self.save()
        log.info("index rebuilt (%s): %d templates at seq %d in %.2fs", reason, n, seq, time.perf_counter() - t0)
        return reason

    def _replay(self, conn=None) -> int:
        """Apply change-log rows newer than ``applied_seq``; returns how many were read."""
        total = 0
        while True:
            changes = self.store.changes_since(self.applied_seq, limit=REPLAY_PAGE, conn=conn)
            if not changes:
                return total
            final: dict[int, str] = {}
            for c in changes:
                if c["pack_id"] == self.pack_id:
                    final[int(c["template_id"])] = c["op"]
            removes = [t for t, op in final.items() if op == "remove"]
            adds = [t for t, op in final.items() if op == "add"]
            if removes:
                self.index.remove(np.asarray(removes, dtype=np.int64))
            if adds:
                ids, vecs = self.store.embeddings_by_id(adds, self.pack_id, conn=conn)
                if len(ids):
                    self.index.add(ids, vecs)
            self.applied_seq = int(changes[-1]["seq"])
            total += len(changes)
            if len(changes) < REPLAY_PAGE:
                return total

    def sync(self) -> int:
        """Catch up with changes committed by any process (this one, another server, the CLI)."""
        with self._lock:
            n = self._replay()
            self._last_sync = time.monotonic()
            if n:
                self._unsaved += n
                self.maybe_save()
            return n

    def _sync_if_stale(self) -> None:
        if time.monotonic() - self._last_sync >= float(getattr(self.settings, "index_sync_s", 1.0)):
            self.sync()

    def save(self) -> None:
        with self._lock:
            self.index.save(self.snapshot_path, self.applied_seq, self.store.keys)
            self._unsaved = 0

    def maybe_save(self, force: bool = False) -> None:
        if force or self._unsaved >= SAVE_EVERY_CHANGES:
            self.save()

    def close(self) -> None:
        with self._lock:
            if self._unsaved:
                self.save()
        if self._own_store:
            self.store.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ 1:N core
    def _rank_subjects(self, embedding: np.ndarray, n_subjects: int, second: np.ndarray | None = None) -> Ranking:
        """Subjects ranked by their best EXACT score (decrypted templates, cosine) against the
        probe: the index only proposes candidates. With ``second`` (the probe's second-opinion
        embedding) and every shortlisted template's second template, the score is the mean of
        the two cosines (``rule`` fused)."""
        q = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        with self._lock:
            if len(self.index) == 0:
                return Ranking([])
            k = min(len(self.index), max(4 * n_subjects + 8, 16))
            stop = float(self.settings.index_early_stop)
            _, ids = self.index.search(q, k, stop_score=stop if stop > 0 else None)
        face_ids = [int(i) for i in ids[0] if i >= 0]
        rows = self.store.embeddings_for_subjects_of(face_ids, self.pack_id)
        if not rows:
            return Ranking([])
        scores, rule, note = rescore(self.store, self.engine, rows,
                                     exact_scores([r["embedding"] for r in rows], embedding), second)
        best: dict[str, Candidate] = {}
        for r, s in zip(rows, scores):
            cur = best.get(r["subject_id"])
            if cur is None or s > cur.score:
                best[r["subject_id"]] = Candidate(r["subject_id"], float(s), r["face_id"], r["status"])
        return Ranking(sorted(best.values(), key=lambda c: -c.score), rule, note)

    def duplicates(self, embedding: np.ndarray, exclude_subject: str | None = None, fmr: float | None = None,
                   quality: float | None = None, second: np.ndarray | None = None) -> list[dict]:
        """Subjects other than ``exclude_subject`` whose templates match the face at the 1:N
        operating point (``identify_fmr`` unless ``fmr`` is given; ``quality``: the photo's quality
        score, for a table with quality bands; ``second``: its second-opinion embedding)."""
        ranking = self._rank_subjects(embedding, 5, second)
        point = threshold(points_for(self.engine, ranking.rule),
                          decision_fmr(self.engine, ranking.rule, fmr or self.settings.identify_fmr), quality)
        return [{"subject_id": c.subject_id, "score": round(c.score, 6), "face_id": c.face_id,
                 "threshold": round(point.threshold, 6), "rule": ranking.rule}
                for c in ranking.candidates if c.subject_id != exclude_subject and point.matches(c.score)]

    # ------------------------------------------------------------------ operations
    def enrol(self, subject_id: str, image_bytes: bytes, source: str = "api", allow_duplicate: bool = False,
              actor: str = "system", duplicate_fmr: float | None = None, purpose: str | None = None) -> dict:
        """Detect the one face in the photo, check it is not someone else's, store and index it."""
        face = self.engine.face(image_bytes, policy="single", min_face_px=self.settings.min_enrol_face_px)
        return self.enrol_embedding(subject_id, face.embedding, face.quality, source=source,
                                    allow_duplicate=allow_duplicate, image=image_bytes, actor=actor,
                                    duplicate_fmr=duplicate_fmr, second=self.engine.second_embedding(face),
                                    reference=self.reference_of(image_bytes, face), purpose=purpose)

    def reference_of(self, image: bytes | np.ndarray, face) -> tuple[bytes, int, int] | None:
        """The photo's face crop kept for reviewers and re-embedding (None when
        ``keep_reference`` is off): 2x the face box, longer side <= 400 px, JPEG."""
        if not self.settings.keep_reference:
            return None
        bgr, scale = self.engine.decode(image)
        return face_crop_jpeg(bgr, np.asarray(face.box[:4], dtype=np.float64) * scale)

    def enrol_embedding(self, subject_id: str, embedding: np.ndarray, quality=None, source: str = "api",
                        allow_duplicate: bool = False, image: bytes | None = None, actor: str = "system",
                        import_item: dict | None = None, duplicate_fmr: float | None = None,
                        second: np.ndarray | None = None, reference: tuple[bytes, int, int] | None = None,
                        purpose: str | None = None) -> dict:
        """Enrol an embedding made by this gallery's engine (pack) from a checked photo, with
        ``second``, the same face by the pack's second opinion, stored beside it when given.

        The duplicate check uses the 1:N operating point unless ``duplicate_fmr`` names a
        stricter one (a 1:N check against N subjects false-alarms at about N x FMR). Check and
        insert are one serialised step: the index answers for everything it has synced, and,
        under the write lock that the insert takes, the templates committed since then (by any
        process) are compared exactly, so the same face enrolled at once under two ids is
        accepted once."""
        self.store.require_subject(subject_id)             # unknown_subject before any search
        purpose = consents.purpose_of(purpose, self.settings)
        with self.store.db.connect() as conn:               # refused before any search; checked again at insert
            consents.require_enrolment(conn, subject_id, purpose, self.settings)
        self.sync()
        synced = self.applied_seq
        # the all-probes 1:N point, not the photo's quality band (see docs/engine.md)
        dups = self.duplicates(embedding, exclude_subject=subject_id, fmr=duplicate_fmr, second=second)
        if dups and not allow_duplicate:
            self._refuse_duplicate(subject_id, dups, actor, source)
        point = threshold(self.engine.operating_points, duplicate_fmr or self.settings.identify_fmr)

        def no_late_duplicate(conn) -> None:
            late = self.store.added_since(conn, synced, self.pack_id)
            scores = exact_scores([t["embedding"] for t in late], embedding)
            found = [{"subject_id": t["subject_id"], "score": round(float(sc), 6), "face_id": t["face_id"],
                      "threshold": round(point.threshold, 6)}
                     for t, sc in zip(late, scores) if t["subject_id"] != subject_id and point.matches(sc)]
            if found:
                raise _DuplicateFound(found)

        basis: dict = {}

        def checks(conn) -> None:
            # under the write lock: a withdrawal committed since the check above refuses this insert
            basis.update(consents.require_enrolment(conn, subject_id, purpose, self.settings))
            if not allow_duplicate:
                no_late_duplicate(conn)

        score, detail = _quality_dict(quality)
        try:
            rec = self.store.add_template(subject_id, embedding, self.pack_id, quality=score, quality_detail=detail,
                                          source=source, image=image, import_item=import_item, actor=actor,
                                          audit_detail={"consent": basis} | ({"duplicate_of": [d["subject_id"] for d in dups]}
                                                                            if dups else {}),
                                          check=checks,
                                          family=self._family(second), reference=reference)
        except _DuplicateFound as late:
            self._refuse_duplicate(subject_id, late.found, actor, source)
        self.sync()
        return {"face_id": rec["face_id"], "subject_id": subject_id, "quality": detail, "pack_id": self.pack_id,
                "duplicate_of": dups, "second_opinions": sorted(self._family(second) or ())}

    def _family(self, second: np.ndarray | None) -> dict[str, np.ndarray] | None:
        if second is None or self.engine.second_model is None:
            return None
        return {self.engine.second_model: second}

    def _refuse_duplicate(self, subject_id: str, dups: list[dict], actor: str, source: str):
        top = dups[0]
        self.store.audit(actor=actor, operation="template.add", outcome="duplicate_blocked", subject_id=subject_id,
                         scores={"duplicate_of": [{"subject_id": d["subject_id"], "score": d["score"]} for d in dups]},
                         detail={"source": source})
        raise FacegateError(
            "duplicate_identity",
            f"this face matches subject {top['subject_id']!r} (score {top['score']:.3f} >= threshold "
            f"{top['threshold']:.3f}); one person may not hold two identities. Check the case, or enrol "
            "with allow_duplicate (CLI --allow-duplicate) if they are different people.",
            subject_id=subject_id, duplicate_of=dups)

    def verify(self, subject_id: str, embedding: np.ndarray, fmr: float | None = None,
               quality: float | None = None) -> SubjectMatch:
        """1:1 against the subject's templates (best score), from the database directly, at
        ``fmr`` or the 1:1 operating point ``target_fmr`` (``quality``: the probe's quality
        score, which picks the band of a table calibrated per quality band)."""
        point = threshold(self.engine.operating_points, fmr or self.settings.target_fmr, quality)
        tmpl = self.store.subject_templates(subject_id, self.pack_id)
        scores = exact_scores([e for _, e in tmpl], embedding)
        i = int(np.argmax(scores))
        return SubjectMatch(subject_id, float(scores[i]), tmpl[i][0], len(tmpl), point)

    def identify(self, embedding: np.ndarray, top_k: int = 5, fmr: float | None = None,
                 quality: float | None = None, second: np.ndarray | None = None) -> Identification:
        """1:N: subjects ranked by exact score, decided by the margin rule
        (:func:`facegate.matching.decisions.decide_1toN`) at ``fmr`` or the 1:N operating point
        ``identify_fmr`` (stricter than 1:1's, since a search of N subjects makes about N chances
        of a false match); ``quality``: the probe's quality score, as for :meth:`verify`;
        ``second``: the probe's second-opinion embedding, for the fused rule (module docstring)."""
        threshold(self.engine.operating_points, fmr or self.settings.identify_fmr, quality)   # model_unavailable first
        self._sync_if_stale()
        ranking = self._rank_subjects(embedding, max(int(top_k), 2), second)
        point = threshold(points_for(self.engine, ranking.rule),
                          decision_fmr(self.engine, ranking.rule, fmr or self.settings.identify_fmr), quality)
        return decide_1toN(ranking.candidates, point, float(self.settings.identify_margin), int(top_k),
                           ranking.rule, ranking.note)

    def reenrol_from_photos(self, subject_id: str | None = None, actor: str = "system") -> dict:
        """After a model-pack change: re-embed the stored photos of other packs' templates
        (:func:`facegate.gallery.backfill.reenrol_from_photos`)."""
        from facegate.gallery.backfill import reenrol_from_photos
        return reenrol_from_photos(self, subject_id, actor)

    def erase(self, subject_id: str, actor: str = "system", reason: str | None = None) -> dict:
        """Erase a subject: templates, index entries (and the snapshot on disk), journal rows."""
        out = self.store.erase_subject(subject_id, actor=actor, reason=reason)
        self._after_removal()
        return out

    def delete_subject(self, subject_id: str, actor: str = "system", reason: str | None = None) -> dict:
        out = self.store.delete_subject(subject_id, actor=actor, reason=reason)
        self._after_removal()
        return out

    def delete_template(self, face_id: int, actor: str = "system", subject_id: str | None = None) -> dict:
        out = self.store.delete_template(face_id, actor=actor, subject_id=subject_id)
        self._after_removal()
        return out

    def after_erasure(self) -> None:
        """Templates were erased by another path (withdrawal, the retention purge): drop them
        from the index and rewrite the snapshot now."""
        self._after_removal()

    def _after_removal(self) -> None:
        # The snapshot on disk still holds the removed vectors: rewrite it now.
        with self._lock:
            self.sync()
            self.save()

    def stats(self) -> dict:
        with self._lock:
            self.sync()
            in_db = self.store.count_templates(self.pack_id)
            return {
                "pack_id": self.pack_id, "backend": self.store.backend,
                "second_opinion": None if self.engine.second_model is None else
                self.store.family_counts(self.pack_id, self.engine.second_model) | {"model": self.engine.second_model}, "store_id": self.store.store_id,
                "subjects": self.store.count_subjects(), "templates_in_db": in_db, "templates_in_index": len(self.index),
                "consistent": len(self.index) == in_db, "applied_seq": self.applied_seq,
                "last_seq": self.store.last_seq(), "other_packs": {p: n for p, n in self.store.pack_counts().items()
                                                                   if p != self.pack_id},
                "snapshot": str(self.snapshot_path), "opened_from": self.opened_from, "index": self.index.stats(),
            }
