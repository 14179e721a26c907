// facegate-capture.js: the liveness capture as a component.
//
//   import { start } from "/capture/facegate-capture.js";
//   const summary = await start({ sessionId, token, element, locale });
//
// ``start`` draws the capture into ``element`` (camera with a face oval, guidance, the
// challenge's steps with a progress indicator), sends the frames with the capture token, has the
// session judged and shows the outcome. It resolves with a summary (no pictures in it):
//   { status: "passed" | "failed" | "error" | "cancelled" | "consent_declined", live, reasons, actions, score,
//     challenge, sessionId, error: {code, httpStatus} | null, upload, frames, fps,
//     timing: {positioningMs, captureMs, verdictMs}, locale, version }
// (positioningMs: camera on -> capture start; verdictMs: end of the last action -> verdict shown)
// The decision that uses the session (certification, kiosk authentication) is made by the
// integrator's backend with its API key, never by the page. ``embed`` shows the page served by
// facegate in an iframe instead (another origin may embed it, see docs/capture.md).
//
// States: consent -> intro -> camera -> positioning -> capturing -> checking -> passed | failed,
// and error from any of them ("Try again" where the same session can still be used). The consent
// step (the service's current notice, zh-CN or English, and "I agree" / "I do not agree") comes
// before the camera opens, whenever the service asks for consent (docs/compliance.md); declining
// ends in ``declined``: the deployer's way without a face is shown, nothing is captured, and the
// summary's status is ``consent_declined``.

import { causeText, errorText, pickLocale, reasonTexts, translator } from "./i18n.js";
import { CameraError, closeCamera, FrameSampler, openCamera, WebmRecorder, webmType } from "./camera.js";
import { Guidance, GuidanceFilter } from "./guidance.js";
import { ApiError, CaptureApi, FrameUploader } from "./uploader.js";

export const VERSION = "1.0.0";
export { pickLocale };

/** Seconds given to each step (the neutral look first, then each action). */
export const STEP_SECONDS = { neutral: 0.6, blink: 2.5, turn_left: 3.0, turn_right: 3.0, open_mouth: 2.5, nod: 3.0 };
const HOLD_MS = 800;                 // the face well placed this long before the capture starts
const GUIDE_EVERY_MS = 200;          // face/light look while positioning
const GUIDE_CAPTURE_EVERY_MS = 350;  // ... and while acting
const JUDGE_MARGIN_S = 6;            // time kept for sending and judging before the session expires
const FPS = 20;
const TRANSIENT = ["network", "rate_limited", "overloaded", "not_ready"];   // worth trying again
const MAX_SIDE = 640;

const HERE = new URL("./", import.meta.url);
const NOTICE_FIELDS = ["processor_name", "processor_contact", "purpose", "method", "retention", "rights", "alternative"];
const ACTION_ICONS = { neutral: "◎", blink: "◉", turn_left: "↶", turn_right: "↷", open_mouth: "◯", nod: "↕" };

/** Run the capture in ``element``; resolves with the summary. */
export function start(options) {
  try {
    return new CaptureRun(options).run();
  } catch (err) {
    return Promise.reject(err);
  }
}

/**
 * Show facegate's capture page in an iframe inside ``element`` and hand it the session by
 * postMessage (only to facegate's origin); resolves with the page's summary.
 */
export function embed({ sessionId, token, element, locale, upload, cause = null, kiosk = false, pageUrl = HERE.href, title = "Face check" }) {
  const url = new URL(pageUrl, location.href);
  if (kiosk) url.searchParams.set("mode", "kiosk");
  const frame = document.createElement("iframe");
  frame.src = url.href;
  frame.allow = "camera; fullscreen; screen-wake-lock";
  frame.title = title;
  frame.className = "facegate-frame";
  frame.style.border = "0";
  frame.style.width = "100%";
  frame.style.height = "100%";
  element.replaceChildren(frame);
  return new Promise((resolve) => {
    const onMessage = (e) => {
      if (e.source !== frame.contentWindow || e.origin !== url.origin || !e.data) return;
      if (e.data.type === "facegate:ready") {
        frame.contentWindow.postMessage({ type: "facegate:start", sessionId, token, locale, upload, cause }, url.origin);
      } else if (e.data.type === "facegate:result") {
        window.removeEventListener("message", onMessage);
        resolve(e.data.summary);
      }
    };
    window.addEventListener("message", onMessage);
  });
}

