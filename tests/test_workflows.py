"""The workflows on the real engine, without a server: verification, kiosk and certification
apply one same-person rule to a liveness capture and its still, and an uncalibrated pack makes
no decision (``model_unavailable``, never an unhandled error)."""
from __future__ import annotations

import dataclasses
import time

import pytest

from facegate.engine import FaceEngine
from facegate.errors import FacegateError
from facegate.gallery.gallery import Gallery
from facegate.liveness.service import LivenessProof
from facegate.storage.audit import Actor
from facegate.workflows import verification
from facegate.workflows.certification.certify import certify
from facegate.workflows.certification.ledger import CertificationLedger
from facegate.workflows.context import WorkflowContext
from facegate.workflows.kiosk.authentication import authenticate
from gallery_support import make_settings

WHO = Actor("test", key_id="k_test", client_id="k-01")


@pytest.fixture(scope="module")
def photos(lfw_images) -> dict[str, bytes]:
    return {"sorkin": (lfw_images / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg").read_bytes(),
            "sorkin2": (lfw_images / "Aaron_Sorkin" / "Aaron_Sorkin_0002.jpg").read_bytes(),
            "other": (lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes()}


@pytest.fixture
def ctx(tmp_path, engine, photos):
    settings = make_settings(tmp_path, "")
    gallery = Gallery(settings, engine)
    gallery.store.add_subject("PEN-1")
    gallery.enrol("PEN-1", photos["sorkin"])
    yield WorkflowContext(settings, engine, gallery)
    gallery.close()


def proof_of(engine, photo: bytes) -> LivenessProof:
    """A passed liveness session whose capture showed the person in ``photo``."""
    return LivenessProof("s-1", True, score=0.9, embedding=engine.face(photo).embedding)


def test_a_still_of_someone_else_than_the_capture_goes_to_a_person_everywhere(ctx, engine, photos):
    capture = proof_of(engine, photos["other"])       # a live relative did the challenge
    verified = verification.verify(ctx, "PEN-1", photos["sorkin2"], liveness=capture)
    assert verified.decision.decision == "manual_review"
    assert verified.decision.reasons == ("capture_face_mismatch",)

    kiosk = authenticate(ctx, WHO, "k-01", "subject", time.perf_counter(), image=photos["sorkin2"],
                         subject_id="PEN-1", liveness=capture)
    assert (kiosk.decision.decision, kiosk.decision.reasons) == ("manual_review", ("capture_face_mismatch",))

    ledger = CertificationLedger(ctx.settings, ctx.gallery.store, engine, ctx.gallery)
    cert = certify(ctx, ledger, WHO, "PEN-1", capture, photos["sorkin2"])
    assert cert["outcome"] == "manual_review" and cert["reasons"] == ["capture_face_mismatch"]

    same = proof_of(engine, photos["sorkin"])
    assert verification.verify(ctx, "PEN-1", photos["sorkin2"], liveness=same).decision.decision == "match"


def test_an_uncalibrated_pack_answers_model_unavailable_in_the_capture_checks(ctx, engine, photos):
    bare = FaceEngine(engine.pack, engine.detector, engine.embedder, engine.settings, None)
    uncalibrated = dataclasses.replace(ctx, engine=bare)
    capture = proof_of(engine, photos["sorkin"])
    with pytest.raises(FacegateError) as e:
        authenticate(uncalibrated, WHO, "k-01", "document", time.perf_counter(), image=photos["sorkin2"],
                     document=photos["sorkin"], liveness=capture)
    assert e.value.code == "model_unavailable"
    ledger = CertificationLedger(ctx.settings, ctx.gallery.store, bare, ctx.gallery)
    with pytest.raises(FacegateError) as e:
        certify(uncalibrated, ledger, WHO, "PEN-1", capture, photos["sorkin2"])
    assert e.value.code == "model_unavailable"
