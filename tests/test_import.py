"""The admin CLI end to end on the real engine: subjects, enrol, import (parallel, resumable,
error report, duplicate check), erase, export/restore, index, data-key rotation, and the
crash-safety test: kill -9 an import half-way, re-run, every photo enrolled exactly once."""
from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facegate.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    d = tmp_path / "data"
    monkeypatch.setenv("FACEGATE_DATA_DIR", str(d))
    for var in ("FACEGATE_DATABASE_URL", "FACEGATE_DATA_KEY", "FACEGATE_DATA_KEY_FILE", "FACEGATE_STORE_IMAGES"):
        monkeypatch.delenv(var, raising=False)
    return d


def run_json(capsys, *argv) -> tuple[int, dict]:
    capsys.readouterr()
    rc = main([*argv, "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out)


def link_people(lfw_images: Path, dest: Path, people: dict[str, int]) -> list[Path]:
    """dest/<person>/<photo> symlinks to the first n photos of each person (nothing is copied)."""
    made = []
    for name, n in people.items():
        (dest / name).mkdir(parents=True, exist_ok=True)
        for p in sorted((lfw_images / name).glob("*.jpg"))[:n]:
            (dest / name / p.name).symlink_to(p)
            made.append(dest / name / p.name)
    return made


def test_subject_and_enrol_commands_round_trip(data_dir, capsys, lfw_images, tmp_path):
    rc, s = run_json(capsys, "subjects", "add", "P-1", "--name", "Colin", "--consent-by", "clerk 7",
                     "--consent-purpose", "pension life certificate")
    assert rc == 0 and s["consent"]["who"] == "clerk 7"
    assert main(["subjects", "add", "P-1"]) == 2                      # subject_exists
    colin = sorted((lfw_images / "Colin_Powell").glob("*.jpg"))
    rc, r = run_json(capsys, "enrol", "P-1", str(colin[0]), str(colin[1]))
    assert rc == 0 and all(x["ok"] for x in r["results"])
    rc, r = run_json(capsys, "enrol", "P-2", str(colin[2]), "--create")
    assert rc == 1 and r["results"][0]["error"]["code"] == "duplicate_identity"
    assert r["results"][0]["error"]["duplicate_of"][0]["subject_id"] == "P-1"
    rc, r = run_json(capsys, "enrol", "P-2", str(colin[2]), "--allow-duplicate")
    assert rc == 0 and r["results"][0]["duplicate_of"][0]["subject_id"] == "P-1"
    bad = tmp_path / "not-a-photo.jpg"
    bad.write_bytes(b"hello")
    rc, r = run_json(capsys, "enrol", "P-2", str(bad))
    assert rc == 1 and r["results"][0]["error"]["code"] == "unsupported_image"

    rc, s = run_json(capsys, "subjects", "show", "P-1")
    assert len(s["templates"]) == 2 and "embedding" not in json.dumps(s)
    rc, s = run_json(capsys, "subjects", "set-status", "P-2", "suspended")
    assert s["status"] == "suspended"
    rc, lst = run_json(capsys, "subjects", "list", "--status", "suspended")
    assert [x["subject_id"] for x in lst["subjects"]] == ["P-2"] and lst["subjects"][0]["n_templates"] == 1
    rc, st = run_json(capsys, "index", "stats")
    assert st["templates_in_index"] == st["templates_in_db"] == 3 and st["consistent"]
    rc, st = run_json(capsys, "index", "rebuild")
    assert st["templates_in_index"] == 3 and st["opened_from"].startswith("snapshot")

    backup = tmp_path / "backup.fgx"
    rc, ex = run_json(capsys, "export", str(backup))
    assert ex["templates"] == 3
    rc, er = run_json(capsys, "erase", "P-2", "--reason", "subject request")
    assert er["templates_removed"] == 1
    rc, d = run_json(capsys, "subjects", "delete", "P-1")
    assert d["templates_removed"] == 2
    rc, st = run_json(capsys, "index", "stats")
    assert st["subjects"] == 0 and st["templates_in_index"] == 0

    rc, res = run_json(capsys, "restore", str(backup))
    assert res == {"subjects": 2, "templates": 3, "family_templates": 3, "key_ids": ex["key_ids"]}   # + SFace
    rc, st = run_json(capsys, "index", "stats")
    assert st["templates_in_index"] == 3 and st["consistent"]
    rc, rot = run_json(capsys, "keys", "rotate-data-key")
    assert rot["reencrypted"] == 6 and rot["key_id"] not in ex["key_ids"]         # 3 templates, 3 SFace templates
    rc, r = run_json(capsys, "enrol", "P-1", str(colin[3]))   # P-2 holds Colin too (allowed above)
    assert rc == 1 and r["results"][0]["error"]["duplicate_of"][0]["subject_id"] == "P-2"
    rc, r = run_json(capsys, "enrol", "P-1", str(colin[3]), "--allow-duplicate")
    assert rc == 0          # decrypts for the duplicate search and encrypts under the new key
    rc, s = run_json(capsys, "subjects", "show", "P-1")
    assert {t["key_id"] for t in s["templates"]} == {rot["key_id"]}


def test_import_dir_reports_errors_skips_done_and_blocks_duplicates(data_dir, capsys, lfw_images, tmp_path):
    src = tmp_path / "photos"
    link_people(lfw_images, src, {"Hugo_Chavez": 2, "Andre_Agassi": 2, "Jacques_Chirac": 2})
    (src / "Broken_Person").mkdir()
    (src / "Broken_Person" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    report = tmp_path / "errors.csv"
    rc, s = run_json(capsys, "import", str(src), "--workers", "1", "--errors", str(report), "--no-progress")
    assert rc == 0 and s["photos"] == 7 and s["enrolled"] == 6 and s["errors"] == 1
    rows = list(csv.DictReader(open(report)))
    assert [(r["subject_id"], r["code"]) for r in rows] == [("Broken_Person", "unsupported_image")]
    assert set(s["ms_per_photo_by_stage"]) >= {"decode", "detect", "align", "embed", "db"}

    rc, s2 = run_json(capsys, "import", str(src), "--workers", "1", "--no-progress")
    assert s2["already_done"] == 6 and s2["enrolled"] == 0 and s2["errors"] == 1

    # a CSV manifest naming Chavez's third photo under a new id: the duplicate check blocks it
    manifest = tmp_path / "m.csv"
    third = sorted((lfw_images / "Hugo_Chavez").glob("*.jpg"))[2]
    manifest.write_text(f"subject_id,name,path\nP-900,Someone Else,{third}\n")
    rc, s3 = run_json(capsys, "import", str(manifest), "--workers", "1", "--no-progress",
                      "--errors", str(tmp_path / "e3.csv"))
    assert s3["errors_by_code"] == {"duplicate_identity": 1}
    rc, s4 = run_json(capsys, "import", str(manifest), "--workers", "1", "--no-progress", "--allow-duplicate")
    assert s4["enrolled"] == 1
    rc, sh = run_json(capsys, "subjects", "show", "P-900")
    assert sh["name"] == "Someone Else" and len(sh["templates"]) == 1


def _db_counts(db: Path) -> tuple[int, int, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        t = con.execute("SELECT count(*) FROM templates").fetchone()[0]
        done = con.execute("SELECT count(*) FROM import_items WHERE status='done'").fetchone()[0]
        distinct = con.execute("SELECT count(DISTINCT template_id) FROM import_items WHERE status='done'").fetchone()[0]
        return t, done, distinct
    finally:
        con.close()


@pytest.mark.slow
def test_kill_9_half_way_then_rerun_enrols_every_photo_exactly_once(data_dir, lfw_images, tmp_path, engine):
    src = tmp_path / "photos"
    people = {n: 4 for n in ["Colin_Powell", "Tony_Blair", "Laura_Bush", "Hugo_Chavez", "Jacques_Chirac",
                             "Jennifer_Capriati", "Lleyton_Hewitt", "Nestor_Kirchner", "Andre_Agassi", "Tom_Ridge",
                             "Silvio_Berlusconi", "Megawati_Sukarnoputri", "Vicente_Fox", "David_Beckham",
                             "Ricardo_Lagos", "Gray_Davis", "Tom_Daschle", "Tiger_Woods", "Pete_Sampras",
                             "Lindsay_Davenport"]}
    photos = link_people(lfw_images, src, people)
    assert len(photos) == 80
    env = dict(os.environ, FACEGATE_DATA_DIR=str(data_dir))
    cmd = [sys.executable, "-m", "facegate", "import", str(src), "--workers", "2", "--no-progress", "--json",
           "--policy", "central"]
    db = data_dir / "facegate.db"
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 240
    enrolled = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                enrolled = _db_counts(db)[0]
            except sqlite3.OperationalError:
                enrolled = 0
            if enrolled >= 20:
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"the import finished before it could be killed: {proc.communicate()}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    t, done, distinct = _db_counts(db)
    assert 20 <= t < 80 and t == done == distinct, (t, done, distinct)

    # a gallery opened right after the crash agrees with the database
    from facegate.config import Settings
    from facegate.gallery.gallery import Gallery
    g = Gallery(Settings.load(data_dir=str(data_dir)), engine)
    assert len(g.index) == g.store.count_templates(g.pack_id) == t
    g.close()

    rerun = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["already_done"] == t
    t2, done2, distinct2 = _db_counts(db)
    assert t2 == done2 == distinct2 == summary["already_done"] + summary["enrolled"]
    assert summary["already_done"] + summary["enrolled"] + summary["errors"] == 80

    # every photo's template exactly once, and the index holds exactly the database's templates
    g = Gallery(Settings.load(data_dir=str(data_dir)), engine)
    ids = g.store.template_ids(g.pack_id)
    assert len(ids) == t2 and len(g.index) == t2
    con = sqlite3.connect(str(db))
    keys = con.execute("SELECT item_key FROM import_items WHERE status='done'").fetchall()
    assert len(keys) == len(set(keys)) == t2
    con.close()
    with g.store.snapshot() as conn:
        for ids_batch, vecs in g.store.iter_embeddings(conn, g.pack_id):
            _, found = g.index.search(vecs, 1)
            assert np.array_equal(found[:, 0], ids_batch)
    st = g.stats()
    assert st["consistent"] and st["applied_seq"] == st["last_seq"]
    g.close()
