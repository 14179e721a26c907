"""Helpers of the capture page's browser tests: the server with the page mounted, Chromium with
a fake camera, following the page's phases with screenshots (see conftest.py)."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from unittest import mock

import http.server
import threading

import cv2
import httpx
import pytest

import benchmarks._common as common
from service_support import REPO, Server, create_key, free_port

SHOTS = Path(__file__).resolve().parent / "screenshots"
LAUNCHER = Path(__file__).resolve().parent / "serve_capture.py"
INTEGRATOR_PORT = free_port()
INTEGRATOR = f"http://127.0.0.1:{INTEGRATOR_PORT}"   # an integrator's page on another origin (IntegratorSite)
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "kiosk": {"width": 1920, "height": 1080}}
TERMINAL = ("passed", "failed", "error")

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def missing(what: str):
    msg = f"{what}; the capture page's browser tests need it (scripts/test.sh installs chromium with apt)"
    if os.environ.get("CI") == "true" or os.environ.get("FACEGATE_REQUIRE_BROWSER") == "1":
        pytest.fail(msg + " (CI=true / FACEGATE_REQUIRE_BROWSER=1 make this a failure)")
    pytest.skip(msg)


def chromium_path() -> str:
    path = os.environ.get("FACEGATE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        missing("Debian's chromium is not installed")
    return path


def frame_jpeg(videos: Path, name: str, at: float) -> bytes:
    """One frame of a clip as a JPEG (for enrolment)."""
    cap = cv2.VideoCapture(str(videos / f"{name}.mp4"))
    cap.set(cv2.CAP_PROP_POS_MSEC, at * 1000)
    ok, bgr = cap.read()
    cap.release()
    assert ok, f"no frame at {at}s in {name}"
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


# ------------------------------------------------------------------ the server
class CaptureServer:
    """A ``facegate serve`` with the capture page and keys of every role."""

    def __init__(self, data_dir: Path, **settings):
        settings.setdefault("rate_limit_per_minute", 100_000)
        settings.setdefault("consent_required", 1)      # the page asks consent before the camera (docs/compliance.md)
        self.srv = Server(data_dir, env={"FACEGATE_CORS_ORIGINS": INTEGRATOR}, **settings)
        self.keys = {role: create_key(self.srv.env, role)["key"] for role in ("admin", "app", "kiosk")}
        publish_notice(self.srv.env)
        with mock.patch.object(common, "FACEGATE", [sys.executable, str(LAUNCHER)]):
            self.srv.start()
        self.url = self.srv.url

    def call(self, role: str | None, method: str, path: str, headers: dict | None = None, **kw) -> httpx.Response:
        h = ({"X-API-Key": self.keys[role]} if role else {}) | (headers or {})
        return httpx.request(method, self.url + path, headers=h, timeout=120, **kw)

    def session(self, role: str = "app", **body) -> dict:
        r = self.call(role, "POST", "/v1/liveness/sessions", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def enrol(self, subject_id: str, face: bytes) -> None:
        r = self.call("admin", "POST", "/v1/subjects", json={"subject_id": subject_id, "name": subject_id})
        assert r.status_code == 201, r.text
        r = self.call("admin", "POST", f"/v1/subjects/{subject_id}/consents", json={"channel": "counter"})
        assert r.status_code == 201, r.text
        r = self.call("admin", "POST", f"/v1/subjects/{subject_id}/faces", files={"image": ("f.jpg", face)})
        assert r.status_code == 201, r.text

    def stop(self):
        self.srv.stop()


NOTICE = REPO / "docs" / "notice.example.json"


def publish_notice(env: dict) -> None:
    """``facegate notices publish`` of the example notice, as a deployer does before going live."""
    import subprocess
    out = subprocess.run([sys.executable, "-m", "facegate", "notices", "publish", str(NOTICE)], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def start_server(tmp_path_factory, name: str, **settings) -> CaptureServer:
    return CaptureServer(tmp_path_factory.mktemp(name), **settings)


class IntegratorSite:
    """An integrator's web server on loopback (another origin than facegate's): serves ``pages``
    (path -> HTML). A real server, not Playwright's routing: Chromium lets only pages served from
    a loopback address reach the loopback facegate (Local Network Access)."""

    def __init__(self, pages: dict[str, str]):
        pages = {k: v.encode() for k, v in pages.items()}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = pages.get(self.path.split("?")[0])
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", INTEGRATOR_PORT), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------------ the browser
RECORDER = """
window.__fg = {violations: [], phases: []};
document.addEventListener('securitypolicyviolation', (e) => window.__fg.violations.push(e.violatedDirective + ' ' + e.blockedURI));
window.addEventListener('facegate:result', (e) => { window.__fg.result = e.detail; });
"""


def launch(playwright_api, y4m: Path | None = None, *, camera: str = "file"):
    """Chromium with a fake camera: ``file`` (the y4m), ``denied`` (permission refused),
    ``none`` (no camera at all)."""
    args = list(CHROMIUM_ARGS)
    if camera == "file":
        args += ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-video-capture={y4m}"]
    elif camera == "denied":
        args += ["--use-fake-device-for-media-stream", "--deny-permission-prompts"]
    elif camera == "none":
        args += ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream=device-count=0"]
    return playwright_api.chromium.launch(executable_path=chromium_path(), args=args)


def new_page(browser, viewport: str = "phone", locale: str = "en"):
    ctx = browser.new_context(viewport=VIEWPORTS[viewport], locale=locale,
                              device_scale_factor=1, is_mobile=False, has_touch=viewport == "phone")
    page = ctx.new_page()
    page.add_init_script(RECORDER)
    page.console_errors = []
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.console_errors.append(f"pageerror: {e}"))
    return page


def capture_url(base: str, session: dict, **extra) -> str:
    query = "&".join(f"{k}={v}" for k, v in extra.pop("query", {}).items())
    frag = "&".join([f"session={session['session_id']}", f"token={session['capture_token']}",
                     *(f"{k}={v}" for k, v in extra.items())])
    return f"{base}/capture/{'?' + query if query else ''}#{frag}"


def state(frame) -> dict | None:
    return frame.evaluate("""() => { const r = document.querySelector('.fg');
        return r ? {phase: r.dataset.phase, step: r.dataset.step || '', guide: r.dataset.guide || '',
                    code: r.dataset.code || '', title: (document.querySelector('.fg-title') || {}).textContent || '',
                    text: (document.querySelector('.fg-text') || {}).textContent || ''} : null }""")


def shoot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def blurred(page, frame, name: str) -> Path:
    """A screenshot with the camera picture blurred beyond recognition (the evaluation clips'
    people must not end up in committed images)."""
    frame = frame or page
    frame.evaluate("() => { const v = document.querySelector('.fg-video'); if (v) v.style.filter = 'blur(28px)'; }")
    try:
        return shoot(page, name)
    finally:
        frame.evaluate("() => { const v = document.querySelector('.fg-video'); if (v) v.style.filter = ''; }")


_shot_count: dict = {}


def follow(page, frame=None, shots: str | None = None, until=TERMINAL, timeout: float = 60,
           consent: str | None = "agree") -> dict:
    """Watch the page's phases until one in ``until``; with ``shots``, a screenshot of each new
    phase/step (``<shots>-NN-<phase>[-<step>].png``). Returns the last state with the list of
    phases seen. At the consent step (the notice, before the camera) the person presses
    ``consent`` ("agree" or "decline"; None: nobody answers)."""
    frame = frame or page
    seen, last = [], None
    answered: set = set()
    n = _shot_count.get(shots, 0)
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = state(frame)
        key = (s["phase"], s["step"]) if s else None
        if s and key != last:
            last = key
            seen.append(s["phase"] + (f":{s['step']}" if s["step"] else ""))
            if shots and s["phase"] not in ("loading",):
                n += 1
                _shot_count[shots] = n
                shoot(page, f"{shots}-{n:02d}-{s['phase']}{'-' + s['step'] if s['step'] else ''}")
                if s["phase"] == "capturing" and s["step"] != "neutral":
                    time.sleep(1.0)             # mid-step, the camera picture blurred: fit for the docs
                    blurred(page, frame, f"{shots}-{n:02d}-{s['phase']}-{s['step']}-blurred")
        if s and s["phase"] in until:
            return s | {"seen": seen}
        if s and s["phase"] == "consent" and consent and "consent" not in answered:
            answered.add("consent")
            frame.click(f"button[data-action={consent}]")
        time.sleep(0.05)
    raise AssertionError(f"the page did not reach {until} within {timeout}s; seen {seen}, now {state(frame)}")


def result_of(page) -> dict:
    page.wait_for_function("() => window.__fg && window.__fg.result", timeout=10000)
    return page.evaluate("window.__fg.result")


def violations(page) -> list:
    return page.evaluate("window.__fg ? window.__fg.violations : []")


def dump(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=1)[:3000]