/** Add the component's stylesheet once (for pages other than facegate's own). */
function ensureStyles(doc) {
  const href = new URL("capture.css", HERE).href;
  if ([...doc.querySelectorAll('link[rel="stylesheet"]')].some((l) => l.href === href)) return;
  const link = doc.createElement("link");
  link.rel = "stylesheet";
  link.href = href;
  doc.head.appendChild(link);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nextPaint = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));

class Cancelled extends Error {}
class Expired extends Error {}

class CaptureRun {
  constructor({ sessionId, token, element, locale, baseUrl, upload = "frames", kiosk = false, autoStart = false,
                stepSeconds = {}, signal, onEvent, cause = null } = {}) {
    if (!element || !element.ownerDocument) throw new TypeError("start: element is required");
    if (typeof sessionId !== "string" || !/^[A-Za-z0-9_-]{4,128}$/.test(sessionId)) {
      throw new TypeError("start: sessionId is not a liveness session id");
    }
    if (typeof token !== "string" || !token || token.length > 300) throw new TypeError("start: token is required");
    this.element = element;
    this.locale = pickLocale(locale);
    this.t = translator(this.locale);
    this.kiosk = !!kiosk;
    this.autoStart = !!autoStart;
    // why the service refused this person's last photo (a problem's ``cause``): said before they try again
    this.causeKey = causeText(cause);
    this.upload = upload === "video" && webmType() ? "video" : "frames";
    this.seconds = { ...STEP_SECONDS, ...stepSeconds };
    this.signal = signal;
    this.onEvent = typeof onEvent === "function" ? onEvent : () => {};
    this.api = new CaptureApi({ baseUrl: baseUrl || new URL("../", HERE).href, sessionId, token });
    this.sessionId = sessionId;
    this.summary = { version: VERSION, sessionId, status: "error", live: null, reasons: [], actions: [], score: null,
                     challenge: [], error: null, upload: this.upload, frames: 0, fps: 0,
                     timing: { positioningMs: null, captureMs: null, verdictMs: null }, locale: this.locale };
    this.cleanups = [];
  }

  // ---------------------------------------------------------------- the run
  async run() {
    ensureStyles(this.element.ownerDocument);
    this.view = new View(this.element, this);
    const onAbort = () => this.cancel();
    if (this.signal) {
      if (this.signal.aborted) return { ...this.summary, status: "cancelled" };
      this.signal.addEventListener("abort", onAbort, { once: true });
    }
    try {
      await this.load();
      await this.consent();
      if (!this.autoStart || this.causeKey) await this.intro();
      await this.cameraOn();
      await this.position();
      await this.capture();
      await this.judge();
    } catch (err) {
      if (err instanceof Cancelled || this.cancelled) this.summary.status = "cancelled";
      else if (!(err instanceof Declined)) await this.fail(err);
    } finally {
      this.cleanup();
      if (this.signal) this.signal.removeEventListener("abort", onAbort);
    }
    return this.summary;
  }

  cancel() {
    this.cancelled = true;
    if (this.waiting) this.waiting.reject(new Cancelled());
    this.cleanup();
  }

  emit(phase, detail = {}) {
    this.phase = phase;
    this.view.phase(phase);
    try {
      this.onEvent({ phase, ...detail });
    } catch { /* the integrator's handler must not break the capture */ }
  }

  check() {
    if (this.cancelled) throw new Cancelled();
    if (this.deadline && performance.now() > this.deadline) throw new Expired();
  }

  secondsLeft() {
    return this.deadline ? (this.deadline - performance.now()) / 1000 : Infinity;
  }

