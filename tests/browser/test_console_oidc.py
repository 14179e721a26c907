"""Console single sign-on against a real OpenID Connect provider (npm ``oidc-provider``, started
here from tests/oidc/; ``npm install`` there first: scripts/test.sh does): authorization code +
PKCE, the ID token's ``facegate_role`` claim mapped to the console role; a user without a role
claim is refused, and both are audited."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from service_support import Server, free_port

from .support import launch, missing, new_page

OIDC_DIR = Path(__file__).resolve().parent.parent / "oidc"


@pytest.fixture(scope="module")
def provider_and_server(tmp_path_factory, playwright_api):
    node = shutil.which("node")
    if not node or not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        missing("node and tests/oidc/node_modules (cd tests/oidc && npm install) are needed for the OIDC test")
    port = free_port()
    srv = Server(tmp_path_factory.mktemp("console-oidc"), console_oidc_issuer=f"http://127.0.0.1:{port}",
                 console_oidc_client_id="facegate-console", console_oidc_client_secret="a-test-client-secret")
    redirect = f"{srv.url}/console/api/oidc/callback"
    proc = subprocess.Popen([node, "provider.mjs", str(port), "facegate-console", "a-test-client-secret", redirect,
                             '{"olga": "supervisor"}'], cwd=OIDC_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/.well-known/openid-configuration", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("oidc-provider did not start: " + proc.stdout.read1(4000).decode(errors="replace"))
        srv.start()
        yield srv
    finally:
        srv.stop()
        proc.terminate()
        proc.wait(10)


def _provider_sign_in(page, login: str) -> None:
    page.wait_for_selector("input[name=login]", timeout=20_000)
    page.fill("input[name=login]", login)
    if page.query_selector("input[name=password]"):
        page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    page.wait_for_selector("button[type=submit]", timeout=20_000)     # the consent screen
    page.click("button[type=submit]")


def test_single_sign_on_maps_the_role_claim_and_refuses_without_one(provider_and_server, playwright_api):
    srv = provider_and_server
    browser = launch(playwright_api, camera="none")
    try:
        page = new_page(browser, "kiosk", "en")
        page.goto(srv.url + "/console/")
        page.wait_for_selector("#sso")
        page.click("#sso")
        _provider_sign_in(page, "olga")
        page.wait_for_selector("#queue, #queue-empty", timeout=20_000)
        assert "olga (supervisor)" in page.text_content("#who")
        assert page.query_selector("[data-nav=navAudit]") and page.query_selector("[data-nav=navSubjects]")
        cookie = next(c for c in page.context.cookies() if c["name"] == "fg_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        page.context.close()

        page = new_page(browser, "kiosk", "en")               # a user the provider gives no role
        page.goto(srv.url + "/console/")
        page.wait_for_selector("#sso")
        page.click("#sso")
        _provider_sign_in(page, "mallory")
        page.wait_for_selector("#signin")
        page.wait_for_selector("#message:not([hidden])")
        assert page.get_attribute("#message", "data-code") == "forbidden"
        page.context.close()
    finally:
        browser.close()
    from service_support import create_key
    key = create_key(srv.env, "admin")["key"]
    entries = httpx.get(srv.url + "/v1/audit", params={"operation": "console.sign_in", "limit": 100},
                        headers={"X-API-Key": key}).json()["entries"]
    assert any(e["actor"] == "operator:olga" and e["outcome"] == "ok" and e["detail"]["via"] == "oidc" for e in entries)
    assert any(e["outcome"] == "forbidden" and e["detail"]["via"] == "oidc" for e in entries)
