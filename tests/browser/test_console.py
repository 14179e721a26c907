"""The operator console (/console/) in a real browser (Debian's chromium + Playwright) against a real
``facegate serve``: TOTP enrolment at the first sign-in, wrong password and code, lockout, CSRF
refusal, session expiry, a certification that went to ``manual_review`` in a real capture decided
in the console (the ledger and the audit trail show the operator), an auditor who sees no image,
image views audited, the same screens in zh-CN.

The case: the person of ``face-videos/d18.mp4`` is enrolled twice (PEN-1, and PEN-2 with
``allow_duplicate``); PEN-2 certifies with the clip's 1.0-7.2 s segment (a real capture, judged
live), and the same face enrolled for PEN-1 sends it to a person (``shared_face``).
"""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time

import httpx
import pyotp
import pytest

from service_support import FACEGATE, REPO, Server, cli, create_key

from .support import launch, new_page, shoot, violations

PASSWORD = "a long console password"
ANSWERABLE = (["open_mouth", "blink"], ["blink", "open_mouth"])


def _jpeg(bgr) -> bytes:
    import cv2
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


class Console:
    def __init__(self, tmp_path_factory, videos):
        from facegate.liveness.attacks import segment
        from facegate.liveness.capture import Capture
        self.data = tmp_path_factory.mktemp("console")
        self.srv = Server(self.data, liveness_seed=5, rate_limit_per_minute=100_000, console_max_failures=3,
                          console_lockout_s=60)
        self.keys = {role: create_key(self.srv.env, role)["key"] for role in ("admin", "app")}
        for name, role in (("ana", "reviewer"), ("bo", "reviewer"), ("cy", "auditor"), ("di", "supervisor"),
                           ("ed", "reviewer"), ("fu", "reviewer"), ("gi", "reviewer"), ("ha", "supervisor")):
            proc = subprocess.run([*FACEGATE, "operators", "add", name, "--role", role, "--password-stdin"],
                                  input=PASSWORD + "\n", env=self.srv.env, cwd=REPO, capture_output=True, text=True,
                                  timeout=60)
            assert proc.returncode == 0, proc.stderr
        kiosk = json.loads(cli(self.srv.env, "kiosks", "add", "--location", "Office 4", "--id", "k-04",
                               "--json").stdout)
        self.keys["kiosk"] = kiosk["key"]
        self.srv.start()
        self.url = self.srv.url
        self.secrets: dict[str, str] = {}
        cap = Capture(max_frames=1000, max_seconds=60)
        cap.add_video((videos / "d18.mp4").read_bytes(), 40_000_000)
        self.frames = [(f.t, _jpeg(f.bgr)) for f in segment(cap, 1.0, 7.2).frames]
        self.enrol_photo = _jpeg(segment(cap, 0.4, 0.6).frames[0].bgr)

    def call(self, role, method, path, **kw):
        return httpx.request(method, self.url + path, headers={"X-API-Key": self.keys[role]}, timeout=180, **kw)

    def add_subject(self, sid, allow_duplicate=False):
        assert self.call("admin", "POST", "/v1/subjects", json={"subject_id": sid, "name": sid}).status_code == 201
        r = self.call("admin", "POST", f"/v1/subjects/{sid}/faces", files={"image": ("f.jpg", self.enrol_photo)},
                      data={"allow_duplicate": str(allow_duplicate).lower()})
        assert r.status_code == 201, r.text

    def live_session(self, subject_id, role="app"):
        for _ in range(200):
            s = self.call(role, "POST", "/v1/liveness/sessions", json={"subject_id": subject_id} if subject_id else {}).json()
            if s["challenge"] in ANSWERABLE:
                break
        for start in range(0, len(self.frames), 100):
            part = self.frames[start:start + 100]
            r = self.call(role, "POST", f"/v1/liveness/sessions/{s['session_id']}/frames",
                          files=[("frames", (f"{i}.jpg", d, "image/jpeg")) for i, (_, d) in enumerate(part)],
                          data={"nonce": s["nonce"], "timestamps": ",".join(f"{t:.4f}" for t, _ in part),
                                "complete": "true" if start + 100 >= len(self.frames) else "false"})
            assert r.status_code == 200, r.text
        return s["session_id"], r.json()

    def audit(self, **params) -> list[dict]:
        return self.call("admin", "GET", "/v1/audit", params={"limit": 1000, **params}).json()["entries"]

    def db(self):
        return sqlite3.connect(self.data / "facegate.db")