  // ---------------------------------------------------------------- steps
  async load() {
    this.emit("loading");
    this.view.screen({ titleKey: "title", textKey: "loading", busy: true });
    let s;
    for (let attempt = 0; ; attempt += 1) {
      try {
        s = await this.api.status();
        break;
      } catch (err) {
        if (!(err instanceof ApiError) || !TRANSIENT.includes(err.code)) throw err;
        if (attempt < 2) { await sleep(Math.min(5000, err.retryAfter ? err.retryAfter * 1000 : 600 * (attempt + 1))); continue; }
        await this.offerRetry(err);
        this.emit("loading");
        this.view.screen({ titleKey: "title", textKey: "loading", busy: true });
        attempt = -1;
      }
    }
    if (s.status !== "pending") {
      if (s.result) return this.verdict(s.result, true);
      throw new ApiError({ code: "liveness_session_closed", status: 409 });
    }
    this.session = s;
    this.summary.challenge = [...s.challenge];
    const expires = Date.parse(s.expires_at);
    if (!Number.isNaN(expires)) {
      this.deadline = performance.now() + (expires - (Date.now() + this.api.skewMs));
    }
    this.check();
  }

  /** The notice and the separate consent, before the camera opens (when the service asks). */
  async consent() {
    const asked = this.session.consent;
    if (!asked || !asked.required || asked.state === "given") return;
    if (!asked.notice) throw new ApiError({ code: "notice_missing", status: 409 });
    this.notice = asked.notice;
    this.emit("consent");
    this.view.screen({ titleKey: "consentTitle", textKey: "consentText", notice: this.notice, language: true,
                       buttons: [{ key: "consentAgree", primary: true, value: "agree" },
                                 { key: "consentDecline", value: "decline" }] });
    const answer = await this.waitFor();
    const decision = answer === "agree" ? "given" : "declined";
    const out = await this.api.consent(decision, this.notice.version);
    this.summary.noticeVersion = this.notice.version;
    if (decision === "given") return;
    this.summary.status = "consent_declined";
    this.summary.error = null;
    this.alternative = out.alternative || {};
    this.emit("declined");
    this.view.screen({ titleKey: "declinedTitle", textKey: "declinedText", outcome: "declined",
                       alternative: this.alternative, language: true });
    await nextPaint();
    throw new Declined();
  }

  captureSeconds() {
    return this.seconds.neutral + this.session.challenge.reduce((sum, a) => sum + (this.seconds[a] || 3), 0);
  }

  async intro() {
    this.emit("intro");
    const steps = this.session.challenge.map((a) => this.t(`short_${a}`));
    this.view.screen({
      titleKey: "title", textKey: "intro", values: { seconds: Math.ceil(this.captureSeconds() + 3) },
      listTitleKey: "introSteps", list: steps, tips: ["tipLight", "tipFace", this.kiosk ? "tipKiosk" : "tipPhone"],
      reasons: this.causeKey ? [this.causeKey] : [],
      buttons: [{ key: "start", primary: true, value: "start" }], language: true,
    });
    await this.waitFor();
    if (this.kiosk) requestFullscreen(this.element.ownerDocument);
  }

  async cameraOn() {
    for (;;) {
      this.check();
      this.emit("camera");
      this.view.screen({ titleKey: "positioning", textKey: "cameraWaiting", camera: true, busy: true });
      try {
        this.stream = await openCamera(this.view.video, { maxSide: MAX_SIDE, frameRate: 25 });
        this.check();
        this.cameraAt = performance.now();
        this.cleanups.push(() => closeCamera(this.view.video, this.stream));
        this.wakeLock();
        return;
      } catch (err) {
        if (!(err instanceof CameraError) || !errorText(err.code).retry) throw err;
        await this.offerRetry(err);
      }
    }
  }

