"""Templates made again from photos: second opinions for templates enrolled before them
(``facegate templates backfill``) and a new pack's templates (``facegate index reenrol``).

For each template of the engine's pack without a second-opinion template (oldest first), the
photo it was made from (stored with ``FACEGATE_STORE_IMAGES=1``, else the imported file when it
still holds the same bytes) is detected again; the face whose main embedding matches the stored
template is embedded by the second model, and a batch of them is written in one transaction with
one audit row. A kill loses at most the batch in flight: the next run asks the database again
for the templates still without one, so it picks up where it stopped. Templates whose photo is
gone stay on the single-model rule until their subject is re-enrolled.
"""
from __future__ import annotations

import time

import numpy as np

from facegate.errors import FacegateError
from facegate.matching.scores import exact_scores

# The same photo through the same pipeline gives the same main embedding (cosine 1.0 up to
# float noise); the face that matches the stored template less than this is not its face.
SAME_FACE_MIN = 0.95


def backfill(gallery, batch: int = 64, limit: int | None = None, actor: str = "system") -> dict:
    """Make the missing second-opinion templates (module docstring); returns the counts."""
    engine, store = gallery.engine, gallery.store
    model = engine.second_model
    if model is None:
        raise FacegateError("model_unavailable", "this engine has no second opinion: the pack holds no SFace model, "
                            "or FACEGATE_SECOND_OPINION=0")
    batch = max(1, min(int(batch), 1000))
    before = store.family_counts(gallery.pack_id, model)
    counts = {"written": 0, "no_photo": 0, "no_face": 0, "face_not_found": 0}
    after_id, seen, t0 = 0, 0, time.perf_counter()
    while limit is None or seen < limit:
        rows = store.templates_without_family(gallery.pack_id, model, after_id, batch if limit is None
                                              else min(batch, limit - seen))
        if not rows:
            break
        after_id, seen = rows[-1]["face_id"], seen + len(rows)
        ids, vecs = store.embeddings_by_id([r["face_id"] for r in rows], gallery.pack_id)
        main = dict(zip(ids.tolist(), vecs))
        items, skipped = [], {"no_photo": 0, "no_face": 0, "face_not_found": 0}
        for r in rows:
            why = _second_of(engine, store, r, main.get(r["face_id"]), gallery.pack_id, items)
            if why:
                skipped[why] += 1
        written = store.add_family(gallery.pack_id, model, items, actor=actor,
                                   detail={"examined": len(rows)} | skipped)
        counts["written"] += written
        for k, v in skipped.items():
            counts[k] += v
    after = store.family_counts(gallery.pack_id, model)
    return {"model": model, "pack_id": gallery.pack_id, "examined": seen, **counts, "before": before,
            "after": after, "elapsed_s": round(time.perf_counter() - t0, 2)}


def _second_of(engine, store, row: dict, main: np.ndarray | None, pack_id: str, items: list) -> str | None:
    """Append (face_id, second embedding) to ``items``, or return why there is none."""
    photo = store.template_photo(row, pack_id)
    if photo is None or main is None:
        return "no_photo"
    try:
        faces = engine.faces(photo, policy="all")
    except FacegateError:
        return "no_face"
    if not faces:
        return "no_face"
    scores = exact_scores([f.embedding for f in faces], main)
    best = int(np.argmax(scores))
    if scores[best] < SAME_FACE_MIN:
        return "face_not_found"
    items.append((row["face_id"], engine.second_embedding(faces[best])))
    return None


def reenrol_from_photos(gallery, subject_id: str | None = None, actor: str = "system") -> dict:
    """After a model-pack change: embed the stored photos (FACEGATE_STORE_IMAGES=1) of
    templates made by other packs with this engine and enrol them as this pack's templates
    (source ``reenrol:<old face id>``; a re-run skips those done). Old templates stay until
    erased; they are never compared with this pack's."""
    done, failed = 0, []
    for old_id, sid, photo in gallery.store.foreign_pack_photos(gallery.pack_id, subject_id):
        try:
            face = gallery.engine.face(photo, policy="largest", min_face_px=gallery.settings.min_enrol_face_px)
            gallery.enrol_embedding(sid, face.embedding, face.quality, source=f"reenrol:{old_id}",
                                    allow_duplicate=True, image=photo, actor=actor,
                                    second=gallery.engine.second_embedding(face))
            done += 1
        except FacegateError as exc:
            failed.append({"face_id": old_id, "subject_id": sid, "code": exc.code})
    without = {p: n for p, n in gallery.store.pack_counts().items() if p != gallery.pack_id}
    return {"reenrolled": done, "failed": failed, "pack_id": gallery.pack_id, "other_pack_templates": without}


def reembed(store, engine, actor: str = "system", limit: int | None = None) -> dict:
    """A model upgrade's path: templates of ``engine``'s pack made from the kept reference
    photos (:data:`~facegate.storage.schema.reference_photos`) of templates of other packs. Each
    new template (source ``reembed:<old face id>``, with its own copy of the reference photo and
    the pack's second opinion) is one transaction with its audit row; a re-run skips those done.
    The old templates stay until erased; they are never compared with the new pack's."""
    done, failed, after, seen = 0, [], 0, 0
    t0 = time.perf_counter()
    stage = {"embed": 0.0, "store": 0.0}
    while limit is None or seen < limit:
        items, after = store.foreign_pack_references(engine.pack_id, after, 256)
        if after is None:
            break
        for old_id, sid, jpeg, w, h in items:
            if limit is not None and seen >= limit:
                break
            seen += 1
            try:
                t = time.perf_counter()
                face = engine.face(jpeg, policy="largest", min_face_px=24)
                second = engine.second_embedding(face)
                t1 = time.perf_counter()
                store.add_template(sid, face.embedding, engine.pack_id, quality=face.quality.score,
                                   quality_detail=face.quality.as_dict(), source=f"reembed:{old_id}",
                                   reference=(jpeg, w, h), actor=actor,
                                   family={engine.second_model: second} if second is not None else None)
                stage["embed"] += t1 - t
                stage["store"] += time.perf_counter() - t1
                done += 1
            except FacegateError as exc:
                failed.append({"face_id": old_id, "subject_id": sid, "code": exc.code})
    elapsed = time.perf_counter() - t0
    return {"pack_id": engine.pack_id, "reembedded": done, "failed": failed, "elapsed_s": round(elapsed, 2),
            "per_template_ms": round(1000 * elapsed / max(done, 1), 2),
            "stage_s": {k: round(v, 2) for k, v in stage.items()}}
