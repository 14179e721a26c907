"""The store on SQLite and PostgreSQL: schema, subjects, encrypted templates, change log,
erasure, pack mismatch, the audit chain, data-key rotation, export and restore."""
from __future__ import annotations

import logging
import os
import stat
import threading
import time

import numpy as np
import pytest
import sqlalchemy as sa

from facegate.storage import audit
from facegate.errors import FacegateError
from gallery_support import BACKENDS, fresh_database, make_settings


@pytest.fixture(scope="module")
def embeddings(engine, lfw_images) -> list[np.ndarray]:
    """Real embeddings of three LFW photos (the store only keeps vectors, but real ones)."""
    photos = [lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg", lfw_images / "Tony_Blair" / "Tony_Blair_0001.jpg",
              lfw_images / "Laura_Bush" / "Laura_Bush_0001.jpg"]
    return [engine.face(p.read_bytes(), policy="central").embedding for p in photos]


@pytest.fixture(params=BACKENDS)
def store_env(request, tmp_path):
    from facegate.storage.store import Store
    data = tmp_path / "data"
    with fresh_database(request.param, data) as url:
        settings = make_settings(data, url)
        store = Store.open(settings)
        yield store, settings
        store.close()


@pytest.fixture
def store(store_env):
    return store_env[0]


def test_migrations_create_every_table_and_reopen_is_a_no_op(store_env):
    from facegate.storage.db import head_revision
    from facegate.storage.store import Store
    store, settings = store_env
    names = set(sa.inspect(store.db).get_table_names())
    assert {"subjects", "templates", "change_log", "audit_log", "api_keys", "import_items", "alembic_version"} <= names
    with store.db.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head_revision()
    again = Store.open(settings)
    assert again.store_id == store.store_id
    again.close()
    if store.backend == "sqlite":
        with store.db.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_subject_crud_status_and_consent(store):
    consent = {"who": "clerk 7", "when": "2026-01-02T10:00:00+00:00", "purpose": "pension life certificate"}
    s = store.add_subject("P-1", name="Ana", consent=consent, metadata={"region": "north"})
    assert s["status"] == "active" and s["consent"] == consent and s["metadata"] == {"region": "north"}
    with pytest.raises(FacegateError) as e:
        store.add_subject("P-1")
    assert e.value.code == "subject_exists"
    store.add_subject("P-2", status="suspended")
    assert store.set_status("P-1", "deceased")["status"] == "deceased"
    with pytest.raises(FacegateError) as e:
        store.set_status("P-1", "retired")
    assert e.value.code == "invalid_request"
    assert [x["subject_id"] for x in store.list_subjects(status="deceased")["subjects"]] == ["P-1"]
    assert store.list_subjects()["total"] == 2
    with pytest.raises(FacegateError) as e:
        store.get_subject("nobody")
    assert e.value.code == "unknown_subject"


def test_templates_round_trip_encrypted_with_change_log(store, embeddings):
    store.add_subject("P-1")
    a = store.add_template("P-1", embeddings[0], "pack-A", quality=0.8, source="test")
    b = store.add_template("P-1", embeddings[1], "pack-A", quality=0.7, source="test")
    got = store.subject_templates("P-1", "pack-A")
    assert [fid for fid, _ in got] == [a["face_id"], b["face_id"]]
    np.testing.assert_array_equal(got[0][1], embeddings[0])
    np.testing.assert_array_equal(got[1][1], embeddings[1])
    # ciphertext, not the float bytes, is what the database holds
    with store.db.connect() as conn:
        blobs = conn.execute(sa.text("SELECT embedding_enc, key_id FROM templates ORDER BY id")).all()
    assert embeddings[0].astype("<f4").tobytes() not in bytes(blobs[0][0])
    assert len(blobs[0][0]) == 12 + 512 * 4 + 16 and blobs[0][1] == store.keys.current_id
    changes = store.changes_since(0)
    assert [(c["op"], c["template_id"]) for c in changes] == [("add", a["face_id"]), ("add", b["face_id"])]
    store.delete_template(a["face_id"])
    later = store.changes_since(changes[-1]["seq"])
    assert [(c["op"], c["template_id"]) for c in later] == [("remove", a["face_id"])]
    assert later[0]["seq"] > changes[-1]["seq"] == store.last_seq() - 1