  async position() {
    this.emit("positioning");
    this.view.screen({ titleKey: "positioning", camera: true, steps: this.stepsList(-1) });
    const guidance = new Guidance(this.view.video);
    this.guidance = guidance;
    this.cleanups.push(() => guidance.release());
    const filter = new GuidanceFilter();
    const needed = this.captureSeconds() + JUDGE_MARGIN_S;
    const started = performance.now();
    for (;;) {
      this.check();
      if (this.secondsLeft() < needed) throw new Expired();
      const look = guidance.analyse();
      const shown = filter.push(look.status);
      const steady = guidance.available ? filter.steady(HOLD_MS) : performance.now() - started > 2000;
      if (shown !== "unknown") this.view.guide(shown === "ok" ? "hold_still" : shown, shown === "ok" ? "ok" : "warn");
      const left = this.secondsLeft();
      this.view.stepOf(left < 20 ? this.t("timeLeft", { seconds: Math.max(0, Math.floor(left)) }) : "");
      if (steady && look.status === "ok") return;
      await sleep(GUIDE_EVERY_MS);
    }
  }

  stepsList(current) {
    return this.session.challenge.map((a, i) => ({ text: this.t(`short_${a}`),
      state: i < current ? "done" : i === current ? "current" : "todo" }));
  }

  async capture() {
    this.emit("capturing");
    const challenge = this.session.challenge;
    const frames = this.upload === "frames";
    if (frames) {
      this.uploader = new FrameUploader(this.api, this.session.nonce);
      this.sampler = new FrameSampler(this.view.video, { fps: FPS, maxSide: MAX_SIDE, onFrame: (f) => this.uploader.add(f) });
      this.cleanups.push(() => { this.sampler.stop(); this.uploader.clear(); });
      this.sampler.start();
    } else {
      this.recorder = new WebmRecorder(this.stream);
      this.cleanups.push(() => this.recorder.discard());
      this.recorder.start();
    }
    const hidden = () => { if (document.visibilityState === "hidden") this.interrupted = true; };
    document.addEventListener("visibilitychange", hidden);
    this.cleanups.push(() => document.removeEventListener("visibilitychange", hidden));

    const t0 = performance.now();
    this.summary.timing.positioningMs = Math.round(t0 - this.cameraAt);
    const plan = [["neutral", this.seconds.neutral], ...challenge.map((a) => [a, this.seconds[a] || 3])];
    let lastGuide = 0;
    for (let i = 0; i < plan.length; i += 1) {
      const [action, seconds] = plan[i];
      const index = i - 1;
      this.view.step(action, index, challenge.length, this.stepsList(Math.max(0, index)));
      this.onEvent({ phase: "step", action, index });
      const begin = performance.now();
      for (;;) {
        if (this.cancelled) throw new Cancelled();
        if (this.interrupted) throw new ApiError({ code: "interrupted" });
        const now = performance.now();
        const done = Math.min(1, (now - begin) / (seconds * 1000));
        this.view.progress(index < 0 ? 0 : done);
        if (done >= 1) break;
        if (now - lastGuide > GUIDE_CAPTURE_EVERY_MS && this.guidance.available) {
          lastGuide = now;
          const look = this.guidance.analyse().status;
          this.view.guide(["no_face", "one_face", "too_dark"].includes(look) ? (look === "no_face" ? "keep_in_oval" : look) : null, "warn");
        }
        await sleep(Math.min(40, seconds * 1000 - (now - begin)));
      }
    }
    // the person's last action ends here
    this.captureEnd = performance.now();
    performance.mark("facegate:capture-end");
    this.summary.timing.captureMs = Math.round(this.captureEnd - t0);
    this.view.guide(null);
    if (frames) {
      await this.sampler.stop();
      this.summary.frames = this.sampler.count;
      this.summary.fps = Math.round(this.sampler.rate * 10) / 10;
    } else {
      this.video = await this.recorder.stop();
    }
    this.releaseCamera();
  }

  releaseCamera() {
    closeCamera(this.view.video, this.stream);
    this.stream = null;
  }

