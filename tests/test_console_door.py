"""The console's door over HTTP (issue 31): the second factor renews the session's cookie and
CSRF token and sets the device cookie that takes its operator past the waits others cause under
the name; failed single sign-on callbacks are audited under the refusals' cap."""
from __future__ import annotations

import subprocess

import httpx
import pyotp
import pytest

from service_support import FACEGATE, REPO, Server, create_key

PASSWORD = "correct horse battery"
API = "/console/api"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("console-door"), console_secure_cookie=0, console_max_failures=3,
                 console_lockout_s=60, console_oidc_issuer="http://127.0.0.1:9",
                 console_oidc_client_id="facegate-console", rate_limit_per_minute=100_000)
    for name in ("vera", "walt"):
        add = subprocess.run([*FACEGATE, "operators", "add", name, "--role", "supervisor", "--password-stdin"],
                             input=PASSWORD + "\n", env=srv.env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert add.returncode == 0, add.stderr
    srv.admin = create_key(srv.env, "admin")["key"]
    srv.start()
    yield srv
    srv.stop()


def _audit(srv, **params) -> list[dict]:
    r = httpx.get(srv.url + "/v1/audit", params={"limit": 500, **params}, headers={"X-API-Key": srv.admin})
    return r.json()["entries"]


def _enrol(client: httpx.Client, name: str) -> tuple[httpx.Response, pyotp.TOTP]:
    r = client.post(API + "/sign-in", json={"name": name, "password": PASSWORD})
    assert r.status_code == 200 and r.json()["stage"] == "enrol", r.text
    first = client.cookies.get("fg_console")
    enrol = client.get(API + "/enrolment")
    assert enrol.status_code == 200
    again = client.get(API + "/enrolment")
    assert again.status_code == 409 and again.json()["code"] == "enrolment_shown"
    totp = pyotp.TOTP(enrol.json()["secret"])
    done = client.post(API + "/mfa", json={"code": totp.now()}, headers={"X-CSRF-Token": r.json()["csrf"]})
    assert done.status_code == 200 and done.json()["stage"] == "active", done.text
    assert client.cookies.get("fg_console") != first
    return done, totp


def test_the_second_factor_renews_the_session_and_sets_the_device_cookie(server):
    with httpx.Client(base_url=server.url) as client:
        r = client.post(API + "/sign-in", json={"name": "vera", "password": PASSWORD})
        before_cookie, before_csrf = client.cookies.get("fg_console"), r.json()["csrf"]
        enrol = client.get(API + "/enrolment").json()
        done = client.post(API + "/mfa", json={"code": pyotp.TOTP(enrol["secret"]).now()},
                           headers={"X-CSRF-Token": before_csrf})
        assert done.status_code == 200 and done.json()["stage"] == "active"
        assert done.json()["csrf"] != before_csrf and client.cookies.get("fg_console") != before_cookie
        device = [h for h in done.headers.get_list("set-cookie") if h.startswith("fg_device=")]
        assert len(device) == 1 and "HttpOnly" in device[0] and "SameSite=strict" in device[0]
        assert "Path=/console/api" in device[0]
        assert client.get(API + "/me").json()["stage"] == "active"
        # the cookie and token from before the second factor open nothing
        old = httpx.get(server.url + API + "/me", cookies={"fg_console": before_cookie})
        assert old.status_code == 401 and old.json()["code"] == "session_expired"
        assert client.post(API + "/sign-out", headers={"X-CSRF-Token": before_csrf}).status_code == 403


def test_failures_under_a_name_do_not_keep_its_operator_out_of_their_browser(server):
    with httpx.Client(base_url=server.url) as mine:
        _, totp = _enrol(mine, "walt")
        device = mine.cookies.get("fg_device")
        assert device
        mine.cookies.delete("fg_console")
        with httpx.Client(base_url=server.url) as outsider:
            codes = [outsider.post(API + "/sign-in", json={"name": "walt", "password": "not the password"}).json()["code"]
                     for _ in range(5)]
            assert codes == ["sign_in_failed"] * 2 + ["sign_in_throttled"] * 3
            unknown = [outsider.post(API + "/sign-in", json={"name": "nobody-here", "password": "not the password"})
                       for _ in range(5)]
            assert [r.json()["code"] for r in unknown] == codes                      # names are not told apart
            assert unknown[-1].status_code == 429 and int(unknown[-1].headers["retry-after"]) >= 1
        with httpx.Client(base_url=server.url) as fresh:                              # a new browser waits
            assert fresh.post(API + "/sign-in", json={"name": "walt", "password": PASSWORD}).status_code == 429
        r = mine.post(API + "/sign-in", json={"name": "walt", "password": PASSWORD})  # the operator's does not
        assert r.status_code == 200 and r.json()["stage"] == "mfa"


def test_failed_single_sign_on_callbacks_are_audited_under_the_cap(server):
    before = len([e for e in _audit(server, operation="console.sign_in") if e["detail"].get("via") == "oidc"])
    for i in range(45):
        r = httpx.get(server.url + API + "/oidc/callback", params={"error": f"x{i}"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/console/?sso=sign_in_failed"
    rows = [e for e in _audit(server, operation="console.sign_in") if e["detail"].get("via") == "oidc"]
    assert 1 <= len(rows) - before <= 30
    metrics = httpx.get(server.url + "/metrics").text
    assert any(line.startswith("facegate_refusals_unaudited_total") and float(line.split()[-1]) >= 15
               for line in metrics.splitlines())
