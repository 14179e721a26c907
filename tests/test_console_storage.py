"""Evidence kept for a person to decide (issue 23): the enrolment's reference photo and a review
case's evidence frames are encrypted at rest (no byte in clear anywhere in the data folder),
erased with the subject, resealed by key rotation, and the evidence goes after its retention."""
from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from gallery_support import BACKENDS, fresh_database, make_settings


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def in_clear(folder: Path, secrets: list[bytes]) -> list[str]:
    """The files under ``folder`` holding any 48-byte window of the images' compressed data
    (JPEG headers are shared by every file; the entropy-coded middle is each image's own)."""
    probes = []
    for s in secrets:
        mid = len(s) // 2
        probes += [s[mid:mid + 48], s[len(s) // 4:len(s) // 4 + 48], s[-96:-48]]
    found = []
    for path in _files(folder):
        data = path.read_bytes()
        if any(p in data for p in probes):
            found.append(str(path))
    return found


@pytest.fixture(params=BACKENDS)
def desk_env(request, tmp_path, engine):
    from facegate.gallery.gallery import Gallery
    from facegate.workflows.certification.ledger import CertificationLedger
    from facegate.workflows.review.desk import ReviewDesk
    data = tmp_path / "data"
    with fresh_database(request.param, data) as url:
        settings = make_settings(data, url)
        gallery = Gallery(settings, engine)
        ledger = CertificationLedger(settings, gallery.store)
        yield gallery, ReviewDesk(settings, gallery.store, ledger), data
        gallery.close()


def _checkpoint(store) -> None:
    if store.backend == "sqlite":
        store.checkpoint()


def _frame(photo: bytes) -> bytes:
    bgr = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 88])[1].tobytes()


def _open_case(desk, subject_id: str, frames: list[bytes]) -> int:
    from facegate.storage.db import write_transaction
    from facegate.storage.schema import subjects
    with write_transaction(desk.db) as conn:
        pk = conn.execute(sa.select(subjects.c.pk).where(subjects.c.subject_id == subject_id)).scalar()
        return desk.open_case(conn, workflow="certification", subject_pk=pk, subject_id=subject_id,
                              certification_id=None, period="2026", outcome="manual_review",
                              reasons=["review_band"], scores={"score": 0.3, "threshold": 0.33}, signals=[],
                              evidence=[("frame", i, f, {"pad": {"fr_liveness": 0.9}}) for i, f in enumerate(frames)])