  async judge() {
    this.emit("checking");
    this.view.screen({ titleKey: "checking", textKey: "checkingText", busy: true });
    const deliver = () => (this.upload === "frames" ? this.uploader.finish()
      : this.api.video(this.session.nonce, this.video, true));
    let resync = false;
    for (let attempt = 0; ; attempt += 1) {
      this.check();
      try {
        if (resync) {
          const s = this.upload === "frames" ? await this.uploader.resync() : await this.api.settled();
          if (s && s.status !== "pending") {
            if (s.result) return this.verdict(s.result);
            throw new ApiError({ code: "liveness_session_closed", status: 409 });
          }
          if (s && this.upload === "video" && s.frames_received > 0) return this.verdict(await this.api.complete(this.session.nonce));
          resync = false;
        }
        return this.verdict(await deliver());
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        if (err.code === "liveness_session_closed" || err.code === "frames_out_of_order") { resync = true; if (attempt < 3) continue; }
        if (!TRANSIENT.includes(err.code)) throw err;
        resync = resync || err.unsure || err.code === "network";
        if (attempt < 2) {
          await sleep(Math.min(5000, (err.retryAfter ? err.retryAfter * 1000 : 700 * (attempt + 1))));
          continue;
        }
        await this.offerRetry(err);
        this.emit("checking");
        this.view.screen({ titleKey: "checking", textKey: "checkingText", busy: true });
        attempt = -1;
      }
    }
  }

  async verdict(result, earlier = false) {
    const live = !!result.live;
    Object.assign(this.summary, {
      status: live ? "passed" : "failed", live, reasons: result.reasons || [], score: result.score ?? null,
      challenge: result.challenge || this.summary.challenge,
      actions: (result.actions || []).map((a) => ({ action: a.action, detected: !!a.detected })),
    });
    this.emit(live ? "passed" : "failed");
    this.view.screen(live
      ? { titleKey: "passTitle", textKey: "passText", outcome: "pass" }
      : { titleKey: "failTitle", textKey: "failText", outcome: "fail", reasons: reasonTexts(result.reasons) });
    await nextPaint();
    if (this.captureEnd && !earlier) {
      performance.mark("facegate:verdict-shown");
      this.summary.timing.verdictMs = Math.round(performance.now() - this.captureEnd);
    }
    this.done = true;
    if (earlier) throw new VerdictShown();
  }

  async fail(err) {
    if (err instanceof VerdictShown) return;
    let code = "internal_error";
    let httpStatus = 0;
    if (err instanceof Expired) code = "liveness_session_expired";
    else if (err instanceof CameraError) code = err.code;
    else if (err instanceof ApiError) { code = err.code; httpStatus = err.status; }
    else if (typeof console !== "undefined") console.error("facegate capture:", err);
    // a capture token refused after the session's deadline: the session expired
    if (code === "unauthorized" && this.deadline && performance.now() > this.deadline) code = "liveness_session_expired";
    this.summary.status = "error";
    this.summary.error = { code, httpStatus };
    this.emit("error", { code });
    const e = errorText(code);
    const cause = err instanceof ApiError ? causeText(err.cause) : null;
    this.view.screen({ titleKey: e.titleKey, textKey: e.textKey, outcome: "error", code, language: true,
                       reasons: cause ? [cause] : [] });
    await nextPaint();
  }

  /** Show a retryable error with "Try again"; resolves when pressed (rejects at the deadline). */
  async offerRetry(err) {
    const code = err.code || "network";
    this.emit("error", { code, retry: true });
    const e = errorText(code);
    const cause = causeText(err.cause);
    this.view.screen({ titleKey: e.titleKey, textKey: e.textKey, outcome: "error", code, reasons: cause ? [cause] : [],
                       buttons: [{ key: "tryAgain", primary: true, value: "retry" }], language: true });
    await this.waitFor();
  }

  waitFor() {
    return new Promise((resolve, reject) => {
      let timer = null;
      const finish = (fn, v) => { clearInterval(timer); this.waiting = null; fn(v); };
      this.waiting = { resolve: (v) => finish(resolve, v), reject: (e) => finish(reject, e) };
      timer = setInterval(() => {
        if (this.deadline && performance.now() > this.deadline) this.waiting && this.waiting.reject(new Expired());
      }, 500);
    });
  }

  pressed(value) {
    if (this.waiting) this.waiting.resolve(value);
  }

  switchLanguage() {
    this.locale = this.locale === "en" ? "zh-CN" : "en";
    this.t = translator(this.locale);
    this.summary.locale = this.locale;
    this.view.relabel();
  }

