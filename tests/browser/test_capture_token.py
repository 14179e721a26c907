"""What a capture token can open: only its own session's status and capture calls, and only until
the session expires (FACEGATE_LIVENESS_SESSION_TTL_S=5 here). Every refusal is problem+json with
its code. Also the capture page's own headers (CSP without inline script, camera for its own
origin only, no-store), and the page telling an expired session in its words. These tests need
no evaluation data; the page check needs Chromium."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from .support import INTEGRATOR, capture_url, follow, launch, new_page, start_server, state

TTL = 5
CAPTURE_DIR = Path(__file__).resolve().parents[2] / "facegate" / "service" / "capture"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory, "capture-token", liveness_challenge="blink", liveness_session_ttl_s=TTL)
    yield srv
    srv.stop()


def problem(r, status: int, code: str):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code, r.text


def bearer(session: dict) -> dict:
    return {"Authorization": f"Bearer {session['capture_token']}"}


def test_capture_token_opens_only_its_own_session_until_it_expires(server):
    a, b = server.session("app", subject_id="P-1"), server.session("kiosk")
    opened = time.monotonic()
    tok = bearer(a)
    r = server.call(None, "GET", f"/v1/liveness/sessions/{a['session_id']}", headers=tok)
    assert r.status_code == 200 and r.json()["status"] == "pending" and r.json()["challenge"] == ["blink"], r.text
    image = {"image": ("x.jpg", b"\xff\xd8\xff\xe0not-a-real-jpeg")}
    # never a decision, a search, the gallery, or a new session: 401, whether sent as a bearer or as a key
    for method, path, kw in [("POST", "/v1/verify", {"data": {"subject_id": "P-1"}, "files": image}),
                             ("POST", "/v1/identify", {"files": image}),
                             ("POST", "/v1/compare", {"files": image}),
                             ("GET", "/v1/subjects", {}), ("POST", "/v1/subjects", {"json": {"subject_id": "X"}}),
                             ("GET", "/v1/subjects/P-1", {}),
                             ("POST", "/v1/certifications", {"data": {"subject_id": "P-1",
                                                                      "liveness_session_id": a["session_id"]}}),
                             ("POST", "/v1/kiosk/authenticate", {"data": {"liveness_session_id": a["session_id"]}}),
                             ("POST", "/v1/liveness/sessions", {"json": {}}),
                             ("GET", "/v1/audit", {})]:
        problem(server.call(None, method, path, headers=tok, **kw), 401, "unauthorized")
        problem(server.call(None, method, path, headers={"X-API-Key": a["capture_token"]}, **kw), 401, "unauthorized")
    # another session: 403
    for method, path, kw in [("GET", "", {}), ("POST", "/frames", {"data": {"nonce": b["nonce"], "timestamps": "0"},
                                                                   "files": image}),
                             ("POST", "/video", {"data": {"nonce": b["nonce"]}, "files": {"video": ("v.webm", b"x")}}),
                             ("POST", "/complete", {"json": {"nonce": b["nonce"]}})]:
        problem(server.call(None, method, f"/v1/liveness/sessions/{b['session_id']}{path}", headers=tok, **kw),
                403, "forbidden")
    # a forged token for the right session id: 401
    forged = {"Authorization": f"Bearer fgc_{a['session_id']}.{'A' * 43}"}
    problem(server.call(None, "GET", f"/v1/liveness/sessions/{a['session_id']}", headers=forged), 401, "unauthorized")
    # after the session's deadline its own token opens nothing either
    time.sleep(max(0.0, TTL + 1.2 - (time.monotonic() - opened)))
    problem(server.call(None, "GET", f"/v1/liveness/sessions/{a['session_id']}", headers=tok), 401, "unauthorized")
    problem(server.call(None, "POST", f"/v1/liveness/sessions/{a['session_id']}/complete", headers=tok,
                        json={"nonce": a["nonce"]}), 401, "unauthorized")
    problem(server.call(None, "POST", f"/v1/liveness/sessions/{a['session_id']}/frames", headers=tok,
                        data={"nonce": a["nonce"], "timestamps": "0"}, files=image), 401, "unauthorized")


def test_capture_page_headers(server):
    for path in ("/capture/", "/capture/facegate-capture.js", "/capture/capture.css",
                 "/capture/vendor/tracking/tracking-min.js"):
        r = server.call(None, "GET", path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'self' " + INTEGRATOR in csp
        assert r.headers["permissions-policy"].startswith("camera=(self)") and "microphone=()" in r.headers["permissions-policy"]
        assert r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "access-control-allow-origin" not in r.headers
    assert server.call(None, "GET", "/capture/facegate-capture.js").headers["content-type"].startswith("text/javascript")
    # an integrator listed in FACEGATE_CORS_ORIGINS may import the module; others may not
    r = server.call(None, "GET", "/capture/facegate-capture.js", headers={"Origin": INTEGRATOR})
    assert r.headers["access-control-allow-origin"] == INTEGRATOR
    r = server.call(None, "GET", "/capture/facegate-capture.js", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    assert server.call(None, "GET", "/capture/../facegate/config.py").status_code == 404
    # no inline script or style, no event-handler attributes, nothing from another origin
    for f in CAPTURE_DIR.rglob("*.html"):
        html = f.read_text()
        assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", html)), f
        assert not re.search(r"<style\b|\son\w+\s*=|\sstyle\s*=", html), f
    for f in CAPTURE_DIR.rglob("*"):
        if f.suffix in (".js", ".css", ".html") and "vendor" not in f.parts:
            text = f.read_text()
            assert not re.search(r"""(src|href)\s*=\s*["']https?://|@import\s+url\(\s*["']?https?://|\bimport\s+[^;]*["']https?://""",
                                 text), f"{f} loads something from another origin"
            assert ".innerHTML" not in text and "eval(" not in text and "new Function" not in text, f


def test_the_page_says_when_the_session_has_expired(server, playwright_api):
    browser = launch(playwright_api, camera="none")
    try:
        page = new_page(browser, "phone", "en")
        # a retry after the service refused the person's photo as too bright: said before they start again
        page.goto(capture_url(server.url, server.session("app"), cause="too_bright"))
        intro = follow(page, until=("intro",))
        assert intro["text"].startswith("The last photo of your face was too bright."), intro
        page.click("button.fg-lang")
        assert state(page)["text"].startswith("上一张照片中您的脸太亮了。"), state(page)
        page.click("button.fg-lang")
        # the person waits too long before pressing Start: the page notices the deadline by itself
        end = follow(page, shots="phone-en-expired-session", until=("error",), timeout=TTL + 10)
        assert end["code"] == "liveness_session_expired" and end["title"] == "The time for this check has run out", end
        assert page.locator("button[data-action=retry]").count() == 0
        page.click("button.fg-lang")
        assert state(page)["title"] == "本次核验已超时"
    finally:
        browser.close()
