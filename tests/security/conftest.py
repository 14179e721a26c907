"""Fixtures of the security tests: one real ``facegate serve`` per test module.

``server`` is module-scoped: a fresh data directory, an ``admin`` key made with the real CLI
and ``operator``, ``kiosk`` (client id ``kiosk-01``) and ``app`` keys made straight through
:func:`facegate.storage.apikeys.create_key` (the same function, without three more interpreter
starts). ``server.keys[role]`` is ``{"key", "key_id"}``; ``server.tmp`` is the server's
``TMPDIR`` (empty unless something spools to disk); ``server.data`` its data directory.

``api(role)`` is an ``httpx.Client`` on the server with that role's ``X-API-Key`` (``None``: no
key). Limits are small so that the size refusals are cheap to reach: bodies over
:data:`MAX_REQUEST_BYTES`, images over :data:`MAX_IMAGE_BYTES`.
"""
from __future__ import annotations

import httpx
import pytest

from facegate.config import Settings
from facegate.storage import apikeys
from facegate.storage.db import open_database
from service_support import Server, create_key

MAX_IMAGE_BYTES = 3_000_000
MAX_REQUEST_BYTES = 4_000_000
ROLES = ("admin", "operator", "kiosk", "app")


def start_server(data, database_url: str = "", **settings) -> Server:
    """A started server on ``data`` with the four role keys (``settings`` as :class:`Server`'s), on
    its own SQLite store there or on the database at ``database_url``."""
    tmp = data / "tmp"
    tmp.mkdir(parents=True)
    env = {"TMPDIR": str(tmp), **settings.pop("env", {})}
    srv = Server(data, env=env, **{"max_image_bytes": MAX_IMAGE_BYTES, "max_request_bytes": MAX_REQUEST_BYTES,
                                   "rate_limit_per_minute": 1_000_000, "inference_concurrency": 1,
                                   "inference_queue": 16, **settings})
    srv.data, srv.tmp = data, tmp
    if database_url:
        srv.env["FACEGATE_DATABASE_URL"] = database_url
    srv.keys = {"admin": create_key(srv.env, "admin", "--name", "security admin")}
    db = open_database(Settings.load(data_dir=str(data), database_url=database_url).database)
    try:
        for role in ROLES[1:]:
            secret, key = apikeys.create_key(db, role, name=f"security {role}",
                                             client_id="kiosk-01" if role == "kiosk" else None)
            srv.keys[role] = {"key": secret, "key_id": key.key_id}
    finally:
        db.dispose()
    return srv.start()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("security"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api(server):
    clients: dict = {}

    def client(role: str | None) -> httpx.Client:
        if role not in clients:
            headers = {"X-API-Key": server.keys[role]["key"]} if role else {}
            clients[role] = httpx.Client(base_url=server.url, headers=headers, timeout=60)
        return clients[role]

    yield client
    for c in clients.values():
        c.close()