@pytest.fixture(scope="module")
def console(tmp_path_factory, videos, playwright_api):
    c = Console(tmp_path_factory, videos)
    c.add_subject("PEN-1")
    c.add_subject("PEN-2", allow_duplicate=True)
    sid, verdict = c.live_session("PEN-2")
    assert verdict["live"], verdict["reasons"]
    cert = c.call("app", "POST", "/v1/certifications", data={"subject_id": "PEN-2", "liveness_session_id": sid})
    assert cert.status_code == 201, cert.text
    c.case = cert.json()
    assert c.case["outcome"] == "manual_review" and "shared_face" in c.case["reasons"], c.case
    assert c.case["review_case_id"], c.case
    yield c
    c.srv.stop()


@pytest.fixture(scope="module")
def browser(playwright_api):
    b = launch(playwright_api, camera="none")
    yield b
    b.close()


def _page(browser, locale="en"):
    return new_page(browser, "kiosk", locale)


def errors(page) -> list[str]:
    """Console errors other than Chromium's note on each 4xx answer the tests provoke on purpose."""
    return [e for e in page.console_errors if "Failed to load resource" not in e]


def _msg(page) -> str:
    page.wait_for_selector("#message:not([hidden])", timeout=15_000)
    return page.text_content("#message")


def sign_in(console, page, name: str, password: str = PASSWORD, shots: str | None = None):
    """Sign in through the page, enrolling TOTP from the QR screen's key at the first sign-in."""
    page.goto(console.url + "/console/")
    page.wait_for_selector("#signin")
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("#signin-submit")
    page.wait_for_selector("#enrol, #mfa")
    if page.query_selector("#enrol"):
        assert page.eval_on_selector("#qr", "i => i.complete && i.naturalWidth > 100")
        console.secrets[name] = page.text_content("#secret").strip()
        if shots:
            shoot(page, f"{shots}-enrol")
    totp = pyotp.TOTP(console.secrets[name])
    code = totp.now()
    page.fill("#code", code)
    page.click("#code-submit")
    page.wait_for_selector("#queue, #queue-empty", timeout=15_000)


def _shift_case(console, case_id: int, column: str, seconds: float) -> None:
    """Move a case's timestamp (the shared SQLite database stores naive UTC text)."""
    from datetime import datetime, timedelta
    with console.db() as db:
        (value,) = db.execute(f"SELECT {column} FROM review_cases WHERE id = ?", (case_id,)).fetchone()
        moved = datetime.fromisoformat(value) + timedelta(seconds=seconds)
        db.execute(f"UPDATE review_cases SET {column} = ? WHERE id = ?",
                   (moved.strftime("%Y-%m-%d %H:%M:%S.%f"), case_id))