  async wakeLock() {
    try {
      if (navigator.wakeLock) {
        const lock = await navigator.wakeLock.request("screen");
        this.cleanups.push(() => lock.release().catch(() => {}));
      }
    } catch { /* not granted: the capture works without it */ }
  }

  cleanup() {
    const fns = this.cleanups.splice(0);
    for (const fn of fns.reverse()) {
      try { fn(); } catch { /* keep cleaning */ }
    }
    if (this.stream) this.releaseCamera();
    this.video = null;
    if (this.uploader) this.uploader.clear();
  }
}

class VerdictShown extends Error {}
class Declined extends Error {}

function requestFullscreen(doc) {
  const el = doc.documentElement;
  if (doc.fullscreenEnabled && !doc.fullscreenElement && el.requestFullscreen) el.requestFullscreen().catch(() => {});
}

// ------------------------------------------------------------------ the view
function h(doc, tag, attrs = {}, children = []) {
  const el = doc.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c) el.appendChild(c);
  return el;
}

/** The DOM of the capture; every text is set as text, never parsed as HTML. */
class View {
  constructor(element, run) {
    const doc = element.ownerDocument;
    this.run = run;
    this.doc = doc;
    this.video = h(doc, "video", { class: "fg-video", playsinline: true, muted: true, autoplay: true });
    this.oval = h(doc, "div", { class: "fg-oval", "aria-hidden": "true" });
    this.icon = h(doc, "div", { class: "fg-icon", "aria-hidden": "true" });
    this.stage = h(doc, "div", { class: "fg-stage" }, [this.video, this.oval, this.icon]);
    this.stepOfEl = h(doc, "p", { class: "fg-stepof" });
    this.langBtn = h(doc, "button", { class: "fg-lang", type: "button" });
    this.title = h(doc, "h1", { class: "fg-title", tabindex: "-1" });
    this.text = h(doc, "p", { class: "fg-text" });
    this.listTitle = h(doc, "p", { class: "fg-list-title" });
    this.list = h(doc, "ul", { class: "fg-list" });
    this.tips = h(doc, "ul", { class: "fg-tips" });
    this.notice = h(doc, "dl", { class: "fg-notice" });
    this.alt = h(doc, "p", { class: "fg-alternative" });
    this.steps = h(doc, "ol", { class: "fg-steps" });
    this.bar = h(doc, "progress", { class: "fg-progress", max: "1000", value: "0" });
    this.guideEl = h(doc, "p", { class: "fg-guide", role: "status", "aria-live": "polite" });
    this.announce = h(doc, "p", { class: "fg-sr", "aria-live": "assertive", "aria-atomic": "true" });
    this.buttons = h(doc, "div", { class: "fg-buttons" });
    this.message = h(doc, "div", { class: "fg-message", "aria-live": "polite" }, [this.title, this.text]);
    this.panel = h(doc, "div", { class: "fg-panel" }, [
      h(doc, "div", { class: "fg-top" }, [this.stepOfEl, this.langBtn]), this.message, this.alt, this.notice,
      this.listTitle, this.list,
      this.steps, this.bar, this.guideEl, this.tips, this.buttons, this.announce]);
    this.root = h(doc, "section", { class: "fg", "data-phase": "loading" }, [this.stage, this.panel]);
    if (run.kiosk) this.root.dataset.kiosk = "true";
    this.langBtn.addEventListener("click", () => run.switchLanguage());
    element.replaceChildren(this.root);
    this.current = {};
    this.guideState = null;
    this.relabel();
  }

  phase(name) {
    this.root.dataset.phase = name;
  }

  relabel() {
    const t = this.run.t;
    this.root.lang = this.run.locale;
    this.root.setAttribute("aria-label", t("title"));
    this.video.setAttribute("aria-label", t("videoLabel"));
    this.steps.setAttribute("aria-label", t("progressLabel"));
    this.langBtn.textContent = t("language");
    this.langBtn.setAttribute("aria-label", t("languageLabel"));
    this.langBtn.lang = this.run.locale === "en" ? "zh-CN" : "en";
    this.screen(this.current, true);
    if (this.guideState) this.guide(...this.guideState);
  }

