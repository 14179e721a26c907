"""The gallery on the real engine and LFW photos: enrol with the duplicate check, 1:1 and 1:N
on one calibrated scale, subjects (not templates) in 1:N, the margin rule, snapshot + change-log
replay, rebuild of a bad snapshot, sync between processes, erasure, pack mismatch."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from facegate.errors import FacegateError
from facegate.gallery.second_opinion import decision_fmr, points_for
from facegate.matching.decisions import threshold
from facegate.matching.scores import similarity
from gallery_support import BACKENDS, fresh_database, make_settings

PEOPLE = ["Colin_Powell", "Tony_Blair", "Laura_Bush", "Hugo_Chavez", "Jacques_Chirac", "Andre_Agassi"]
OUTSIDER = "Vicente_Fox"          # never enrolled


@pytest.fixture(scope="module")
def faces(engine, lfw_images) -> dict[str, list]:
    """Four photos per person: (bytes, embedding)."""
    out = {}
    for name in PEOPLE + [OUTSIDER]:
        photos = sorted((lfw_images / name).glob("*.jpg"))[:4]
        out[name] = [(p.read_bytes(), engine.face(p.read_bytes(), policy="central").embedding) for p in photos]
    return out


@pytest.fixture(params=BACKENDS)
def gallery_env(request, tmp_path, engine):
    from facegate.gallery.gallery import Gallery
    data = tmp_path / "data"
    with fresh_database(request.param, data) as url:
        settings = make_settings(data, url, index_sync_s=0.0)
        opened = []

        def open_gallery(**overrides):
            g = Gallery(dataclasses.replace(settings, **overrides) if overrides else settings, engine)
            opened.append(g)
            return g

        yield open_gallery, settings
        for g in opened:
            g.close()


def enrol_people(g, faces, photo=0):
    for name in PEOPLE:
        g.store.add_subject(name)
        g.enrol_embedding(name, faces[name][photo][1], source="test")


def test_identify_returns_subjects_on_the_verify_scale(gallery_env, faces, engine):
    open_gallery, _ = gallery_env
    g = open_gallery()
    enrol_people(g, faces)
    g.enrol_embedding("Colin_Powell", faces["Colin_Powell"][1][1])      # a second template
    for name in PEOPLE:
        probe = faces[name][2][1]
        res = g.identify(probe, top_k=5).as_dict()
        assert res["decision"] == "match" and res["subject_id"] == name, res
        ids = [c["subject_id"] for c in res["candidates"]]
        assert len(ids) == len(set(ids)), "a subject appears once however many templates it has"
        v = g.verify(name, probe).as_dict()
        assert v["match"] and res["candidates"][0]["score"] == v["score"]
        assert v["threshold"] == threshold(engine.operating_points, 1e-4).threshold       # 1:1 at the target FMR
        assert res["threshold"] == threshold(engine.operating_points, g.settings.identify_fmr).threshold > v["threshold"]
    # the best of Colin's two templates, exactly
    probe = faces["Colin_Powell"][3][1]
    best = max(similarity(probe, faces["Colin_Powell"][i][1]) for i in (0, 1))
    assert g.verify("Colin_Powell", probe).as_dict()["score"] == pytest.approx(best, abs=1e-5)


def test_nobody_above_threshold_gives_an_empty_candidate_list(gallery_env, faces):
    open_gallery, _ = gallery_env
    g = open_gallery()
    enrol_people(g, faces)
    res = g.identify(faces[OUTSIDER][0][1]).as_dict()
    assert res["decision"] == "no_match" and res["candidates"] == [] and res["subject_id"] is None
    assert res["best_score"] < res["threshold"]
    v = g.verify("Tony_Blair", faces[OUTSIDER][0][1]).as_dict()
    assert not v["match"]


def test_enrol_photo_and_duplicate_identity_is_blocked(gallery_env, faces):
    open_gallery, _ = gallery_env
    g = open_gallery()
    g.store.add_subject("P-1")
    g.store.add_subject("P-2")
    photo, _ = faces["Colin_Powell"][0]
    first = g.enrol("P-1", photo)
    assert first["face_id"] > 0 and first["duplicate_of"] == [] and first["quality"]["score"] > 0
    g.enrol("P-1", faces["Colin_Powell"][1][0])               # the same subject again: fine
    with pytest.raises(FacegateError) as e:
        g.enrol("P-2", faces["Colin_Powell"][2][0])           # the same person as another subject
    assert e.value.code == "duplicate_identity"
    assert e.value.detail["duplicate_of"][0]["subject_id"] == "P-1"
    with pytest.raises(FacegateError) as e:
        g.enrol("P-2", faces["Colin_Powell"][2][0], duplicate_fmr=1e-5)   # a stricter duplicate check
    rule = e.value.detail["duplicate_of"][0]["rule"]          # with the second opinion: its fused table
    assert rule == ("fused" if g.engine.fused_points is not None else "single")
    table = points_for(g.engine, rule)
    strict = threshold(table, decision_fmr(g.engine, rule, 1e-5)).threshold
    assert e.value.detail["duplicate_of"][0]["threshold"] == strict > threshold(table, 1e-4).threshold
    assert len(g.store.list_templates("P-2")) == 0
    allowed = g.enrol("P-2", faces["Colin_Powell"][2][0], allow_duplicate=True)
    assert allowed["duplicate_of"][0]["subject_id"] == "P-1"
    with pytest.raises(FacegateError) as e:
        g.enrol("nobody", photo)
    assert e.value.code == "unknown_subject"


def test_margin_rule_reports_ambiguous_when_two_subjects_are_too_close(gallery_env, faces):
    open_gallery, _ = gallery_env
    g = open_gallery()
    enrol_people(g, faces)
    g.store.add_subject("Tony_Blair_again")
    g.enrol_embedding("Tony_Blair_again", faces["Tony_Blair"][1][1], allow_duplicate=True)
    res = g.identify(faces["Tony_Blair"][2][1]).as_dict()
    assert [c["subject_id"] for c in res["candidates"][:2]] != [] and len(res["candidates"]) >= 2
    margin = res["candidates"][0]["score"] - res["candidates"][1]["score"]
    assert res["margin"] == pytest.approx(margin, abs=1e-5)
    assert res["decision"] == ("ambiguous" if margin < res["required_margin"] else "match")
    strict = open_gallery(identify_margin=1.0)
    res = strict.identify(faces["Tony_Blair"][2][1]).as_dict()
    assert res["decision"] == "ambiguous" and res["subject_id"] is None and res["candidates"]
    loose = open_gallery(identify_margin=0.0)
    assert loose.identify(faces["Tony_Blair"][2][1]).as_dict()["decision"] == "match"


def test_snapshot_replay_and_sync_between_processes(gallery_env, faces):
    open_gallery, settings = gallery_env
    from facegate.storage.store import Store
    g = open_gallery()
    assert g.opened_from.startswith("rebuild")
    enrol_people(g, faces)
    g.close()
    # another process (the CLI) changes the store while no gallery is open
    other = Store.open(settings)
    other.add_subject("late")
    other.add_template("late", faces[OUTSIDER][0][1], g.pack_id)
    other.erase_subject("Hugo_Chavez")
    g2 = open_gallery()
    assert g2.opened_from == "snapshot"
    assert len(g2.index) == g2.store.count_templates(g2.pack_id) == len(PEOPLE)
    assert g2.identify(faces[OUTSIDER][1][1]).as_dict()["subject_id"] == "late"
    assert g2.identify(faces["Hugo_Chavez"][1][1]).as_dict()["candidates"] == []
    # and while it is open: sync() catches up
    other.add_subject("later")
    other.add_template("later", faces["Hugo_Chavez"][0][1], g2.pack_id)
    assert g2.sync() >= 1
    assert g2.identify(faces["Hugo_Chavez"][1][1]).as_dict()["subject_id"] == "later"
    other.close()
    st = g2.stats()
    assert st["consistent"] and st["applied_seq"] == st["last_seq"]


def test_bad_snapshots_are_rebuilt_from_the_database(gallery_env, faces):
    open_gallery, _ = gallery_env
    g = open_gallery()
    enrol_people(g, faces)
    path = g.snapshot_path
    g.close()
    path.write_bytes(b"not an index")
    g2 = open_gallery()
    assert g2.opened_from.startswith("rebuild") and len(g2.index) == len(PEOPLE)
    # a snapshot claiming a change-log position the database never reached
    g2.index.save(path, applied_seq=10**9)
    g3 = open_gallery()
    assert g3.opened_from.startswith("rebuild") and "ahead" in g3.opened_from
    # a snapshot that lost entries (e.g. saved with the wrong seq): the count check catches it
    g3.index.remove(np.asarray([g3.store.template_ids(g3.pack_id)[0]], dtype=np.int64))
    g3.save()
    g4 = open_gallery()
    assert g4.opened_from.startswith("rebuild") and len(g4.index) == len(PEOPLE)


def test_erase_removes_the_subject_from_index_and_snapshot(gallery_env, faces):
    open_gallery, _ = gallery_env
    g = open_gallery()
    enrol_people(g, faces)
    emb = g.store.subject_templates("Andre_Agassi", g.pack_id)[0][1]
    res = g.erase("Andre_Agassi", actor="cli:test", reason="subject request")
    assert res["templates_removed"] == 1
    assert g.identify(faces["Andre_Agassi"][1][1]).as_dict()["candidates"] == []
    with pytest.raises(FacegateError) as e:
        g.verify("Andre_Agassi", faces["Andre_Agassi"][1][1])
    assert e.value.code == "unknown_subject"
    raw = g.snapshot_path.read_bytes()
    assert emb.astype("<f4").tobytes()[:64] not in raw
    assert len(g.index) == len(PEOPLE) - 1


def test_templates_of_another_pack_are_never_compared(gallery_env, faces):
    open_gallery, _ = gallery_env
    g = open_gallery()
    g.store.add_subject("old")
    g.store.add_template("old", faces["Laura_Bush"][0][1], "some-retired-pack")
    g2 = open_gallery()
    assert len(g2.index) == 0 and g2.stats()["other_packs"] == {"some-retired-pack": 1}
    with pytest.raises(FacegateError) as e:
        g2.verify("old", faces["Laura_Bush"][1][1])
    assert e.value.code == "pack_mismatch" and "re-enrol" in e.value.message.lower()
    assert g2.identify(faces["Laura_Bush"][1][1]).as_dict()["candidates"] == []


def test_photos_are_kept_only_when_enabled_and_then_encrypted(tmp_path, engine, faces):
    from facegate.gallery.gallery import Gallery
    photo = faces["Jacques_Chirac"][0][0]
    off = Gallery(make_settings(tmp_path / "off", ""), engine)
    off.store.add_subject("P-1")
    off.enrol("P-1", photo)
    assert off.store.list_templates("P-1")[0]["image_stored"] is False
    off.close()
    on = Gallery(make_settings(tmp_path / "on", "", store_images=True), engine)
    on.store.add_subject("P-1")
    on.enrol("P-1", photo)
    assert on.store.list_templates("P-1")[0]["image_stored"] is True
    on.store.checkpoint()
    raw = (tmp_path / "on" / "facegate.db").read_bytes()
    assert photo[:32] not in raw and photo[1000:1032] not in raw
    on.close()


def test_pack_change_re_enrols_from_kept_photos(tmp_path, engine, faces):
    from facegate.gallery.gallery import Gallery
    g = Gallery(make_settings(tmp_path / "d", "", store_images=True), engine)
    photo, emb = faces["Andre_Agassi"][0]
    g.store.add_subject("P-1")
    g.store.add_template("P-1", emb, "retired-pack", image=photo)     # made by the previous pack
    with pytest.raises(FacegateError) as e:
        g.verify("P-1", faces["Andre_Agassi"][1][1])
    assert e.value.code == "pack_mismatch"
    res = g.reenrol_from_photos()
    assert res["reenrolled"] == 1 and res["failed"] == []
    assert g.verify("P-1", faces["Andre_Agassi"][1][1]).as_dict()["match"]
    assert g.reenrol_from_photos()["reenrolled"] == 0                  # done once
    g.close()


def test_configured_index_kind_is_applied_on_the_next_open(gallery_env, faces):
    open_gallery, _ = gallery_env
    g = open_gallery()
    enrol_people(g, faces)
    assert g.index.kind == "flat"
    g.close()
    g2 = open_gallery(index_kind="ivf_sq")
    assert g2.opened_from.startswith("rebuild") and g2.index.kind == "ivf_sq" and len(g2.index) == len(PEOPLE)
    assert g2.identify(faces["Laura_Bush"][1][1]).as_dict()["subject_id"] == "Laura_Bush"


def test_many_tombstones_in_the_snapshot_trigger_a_rebuild(gallery_env, faces, monkeypatch):
    open_gallery, _ = gallery_env
    g = open_gallery()
    enrol_people(g, faces)
    g.close()
    from facegate.gallery.vectors import VectorIndex
    monkeypatch.setattr(VectorIndex, "tombstones", property(lambda self: 10**6))
    g2 = open_gallery()
    assert g2.opened_from.startswith("rebuild") and "removed templates" in g2.opened_from
    assert len(g2.index) == len(PEOPLE)


def test_1n_searches_pass_the_configured_early_stop_score_to_the_index(gallery_env, faces, monkeypatch):
    """FACEGATE_INDEX_EARLY_STOP reaches every 1:N search of the index (identify and the
    enrolment duplicate check); 0 or less means full depth (no stop score)."""
    from facegate.gallery.vectors import VectorIndex
    seen = []
    search = VectorIndex.search

    def spy(self, queries, k, stop_score=None):
        seen.append(stop_score)
        return search(self, queries, k, stop_score=stop_score)

    monkeypatch.setattr(VectorIndex, "search", spy)
    open_gallery, _ = gallery_env
    g = open_gallery(index_early_stop=0.7)
    enrol_people(g, faces)
    assert g.identify(faces["Laura_Bush"][1][1]).as_dict()["subject_id"] == "Laura_Bush"
    assert seen and set(seen) == {0.7}
    g.close()
    seen.clear()
    for off in (0, -1):
        g2 = open_gallery(index_early_stop=off)
        assert g2.identify(faces["Laura_Bush"][1][1]).as_dict()["subject_id"] == "Laura_Bush"
        assert seen == [None]
        g2.close()
        seen.clear()


def test_the_same_face_enrolled_at_once_under_two_ids_is_accepted_once(gallery_env):
    """Two replicas (each its own index) enrol one face under two subject ids at the same moment,
    20 times: the check and the insert are one serialised step, so exactly one wins each time."""
    from concurrent.futures import ThreadPoolExecutor
    open_gallery, _ = gallery_env
    a, b = open_gallery(index_sync_s=60.0), open_gallery(index_sync_s=60.0)
    rng = np.random.default_rng(7)
    for i in range(20):
        face = rng.normal(size=512).astype(np.float32)       # a distinct "person" per pair
        face /= np.linalg.norm(face)
        a.store.add_subject(f"A{i}")
        a.store.add_subject(f"B{i}")

        def enrol(job):
            gallery, subject = job
            try:
                gallery.enrol_embedding(subject, face)
                return "enrolled"
            except FacegateError as exc:
                return exc.code
        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(enrol, [(a, f"A{i}"), (b, f"B{i}")]))
        assert outcomes == ["duplicate_identity", "enrolled"], (i, outcomes)
    assert a.store.count_templates() == 20
