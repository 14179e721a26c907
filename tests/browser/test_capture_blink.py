"""The capture page end to end with the challenge forced to ``blink`` (FACEGATE_LIVENESS_CHALLENGE,
tests only): the person of ``d0.mp4`` (blink at 2.6 s) is enrolled as PEN-D0.

- d0 through the page (phone, English, frames in chunks) passes, and the backend's
  certification then certifies PEN-D0;
- d19 (another person, blinking behind glasses; kiosk, Chinese, one WebM) passes liveness, but
  the certification of PEN-D0 is refused; the kiosk then returns to its start screen with
  nothing of the person left in the page;
- a still photo (one frame of d0 repeated; phone, Chinese) fails and the page says so;
- an integrator's page on another origin embeds the page (``embed()`` of facegate-capture.js,
  kiosk, English) while the network drops every frame upload: the page says so, "Try again"
  delivers the capture, and the kiosk authentication against the chip photo matches;
- denied camera, no camera and the service's refusals are explained in the page's words.

Screenshots of every step: tests/browser/screenshots/ (ignored by git).
"""
from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest

from .support import (INTEGRATOR, IntegratorSite, capture_url, dump, follow, frame_jpeg, launch, new_page, result_of, shoot,
                      start_server, state, violations)

ORDER = ["positioning", "capturing:neutral", "capturing:blink", "checking"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, videos, playwright_api):
    srv = start_server(tmp_path_factory, "capture-blink", liveness_challenge="blink")
    srv.enrol("PEN-D0", frame_jpeg(videos, "d0", 0.5))
    yield srv
    srv.stop()


def in_order(seen: list[str], expected: list[str]) -> bool:
    it = iter(seen)
    return all(any(s == e for s in it) for e in expected)


def certify(server, subject_id: str, session_id: str) -> dict:
    r = server.call("app", "POST", "/v1/certifications", data={"subject_id": subject_id,
                                                                "liveness_session_id": session_id})
    assert r.status_code == 201, r.text
    return r.json()


def test_blink_clip_passes_and_the_backend_certifies(server, playwright_api, clip):
    browser = launch(playwright_api, clip("d0", 0.0, 3.12))
    try:
        page = new_page(browser, "phone", "en-US")
        uploads = []
        page.on("request", lambda r: uploads.append(r.url) if r.method == "POST" else None)
        s = server.session("app", subject_id="PEN-D0", purpose="pension")
        page.goto(capture_url(server.url, s))
        follow(page, shots="phone-en", until=("intro",))
        assert "token" not in page.url and "#" not in page.url          # the token left the address bar
        page.click("button[data-action=start]")
        end = follow(page, shots="phone-en")
        summary = result_of(page)
        assert end["phase"] == "passed", dump(summary)
        assert end["title"] == "Check complete" and "continue" in end["text"]
        assert in_order(end["seen"], ORDER), end["seen"]
        assert summary["live"] is True and summary["status"] == "passed" and summary["upload"] == "frames"
        assert summary["challenge"] == ["blink"] and summary["actions"] == [{"action": "blink", "detected": True}]
        assert 15 <= summary["fps"] <= 25 and summary["frames"] >= 45, summary
        assert 2900 <= summary["timing"]["captureMs"] <= 3600 and summary["timing"]["verdictMs"] > 0
        frames_posts = [u for u in uploads if u.endswith("/frames")]
        assert len(frames_posts) >= 3, uploads                          # chunks went while the person acted
        assert page.evaluate("document.querySelector('video').srcObject") is None   # the camera is off
        assert not violations(page) and not page.console_errors, (violations(page), page.console_errors)
    finally:
        browser.close()
    cert = certify(server, "PEN-D0", s["session_id"])
    assert cert["outcome"] == "certified" and cert["method"] == "face", cert


