"""The console page after an outside review, in Debian's chromium: the sign-in page shows only
known single sign-on codes (each a sentence in both languages, nothing of what the address
says), the audit screen walks the hash chain only when its button is pressed, and a withdrawal
of consent asks for the subject id typed again.

The app runs in this process (uvicorn in a thread) with the sessions of
``tests/test_console_hardening.py``'s :class:`Door`: sign-in is not what is tested here."""
from __future__ import annotations

import threading
import time

import pytest

from service_support import free_port
from test_console_hardening import Door, console_app

from .support import launch, new_page, violations


@pytest.fixture(scope="module")
def served(tmp_path_factory, settings):
    import uvicorn
    app = console_app(tmp_path_factory.mktemp("console-page-hardening"), settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    app.state.facegate.operators = door = Door()
    served = type("Served", (), {})()
    served.url, served.st, served.door = f"http://127.0.0.1:{port}", app.state.facegate, door
    yield served
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser(playwright_api):
    b = launch(playwright_api, camera="none")
    yield b
    b.close()


def signed_in_page(served, browser, operator: str, role: str, locale: str = "en"):
    secret, _ = served.door.open(operator, role)
    page = new_page(browser, "kiosk", locale)
    page.context.add_cookies([{"name": "fg_console", "value": secret, "url": served.url}])
    return page


def errors(page) -> list[str]:
    return [e for e in page.console_errors if "Failed to load resource" not in e]


@pytest.mark.parametrize("locale, query, code, sentence", [
    ("en", "sso=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "other", "Single sign-on did not succeed."),
    ("en", "sso=Call%20555-1234%20to%20unlock", "other", "Single sign-on did not succeed."),
    ("en", "sso=forbidden", "forbidden", "no role in this console"),
    ("en", "sso=sso_not_registered", "sso_not_registered", "not an operator here"),
    ("zh-CN", "sso=sign_in_throttled", "sign_in_throttled", "登录失败次数过多"),
    ("zh-CN", "sso=%E8%AF%B7%E6%8B%A8%E6%89%93%20555", "other", "单位账号登录未成功。"),
    ("en", "sso=__proto__", "other", "Single sign-on did not succeed."),
])
def test_the_sign_in_page_shows_only_known_single_sign_on_codes(served, browser, locale, query, code, sentence):
    page = new_page(browser, "kiosk", locale)
    page.goto(f"{served.url}/console/?{query}")
    page.wait_for_selector("#signin")
    page.wait_for_selector("#message:not([hidden])")
    text = page.text_content("#message")
    assert sentence in text, text
    assert page.get_attribute("#message", "data-code") == code
    body = page.text_content("body")
    for planted in ("script", "555", "alert", "请拨打", "__proto__"):
        assert planted not in body, body
    assert page.evaluate("location.search") == ""
    assert not violations(page) and not errors(page), errors(page)
    page.context.close()


def test_the_audit_screen_walks_the_chain_only_when_asked(served, browser):
    page = signed_in_page(served, browser, "cy", "auditor")
    asked = []
    page.on("request", lambda r: asked.append(r.url) if "/console/api/audit" in r.url else None)
    page.goto(served.url + "/console/#/audit")
    page.wait_for_selector("#audit")
    assert asked and not [u for u in asked if "verify=" in u], asked
    assert page.query_selector("#chain") is None
    page.fill("#f-operation", "console.refused")          # a filtered list does not verify either
    with page.expect_response(lambda r: "/console/api/audit" in r.url):
        page.click("#apply")
    assert not [u for u in asked if "verify=" in u], asked
    page.click("#verify-chain")
    page.wait_for_selector("#chain.good")
    assert [u for u in asked if "verify=true" in u], asked
    assert "intact" in page.text_content("#chain")
    assert page.input_value("#f-operation") == "console.refused"
    assert not violations(page) and not errors(page), errors(page)
    page.context.close()


def test_a_withdrawal_asks_for_the_subject_id_typed_again(served, browser):
    served.st.gallery.store.add_subject("WP-1", name="WP-1")
    page = signed_in_page(served, browser, "ha", "supervisor", "zh-CN")
    page.goto(served.url + "/console/#/subjects/WP-1")
    page.wait_for_selector("#withdraw-confirm")
    assert "再次输入人员编号以确认撤回同意" in page.text_content("#app")
    page.fill("#withdraw-reason", "本人来信")
    page.click("#withdraw")                                 # nothing typed: refused
    page.wait_for_selector("#message:not([hidden])")
    assert page.get_attribute("#message", "data-code") == "invalid_request"
    page.fill("#withdraw-confirm", "WP-2")                  # the wrong id: refused
    page.click("#withdraw")
    page.wait_for_timeout(300)
    assert page.get_attribute("#message", "data-code") == "invalid_request"
    assert served.st.gallery.store.get_subject("WP-1")["withdrawn_at"] is None
    page.fill("#withdraw-confirm", "WP-1")
    page.click("#withdraw")
    page.wait_for_function("() => document.querySelector('#message').classList.contains('ok')")
    assert "WP-1" in page.text_content("#message")
    assert served.st.gallery.store.get_subject("WP-1")["withdrawn_at"] is not None
    assert not violations(page) and not errors(page), errors(page)
    page.context.close()