  /** Show a screen: ``{titleKey, textKey, values, list, listTitleKey, tips, buttons, steps,
   *  camera, busy, outcome, reasons, language, code}``. */
  screen(s, same = false) {
    const t = this.run.t;
    this.current = s;
    const root = this.root;
    root.dataset.camera = s.camera ? "on" : "off";
    root.dataset.outcome = s.outcome || "";
    if (s.code) root.dataset.code = s.code; else delete root.dataset.code;
    root.setAttribute("aria-busy", s.busy ? "true" : "false");
    this.title.textContent = s.titleKey ? t(s.titleKey, s.values) : "";
    // for a failed check: why first, then what to do
    this.text.textContent = [...(s.reasons || []).map((k) => t(k)), s.textKey && t(s.textKey, s.values)]
      .filter(Boolean).join(this.run.locale.startsWith("zh") ? "" : " ");
    this.listTitle.textContent = s.listTitleKey ? t(s.listTitleKey) : "";
    this.list.replaceChildren(...(s.list || []).map((x) => h(this.doc, "li", { text: x })));
    this.tips.replaceChildren(...(s.tips || []).map((k) => h(this.doc, "li", { text: t(k) })));
    // the notice in the page's language (the service holds zh-CN and English; the texts are set as text)
    const lang = this.run.locale;
    const texts = s.notice ? (s.notice.texts[lang] || s.notice.texts.en || {}) : null;
    this.notice.hidden = !texts;
    this.notice.replaceChildren(...(texts ? NOTICE_FIELDS.flatMap((f) => [h(this.doc, "dt", { text: t(`notice_${f}`) }),
                                                                          h(this.doc, "dd", { text: texts[f] || "" })]) : []));
    if (s.notice) this.notice.dataset.version = String(s.notice.version); else delete this.notice.dataset.version;
    this.alt.hidden = !s.alternative;
    this.alt.textContent = s.alternative ? (s.alternative[lang] || s.alternative.en || "") : "";
    this.renderSteps(s.steps || null);
    this.bar.hidden = true;
    this.langBtn.hidden = !s.language;
    this.buttons.replaceChildren(...(s.buttons || []).map((b) => {
      const el = h(this.doc, "button", { type: "button", class: b.primary ? "fg-button fg-primary" : "fg-button",
                                         "data-action": b.value, text: t(b.key) });
      el.addEventListener("click", () => this.run.pressed(b.value));
      return el;
    }));
    if (!same) {
      this.stepOf("");
      this.guide(null);
      this.icon.textContent = "";
      delete root.dataset.step;
      const first = this.buttons.querySelector("button");
      if (first) first.focus({ preventScroll: true });
      else if (s.outcome) this.title.focus({ preventScroll: true });
    }
  }

  renderSteps(steps) {
    this.steps.hidden = !steps;
    this.steps.replaceChildren(...(steps || []).map((s) => {
      const li = h(this.doc, "li", { "data-state": s.state, text: s.text });
      if (s.state === "current") li.setAttribute("aria-current", "step");
      return li;
    }));
  }

  step(action, index, total, steps) {
    const t = this.run.t;
    this.current = { ...this.current, titleKey: `step_${action}`, textKey: null, steps };
    this.root.dataset.step = action;
    this.title.textContent = t(`step_${action}`);
    this.text.textContent = "";
    this.icon.textContent = ACTION_ICONS[action] || "";
    this.stepOf(index >= 0 ? t("stepOf", { n: index + 1, total }) : "");
    this.renderSteps(steps);
    this.bar.hidden = index < 0;
    this.announce.textContent = t(`step_${action}`);
  }

  progress(fraction) {
    this.bar.value = Math.round(fraction * 1000);
  }

  stepOf(text) {
    this.stepOfEl.textContent = text;
  }

  guide(status, kind = "warn") {
    this.guideState = status ? [status, kind] : null;
    this.root.dataset.guide = status || "";
    this.root.dataset.face = status ? kind : "";
    const text = status ? this.run.t(`guide_${status}`) : "";
    if (this.guideEl.textContent !== text) this.guideEl.textContent = text;
  }
}