def test_wrong_person_passes_liveness_but_is_not_certified_kiosk(server, playwright_api, clip):
    browser = launch(playwright_api, clip("d19", 1.0, 4.5))
    try:
        page = new_page(browser, "kiosk", "zh-CN")
        s = server.session("app", subject_id="PEN-D0", purpose="pension")
        page.goto(capture_url(server.url, s, upload="video", query={"mode": "kiosk", "reset": 3}))
        intro = follow(page, shots="kiosk-zh-CN", until=("intro",))
        assert intro["title"] == "人脸核验"
        page.click("button[data-action=start]")
        end = follow(page, shots="kiosk-zh-CN")
        summary = result_of(page)
        assert end["phase"] == "passed" and end["title"] == "核验完成", dump(summary)
        assert summary["upload"] == "video" and summary["live"] is True
        # the kiosk goes back to its start screen, keeping nothing of the person
        page.wait_for_selector("[data-phase=welcome]", timeout=10000)
        shoot(page, "kiosk-zh-CN-99-welcome")
        left = page.evaluate("""() => ({
            videos: document.querySelectorAll('video').length,
            text: document.body.innerText,
            url: location.href,
            resources: performance.getEntriesByType('resource').map((e) => e.name),
            marks: performance.getEntriesByType('mark').length})""")
        assert left["videos"] == 0 and left["marks"] == 0, left
        assert s["session_id"] not in json.dumps(left) and "fgc_" not in json.dumps(left), left
        assert "欢迎" in left["text"]
        assert page.evaluate("document.documentElement.dataset.kiosk") == "true"
        assert not violations(page) and not page.console_errors, (violations(page), page.console_errors)
    finally:
        browser.close()
    cert = certify(server, "PEN-D0", s["session_id"])
    assert cert["outcome"] in ("failed", "manual_review"), cert
    assert {"face_mismatch", "capture_face_mismatch"} & set(cert["reasons"]) or cert["outcome"] == "manual_review", cert


def test_still_photo_fails_and_the_page_says_so(server, playwright_api, still):
    browser = launch(playwright_api, still("d0", 0.5))
    try:
        page = new_page(browser, "phone", "zh-CN")
        s = server.session("app", subject_id="PEN-D0", purpose="pension")
        page.goto(capture_url(server.url, s))
        follow(page, shots="phone-zh-CN", until=("intro",))
        page.click("button[data-action=start]")
        end = follow(page, shots="phone-zh-CN")
        summary = result_of(page)
        assert end["phase"] == "failed", dump(summary)
        assert end["title"] == "未能通过核验" and "请重试" in end["text"], end
        assert summary["live"] is False and summary["reasons"], summary
        # the most telling reason is put in words
        assert re.search("未能检测到真人的动作|没有检测到眨眼动作|画面看起来不像真人", end["text"]), end
    finally:
        browser.close()
    cert = certify(server, "PEN-D0", s["session_id"])
    assert cert["outcome"] == "failed" and "liveness_failed" in cert["reasons"], cert


INTEGRATOR_PAGE = """<!doctype html><html><head><title>Kiosk</title></head><body style="margin:0">
<div id="box" style="width:100vw;height:100vh"></div>
<script type="module">
import { embed } from "%(facegate)s/capture/facegate-capture.js";
window.begin = (s) => embed({ sessionId: s.session_id, token: s.capture_token, kiosk: true,
                              element: document.getElementById("box") }).then((r) => { window.summary = r; });
window.ready = true;
</script></body></html>"""


