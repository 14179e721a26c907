// The capture page served at /capture/: takes the session and its capture token from the URL
// fragment (#session=...&token=...) or from a postMessage of the page that embeds it, runs the
// capture (facegate-capture.js) and reports the summary back. Kiosk mode (?mode=kiosk) keeps
// the page fullscreen and returns to the start screen after each person, keeping nothing of
// them in the page.
//
// Messages (window.postMessage, plain objects):
//   page -> parent/opener: {type: "facegate:ready"}             ready for a session
//                          {type: "facegate:session-request"}   kiosk: a person pressed Start
//                          {type: "facegate:result", summary}   to the origin that sent the session
//   parent/opener -> page: {type: "facegate:start", sessionId, token, locale?, upload?, cause?}
//                          {type: "facegate:review", status, decision?, waitUntil?}   kiosk, see below
//
// ``facegate:review`` (kiosk mode only): the kiosk's 1:N search went to a person
// (``decision: "manual_review"``) and the kiosk software waits for their decision
// (GET /v1/kiosk/reviews/{id}?wait=S). ``status: "pending"`` stops the reset countdown and shows
// that a staff member is checking (``waitUntil``, ISO 8601: the case's ``review_wait_until``, for
// "usually no more than N minutes"); ``"decided"`` with ``decision: "identified" | "none"``, or
// ``"expired"``, shows the outcome, then the usual countdown back to the welcome screen. Accepted
// only from the parent/opener, from the origin that handed the page its current session (or, with
// none, the origin that handed it the last one, or facegate's own), never during a capture. The
// page never shows who the person was found to be (no subject id, no name: the kiosk is public).
// Each accepted one is also fired as a ``facegate:review`` event ({status, decision}) on the window.
//
// ``cause`` (also ``#...&cause=`` in the fragment): why the service refused the person's last
// photo (the refusal's problem ``cause``: too_bright, too_dark, blurred, turned, too_far,
// second_face); the page says it in words before the person starts again.

import { start, pickLocale } from "./facegate-capture.js";
import { translator } from "./i18n.js";

const root = document.getElementById("facegate-capture");
const query = new URLSearchParams(location.search);
const kiosk = query.get("mode") === "kiosk";
const resetSeconds = Math.min(120, Math.max(3, Number(query.get("reset")) || 10));
const host = window.parent !== window ? window.parent : window.opener;
let replyOrigin = null;          // the origin that handed us the current session
let sessionOrigin = null;        // ... or the last one (the kiosk software's, not the person's: kept across people)
let running = false;
let resetTimer = null;
let reviewing = null;            // kiosk: the review screen shown ("pending", "identified", "none", "expired")
let locale = pickLocale(query.get("lang"));

if (kiosk) document.documentElement.dataset.kiosk = "true";

function fromFragment() {
  if (!location.hash || location.hash.length < 2) return null;
  const p = new URLSearchParams(location.hash.slice(1));
  // the token must not stay in the address bar, the history or a bookmark
  history.replaceState(null, "", location.pathname + location.search);
  const sessionId = p.get("session") || p.get("session_id");
  const token = p.get("token");
  if (!sessionId || !token) return null;
  return { sessionId, token, locale: p.get("lang") || query.get("lang"), upload: p.get("upload") || query.get("upload"),
           cause: p.get("cause") };
}

function tell(message, origin) {
  if (!host || host.closed) return;
  try {
    host.postMessage(message, origin || "*");
  } catch { /* the host went away */ }
}

async function run(session, { autoStart = false } = {}) {
  if (running) return;
  running = true;
  reviewing = null;
  clearTimeout(resetTimer);
  locale = pickLocale(session.locale || locale);
  const summary = await start({ sessionId: session.sessionId, token: session.token, element: root, locale,
                                upload: session.upload || "frames", kiosk, autoStart,
                                cause: session.cause || null }).catch((err) => {
    // a malformed session id or token: nothing was started
    console.error("facegate capture:", err);
    screen("err_link_title", "err_link_text", "error");
    return { status: "error", error: { code: "unauthorized", httpStatus: 0 }, locale };
  });
  session.token = null;
  running = false;
  locale = summary.locale || locale;
  if (replyOrigin) tell({ type: "facegate:result", summary }, replyOrigin);
  else if (host && sameOrigin(host)) tell({ type: "facegate:result", summary }, location.origin);
  window.dispatchEvent(new CustomEvent("facegate:result", { detail: summary }));
  if (kiosk) scheduleReset();
}

