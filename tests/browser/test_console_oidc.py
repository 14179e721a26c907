"""Console single sign-on against a real OpenID Connect provider (npm ``oidc-provider``, started
here from tests/oidc/; ``npm install`` there first: scripts/test.sh does): authorization code +
PKCE; the operator is the one registered for the token's (issuer, sub) with the role granted
here; a provider user nobody registered is refused, and so is one who renamed themselves after a
local operator (issue 31); all of it audited."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from service_support import FACEGATE, REPO, Server, cli, free_port

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
                             '{"mallory": {"preferred_username": "ana"}}'], cwd=OIDC_DIR,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/.well-known/openid-configuration", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("oidc-provider did not start: " + proc.stdout.read1(4000).decode(errors="replace"))
        cli(srv.env, "operators", "add", "olga", "--role", "supervisor", "--sso-subject", "olga")
        add = subprocess.run([*FACEGATE, "operators", "add", "ana", "--role", "supervisor", "--password-stdin"],
                             input="a local password\n", env=srv.env, cwd=REPO, capture_output=True, text=True,
                             timeout=60)
        assert add.returncode == 0, add.stderr
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


def _sso(browser, srv, login: str):
    page = new_page(browser, "kiosk", "en")
    page.goto(srv.url + "/console/")
    page.wait_for_selector("#sso")
    page.click("#sso")
    _provider_sign_in(page, login)
    return page


def test_single_sign_on_is_the_registered_identity_with_the_role_granted_here(provider_and_server, playwright_api):
    srv = provider_and_server
    browser = launch(playwright_api, camera="none")
    try:
        page = _sso(browser, srv, "olga")
        page.wait_for_selector("#queue, #queue-empty", timeout=20_000)
        assert "olga (supervisor)" in page.text_content("#who")
        assert page.query_selector("[data-nav=navAudit]") and page.query_selector("[data-nav=navSubjects]")
        cookie = next(c for c in page.context.cookies() if c["name"] == "fg_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        page.context.close()

        for login in ("kiosk", "mallory"):        # nobody registered them; mallory calls herself "ana"
            page = _sso(browser, srv, login)
            page.wait_for_selector("#signin")
            page.wait_for_selector("#message:not([hidden])")
            assert page.get_attribute("#message", "data-code") == "sso_not_registered"
            assert not any(c["name"] == "fg_console" for c in page.context.cookies())
            page.context.close()
    finally:
        browser.close()
    from service_support import create_key
    key = create_key(srv.env, "admin")["key"]
    entries = httpx.get(srv.url + "/v1/audit", params={"operation": "console.sign_in", "limit": 100},
                        headers={"X-API-Key": key}).json()["entries"]
    assert any(e["actor"] == "operator:olga" and e["outcome"] == "ok" and e["detail"]["via"] == "oidc" for e in entries)
    assert sum(e["outcome"] == "sso_not_registered" and e["detail"]["via"] == "oidc" for e in entries) == 2
    assert not any(e["actor"] == "operator:ana" and e["outcome"] == "ok" for e in entries)
    listed = {r["name"] for r in json.loads(cli(srv.env, "operators", "list", "--json").stdout)}
    assert listed == {"olga", "ana"}                   # nothing was created for the unknown identities