def test_template_moved_to_another_subject_does_not_decrypt(store, embeddings):
    store.add_subject("victim")
    store.add_subject("fraudster")
    store.add_template("victim", embeddings[0], "pack-A")
    f = store.add_template("fraudster", embeddings[1], "pack-A")
    with store.db.begin() as conn:    # an attacker with database access re-points the template
        vpk = conn.execute(sa.text("SELECT pk FROM subjects WHERE subject_id='victim'")).scalar()
        conn.execute(sa.text("UPDATE templates SET subject_pk=:p WHERE id=:i"), {"p": vpk, "i": f["face_id"]})
    with pytest.raises(FacegateError) as e:
        store.subject_templates("victim", "pack-A")
    assert e.value.code == "data_key_unavailable"


def test_pack_mismatch_is_reported_with_a_re_enrolment_message(store, embeddings):
    store.add_subject("P-old")
    store.add_template("P-old", embeddings[0], "old-pack")
    with pytest.raises(FacegateError) as e:
        store.subject_templates("P-old", "new-pack")
    assert e.value.code == "pack_mismatch" and "re-enrol" in e.value.message.lower()
    assert e.value.detail["template_packs"] == ["old-pack"]
    store.add_subject("P-none")
    with pytest.raises(FacegateError) as e:
        store.subject_templates("P-none", "new-pack")
    assert e.value.code == "not_enrolled"


def test_erase_removes_biometrics_and_audits_without_them(store_env, embeddings):
    store, settings = store_env
    store.add_subject("P-1")
    store.add_subject("P-2")
    f1 = store.add_template("P-1", embeddings[0], "pack-A", import_item={"item_key": "k1", "path": "/x/1.jpg"})
    store.add_template("P-2", embeddings[1], "pack-A")
    with store.db.connect() as conn:
        blob = bytes(conn.execute(sa.text("SELECT embedding_enc FROM templates WHERE id=:i"),
                                  {"i": f1["face_id"]}).scalar())
    res = store.erase_subject("P-1", actor="cli:test", reason="request of the subject")
    assert res["templates_removed"] == 1
    with pytest.raises(FacegateError):
        store.get_subject("P-1")
    with store.db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM templates")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM import_items")).scalar() == 0
        rows = audit.rows(conn, subject_id="P-1", limit=10)
    assert [c["op"] for c in store.changes_since(0)][-1] == "remove"
    erased = [r for r in rows if r["operation"] == "subject.erase"]
    assert erased and erased[0]["detail"]["templates_removed"] == 1 and erased[0]["actor"] == "cli:test"
    assert "embedding" not in str(rows).lower()
    if store.backend == "sqlite":
        db_file = os.path.join(settings.data_dir, "facegate.db")
        raw = open(db_file, "rb").read() + (open(db_file + "-wal", "rb").read() if os.path.exists(db_file + "-wal") else b"")
        assert blob[:32] not in raw, "the erased template's ciphertext is still in the database file"


def test_sqlite_file_never_holds_plain_embeddings(tmp_path, embeddings, caplog):
    from facegate.storage.store import Store
    settings = make_settings(tmp_path / "data", "")
    with caplog.at_level(logging.WARNING, logger="facegate.storage.datakeys"):
        store = Store.open(settings)
    key_file = tmp_path / "data" / "data.key"
    assert key_file.exists() and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert any("created a new template data key" in r.message for r in caplog.records)
    store.add_subject("P-1")
    store.add_template("P-1", embeddings[0], "pack-A")
    store.checkpoint()
    raw = (tmp_path / "data" / "facegate.db").read_bytes()
    plain = embeddings[0].astype("<f4").tobytes()
    assert plain[:64] not in raw and plain[-64:] not in raw
    store.close()
    # another key cannot read it
    other = Store.open(make_settings(tmp_path / "data", "", data_key="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="))
    with pytest.raises(FacegateError) as e:
        other.subject_templates("P-1", "pack-A")
    assert e.value.code == "data_key_unavailable"
    other.close()