function sameOrigin(win) {
  try {
    return win.location.origin === location.origin;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- kiosk: one person at a time
function scheduleReset() {
  const t = translator(locale);
  const note = document.createElement("p");
  note.className = "fg-reset";
  note.setAttribute("aria-live", "polite");
  const done = document.createElement("button");
  done.type = "button";
  done.className = "fg-button fg-primary";
  done.dataset.action = "done";
  done.textContent = t("done");
  done.addEventListener("click", reset);
  let panel = root.querySelector(".fg-buttons");
  if (!panel) {
    panel = document.createElement("div");
    panel.className = "fg-buttons";
    (root.querySelector(".fg-panel") || root).append(panel);
  }
  panel.replaceChildren(done);
  panel.after(note);
  let left = resetSeconds;
  const tick = () => {
    note.textContent = t("kioskReturning", { seconds: left });
    if (left <= 0) return reset();
    left -= 1;
    resetTimer = setTimeout(tick, 1000);
  };
  tick();
}

/** Back to the start screen with nothing of the last person left in the page. */
function reset() {
  clearTimeout(resetTimer);
  replyOrigin = null;
  reviewing = null;
  root.replaceChildren();
  for (const v of document.querySelectorAll("video")) { v.srcObject = null; v.remove(); }
  if (performance.clearResourceTimings) performance.clearResourceTimings();
  performance.clearMarks();
  history.replaceState(null, "", location.pathname + location.search);
  locale = pickLocale(query.get("lang"));
  welcome();
}

/** A screen with a title and a text only (no session yet, or none usable). */
function screen(titleKey, textKey, phase) {
  const t = translator(locale);
  const section = document.createElement("section");
  section.className = "fg fg-welcome";
  section.dataset.phase = phase;
  if (phase === "error") section.dataset.outcome = "error";
  section.lang = locale;
  const title = document.createElement("h1");
  title.className = "fg-title";
  title.textContent = t(titleKey);
  const text = document.createElement("p");
  text.className = "fg-text";
  text.setAttribute("aria-live", "polite");
  text.textContent = t(textKey);
  const panel = document.createElement("div");
  panel.className = "fg-panel";
  panel.append(title, text);
  section.append(panel);
  root.replaceChildren(section);
  return { t, panel, text };
}

function welcome() {
  const { t, panel, text } = kiosk ? screen("kioskWelcome", "kioskStartText", "welcome")
    : screen("noSessionTitle", "noSessionText", "welcome");
  if (kiosk) {
    const buttons = document.createElement("div");
    buttons.className = "fg-buttons";
    const go = document.createElement("button");
    go.type = "button";
    go.className = "fg-button fg-primary";
    go.dataset.action = "start";
    go.textContent = t("start");
    go.addEventListener("click", () => {
      const el = document.documentElement;
      if (document.fullscreenEnabled && !document.fullscreenElement) el.requestFullscreen().catch(() => {});
      text.textContent = t("kioskWaiting");
      go.disabled = true;
      tell({ type: "facegate:session-request" });
      window.dispatchEvent(new CustomEvent("facegate:session-request"));
    });
    const lang = document.createElement("button");
    lang.type = "button";
    lang.className = "fg-lang";
    lang.textContent = t("language");
    lang.setAttribute("aria-label", t("languageLabel"));
    lang.addEventListener("click", () => { locale = locale === "en" ? "zh-CN" : "en"; welcome(); });
    buttons.append(go);
    panel.prepend(lang);
    panel.append(buttons);
  }
  tell({ type: "facegate:ready" });
}

// ---------------------------------------------------------------- kiosk: a staff member decides
const REVIEW_SCREENS = {
  pending: ["reviewTitle", "reviewPending"],
  identified: ["reviewIdentifiedTitle", "reviewIdentified"],
  none: ["reviewCounterTitle", "reviewNone"],
  expired: ["reviewCounterTitle", "reviewExpired"],
};

/** Whether a ``facegate:review`` may come from ``origin`` (its source is already the host). */
function reviewOriginOk(origin) {
  if (replyOrigin) return origin === replyOrigin;
  return origin === sessionOrigin || origin === location.origin;
}

/** The waiting screen or the staff member's outcome; nothing of who the person is. */
function review({ status, decision, waitUntil }) {
  const which = status === "pending" ? "pending" : status === "expired" ? "expired"
    : status === "decided" && (decision === "identified" || decision === "none") ? decision : null;
  if (!which) return;
  clearTimeout(resetTimer);
  const [titleKey, textKey] = REVIEW_SCREENS[which];
  if (which !== "pending" || reviewing !== "pending") {
    const { panel } = screen(titleKey, textKey, which === "pending" ? "review" : "reviewed");
    const section = root.querySelector("section");
    section.dataset.review = which;
    if (which === "pending") section.setAttribute("aria-busy", "true");     // the title's calm spinner
    else if (which === "identified") section.dataset.outcome = "pass";
    const time = document.createElement("p");
    time.className = "fg-text fg-review-time";
    panel.append(time);
  }
  reviewing = which;
  const time = root.querySelector(".fg-review-time");
  const minutes = typeof waitUntil === "string" ? Math.ceil((Date.parse(waitUntil) - Date.now()) / 60000) : NaN;
  time.textContent = which === "pending" && minutes > 0 && minutes <= 60
    ? translator(locale)(minutes === 1 ? "reviewTimeOne" : "reviewTime", { minutes }) : "";
  window.dispatchEvent(new CustomEvent("facegate:review",
                                       { detail: { status, decision: status === "decided" ? decision : null } }));
  if (which !== "pending") scheduleReset();
}

// ---------------------------------------------------------------- sessions arriving
window.addEventListener("message", (e) => {
  if (!host || e.source !== host || !e.data) return;
  if (e.data.type === "facegate:review") {
    if (kiosk && !running && reviewOriginOk(e.origin)) review(e.data);
    return;
  }
  if (e.data.type !== "facegate:start") return;
  const { sessionId, token } = e.data;
  if (typeof sessionId !== "string" || typeof token !== "string") return;
  replyOrigin = e.origin;
  sessionOrigin = e.origin;
  // a session sent after a person pressed Start (kiosk) or by an integrator's own page
  run({ sessionId, token, locale: e.data.locale, upload: e.data.upload, cause: e.data.cause },
      { autoStart: kiosk || e.data.autoStart === true });
});

window.addEventListener("hashchange", () => {
  const session = fromFragment();
  if (session && !running) run(session, { autoStart: kiosk });
});

const first = fromFragment();
if (first) run(first);
else welcome();
