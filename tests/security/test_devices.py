"""Device credentials on a real server: a key with a client id is pinned to it, /metrics series
come only from registered kiosks, the app role cannot search the gallery, and capture tokens
open their own session only."""
from __future__ import annotations

import json

import httpx
import pytest

from conftest import need_shared
from service_support import Server, cli, create_key


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    lfw = need_shared("data", "lfw-dev", "images")
    srv = Server(tmp_path_factory.mktemp("devices"), rate_limit_per_minute=100_000).start()
    srv.keys = {role: create_key(srv.env, role)["key"] for role in ("admin", "app")}
    srv.keys["pinned"] = create_key(srv.env, "app", "--client-id", "backend-01")["key"]
    srv.keys["kiosk"] = json.loads(cli(srv.env, "kiosks", "add", "--location", "Hall A", "--id", "k-11",
                                       "--json").stdout)["key"]
    srv.keys["stray_kiosk"] = create_key(srv.env, "kiosk")["key"]        # a kiosk-role key, no kiosk registered
    srv.photo = sorted((lfw / "Colin_Powell").glob("*.jpg"))[0].read_bytes()
    yield srv
    srv.stop()


def call(srv, who, method, path, headers=None, **kw):
    return httpx.request(method, srv.url + path, headers={"X-API-Key": srv.keys[who]} | (headers or {}),
                         timeout=60, **kw)


def test_a_key_with_a_client_id_cannot_claim_another(server):
    r = call(server, "pinned", "POST", "/v1/liveness/sessions", headers={"X-Client-Id": "phone-77"})
    assert r.status_code == 403 and r.json()["code"] == "client_id_mismatch"
    assert call(server, "pinned", "POST", "/v1/liveness/sessions",
                headers={"X-Client-Id": "backend-01"}).status_code == 201


def test_metric_series_come_only_from_registered_kiosks(server):
    for who in ("kiosk", "stray_kiosk"):
        r = call(server, who, "POST", "/v1/kiosk/authenticate", files={"image": ("p.jpg", server.photo)})
        assert r.status_code == 200, r.text
    metrics = httpx.get(server.url + "/metrics").text
    kiosk_series = {line.split('kiosk="')[1].split('"')[0] for line in metrics.splitlines()
                    if line.startswith("facegate_kiosk_decisions_total{")}
    assert kiosk_series == {"k-11", "unregistered"}, kiosk_series