def test_audit_chain_detects_edits_and_removals(store):
    for i in range(5):
        store.audit(actor="cli:test", operation="verify", outcome="match", subject_id=f"S{i}", scores={"score": 0.5 + i / 10})
    with store.db.connect() as conn:
        assert audit.verify(conn) == {"ok": True, "rows": 5, "first_bad_seq": None}
        seqs = [r["seq"] for r in audit.rows(conn)]
    with store.db.begin() as conn:
        conn.execute(sa.text("UPDATE audit_log SET outcome='no_match' WHERE seq=:s"), {"s": seqs[2]})
    with store.db.connect() as conn:
        assert audit.verify(conn)["first_bad_seq"] == seqs[2]
    with store.db.begin() as conn:
        conn.execute(sa.text("UPDATE audit_log SET outcome='match' WHERE seq=:s"), {"s": seqs[2]})
        conn.execute(sa.text("DELETE FROM audit_log WHERE seq=:s"), {"s": seqs[1]})
    with store.db.connect() as conn:
        assert audit.verify(conn)["first_bad_seq"] == seqs[2]


def test_concurrent_writers_keep_one_audit_chain_and_ordered_change_log(store, embeddings):
    store.add_subject("P-1")
    errors = []

    def work(i):
        try:
            for j in range(5):
                store.audit(actor=f"t{i}", operation="verify", outcome="ok")
                store.add_template("P-1", embeddings[j % 3], "pack-A")
        except Exception as exc:   # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.audit_verify()["ok"]
    seqs = [c["seq"] for c in store.changes_since(0)]
    assert len(seqs) == 20 and seqs == sorted(seqs)


def test_rotate_data_key_re_encrypts_and_resumes_after_a_crash(store_env, embeddings, monkeypatch):
    from facegate.storage import keyrotation
    from facegate.storage.keyrotation import key_usage, rotate_data_key
    from facegate.storage.store import Store
    monkeypatch.setattr(keyrotation, "REFRESH_S", 0.01)
    store, settings = store_env
    store.add_subject("P-1")
    for e in embeddings:
        store.add_template("P-1", e, "pack-A")
    old = store.keys.current_id
    res = rotate_data_key(store)
    assert res["reencrypted"] == 3 and res["key_id"] != old and res["retired_key_ids"] == [old]
    assert key_usage(store.db) == {res["key_id"]: 3}
    assert old not in store.keys.ids and os.path.exists(res["retired_key_file"])
    got = Store.open(settings).subject_templates("P-1", "pack-A")   # a fresh process reads the key file
    np.testing.assert_array_equal(np.stack([e for _, e in got]), np.stack(embeddings))
    # crash after the new key was written and one row re-encrypted: the re-run resumes
    second = store.keys.rotate()
    with store.db.connect() as conn:
        first_id = conn.execute(sa.text("SELECT min(id) FROM templates")).scalar()
    from facegate.storage.aad import embedding_aad
    plain = embeddings[0].astype("<f4").tobytes()
    blob, kid = store.keys.encrypt(plain, embedding_aad("P-1", "pack-A"))
    with store.db.begin() as conn:
        conn.execute(sa.text("UPDATE templates SET embedding_enc=:b, key_id=:k WHERE id=:i"),
                     {"b": blob, "k": kid, "i": first_id})
    res2 = rotate_data_key(store)
    assert res2["resumed"] and res2["key_id"] == second and res2["reencrypted"] == 2
    assert key_usage(store.db) == {second: 3} and store.keys.ids == [second]
    assert len(store.subject_templates("P-1", "pack-A")) == 3