def test_a_person_waiting_at_a_kiosk_comes_first_and_is_told_when_nobody_came(console, browser):
    """A kiosk search sent to a person: the queue shows it first (before the older pending
    certification case), marked, with how long the person has waited (counting on), the case
    screen too, with when the kiosk stops waiting; once it stopped, a decision is refused with
    ``case_expired`` in words and the case lists under ``expired``. Runs first: the fixture's
    certification case is still pending."""
    older = console.case["review_case_id"]
    sid, verdict = console.live_session(None, role="kiosk")
    assert verdict["live"], verdict["reasons"]
    r = console.call("kiosk", "POST", "/v1/kiosk/authenticate", data={"liveness_session_id": sid})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decision"] == "manual_review" and body["review_case_id"], body
    case_id = body["review_case_id"]
    assert case_id > older
    _shift_case(console, case_id, "created_at", -80)         # the person has been waiting 80 s already
    proc = subprocess.run([*FACEGATE, "operators", "add", "ivo", "--role", "reviewer", "--password-stdin"],
                          input=PASSWORD + "\n", env=console.srv.env, cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    page = _page(browser)
    sign_in(console, page, "ivo")
    page.wait_for_selector(f"tr[data-case='{older}']")
    order = page.eval_on_selector_all("#queue tbody tr", "rs => rs.map(r => [Number(r.dataset.case), r.className])")
    assert order[0] == [case_id, "row waiting"], order
    assert [c for c, _ in order].index(older) > 0 and dict(order)[older] == "row", order
    row = f"tr[data-case='{case_id}']"
    first = page.text_content(f"{row} .wait")
    assert re.fullmatch(r"waiting [12] min \d+ s", first), first
    page.wait_for_function(f"(t) => document.querySelector(\"{row} .wait\").textContent !== t", arg=first,
                           timeout=5_000)                   # the clock counts on in the page
    assert page.query_selector(f"tr[data-case='{older}'] .wait") is None
    shoot(page, "console-kiosk-waiting-queue")

    page.click(row)
    page.wait_for_selector("#decide")
    waiting = page.text_content("#waiting-time")
    assert re.fullmatch(r"waiting [12] min \d+ s", waiting), waiting
    assert "kiosk waits until" in page.text_content("#wait-until") and "counter" in page.text_content("#wait-until")
    page.click("#lang")                                      # the same in Chinese
    page.wait_for_function("() => /^已等待 [12] 分 \\d+ 秒$/.test("
                           "document.querySelector('#waiting-time')?.textContent)")
    assert "柜台" in page.text_content("#wait-until")
    page.click("#lang")
    page.wait_for_function("() => /^waiting [12] min/.test(document.querySelector('#waiting-time')?.textContent)")

    # the kiosk stops waiting while the reviewer looks: the decision is refused in words
    _shift_case(console, case_id, "wait_until", -200)
    page.fill("#note", "asked for the ID card")
    page.click("#identify-none")
    assert "stopped waiting and was sent to a counter" in _msg(page)
    assert page.get_attribute("#message", "data-code") == "case_expired"
    page.wait_for_selector("#expired")
    assert page.query_selector("#decide") is None and page.query_selector("#waiting") is None
    assert "counter" in page.text_content("#expired")
    told = console.call("kiosk", "GET", f"/v1/kiosk/reviews/{case_id}").json()
    assert told["status"] == "expired" and told["action"] == "go_to_counter", told
    page.click("a[href='#/queue']")
    page.wait_for_selector(f"tr[data-case='{older}']")
    assert page.query_selector(row) is None
    page.select_option("#f-status", "expired")
    page.click("#apply")
    page.wait_for_selector(row)
    assert page.text_content("main h1") == "Kiosk cases nobody took in time"
    assert page.query_selector(f"{row}.waiting") is None and page.query_selector(f"{row} .wait") is None
    assert not violations(page) and not errors(page), errors(page)
    page.context.close()


def test_first_sign_in_enrols_totp_and_a_manual_review_is_decided_with_its_evidence(console, browser):
    page = _page(browser)
    page.goto(console.url + "/console/")
    page.wait_for_selector("#signin")
    page.fill("#name", "ana")
    page.fill("#password", "not the password")
    page.click("#signin-submit")
    assert "wrong" in _msg(page)
    # the right password: the first sign-in enrols the second factor
    page.fill("#password", PASSWORD)
    page.click("#signin-submit")
    page.wait_for_selector("#enrol")
    assert page.eval_on_selector("#qr", "i => i.complete && i.naturalWidth > 100")
    secret = page.text_content("#secret").strip()
    console.secrets["ana"] = secret
    shoot(page, "console-enrol")
    wrong = "000000" if pyotp.TOTP(secret).now() != "000000" else "111111"
    page.fill("#code", wrong)
    page.click("#code-submit")
    assert "wrong" in _msg(page)
    page.fill("#code", pyotp.TOTP(secret).now())
    page.click("#code-submit")
    case_id = console.case["review_case_id"]
    page.wait_for_selector(f"tr[data-case='{case_id}']")
    shoot(page, "console-queue")
    assert "same face" in page.text_content(f"tr[data-case='{case_id}']")
    page.click(f"tr[data-case='{case_id}']")
    page.wait_for_selector("#decide")
    page.wait_for_function("() => document.querySelectorAll('#faces img').length >= 4 && "
                           "[...document.querySelectorAll('#faces img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=20_000)
    assert page.eval_on_selector("#reference", "i => i.src.startsWith('blob:')")
    frames = page.eval_on_selector_all("img.evidence", "is => is.map(i => [i.dataset.kind, i.naturalWidth])")
    assert len(frames) == 3 and all(k == "frame" and w > 100 for k, w in frames), frames
    assert page.text_content("[data-score=threshold]") and "threshold" in page.text_content("#scores")
    assert page.query_selector("[data-reason=shared_face]")
    page.evaluate("() => document.querySelectorAll('#faces img').forEach(i => i.style.filter = 'blur(18px)')")
    shoot(page, "console-case")
    # images: no-store, fetched with the session (an API key alone gets nothing)
    headers = page.evaluate(f"""async () => {{ const r = await fetch('/console/api/cases/{case_id}/reference');
                                return [r.status, r.headers.get('cache-control'), r.headers.get('content-type')]; }}""")
    assert headers == [200, "no-store", "image/jpeg"], headers
    assert httpx.get(console.url + f"/console/api/cases/{case_id}/reference").status_code == 401

    page.click("#claim")
    page.wait_for_function("() => document.querySelector('#claim-info').textContent.length > 0")
    page.click("#decide-certified")                       # no note: refused with a sentence
    assert _msg(page) and page.get_attribute("#message", "data-code") == "invalid_request"
    page.fill("#note", "compared with the enrolment photo; PEN-1 and PEN-2 are twins, both seen at office 4")
    page.click("#decide-certified")
    page.wait_for_selector("#decided")
    assert "ana" in page.text_content("#decided")
    assert not violations(page) and not errors(page), errors(page)

    attempts = console.call("admin", "GET", "/v1/certifications/PEN-2").json()["attempts"]
    assert attempts[0]["method"] == "manual" and attempts[0]["outcome"] == "certified"
    assert attempts[0]["operator"] == "ana" and "twins" in attempts[0]["note"]
    audit = console.audit(subject_id="PEN-2")
    manual = [e for e in audit if e["operation"] == "certify_manual"]
    assert manual and manual[-1]["actor"] == "operator:ana" and manual[-1]["detail"]["operator"] == "ana"
    decided = [e for e in audit if e["operation"] == "review.decide"]
    assert decided[-1]["actor"] == "operator:ana" and decided[-1]["detail"]["case_id"] == case_id
    views = [e["detail"]["image"] for e in audit if e["operation"] == "evidence.view" and e["actor"] == "operator:ana"]
    assert any(v.startswith("reference:") for v in views) and {"frame:0", "frame:1", "frame:2"} <= set(views)
    assert json.loads(cli(console.srv.env, "audit", "verify", "--json").stdout)["ok"] is True

    # a second reviewer cannot decide it again
    page2 = _page(browser)
    sign_in(console, page2, "bo")
    r = page2.evaluate(f"""async () => {{ const me = await (await fetch('/console/api/me')).json();
        const r = await fetch('/console/api/cases/{case_id}/decision', {{method: 'POST',
            headers: {{'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf}},
            body: JSON.stringify({{decision: 'failed', note: 'second opinion'}})}});
        return [r.status, (await r.json()).code]; }}""")
    assert r == [409, "case_decided"], r
    page.context.close()
    page2.context.close()


def test_repeated_failures_wait_and_are_audited(console, browser):
    page = _page(browser)
    page.goto(console.url + "/console/")
    page.wait_for_selector("#signin")
    page.fill("#name", "ed")
    for _ in range(3):
        page.fill("#password", "wrong password ###")
        page.click("#signin-submit")
        _msg(page)
        page.wait_for_timeout(100)
    assert page.get_attribute("#message", "data-code") == "sign_in_throttled"
    page.fill("#password", PASSWORD)                      # the right password while this browser waits
    page.click("#signin-submit")
    page.wait_for_timeout(300)
    assert page.get_attribute("#message", "data-code") == "sign_in_throttled"
    assert "seconds" in page.text_content("#message")
    outcomes = [e["outcome"] for e in console.audit(operation="console.sign_in") if e["actor"] == "operator:ed"]
    assert outcomes == ["sign_in_failed"] * 3 + ["sign_in_throttled"], outcomes
    page.context.close()


def test_csrf_refusal_and_session_expiry(console, browser):
    page = _page(browser)
    sign_in(console, page, "fu")
    case_id = console.case["review_case_id"]
    r = page.evaluate(f"""async () => {{ const r = await fetch('/console/api/cases/{case_id}/claim', {{method: 'POST',
        headers: {{'X-CSRF-Token': 'a-token-of-another-session'}}}}); return [r.status, (await r.json()).code]; }}""")
    assert r == [403, "csrf_failed"], r
    r = page.evaluate(f"""async () => {{ const r = await fetch('/console/api/cases/{case_id}/claim', {{method: 'POST'}});
        return [r.status, (await r.json()).code]; }}""")
    assert r == [403, "csrf_failed"], r
    refused = [e for e in console.audit(operation="console.refused") if e["actor"] == "operator:fu"]
    assert len(refused) >= 2 and refused[-1]["outcome"] == "csrf_failed"
    cookie = next(c for c in page.context.cookies() if c["name"] == "fg_console")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict", cookie
    # 16 minutes idle (the session's last use moved back in the shared database)
    with console.db() as db:
        db.execute("UPDATE operator_sessions SET last_seen = '2000-01-01 00:00:00.000000' "
                   "WHERE operator = 'fu' AND ended_at IS NULL")
    page.evaluate("() => { location.hash = '#/queue?x=' + Date.now(); }")
    page.wait_for_selector("#signin", timeout=15_000)
    assert page.get_attribute("#message", "data-code") == "session_expired"
    assert "sign in again" in page.text_content("#message")
    page.context.close()


def test_auditor_sees_no_image_and_the_audit_screen(console, browser):
    page = _page(browser)
    sign_in(console, page, "cy")
    case_id = console.case["review_case_id"]
    page.goto(console.url + f"/console/#/case/{case_id}")
    page.wait_for_selector("#images-hidden")
    assert page.query_selector_all("#faces img") == [] and page.query_selector("#decide") is None
    r = page.evaluate(f"async () => (await fetch('/console/api/cases/{case_id}/evidence/frame/0')).status")
    assert r == 403
    before = len([e for e in console.audit(operation="evidence.view") if e["actor"] == "operator:cy"])
    assert before == 0
    page.click("[data-nav=navAudit]")
    page.wait_for_selector("#audit")
    assert page.query_selector("#chain") is None          # the chain is walked only when asked
    page.click("#verify-chain")
    page.wait_for_selector("#chain.good")
    page.fill("#f-operator", "ana")
    page.click("#apply")
    page.wait_for_function("() => { const a = [...document.querySelectorAll('#audit tbody tr td:nth-child(2)')];"
                           " return a.length > 0 && a.every(t => t.textContent === 'operator:ana'); }")
    actors = page.eval_on_selector_all("#audit tbody tr td:nth-child(2)", "tds => tds.map(t => t.textContent)")
    assert set(actors) == {"operator:ana"}, actors
    assert not violations(page) and not errors(page), errors(page)
    page.context.close()


def test_the_console_in_chinese(console, browser):
    page = _page(browser, "zh-CN")
    page.goto(console.url + "/console/")
    page.wait_for_selector("#signin")
    assert page.text_content("#signin h1") == "登录" and page.get_attribute("html", "lang") == "zh-CN"
    page.fill("#name", "di")
    page.fill("#password", PASSWORD)
    page.click("#signin-submit")
    page.wait_for_selector("#enrol")
    assert page.text_content("#enrol h1") == "设置身份验证器"
    console.secrets["di"] = page.text_content("#secret").strip()
    page.fill("#code", pyotp.TOTP(console.secrets["di"]).now())
    page.click("#code-submit")
    page.wait_for_selector("#queue, #queue-empty")
    assert page.text_content("main h1") == "等待人工处理的案件"
    shoot(page, "console-zh-CN-queue")
    page.click("[data-nav=navSubjects]")
    page.fill("#subject-search", "PEN-1")
    page.click("#subject-go")
    page.wait_for_selector("#stored")
    assert "reference_photos" in page.text_content("#stored")
    shoot(page, "console-zh-CN-subject")
    for status in ("suspended", "active"):               # a status change with its reason, one audited write
        page.select_option("#status", status)
        page.fill("#status-reason", f"测试 {status}")
        page.click("#status-save")
        page.wait_for_function("(s) => !document.querySelector('#message').hidden && "
                               "document.querySelector('#message').textContent.includes(s)", arg=status)
    changes = [e for e in console.audit(subject_id="PEN-1", operation="subject.update")]
    assert [c["detail"]["to"] for c in changes[-2:]] == ["suspended", "active"]
    assert changes[-1]["actor"] == "operator:di" and changes[-1]["detail"]["reason"] == "测试 active"
    page.fill("#erase-confirm", "PEN-X")                  # the wrong id: refused, nothing erased
    page.fill("#erase-reason", "测试")
    page.click("#erase")
    assert "请检查输入内容" in _msg(page)
    assert console.call("admin", "GET", "/v1/subjects/PEN-1").status_code == 200
    page.click("[data-nav=navSignals]")                   # fraud signals link to their case and subjects
    page.wait_for_selector(f"[data-case-link='{console.case['review_case_id']}']")
    assert page.query_selector("#signals a[href='#/subjects/PEN-1']")
    page.click("[data-nav=navPeriods]")
    page.wait_for_selector("#periods")
    assert "认证周期" in page.text_content("main h1")
    page.click("[data-nav=navKiosks]")
    page.wait_for_selector("#kiosks")
    assert not violations(page) and not errors(page), errors(page)
    page.context.close()


def test_a_kiosk_search_that_went_to_a_person_is_decided(console, browser):
    sid, verdict = console.live_session(None, role="kiosk")
    assert verdict["live"], verdict["reasons"]
    r = console.call("kiosk", "POST", "/v1/kiosk/authenticate", data={"liveness_session_id": sid})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "search" and body["decision"] == "manual_review", body
    case_id = body["review_case_id"]
    page = _page(browser)
    sign_in(console, page, "gi")
    page.select_option("#f-workflow", "kiosk")
    page.click("#apply")
    page.wait_for_selector(f"tr[data-case='{case_id}']")
    page.click(f"tr[data-case='{case_id}']")
    page.wait_for_selector("#decide")
    page.wait_for_function("() => document.querySelectorAll('img.candidate').length === 2 && "
                           "[...document.querySelectorAll('#faces img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=20_000)
    assert page.query_selector("[data-reason=ambiguous_margin]")
    page.evaluate("() => document.querySelectorAll('#faces img').forEach(i => i.style.filter = 'blur(18px)')")
    shoot(page, "console-kiosk-case")
    page.fill("#note", "asked for the ID card: it is PEN-1")
    page.click("button[data-identify='0']")
    page.wait_for_selector("#decided")
    chosen = body["candidates"][0]["subject_id"]
    assert chosen in page.text_content("#decided") and "gi" in page.text_content("#decided")
    decided = [e for e in console.audit(operation="review.decide") if e["detail"]["case_id"] == case_id]
    assert decided and decided[-1]["actor"] == "operator:gi" and decided[-1]["outcome"] == "identified"
    assert decided[-1]["subject_id"] == chosen and decided[-1]["detail"]["kiosk_id"] == "k-04"
    views = {e["detail"]["image"] for e in console.audit(operation="evidence.view")
             if e["actor"] == "operator:gi" and e["detail"]["case_id"] == case_id}
    assert {"frame:0", "frame:1", "frame:2"} <= views and len([v for v in views if v.startswith("reference:")]) >= 1
    assert not violations(page) and not errors(page), errors(page)
    page.context.close()


def test_a_withdrawal_recorded_in_the_console_erases_the_face(console, browser):
    """Withdrawal from the console (issue 24): the templates and the reference photo go, the
    subject row stays marked withdrawn, the audit names the operator, a face check then answers
    consent_withdrawn."""
    console.add_subject("PEN-3", allow_duplicate=True)
    with console.db() as db:
        assert db.execute("SELECT count(*) FROM reference_photos r JOIN subjects s ON s.pk = r.subject_pk "
                          "WHERE s.subject_id = 'PEN-3'").fetchone()[0] == 1
    # device credentials (kiosk and app keys, even an admin key, a capture token) have no console session
    s = console.call("app", "POST", "/v1/liveness/sessions", json={"subject_id": "PEN-3"}).json()
    for headers in [{"X-API-Key": console.keys[r]} for r in ("kiosk", "app", "admin")] + [
            {"Authorization": f"Bearer {s['capture_token']}"}]:
        r = httpx.post(console.url + "/console/api/subjects/PEN-3/withdraw", json={"reason": "x"}, headers=headers)
        assert r.status_code == 401 and r.json()["code"] == "session_expired", r.text
    page = _page(browser)
    sign_in(console, page, "ha")
    page.goto(console.url + "/console/#/subjects/PEN-3")
    page.wait_for_selector("#stored")
    bounds = page.evaluate("""async () => { const me = await (await fetch('/console/api/me')).json();
        const send = async (body) => { const r = await fetch('/console/api/subjects/PEN-3/withdraw', {method: 'POST',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf}, body: JSON.stringify(body)});
            return [r.status, (await r.json()).code]; };
        return [await send({confirm: 'PEN-3', reason: 'x'.repeat(501)}), await send({}),
                await send({confirm: 'PEN-3', reason: ''}), await send({reason: 'x'}),
                await send({confirm: 'PEN-1', reason: 'x'})]; }""")
    assert [b[0] for b in bounds] == [422] * 5 and all(b[1] for b in bounds), bounds
    with console.db() as db:
        assert db.execute("SELECT count(*) FROM templates t JOIN subjects s ON s.pk = t.subject_pk "
                          "WHERE s.subject_id = 'PEN-3'").fetchone()[0] == 1, "nothing erased by a refused request"
    page.fill("#withdraw-confirm", "PEN-3")
    page.fill("#withdraw-reason", "letter received 3 December")
    page.click("#withdraw")
    assert "PEN-3" in _msg(page) and "withdrawn" in _msg(page)
    page.wait_for_function("() => /reference_photos\\s*0/.test(document.querySelector('#stored').textContent)")
    with console.db() as db:
        held = db.execute("SELECT (SELECT count(*) FROM templates t JOIN subjects s ON s.pk = t.subject_pk "
                          "WHERE s.subject_id = 'PEN-3'), (SELECT count(*) FROM reference_photos r JOIN subjects s "
                          "ON s.pk = r.subject_pk WHERE s.subject_id = 'PEN-3')").fetchone()
    assert held == (0, 0)
    done = console.audit(subject_id="PEN-3", operation="consent.withdraw")
    assert done and done[-1]["actor"] == "operator:ha" and done[-1]["detail"]["erased"]["reference_photos"] == 1
    assert done[-1]["detail"]["reason"] == "letter received 3 December"
    r = console.call("admin", "POST", "/v1/verify", data={"subject_id": "PEN-3"},
                     files={"image": ("f.jpg", console.enrol_photo)})
    assert r.status_code == 410 and r.json()["code"] == "consent_withdrawn", r.text
    assert not violations(page) and not errors(page), errors(page)
    page.context.close()
