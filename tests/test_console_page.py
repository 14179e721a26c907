"""The console page's headers and texts, and its API's place in the OpenAPI document (no models
loaded: the app is built without its lifespan)."""
from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

CONSOLE = Path(__file__).resolve().parent.parent / "facegate" / "service" / "console"


def _app(tmp_path):
    from facegate.config import Settings
    from facegate.service.app import create_app
    return create_app(Settings.load(data_dir=str(tmp_path)))


def test_console_is_served_with_a_strict_policy_and_no_cdn(tmp_path):
    client = TestClient(_app(tmp_path))
    r = client.get("/console/")
    assert r.status_code == 200 and "console.js" in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
    assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"
    assert "camera=()" in r.headers["permissions-policy"]
    for name in ("console.js", "i18n.js", "console.css", "index.html"):
        text = (CONSOLE / name).read_text()
        assert not re.search(r"https?://", text.replace("http://www.w3.org", "")), f"{name} loads from elsewhere"
        assert "innerHTML" not in text, name


def test_every_text_exists_in_both_languages():
    text = (CONSOLE / "i18n.js").read_text()
    en = text[text.index("const en = {"):text.index("const zh = {")]
    zh = text[text.index("const zh = {"):text.index("export const TEXTS")]
    key = re.compile(r"^\s+([A-Za-z_]+):", re.M)
    assert set(key.findall(en)) == set(key.findall(zh))
    used = set(re.findall(r"\bt\(\"([A-Za-z_]+)\"", (CONSOLE / "console.js").read_text()))
    assert used <= set(key.findall(en)), used - set(key.findall(en))


def test_console_api_answers_problems_declared_in_openapi(tmp_path):
    app = _app(tmp_path)
    schema = TestClient(app).get("/openapi.json").json()
    ops = [(p, m, o) for p, item in schema["paths"].items() if p.startswith("/console/api/") for m, o in item.items()]
    assert len(ops) >= 18
    for path, method, op in ops:
        assert {"401", "403", "409", "422"} <= set(op["responses"]), (path, method)
    from facegate.errors import ERROR_CODES
    for code in ("sign_in_failed", "sign_in_throttled", "session_expired", "csrf_failed", "case_claimed",
                 "case_decided", "unknown_case"):
        assert code in ERROR_CODES