def test_reference_photo_is_a_face_crop_kept_encrypted_and_erased_with_the_subject(desk_env, lfw_images, engine):
    gallery, desk, data = desk_env
    photo = (lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes()
    gallery.store.add_subject("P-1")
    face_id = gallery.enrol("P-1", photo)["face_id"]
    refs = gallery.store.reference_photos_of("P-1")
    assert [r["face_id"] for r in refs] == [face_id]
    jpeg = refs[0]["jpeg"]
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == "JPEG" and max(img.size) <= 400 and (img.width, img.height) == (refs[0]["width"], refs[0]["height"])
    # large enough to judge and to align again: the same person's face is found in it
    again = engine.face(jpeg, policy="single")
    assert float(again.embedding @ engine.face(photo, policy="single").embedding) > 0.8
    _checkpoint(gallery.store)
    assert in_clear(data, [jpeg]) == []
    # bound to the subject and the template: moved to another template, it does not decrypt
    from facegate.errors import FacegateError
    from facegate.storage.aad import reference_aad
    with gallery.store.db.connect() as conn:
        blob, kid = conn.execute(sa.text("SELECT photo_enc, key_id FROM reference_photos")).one()
    with pytest.raises(FacegateError):
        gallery.store.keys.decrypt(blob, kid, reference_aad("P-1", face_id + 1))
    with pytest.raises(FacegateError):
        gallery.store.keys.decrypt(blob, kid, reference_aad("P-2", face_id))

    case_id = _open_case(desk, "P-1", [_frame(photo)])
    assert desk.case(case_id)["reference_photo"] is True
    gallery.erase("P-1")
    with gallery.store.db.connect() as conn:
        for table in ("reference_photos", "review_evidence", "review_cases"):
            assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == 0, table
    _checkpoint(gallery.store)
    if gallery.store.backend == "sqlite":      # secure_delete: the ciphertext itself is gone from the file
        assert not any(bytes(blob[20:68]) in p.read_bytes() for p in _files(data))


def test_keep_reference_off_keeps_no_photo(tmp_path, engine, lfw_images):
    from facegate.gallery.gallery import Gallery
    g = Gallery(make_settings(tmp_path / "d", "", keep_reference=False), engine)
    try:
        g.store.add_subject("P-1")
        g.enrol("P-1", (lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes())
        assert g.store.reference_photos_of("P-1") == []
    finally:
        g.close()


def test_evidence_is_encrypted_audited_when_viewed_resealed_by_rotation_and_purged(desk_env, lfw_images, monkeypatch):
    from facegate.storage import keyrotation
    from facegate.storage.audit import Actor
    from facegate.storage.keyrotation import key_usage, rotate_data_key
    from facegate.workflows.review import desk as desk_module
    monkeypatch.setattr(keyrotation, "REFRESH_S", 0.01)
    gallery, desk, data = desk_env
    photos = [(lfw_images / "Laura_Bush" / f"Laura_Bush_000{i}.jpg").read_bytes() for i in (1, 2, 3)]
    frames = [_frame(p) for p in photos]
    gallery.store.add_subject("P-2")
    gallery.enrol("P-2", photos[0])
    case_id = _open_case(desk, "P-2", frames)
    _checkpoint(gallery.store)
    assert in_clear(data, frames + [gallery.store.reference_photos_of("P-2")[0]["jpeg"]]) == []

    who = Actor("operator:ana", None, "console", None)
    assert desk.evidence_image(case_id, "frame", 1, who) == frames[1]
    from facegate.storage import audit
    with gallery.store.db.connect() as conn:
        views = audit.rows(conn, operation="evidence.view")
    assert views[-1]["actor"] == "operator:ana" and views[-1]["subject_id"] == "P-2"
    assert views[-1]["detail"] == {"case_id": case_id, "image": "frame:1"}

    old = gallery.store.keys.current_id
    res = rotate_data_key(gallery.store)
    assert res["key_id"] != old and set(key_usage(gallery.store.db)) == {res["key_id"]}
    assert desk.evidence_image(case_id, "frame", 2, who) == frames[2]
    assert gallery.store.reference_photos_of("P-2")[0]["jpeg"]

    # decided: the evidence stays for the retention period, then goes
    decided = desk.decide(case_id, "certified", "seen in person with the ID card", operator="ana", who=who)
    assert decided["certification"]["operator"] == "ana" and decided["certification"]["method"] == "manual"
    from facegate.storage import retention
    from facegate.storage.db import write_transaction
    with gallery.store.db.connect() as conn:
        assert retention.backlog(conn, desk.settings)["decision_evidence"] == 0
        later = desk_module.utcnow() + timedelta(days=desk.settings.retention_decision_evidence_days, seconds=1)
        assert retention.backlog(conn, desk.settings, later)["decision_evidence"] == 3
    with write_transaction(gallery.store.db) as conn:
        rule = {r.name: r for r in retention.RULES}["decision_evidence"]
        assert rule.purge(conn, later, desk.settings, 200, {}) == 3
    with gallery.store.db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM review_evidence")).scalar() == 0


def test_reembed_makes_the_new_pack_s_templates_from_reference_photos(desk_env, lfw_images, engine):
    from facegate.gallery.backfill import reembed
    gallery, _, _ = desk_env
    store = gallery.store
    people = ["Colin_Powell", "Laura_Bush", "Aaron_Sorkin"]
    direct = {}
    for name in people:
        photo = (lfw_images / name / f"{name}_0001.jpg").read_bytes()
        face = engine.face(photo, policy="largest")
        store.add_subject(name)
        # as a template of an older pack (its vector is only a placeholder), with the photo's crop kept
        store.add_template(name, np.ones(8, np.float32), "old-pack", reference=gallery.reference_of(photo, face))
        direct[name] = face.embedding
    res = reembed(store, engine, actor="test")
    assert res["reembedded"] == 3 and res["failed"] == [], res
    for name in people:
        (face_id, emb), = store.subject_templates(name, engine.pack_id)
        assert float(emb @ direct[name]) > 0.8, name
        assert [r["face_id"] for r in store.reference_photos_of(name)][0] == face_id
    assert reembed(store, engine)["reembedded"] == 0            # a re-run has nothing left to do


def test_claims_keep_a_second_reviewer_out_and_an_erased_subject_has_no_case(desk_env, lfw_images):
    from facegate.errors import FacegateError
    from facegate.liveness.service import LivenessProof
    from facegate.liveness.sessions import HeldFrame
    from facegate.storage.audit import Actor
    from facegate.storage.db import write_transaction
    gallery, desk, data = desk_env
    photo = (lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes()
    gallery.store.add_subject("P-3")
    gallery.enrol("P-3", photo)
    with gallery.store.db.connect() as conn:
        pk = conn.execute(sa.text("SELECT pk FROM subjects WHERE subject_id='P-3'")).scalar()
    # the keeper: a manual_review answer keeps the held frames and the still; an automatic one keeps nothing
    proof = LivenessProof("s-1", True, score=0.9, evidence=(HeldFrame(4, 0.4, _frame(photo), {"pad": {"m": 0.9}}),))
    answer = {"outcome": "manual_review", "fraud_signals": [], "subject_pk": pk, "subject_id": "P-3",
              "certification_id": 1, "period": "2026", "reasons": ["score_near_threshold"], "score": 0.4,
              "threshold": 0.48, "fmr": 1e-4, "quality": 0.8}
    with write_transaction(desk.db) as conn:
        desk.keeper(proof, photo)(conn, answer)
        desk.keeper(proof, photo)(conn, answer | {"outcome": "certified"})
    case_id = answer["review_case_id"]
    assert [(e["kind"], e["seq"]) for e in desk.case(case_id)["evidence"]] == [("frame", 0), ("still", 0)]
    assert desk.counts() == {"pending": 1}
    ana, bo = Actor("operator:ana"), Actor("operator:bo")
    desk.claim(case_id, "ana", ana)
    with pytest.raises(FacegateError) as e:
        desk.decide(case_id, "certified", "looks right", operator="bo", who=bo)
    assert e.value.code == "case_claimed"
    with pytest.raises(FacegateError) as e:
        desk.decide(case_id, "certified", "   ", operator="ana", who=ana)
    assert e.value.code == "invalid_request"
    with pytest.raises(FacegateError) as e:
        desk.queue(limit=101)
    assert e.value.code == "invalid_request"
    gallery.erase("P-3")                                   # erased meanwhile: the case went with the subject
    with pytest.raises(FacegateError) as e:
        desk.decide(case_id, "certified", "looks right", operator="ana", who=ana)
    assert e.value.code == "unknown_case"
    with gallery.store.db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM certifications WHERE method='manual'")).scalar() == 0
