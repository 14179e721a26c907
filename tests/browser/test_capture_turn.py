"""The capture page with the challenge forced to ``turn_left``: ``d3.mp4`` turns its head to its
left (looking down) at 8.2-9.5 s; its segment from 6.2 s is fed to the camera so that the turn falls in the
page's turn step (phone, Chinese). The frames are sent unmirrored, so the subject's own left is
what the server sees."""
from __future__ import annotations

import pytest

from .support import capture_url, dump, follow, launch, new_page, result_of, start_server, violations


@pytest.fixture(scope="module")
def server(tmp_path_factory, videos, playwright_api):
    srv = start_server(tmp_path_factory, "capture-turn", liveness_challenge="turn_left")
    yield srv
    srv.stop()


def test_head_turn_clip_passes_its_turn(server, playwright_api, clip):
    browser = launch(playwright_api, clip("d3", 6.2, 10.2))
    try:
        page = new_page(browser, "phone", "zh-CN")
        s = server.session("app", purpose="pension")
        page.goto(capture_url(server.url, s))
        follow(page, shots="phone-zh-CN-turn", until=("intro",))
        page.click("button[data-action=start]")
        end = follow(page, shots="phone-zh-CN-turn")
        summary = result_of(page)
        assert "capturing:turn_left" in end["seen"]
        assert end["phase"] == "passed" and end["title"] == "核验完成", dump(summary)
        assert summary["actions"] == [{"action": "turn_left", "detected": True}], summary
        assert not violations(page) and not page.console_errors, page.console_errors
    finally:
        browser.close()
    verdict = server.call("app", "GET", f"/v1/liveness/sessions/{s['session_id']}").json()["result"]
    assert verdict["live"] and verdict["actions"][0]["detected"], verdict