def test_embedded_in_an_integrator_page_with_a_network_failure_then_kiosk_authentication(server, playwright_api,
                                                                                           clip, videos):
    site = IntegratorSite({"/kiosk.html": INTEGRATOR_PAGE % {"facegate": server.url}})
    browser = launch(playwright_api, clip("d0", 0.0, 3.12))
    try:
        page = new_page(browser, "kiosk", "en-GB")
        ctx = page.context

        def drop(route):
            route.abort("internetdisconnected")
        ctx.route("**/v1/liveness/sessions/*/frames", drop)
        page.goto(f"{INTEGRATOR}/kiosk.html")
        page.wait_for_function("() => window.ready === true")
        s = server.session("kiosk")
        page.evaluate("(s) => { window.begin(s); }", s)          # not awaited
        page.wait_for_function("() => document.querySelector('iframe') && document.querySelector('iframe').contentDocument "
                               "=== null", timeout=10000)  # cross-origin: the integrator cannot read it
        frame = next(f for f in _wait_frames(page) if "/capture/" in f.url)
        err = follow(page, frame=frame, shots="kiosk-en", until=("error",), timeout=60)
        assert err["code"] == "network" and err["title"] == "No connection to the service", err
        assert in_order(err["seen"], ORDER), err["seen"]                 # kiosk: no intro, straight to the camera
        ctx.unroute("**/v1/liveness/sessions/*/frames", drop)
        frame.click("button[data-action=retry]")
        end = follow(page, frame=frame, shots="kiosk-en-retry")
        page.wait_for_function("() => window.summary", timeout=10000)
        summary = page.evaluate("window.summary")
        assert end["phase"] == "passed" and summary["live"] is True, dump(summary)
        assert not page.console_errors or all("internetdisconnected" in e.lower() or "ERR_INTERNET" in e
                                              or "Failed to load" in e for e in page.console_errors), page.console_errors
    finally:
        browser.close()
        site.close()
    from facegate.evaluation.documents import chip_photo
    enrolled = cv2.imdecode(np.frombuffer(frame_jpeg(videos, "d0", 0.5), np.uint8), cv2.IMREAD_COLOR)
    r = server.call("kiosk", "POST", "/v1/kiosk/authenticate", data={"liveness_session_id": s["session_id"]},
                    files={"document_image": ("chip.jpg", chip_photo(enrolled))})
    assert r.status_code == 200, r.text
    assert r.json()["mode"] == "document" and r.json()["decision"] == "match", r.json()


def _wait_frames(page, timeout=10.0):
    import time
    until = time.time() + timeout
    while time.time() < until:
        frames = [f for f in page.frames if "/capture/" in f.url]
        if frames and state(frames[0]):
            return frames
        time.sleep(0.1)
    raise AssertionError(f"the capture page did not load in the iframe: {[f.url for f in page.frames]}")


@pytest.mark.parametrize("camera,code,title", [("denied", "camera_denied", "The camera is blocked"),
                                               ("none", "no_camera", "No camera found")])
def test_camera_problems_are_explained(server, playwright_api, camera, code, title):
    browser = launch(playwright_api, camera=camera)
    try:
        page = new_page(browser, "phone", "en")
        page.goto(capture_url(server.url, server.session("app")))
        follow(page, until=("intro",))
        page.click("button[data-action=start]")
        end = follow(page, shots=f"phone-en-{code}", until=("error",))
        assert end["code"] == code and end["title"] == title, end
        assert page.locator("button[data-action=retry]").is_visible()
        page.click("button.fg-lang")                                    # the same in Chinese
        assert state(page)["title"] == {"camera_denied": "摄像头权限被拒绝", "no_camera": "未找到摄像头"}[code]
    finally:
        browser.close()


REFUSALS = [  # the session's status answered with a problem: the page's words, and whether it offers a retry
    ("liveness_session_closed", 409, "This check has already been done", False),
    ("liveness_session_unknown", 404, "This check was not found", False),
    ("unauthorized", 401, "This link can no longer be used", False),
    ("liveness_session_expired", 410, "The time for this check has run out", False),
    ("rate_limited", 429, "The service is busy", True),
]


def refuse(status: int, body: str):
    def handler(route):
        route.fulfill(status=status, body=body, content_type="application/problem+json", headers={"Retry-After": "0"})
    return handler


