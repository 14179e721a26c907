"""Biometric data at rest, on a real server's data folder: templates only as ciphertext (database
and index snapshot alike), files 0600 in a 0700 folder, and a data-key rotation reseals the
snapshot."""
from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import need_shared
from service_support import Server, cli, create_key

PEOPLE = ["Aaron_Sorkin", "Colin_Powell", "Laura_Bush", "Hugo_Chavez", "Andre_Agassi", "Jacques_Chirac"]


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory):
    """A server that enrolled six people through the API with an ivf_sq index (compressed codes),
    then stopped, so its snapshot is on disk."""
    lfw = need_shared("data", "lfw-dev", "images")
    data = tmp_path_factory.mktemp("at-rest")
    srv = Server(data, index_kind="ivf_sq", rate_limit_per_minute=100_000).start()
    try:
        admin = create_key(srv.env, "admin")["key"]
        with httpx.Client(base_url=srv.url, headers={"X-API-Key": admin}, timeout=60) as c:
            for name in PEOPLE:
                assert c.post("/v1/subjects", json={"subject_id": name}).status_code == 201
                photo = sorted((lfw / name).glob("*.jpg"))[0].read_bytes()
                r = c.post(f"/v1/subjects/{name}/faces", files={"image": ("p.jpg", photo, "image/jpeg")})
                assert r.status_code == 201, r.text
    finally:
        srv.stop()
    yield srv, data


def data_files(data: Path) -> list[Path]:
    return [p for p in data.rglob("*") if p.is_file() and p.name != "server.log"]


def open_store(data: Path):
    from facegate.config import Settings
    from facegate.storage.store import Store
    return Store.open(Settings.load(data_dir=str(data), database_url="", data_key="", data_key_file=""))


def templates_and_codes(data: Path) -> tuple[list[bytes], list[bytes]]:
    """The enrolled embeddings (float32 bytes, decrypted from the database) and windows of the
    index's own codes (its snapshot body, serialised in memory without sealing)."""
    from facegate.gallery.vectors import VectorIndex
    from facegate.gallery.vectors.snapshot import Writer

    store = open_store(data)
    try:
        with store.db.connect() as conn:
            vectors = [v for pack in store.pack_counts() for _, vs in store.iter_embeddings(conn, pack) for v in vs]
        (snap,) = (data / "index").glob("*.faiss")
        index, _ = VectorIndex.load(snap, store.keys)
    finally:
        store.close()
    assert index.kind == "ivf_sq" and len(index) == len(PEOPLE)
    body = io.BytesIO()
    index._store.write(Writer(body))
    codes = body.getvalue()
    starts = np.random.default_rng(0).integers(0, max(1, len(codes) - 48), 40)
    return [np.asarray(v, "<f4").tobytes() for v in vectors], [codes[i:i + 48] for i in starts]


def test_no_template_or_index_code_rests_in_clear_in_the_data_folder(enrolled):
    _, data = enrolled
    vectors, windows = templates_and_codes(data)
    assert len(vectors) == len(PEOPLE)
    for path in data_files(data):
        content = path.read_bytes()
        for v in vectors:
            assert v[:32] not in content and v[-32:] not in content, f"an embedding in clear in {path}"
        for w in windows:
            assert w not in content, f"index codes in clear in {path}"


def test_data_files_are_private_to_the_service_user(enrolled):
    _, data = enrolled
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(data / "index").st_mode) == 0o700
    for path in data_files(data):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_a_data_key_rotation_reseals_the_snapshot(enrolled):
    from facegate.storage.sealed import SealedReader
    srv, data = enrolled
    (snap,) = (data / "index").glob("*.faiss")
    assert snap.read_bytes()[:8] == b"FGSEAL01"
    rotated = json.loads(cli(srv.env, "keys", "rotate-data-key", "--json").stdout)
    assert rotated["snapshots_resealed"] == 1
    store = open_store(data)
    try:
        with open(snap, "rb") as raw:
            assert SealedReader(raw, store.keys).key_id == rotated["key_id"]
    finally:
        store.close()
    srv.start()                                 # the service opens the resealed snapshot: no rebuild
    try:
        assert httpx.get(srv.url + "/readyz", timeout=10).json()["ready"]
    finally:
        srv.stop()
    assert "unreadable" not in srv.log(), srv.log()
