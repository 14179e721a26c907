"""The notice and the separate consent on the capture page (docs/compliance.md), in Chromium,
in Chinese, on a phone: the page shows the service's current notice before the camera opens;

- declining: the deployer's way without a face is shown in words, the page reports
  ``consent_declined``, the camera never opens (there is none here: opening it would be an
  error) and the service holds no frame of the session;
- agreeing: the consent is recorded (channel capture_page, the notice version shown) and the
  check goes on to its introduction.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .support import NOTICE, capture_url, dump, follow, launch, new_page, result_of, shoot, start_server, state, violations

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory, "capture-consent", liveness_challenge="blink")
    r = srv.call("admin", "POST", "/v1/subjects", json={"subject_id": "PEN-9", "name": "PEN-9"})
    assert r.status_code == 201, r.text
    yield srv
    srv.stop()


def test_declining_shows_the_way_without_a_face_and_captures_nothing(server, playwright_api):
    notice = json.loads(NOTICE.read_text())["zh-CN"]
    browser = launch(playwright_api, camera="none")
    try:
        page = new_page(browser, "phone", "zh-CN")
        s = server.session("app", subject_id="PEN-9", purpose="pension")
        page.goto(capture_url(server.url, s))
        asked = follow(page, shots="phone-zh-consent", until=("consent",), consent=None)
        assert asked["title"] == "人脸核验前：请您确认是否同意", asked
        shown = page.evaluate("() => [...document.querySelectorAll('.fg-notice dd')].map((d) => d.textContent)")
        assert shown == [notice[k] for k in ("processor_name", "processor_contact", "purpose", "method", "retention",
                                             "rights", "alternative")], shown
        assert page.evaluate("document.querySelector('.fg-notice').dataset.version") == "1"
        assert page.evaluate("document.querySelector('video').srcObject") is None      # no camera before consent
        shot = shoot(page, "phone-zh-consent-notice")
        shutil.copy(shot, DOCS_IMG / "consent-phone-zh-CN.png")
        page.click("button[data-action=decline]")
        end = follow(page, shots="phone-zh-consent", until=("declined", "error"), consent=None)
        summary = result_of(page)
        assert end["phase"] == "declined", dump(summary)
        assert end["title"] == "您选择不使用人脸核验" and "摄像头没有采集任何画面" in end["text"], end
        alternative = page.evaluate("document.querySelector('.fg-alternative').textContent")
        assert alternative == notice["alternative"], alternative
        assert summary["status"] == "consent_declined" and summary["error"] is None and summary["frames"] == 0, summary
        assert summary["noticeVersion"] == 1
        assert "camera" not in end["seen"] and "positioning" not in end["seen"], end["seen"]
        assert not violations(page) and not page.console_errors, (violations(page), page.console_errors)
        # the language switch shows the alternative in English too
        page.click("button.fg-lang")
        assert "counter" in page.evaluate("document.querySelector('.fg-alternative').textContent")
    finally:
        browser.close()
    st = server.call("app", "GET", f"/v1/liveness/sessions/{s['session_id']}").json()
    assert st["status"] == "failed" and st["frames_received"] == 0 and st["result"]["reasons"] == ["consent_declined"]
    recs = server.call("admin", "GET", "/v1/subjects/PEN-9/consents").json()["consents"]
    assert [(r["decision"], r["channel"], r["notice_version"]) for r in recs] == [("declined", "capture_page", 1)]


def test_agreeing_records_the_consent_and_goes_on(server, playwright_api):
    browser = launch(playwright_api, camera="none")
    try:
        page = new_page(browser, "phone", "zh-CN")
        s = server.session("app", subject_id="PEN-9", purpose="pension")
        page.goto(capture_url(server.url, s))
        follow(page, until=("consent",), consent=None)
        page.click("button[data-action=agree]")
        intro = follow(page, until=("intro", "error"), consent=None)
        assert intro["phase"] == "intro" and intro["title"] == "人脸核验", intro
    finally:
        browser.close()
    recs = server.call("admin", "GET", "/v1/subjects/PEN-9/consents").json()["consents"]
    given = [r for r in recs if r["liveness_session_id"] == s["session_id"]]
    assert [(r["decision"], r["channel"], r["notice_version"]) for r in given] == [("given", "capture_page", 1)]