def test_refusals_and_an_expired_session_are_explained(server, playwright_api):
    browser = launch(playwright_api, camera="none")
    try:
        for code, status, title, retry in REFUSALS:
            page = new_page(browser, "phone", "en")
            body = json.dumps({"type": f"https://facegate.dev/errors/{code}", "status": status, "code": code,
                               "title": code, "detail": "test"})
            page.route(re.compile(r".*/v1/liveness/sessions/[^/]+$"), refuse(status, body))
            page.goto(capture_url(server.url, server.session("app")))
            end = follow(page, until=("error",), timeout=20)
            assert end["code"] == code and end["title"] == title, end
            assert page.locator("button[data-action=retry]").count() == (1 if retry else 0), code
            page.close()
        # a session whose deadline has passed by the time the page opens (the real answer, expires_at moved back)
        page = new_page(browser, "phone", "en")

        def expired(route):
            answer = route.fetch()
            data = answer.json() | {"expires_at": "2001-01-01T00:00:00Z"}
            route.fulfill(response=answer, body=json.dumps(data))
        page.route(re.compile(r".*/v1/liveness/sessions/[^/]+$"), expired)
        page.goto(capture_url(server.url, server.session("app")))
        end = follow(page, shots="phone-en-expired", until=("error",))
        assert end["code"] == "liveness_session_expired" and end["title"] == "The time for this check has run out"
    finally:
        browser.close()


def test_texts_exist_in_both_languages_for_every_code(server, playwright_api):
    browser = launch(playwright_api, camera="none")
    try:
        page = new_page(browser, "phone", "en")
        page.goto(server.url + "/capture/")
        page.wait_for_selector("[data-phase=welcome]")                 # no session: a plain message
        assert state(page)["title"] == "Nothing to check yet"
        report = page.evaluate("""async () => {
            const m = await import('/capture/i18n.js');
            const en = Object.keys(m.TEXTS.en).sort(), zh = Object.keys(m.TEXTS['zh-CN']).sort();
            const missing = [];
            for (const code of m.ERROR_CODES) {
                const e = m.errorText(code);
                for (const loc of m.LOCALES) for (const k of [e.titleKey, e.textKey]) if (!(k in m.TEXTS[loc])) missing.push(loc + ':' + k);
            }
            const reasons = [...m.REASON_CODES, 'action_not_detected:blink', 'action_not_detected:turn_left',
                             'action_not_detected:turn_right', 'action_not_detected:open_mouth', 'action_not_detected:nod'];
            for (const r of reasons) { const keys = m.reasonTexts([r]); if (!keys.length) missing.push('reason:' + r);
                for (const loc of m.LOCALES) for (const k of keys) if (!(k in m.TEXTS[loc])) missing.push(loc + ':' + k); }
            for (const c of m.CAUSE_CODES) { const k = m.causeText(c); if (!k) missing.push('cause:' + c);
                else for (const loc of m.LOCALES) if (!(k in m.TEXTS[loc])) missing.push(loc + ':' + k); }
            return {en, zh, missing, picks: [m.pickLocale(undefined, ['zh-TW']), m.pickLocale(undefined, ['de-DE', 'en-US']),
                                             m.pickLocale('zh-CN', []), m.pickLocale(undefined, ['fr'])]};
        }""")
        assert report["en"] == report["zh"], set(report["en"]) ^ set(report["zh"])
        assert report["missing"] == [], report["missing"]
        assert report["picks"] == ["zh-CN", "en", "zh-CN", "en"]
        assert not violations(page)
        # a mangled link (as copied by hand): said in words, in kiosk mode with the way back to the start
        page.goto(server.url + "/capture/?mode=kiosk&reset=3#session=not%20an%20id&token=x")
        page.wait_for_selector("[data-phase=error]")
        assert state(page)["title"] == "This link can no longer be used"
        page.click("button[data-action=done]")
        page.wait_for_selector("[data-phase=welcome]")
    finally:
        browser.close()
