"""The kiosk page while a staff member decides a 1:N search the machine could not (``facegate:review``).

The kiosk software (here a page on another origin that embeds ``/capture/?mode=kiosk``, or the
window that opened it) hands the page a session, gets the page's result, then tells the page that
the search went to a person (``status: "pending"``) and, after its long poll of
``GET /v1/kiosk/reviews/{id}``, the outcome (``decided`` with ``identified``/``none``, or
``expired``):

- English: the waiting screen stops the reset countdown; the confirmed outcome counts down back
  to the welcome screen;
- zh-CN: "could not confirm" and "nobody in time" for two people in a row, with no subject id
  shown even when the message carries one;
- a ``facegate:review`` from another origin than the session's (the opener navigated elsewhere),
  or from a window that is not the page's parent/opener, changes nothing.

No models: the page is served by ``capture_page.mount`` on a small Starlette app whose liveness
session status answers "passed" (the page shows the verdict and reports its result at once).
Screenshots: tests/browser/screenshots/kiosk-review-*.png (ignored by git).
"""
from __future__ import annotations

import threading
import time

import pytest

from service_support import free_port

from .support import INTEGRATOR, IntegratorSite, launch, new_page, shoot, state, violations

EN_WAIT = "A staff member is checking your photo. Please wait here."
EN_CONFIRMED = "A staff member confirmed who you are. Please continue."
ZH_WAIT = "工作人员正在核对您的照片，请在此稍候。"
ZH_NONE = "工作人员未能确认您的身份，请到柜台办理。"
ZH_EXPIRED = "没有工作人员能及时核对您的照片，请到柜台办理。"

REVIEWS = "window.__reviews = []; window.addEventListener('facegate:review', (e) => window.__reviews.push(e.detail));"

OTHER_PAGE = "<!doctype html><title>elsewhere</title><link rel=\"icon\" href=\"data:,\"><p>another page</p>"


class LightFacegate:
    """The capture page as facegate serves it (its headers included), and a liveness session
    status that answers ``passed`` for any session: no models, no database."""

    def __init__(self, embed_origins: list[str]):
        import uvicorn
        from starlette.applications import Starlette
        from starlette.responses import HTMLResponse, JSONResponse
        from starlette.routing import Route

        from facegate.service import capture_page

        async def status(request):
            assert request.headers.get("authorization", "").startswith("Bearer ")
            return JSONResponse({"session_id": request.path_params["sid"], "status": "passed",
                                 "result": {"live": True, "reasons": [], "score": 0.97, "challenge": ["blink"],
                                            "actions": [{"action": "blink", "detected": True}]}})

        async def other(request):
            return HTMLResponse(OTHER_PAGE)

        app = Starlette(routes=[Route("/v1/liveness/sessions/{sid}", status), Route("/other.html", other)])
        capture_page.mount(app, embed_origins)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        until = time.time() + 20
        while not self.server.started:
            assert time.time() < until, "the capture page's server did not start"
            time.sleep(0.05)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


HOST_PAGE = """<!doctype html><html><head><title>Kiosk software</title><link rel="icon" href="data:,"></head><body style="margin:0">
<iframe id="fg" src="%(facegate)s/capture/?mode=kiosk&reset=%(reset)s" allow="camera; fullscreen"
        style="border:0;width:100vw;height:100vh"></iframe>
<script>
const FG = "%(facegate)s";
const frame = document.getElementById("fg");
window.got = [];
window.addEventListener("message", (e) => {
  if (e.source === frame.contentWindow && e.origin === FG && e.data) window.got.push(e.data.type);
});
window.send = (m) => frame.contentWindow.postMessage(m, FG);
</script></body></html>"""

OPENER_PAGE = """<!doctype html><html><head><title>Kiosk software</title><link rel="icon" href="data:,"></head><body>
<script>
const FG = "%(facegate)s";
window.got = [];
window.addEventListener("message", (e) => {
  if (window.w && e.source === window.w && e.origin === FG && e.data) window.got.push(e.data.type);
});
window.openKiosk = () => { window.w = window.open(FG + "/capture/?mode=kiosk&reset=30", "fgkiosk"); };
window.send = (m) => window.w.postMessage(m, FG);
</script></body></html>"""