def test_export_restore_round_trip_needs_the_key(store_env, embeddings, tmp_path):
    from facegate.storage.backup import export, restore
    from facegate.storage.store import Store
    store, settings = store_env
    store.add_subject("P-1", name="Ana", consent={"who": "clerk", "purpose": "pension"})
    store.add_subject("P-2", status="suspended")
    second = embeddings[2][:128] / np.linalg.norm(embeddings[2][:128])      # a second opinion's template
    f = [store.add_template("P-1", embeddings[0], "pack-A", family={"sface": second}),
         store.add_template("P-2", embeddings[1], "pack-A")]
    out = tmp_path / "backup.fgx"
    res = export(store, out)
    assert res == {"path": str(out), "subjects": 2, "templates": 2, "family_templates": 1,
                   "key_ids": [store.keys.current_id]}
    import gzip
    assert embeddings[0].astype("<f4").tobytes() not in gzip.open(out).read()
    assert second.astype("<f4").tobytes() not in gzip.open(out).read()
    with pytest.raises(FacegateError) as e:
        restore(store, out)                      # not empty
    assert e.value.code == "invalid_request"
    key_file = str(tmp_path / "data" / "data.key")
    with fresh_database(store.backend, tmp_path / "other") as url:
        no_key = Store.open(make_settings(tmp_path / "other", url))
        with pytest.raises(FacegateError) as e:
            restore(no_key, out)
        assert e.value.code == "data_key_unavailable"
        no_key.close()
        target = Store.open(make_settings(tmp_path / "other2", url, data_key_file=key_file))
        assert restore(target, out)["family_templates"] == 1
        np.testing.assert_array_equal(target.family_embeddings([f[0]["face_id"]], "pack-A", "sface")[f[0]["face_id"]],
                                      second.astype(np.float32))
        assert target.get_subject("P-2")["status"] == "suspended"
        assert target.get_subject("P-1")["consent"]["purpose"] == "pension"
        got = target.subject_templates("P-1", "pack-A")
        assert got[0][0] == f[0]["face_id"]
        np.testing.assert_array_equal(got[0][1], embeddings[0])
        target.add_subject("P-3")
        assert target.add_template("P-3", embeddings[2], "pack-A", family={"sface": second})["face_id"] > f[1]["face_id"]
        target.close()


def test_a_running_process_picks_up_a_rotation_made_elsewhere(store_env, embeddings, monkeypatch):
    from facegate.storage import datakeys, keyrotation
    from facegate.storage.store import Store
    monkeypatch.setattr(datakeys, "REFRESH_S", 0.01)
    monkeypatch.setattr(keyrotation, "REFRESH_S", 0.01)
    server, settings = store_env
    server.add_subject("P-1")
    server.add_template("P-1", embeddings[0], "pack-A")
    cli = Store.open(settings)
    new = keyrotation.rotate_data_key(cli)["key_id"]
    cli.close()
    time.sleep(0.05)
    face = server.add_template("P-1", embeddings[1], "pack-A")
    assert face["key_id"] == new
    assert len(server.subject_templates("P-1", "pack-A")) == 2


def test_rotation_also_re_encrypts_certification_captures(store_env, embeddings, monkeypatch):
    from facegate.clock import utcnow
    from facegate.storage import keyrotation
    from facegate.storage.aad import capture_aad
    from facegate.storage.schema import certification_captures, certifications
    monkeypatch.setattr(keyrotation, "REFRESH_S", 0.01)
    store, _ = store_env
    store.add_subject("P-1")
    store.add_template("P-1", embeddings[0], "pack-A")
    blob, kid = store.keys.encrypt(embeddings[1].tobytes(), capture_aad("P-1", "pack-A"))
    with store.db.begin() as conn:
        pk = conn.execute(sa.text("SELECT pk FROM subjects WHERE subject_id='P-1'")).scalar()
        cid = conn.execute(certifications.insert().values(subject_pk=pk, period="2026", outcome="certified",
                                                          method="face", created_at=utcnow())).inserted_primary_key[0]
        conn.execute(certification_captures.insert().values(certification_id=cid, subject_pk=pk, period="2026",
                                                            pack_id="pack-A", embedding_enc=blob, key_id=kid,
                                                            created_at=utcnow()))
    res = keyrotation.rotate_data_key(store)
    assert res["reencrypted"] == 2 and res["retired_key_ids"] == [kid]
    with store.db.connect() as conn:
        row = conn.execute(sa.select(certification_captures)).one()
    assert row.key_id == res["key_id"]
    plain = store.keys.decrypt(row.embedding_enc, row.key_id, capture_aad("P-1", "pack-A"))
    np.testing.assert_array_equal(np.frombuffer(plain, np.float32), embeddings[1])
    store.erase_subject("P-1")                 # erasure takes the captures with it
    with store.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(certification_captures)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(certifications)).scalar() == 0


def test_every_encrypted_column_of_the_schema_is_in_the_rotation_registry():
    from facegate.storage.aad import ENCRYPTED
    from facegate.storage.schema import metadata
    in_schema = {(t.name, c.name) for t in metadata.tables.values() for c in t.columns if c.name.endswith("_enc")}
    registered = {(e.table.name, column) for e in ENCRYPTED for column in e.aad}
    assert in_schema == registered