@pytest.fixture(scope="module")
def facegate(playwright_api):
    srv = LightFacegate([INTEGRATOR])
    site = IntegratorSite({"/kiosk-3.html": HOST_PAGE % {"facegate": srv.url, "reset": 3},
                           "/opener.html": OPENER_PAGE % {"facegate": srv.url},
                           "/other.html": OTHER_PAGE})
    yield srv
    site.close()
    srv.stop()


def capture_frame(page, timeout: float = 10.0):
    until = time.time() + timeout
    while time.time() < until:
        frames = [f for f in page.frames if "/capture/" in f.url]
        if frames and state(frames[0]):
            return frames[0]
        time.sleep(0.05)
    raise AssertionError(f"the capture page did not load: {[f.url for f in page.frames]}")


def got(host, kind: str) -> int:
    return host.evaluate("(k) => window.got.filter((t) => t === k).length", kind)


def one_person(host, kiosk, session_id: str, locale: str) -> None:
    """A person presses Start, the kiosk software hands the session, the page reports its result."""
    kiosk.wait_for_selector("[data-phase=welcome] button[data-action=start]")
    before = got(host, "facegate:result")
    kiosk.click("button[data-action=start]")
    host.wait_for_function("() => window.got.includes('facegate:session-request')")
    host.evaluate("(m) => window.send(m)", {"type": "facegate:start", "sessionId": session_id, "token": "fgc_test_token",
                                           "locale": locale})
    host.wait_for_function("(n) => window.got.filter((t) => t === 'facegate:result').length > n", arg=before)
    kiosk.wait_for_selector("[data-phase=passed]")
    kiosk.wait_for_selector(".fg-reset")                               # the reset countdown runs


def review(host, **message) -> None:
    host.evaluate("(m) => window.send(m)", {"type": "facegate:review", **message})


def test_waiting_then_confirmed_in_english(facegate, playwright_api):
    site_page = f"{INTEGRATOR}/kiosk-3.html"
    browser = launch(playwright_api, camera="none")
    try:
        page = new_page(browser, "kiosk", "en-GB")
        page.context.add_init_script(REVIEWS)
        page.goto(site_page)
        kiosk = capture_frame(page)
        one_person(page, kiosk, "sess_review_en1", "en")
        review(page, status="pending", waitUntil=_in_minutes(3))
        kiosk.wait_for_selector("[data-phase=review]")
        s = state(kiosk)
        assert s["title"] == "Please wait" and s["text"] == EN_WAIT, s
        assert kiosk.locator(".fg-review-time").inner_text() == "It usually takes no more than 3 minutes."
        assert kiosk.locator("[data-phase=review]").get_attribute("aria-busy") == "true"   # the title's spinner
        assert kiosk.locator(".fg-reset").count() == 0
        shoot(page, "kiosk-review-en-pending")
        time.sleep(4.0)                                                 # past the 3 s reset: the countdown stopped
        assert state(kiosk)["phase"] == "review"
        review(page, status="pending", waitUntil=_in_minutes(3))           # asked again: the same screen
        assert state(kiosk)["text"] == EN_WAIT
        review(page, status="decided", decision="identified", subjectId="S-SECRET-1")
        kiosk.wait_for_selector("[data-phase=reviewed][data-review=identified]")
        s = state(kiosk)
        assert s["title"] == "Confirmed" and s["text"] == EN_CONFIRMED, s
        assert "Returning to the start screen in" in kiosk.locator(".fg-reset").inner_text()
        assert "S-SECRET" not in kiosk.evaluate("document.body.innerText")
        shoot(page, "kiosk-review-en-identified")
        kiosk.wait_for_selector("[data-phase=welcome]", timeout=8000)   # back to the start, nothing kept
        assert state(kiosk)["title"] == "Welcome"
        assert kiosk.evaluate("window.__reviews") == [{"status": "pending", "decision": None},
                                                      {"status": "pending", "decision": None},
                                                      {"status": "decided", "decision": "identified"}]
        assert got(page, "facegate:ready") >= 2
        assert not violations(kiosk) and not page.console_errors, (violations(kiosk), page.console_errors)
    finally:
        browser.close()


def test_not_confirmed_and_expired_in_chinese(facegate, playwright_api):
    browser = launch(playwright_api, camera="none")
    try:
        page = new_page(browser, "kiosk", "zh-CN")
        page.goto(f"{INTEGRATOR}/kiosk-3.html")
        kiosk = capture_frame(page)
        assert state(kiosk)["title"] == "欢迎"
        for n, (message, text) in enumerate([({"status": "decided", "decision": "none"}, ZH_NONE),
                                             ({"status": "expired"}, ZH_EXPIRED)]):
            one_person(page, kiosk, f"sess_review_zh{n}", "zh-CN")
            review(page, status="pending")
            kiosk.wait_for_selector("[data-phase=review]")
            s = state(kiosk)
            assert s["title"] == "请稍候" and s["text"] == ZH_WAIT, s
            assert kiosk.locator(".fg-review-time").inner_text() == ""  # no waitUntil: no time said
            if n == 0:
                shoot(page, "kiosk-review-zh-CN-pending")
            review(page, subjectId="S-SECRET-2", **message)
            kiosk.wait_for_selector("[data-phase=reviewed]")
            s = state(kiosk)
            assert s["title"] == "请到柜台办理" and s["text"] == text, s
            assert "秒后返回首页" in kiosk.locator(".fg-reset").inner_text()
            assert "S-SECRET" not in kiosk.evaluate("document.body.innerText")
            shoot(page, f"kiosk-review-zh-CN-{message.get('decision') or message['status']}")
            kiosk.wait_for_selector("[data-phase=welcome]", timeout=8000)
            assert state(kiosk)["title"] == "欢迎"
        # a decision the page does not know is not shown
        review(page, status="decided", decision="maybe")
        review(page, status="whatever")
        time.sleep(0.5)
        assert state(kiosk)["phase"] == "welcome"
        assert not violations(kiosk) and not page.console_errors, (violations(kiosk), page.console_errors)
    finally:
        browser.close()


def test_a_review_from_another_origin_or_window_is_ignored(facegate, playwright_api):
    browser = launch(playwright_api, camera="none")
    try:
        page = new_page(browser, "kiosk", "en")
        ctx = page.context
        ctx.add_init_script(REVIEWS)
        page.goto(f"{INTEGRATOR}/opener.html")
        with ctx.expect_page() as opened:
            page.evaluate("window.openKiosk()")
        kiosk = opened.value
        kiosk.wait_for_selector("[data-phase=welcome]")
        one_person(page, kiosk, "sess_review_origin", "en")
        pending = {"type": "facegate:review", "status": "pending"}
        # the page itself, or a window that is not its opener, is not the kiosk software
        kiosk.evaluate("(m) => window.postMessage(m, '*')", pending)
        # ... nor a frame of the session's origin inside the opener's page
        page.evaluate("""() => new Promise((ok) => { const f = document.createElement('iframe');
            f.src = '/other.html'; f.onload = ok; document.body.append(f); })""")
        inner = next(f for f in page.frames if f.url.endswith("/other.html"))
        inner.evaluate(f"(m) => parent.w.postMessage(m, '{facegate.url}')", pending)
        # the opener's window, now showing a page of another origin (facegate's own) than the session's
        page.goto(f"{facegate.url}/other.html")
        page.evaluate("(m) => window.open('', 'fgkiosk').postMessage(m, '*')", pending)
        page.evaluate("(m) => window.open('', 'fgkiosk').postMessage(m, '*')",
                      {"type": "facegate:review", "status": "decided", "decision": "none"})
        time.sleep(1.0)
        assert state(kiosk)["phase"] == "passed" and kiosk.evaluate("window.__reviews") == []
        # the same window back on the session's origin: heard
        page.goto(f"{INTEGRATOR}/other.html")
        page.evaluate(f"(m) => window.open('', 'fgkiosk').postMessage(m, '{facegate.url}')", pending)
        kiosk.wait_for_selector("[data-phase=review]", timeout=5000)
        assert state(kiosk)["text"] == EN_WAIT
        assert kiosk.evaluate("window.__reviews") == [{"status": "pending", "decision": None}]
    finally:
        browser.close()


def _in_minutes(minutes: float) -> str:
    from datetime import datetime, timedelta, timezone
    at = datetime.now(timezone.utc) + timedelta(minutes=minutes) - timedelta(seconds=5)
    return at.isoformat().replace("+00:00", "Z")
