// The operator console: sign-in (password, then TOTP; enrolment by QR code at the first sign-in),
// the review queue and cases, fraud signals, certification periods, kiosks, subjects, audit.
// Talks only to /console/api/ on this origin; the session is an HttpOnly cookie, the CSRF token
// lives in memory and goes in X-CSRF-Token on every state-changing call. Images are fetched with
// the session and shown from blob: URLs (never a URL that could leave the page). No HTML parsing
// with data: every text goes through textContent.
import { pickLocale, translator } from "./i18n.js";

const API = "/console/api";
const state = { session: null, locale: pickLocale(location.search, navigator.languages), blobs: [], timers: [], shown: 0 };
let t = translator(state.locale);

// ------------------------------------------------------------------ helpers
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c.nodeType ? c : document.createTextNode(String(c)));
  return el;
}

const app = () => document.getElementById("app");

function show(...nodes) {
  for (const u of state.blobs) URL.revokeObjectURL(u);
  state.blobs = [];
  for (const id of state.timers) clearInterval(id);     // a screen's clocks and refreshes end with it
  state.timers = [];
  state.shown += 1;
  app().replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));
}

function message(text, ok = false) {
  const m = document.getElementById("message");
  if (!text) { m.hidden = true; m.textContent = ""; delete m.dataset.code; return; }
  m.hidden = false;
  m.textContent = text;
  m.className = ok ? "message ok" : "message";
}

class Problem extends Error {
  constructor(body, status) { super(body.detail || body.code); this.body = body; this.status = status; }
}

function problemText(p) {
  const code = p.body?.code || "other";
  const key = `err_${code}`;
  const text = t(key, { retry: p.body?.retry_after ?? "", code });
  return text === key ? t("err_other", { code }) : text;
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.session) headers["X-CSRF-Token"] = state.session.csrf;
  const r = await fetch(API + path, { method, headers, credentials: "same-origin", cache: "no-store",
                                      body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 204) return null;
  const type = r.headers.get("content-type") || "";
  const data = type.includes("json") ? await r.json() : await r.text();
  if (!r.ok) {
    const p = new Problem(typeof data === "object" ? data : { code: "other", detail: String(data) }, r.status);
    const m = document.getElementById("message");
    m.dataset.code = p.body.code || "";
    if (p.body.code === "session_expired") { state.session = null; renderSignIn(); }
    throw p;
  }
  return data;
}

async function guarded(fn) {
  try { message(""); await fn(); }
  catch (e) {
    if (e instanceof Problem) message(problemText(e));
    else { message(t("err_other", { code: "network" })); console.warn(e); }
  }
}

async function imageInto(img, path) {
  const r = await fetch(API + path, { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) { img.replaceWith(h("p", { class: "muted", text: t("err_not_found") })); return; }
  const url = URL.createObjectURL(await r.blob());
  state.blobs.push(url);
  img.src = url;
}

const when = (iso) => (iso ? new Date(iso).toLocaleString(state.locale) : "");
const word = (prefix, v) => { const k = `${prefix}_${v}`; const s = t(k); return s === k ? v : s; };
const can = (p) => !!state.session && (state.session.can || []).includes(p);

// A person at a kiosk waiting for a reviewer: how long, counted on in the page from what the
// server said (waiting_s) when the screen was drawn.
function duration(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  return s >= 60 ? t("durMinSec", { m: Math.floor(s / 60), s: s % 60 }) : t("durSec", { s });
}
const isWaiting = (c) => c.waiting_s !== null && c.waiting_s !== undefined;

function waitingClock(c, attrs = {}) {
  return h("span", { ...attrs, class: "wait", text: t("waitingFor", { time: duration(c.waiting_s) }),
                     dataset: { waitingS: c.waiting_s, since: performance.now() } });
}

function tickWaiting() {
  for (const el of document.querySelectorAll("[data-waiting-s]")) {
    const s = Number(el.dataset.waitingS) + (performance.now() - Number(el.dataset.since)) / 1000;
    el.textContent = t("waitingFor", { time: duration(s) });
  }
}

// ------------------------------------------------------------------ chrome
function renderChrome() {
  document.documentElement.lang = state.locale;
  document.title = t("title");
  const lang = document.getElementById("lang");
  lang.textContent = t("language");
  const out = document.getElementById("signout");
  out.textContent = t("signOut");
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  const active = state.session && state.session.stage === "active";
  nav.hidden = !active;
  out.hidden = !state.session;
  who.textContent = state.session ? t("signedInAs", { name: state.session.operator, role: state.session.role }) : "";
  nav.replaceChildren();
  if (!active) return;
  const links = [["#/queue", "navQueue", "review:read"], ["#/signals", "navSignals", "signals"],
                 ["#/periods", "navPeriods", "reports"], ["#/kiosks", "navKiosks", "reports"],
                 ["#/subjects", "navSubjects", "subjects"], ["#/audit", "navAudit", "audit"]];
  for (const [href, key, perm] of links) {
    if (!can(perm)) continue;
    nav.append(h("a", { href, text: t(key), class: location.hash.startsWith(href) ? "active" : null, dataset: { nav: key } }));
  }
}

// ------------------------------------------------------------------ sign-in
// What the single sign-on callback may send back in ?sso=, each with its sentence.
const SSO_FAILURES = { sign_in_failed: "ssoSignInFailed", forbidden: "ssoForbidden", not_ready: "ssoNotReady",
                       sign_in_throttled: "ssoThrottled", sso_not_registered: "ssoNotRegistered" };

function renderSignIn() {
  renderChrome();
  const name = h("input", { id: "name", name: "name", autocomplete: "username", maxlength: "64", required: true });
  const password = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password",
                                maxlength: "256", required: true });
  const submit = h("button", { id: "signin-submit", class: "primary", type: "button", text: t("signIn") });
  const go = () => guarded(async () => {
    state.session = await api("POST", "/sign-in", { name: name.value, password: password.value });
    await route();
  });
  submit.addEventListener("click", go);
  password.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
  const card = h("section", { class: "card signin", id: "signin" }, h("h1", { text: t("signIn") }),
                 h("label", { for: "name", text: t("name") }), name,
                 h("label", { for: "password", text: t("password") }), password, submit);
  show(card);
  name.focus();
  fetch(`${API}/oidc`, { credentials: "same-origin" }).then((r) => r.json()).then((sso) => {
    if (sso.enabled) card.append(h("p", {}, h("a", { id: "sso", class: "secondary", href: `${API}/oidc/start`, text: t("signInSso") })));
  }).catch(() => {});
  const failed = new URLSearchParams(location.search).get("sso");
  if (failed !== null) {
    // the callback's code comes back in the address: only a known code picks a sentence
    const code = Object.hasOwn(SSO_FAILURES, failed) ? failed : "other";
    message(t(SSO_FAILURES[code] || "ssoOther"));
    document.getElementById("message").dataset.code = code;
    history.replaceState(null, "", location.pathname);
  }
}

async function renderSecondFactor() {
  renderChrome();
  const enrol = state.session.stage === "enrol";
  const code = h("input", { id: "code", name: "code", inputmode: "numeric", autocomplete: "one-time-code", maxlength: "8" });
  const submit = h("button", { id: "code-submit", class: "primary", type: "button", text: t("confirm") });
  const go = () => guarded(async () => {
    state.session = await api("POST", "/mfa", { code: code.value });
    location.hash = "#/queue";
    await route();
  });
  submit.addEventListener("click", go);
  code.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
  const card = h("section", { class: "card signin", id: enrol ? "enrol" : "mfa" },
                 h("h1", { text: t(enrol ? "enrolTitle" : "mfaTitle") }), h("p", { text: t(enrol ? "enrolText" : "mfaText") }));
  if (enrol) {
    // the secret is shown once, to this session: after a reload only a new sign-in shows one
    let e = null;
    try { e = await api("GET", "/enrolment"); } catch (p) { if (!(p instanceof Problem)) throw p; message(problemText(p)); }
    if (e) card.append(h("img", { id: "qr", class: "qr", alt: "QR", src: e.qr_svg }),
                       h("p", { class: "secret", id: "secret", text: e.secret }));
  }
  card.append(h("label", { for: "code", text: t("code") }), code, submit);
  show(card);
  code.focus();
}

// ------------------------------------------------------------------ queue and cases
function filterBar(fields, values, onApply) {
  const bar = h("div", { class: "filters" });
  const inputs = {};
  for (const [key, label, options] of fields) {
    let input;
    if (options) {
      input = h("select", { id: `f-${key}` }, h("option", { value: "", text: t("any") }),
                ...options.map(([v, l]) => h("option", { value: v, text: l, selected: values[key] === v })));
    } else {
      input = h("input", { id: `f-${key}`, value: values[key] || "", maxlength: "128", size: "12" });
    }
    inputs[key] = input;
    bar.append(h("label", {}, t(label), h("br"), input));
  }
  bar.append(h("button", { class: "secondary", type: "button", id: "apply", text: t("apply"),
                           onclick: () => onApply(Object.fromEntries(Object.entries(inputs).map(([k, i]) => [k, i.value]))) }));
  return bar;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== undefined && v !== null) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

async function renderQueue(filters = { status: "pending" }, refreshOf = null) {
  const page = await api("GET", `/queue${query(filters)}`);
  if (refreshOf !== null && refreshOf !== state.shown) return;       // the operator went elsewhere meanwhile
  // the server puts the kiosk cases people are waiting for first: the order is kept as it came
  const rows = page.cases.map((c) => h("tr", { class: isWaiting(c) ? "row waiting" : "row", dataset: { case: c.case_id },
                                                onclick: () => { location.hash = `#/case/${c.case_id}`; } },
    h("td", { text: `#${c.case_id}` }),
    h("td", {}, when(c.created_at), isWaiting(c) ? [h("br"), waitingClock(c)] : null),
    h("td", { text: word("wf", c.workflow) }),
    h("td", { text: c.subject_id || "" }), h("td", { text: word("out", c.outcome) }),
    h("td", { text: c.reasons.map((r) => word("reason", r)).join("; ") }), h("td", { text: c.claimed_by || "" })));
  const table = h("table", { id: "queue" }, h("thead", {}, h("tr", {}, ...["colCase", "colWhen", "colWorkflow", "colSubject",
    "colOutcome", "colReasons", "colClaimed"].map((k) => h("th", { text: t(k) })))), h("tbody", {}, rows));
  const bar = filterBar([["status", "filterStatus", [["pending", t("st_pending")], ["decided", t("st_decided")],
                                                     ["expired", t("st_expired")]]],
                         ["workflow", "filterWorkflow", [["certification", t("wf_certification")], ["kiosk", t("wf_kiosk")]]],
                         ["reason", "filterReason", null], ["period", "filterPeriod", null], ["kiosk_id", "filterKiosk", null]],
                        filters, (f) => guarded(() => renderQueue(f)));
  const next = page.next_after ? h("button", { class: "secondary", id: "next", text: t("next"),
                                               onclick: () => guarded(() => renderQueue({ ...filters, after: page.next_after })) }) : null;
  const title = { decided: "decidedTitle", expired: "expiredTitle" }[filters.status] || "queueTitle";
  show(h("h1", { text: t(title) }), bar,
       page.cases.length ? table : h("p", { class: "muted", id: "queue-empty", text: t("empty") }), next);
  if (page.cases.some(isWaiting)) {
    state.timers.push(setInterval(tickWaiting, 1000));
    // while someone waits at a kiosk, the first page refreshes itself (not while a filter is being typed)
    if (!filters.after) {
      state.timers.push(setInterval(() => {
        if (document.activeElement && document.activeElement.closest(".filters")) return;
        renderQueue(filters, state.shown).catch(() => {});
      }, 10_000));
    }
  }
}

function scoreTable(c) {
  const s = c.scores || {};
  const rows = [];
  if (s.score !== undefined && s.score !== null) {
    const over = s.threshold !== null && s.threshold !== undefined && s.score >= s.threshold;
    rows.push(["score", `${Number(s.score).toFixed(4)} — ${t(over ? "overThreshold" : "underThreshold")}`]);
  }
  if (s.threshold !== undefined && s.threshold !== null) rows.push(["threshold", Number(s.threshold).toFixed(4)]);
  if (s.fmr) rows.push(["fmr", String(s.fmr)]);
  if (s.margin !== undefined && s.margin !== null) rows.push(["margin", `${Number(s.margin).toFixed(4)} / ${s.required_margin}`]);
  if (s.quality !== undefined && s.quality !== null) rows.push(["quality", Number(s.quality).toFixed(3)]);
  if (s.liveness) rows.push(["liveness", `${t(s.liveness.passed ? "passed" : "notPassed")}` +
                             (s.liveness.score !== null && s.liveness.score !== undefined ? ` (${s.liveness.score})` : "") +
                             (s.liveness.checks && s.liveness.checks.length ? ` — ${s.liveness.checks.join(", ")}` : "")]);
  return h("dl", { class: "kv", id: "scores" }, ...rows.flatMap(([k, v]) => [h("dt", { text: t(k) }), h("dd", { text: v, dataset: { score: k } })]));
}

async function renderCase(id) {
  const c = await api("GET", `/cases/${id}`);
  const parts = [h("p", {}, h("a", { href: "#/queue", text: t("back") })),
                 h("h1", { text: t("caseTitle", { id: c.case_id }) }),
                 h("p", { class: "muted", text: [word("wf", c.workflow), c.subject_id, c.kiosk_id, c.period, when(c.created_at)]
                                                 .filter(Boolean).join(" · ") })];
  if (isWaiting(c)) {
    parts.push(h("p", { class: "card waiting", id: "waiting" }, waitingClock(c, { id: "waiting-time" }), " ",
                 h("span", { id: "wait-until", text: t("kioskWaitsUntil", { until: when(c.wait_until) }) })));
  }
  const faces = h("div", { class: "faces", id: "faces" });
  if (!c.images_allowed) {
    parts.push(h("p", { class: "hidden-images", id: "images-hidden", text: t("imagesHidden") }));
  } else {
    if (c.workflow === "kiosk") {
      // a kiosk search has no subject of its own: its candidates' photos follow the capture's frames
    } else if (c.reference_photo) {
      const img = h("img", { id: "reference", alt: t("reference") });
      faces.append(h("figure", {}, img, h("figcaption", { text: t("reference") })));
      imageInto(img, `/cases/${c.case_id}/reference`);
    } else {
      faces.append(h("p", { class: "muted", id: "no-reference", text: t(c.reference_kept ? "noReference" : "referenceOff") }));
    }
    for (const e of c.evidence) {
      const img = h("img", { class: "evidence", alt: e.kind, dataset: { kind: e.kind, seq: e.seq } });
      const cap = e.kind === "still" ? t("evidenceStill") : t("evidenceFrame", { n: e.seq + 1 });
      const sc = e.scores && e.scores.pad ? ` · PAD ${Object.entries(e.scores.pad).map(([m, v]) => `${m} ${v}`).join(", ")}` : "";
      faces.append(h("figure", {}, img, h("figcaption", { text: cap + sc })));
      imageInto(img, `/cases/${c.case_id}/evidence/${e.kind}/${e.seq}`);
    }
    (c.scores.candidates || []).forEach((cand, n) => {
      const img = h("img", { class: "candidate", alt: cand.subject_id, dataset: { candidate: n } });
      faces.append(h("figure", {}, img, h("figcaption", { text: t("candidate", { id: cand.subject_id, score: Number(cand.score).toFixed(4) }) })));
      imageInto(img, `/cases/${c.case_id}/candidates/${n}/reference`);
    });
    if (!c.evidence.length) faces.append(h("p", { class: "muted", text: t("noEvidence") }));
    parts.push(faces);
  }
  parts.push(h("section", { class: "card" }, h("h2", { text: t("scores") }), scoreTable(c)),
             h("section", { class: "card" }, h("h2", { text: t("reasons") }),
               h("ul", { id: "reasons" }, ...c.reasons.map((r) => h("li", { text: word("reason", r), dataset: { reason: r } }))),
               c.signals.length ? h("p", { text: `${t("signals")}: ${c.signals.join(", ")}` }) : null));
  if (c.status === "decided") {
    const what = c.workflow === "kiosk" ? (c.decided_subject_id || t("noneOfThem")) : word("out", c.decision);
    parts.push(h("p", { class: "card good", id: "decided", text: t("decided", { decision: what, name: c.decided_by, when: when(c.decided_at) }) }),
               c.note ? h("p", { class: "muted", text: c.note }) : null);
  } else if (c.status === "expired") {
    parts.push(h("p", { class: "card bad", id: "expired", text: t("caseExpired", { when: when(c.decided_at) }) }));
  } else if (can("review:decide")) {
    const note = h("textarea", { id: "note", rows: "3", maxlength: "2000" });
    const claimInfo = h("p", { id: "claim-info", class: "muted",
      text: c.claimed_by ? (c.claimed_by === state.session.operator ? t("claimedByYou", { until: when(c.claim_expires_at) })
                                                                     : t("claimedBy", { name: c.claimed_by, until: when(c.claim_expires_at) })) : "" });
    // the kiosk may stop waiting while the case is open here: the refusal (case_expired) shows the case as it is now
    const onCase = (fn) => guarded(async () => {
      try { await fn(); } catch (e) {
        if (e instanceof Problem && e.body.code === "case_expired") await renderCase(c.case_id);
        throw e;
      }
    });
    const decide = (decision) => onCase(async () => {
      const done = await api("POST", `/cases/${c.case_id}/decision`, { decision, note: note.value });
      await renderCase(c.case_id);
      message(t("decisionSaved", { id: done.case_id }), true);
    });
    const identify = (subjectId) => onCase(async () => {
      const done = await api("POST", `/cases/${c.case_id}/identification`, { subject_id: subjectId, note: note.value });
      await renderCase(c.case_id);
      message(t("decisionSaved", { id: done.case_id }), true);
    });
    const buttons = c.workflow === "kiosk"
      ? [...(c.scores.candidates || []).map((cand, n) => h("button", { class: "primary", type: "button", dataset: { identify: n },
                                                                    text: t("isThisPerson", { id: cand.subject_id }), onclick: () => identify(cand.subject_id) })),
         h("button", { class: "danger", type: "button", id: "identify-none", text: t("noneOfThem"), onclick: () => identify(null) })]
      : [h("button", { class: "primary", type: "button", id: "decide-certified", text: t("decideCertified"), onclick: () => decide("certified") }),
         h("button", { class: "danger", type: "button", id: "decide-failed", text: t("decideFailed"), onclick: () => decide("failed") })];
    parts.push(h("section", { class: "card", id: "decide" }, claimInfo,
      h("button", { class: "secondary", id: "claim", type: "button", text: t("claim"),
                    onclick: () => onCase(async () => { await api("POST", `/cases/${c.case_id}/claim`); await renderCase(c.case_id); }) }),
      h("label", { for: "note", text: t("note") }), note, ...buttons));
  }
  show(...parts.filter(Boolean));
  if (isWaiting(c)) state.timers.push(setInterval(tickWaiting, 1000));
}

// ------------------------------------------------------------------ other screens
function table(id, cols, rows) {
  return h("table", { id }, h("thead", {}, h("tr", {}, ...cols.map((k) => h("th", { text: t(k) })))),
           h("tbody", {}, ...rows.map((r) => h("tr", {}, ...r.map((v) => h("td", {}, v))))));
}

async function renderSignals() {
  const out = await api("GET", "/fraud-signals?limit=200");
  show(h("h1", { text: t("signalsTitle") }),
       out.signals.length ? table("signals", ["colWhen", "colKind", "colSubject", "colOther", "colCert", "colCase"], out.signals.map((s) => [
         when(s.created_at), s.kind, subjectLink(s.subject_id), s.other_subject_id ? subjectLink(s.other_subject_id) : "",
         s.certification_id ? String(s.certification_id) : "",
         s.case_id ? h("a", { href: `#/case/${s.case_id}`, text: `#${s.case_id}`, dataset: { caseLink: s.case_id } }) : ""]))
                           : h("p", { class: "muted", text: t("empty") }));
}

function subjectLink(id) {
  return can("subjects") ? h("a", { href: `#/subjects/${encodeURIComponent(id)}`, text: id }) : id;
}

async function renderPeriods() {
  const out = await api("GET", "/certifications?limit=500");
  const counts = h("p", { id: "counts" }, Object.entries(out.counts).map(([k, v]) => `${k}: ${v}`).join(" · "));
  const csv = h("button", { class: "secondary", id: "csv", text: t("exportCsv"), onclick: () => guarded(async () => {
    const r = await fetch(`${API}/certifications?format=csv&limit=10000&period=${encodeURIComponent(out.period)}`, { credentials: "same-origin" });
    const url = URL.createObjectURL(await r.blob());
    const a = h("a", { href: url, download: `certifications-${out.period}.csv` });
    document.body.append(a); a.click(); a.remove(); setTimeout(() => URL.revokeObjectURL(url), 1000);
  }) });
  show(h("h1", { text: t("periodsTitle", { period: out.period }) }), counts, csv,
       table("periods", ["colSubject", "colStatus", "colCertifiedAt", "colAttempts"],
             out.items.map((i) => [i.subject_id, i.status, when(i.certified_at), String(i.attempts)])));
}

async function renderKiosks() {
  const out = await api("GET", "/kiosks?days=14");
  show(h("h1", { text: t("kiosksTitle") }),
       table("kiosks", ["colKioskId", "colDay", "colAttemptsK", "colAccepts", "colRejects", "colReviews", "colErrors"],
             out.rows.map((r) => [r.kiosk_id, r.day, String(r.attempts), String(r.accepts), String(r.rejects), String(r.reviews), String(r.errors)])),
       h("h2", { text: t("disabledKiosks") }),
       out.disabled.length ? h("ul", {}, ...out.disabled.map((k) => h("li", { text: `${k.kiosk_id} · ${k.location} · ${when(k.disabled_at)}` })))
                           : h("p", { class: "muted", text: t("empty") }));
}

async function renderSubjects(id) {
  const input = h("input", { id: "subject-search", maxlength: "128", value: id || "" });
  const parts = [h("h1", { text: t("subjectsTitle") }),
                 h("div", { class: "filters" }, h("label", {}, t("subjectId"), h("br"), input),
                   h("button", { class: "secondary", id: "subject-go", text: t("search"),
                                 onclick: () => { location.hash = `#/subjects/${encodeURIComponent(input.value)}`; } }))];
  if (id) {
    const s = await api("GET", `/subjects/${encodeURIComponent(id)}`);
    const reason = h("input", { id: "status-reason", maxlength: "500", size: "40" });
    const status = h("select", { id: "status" }, ...["active", "suspended", "deceased"].map((v) => h("option", { value: v, text: v, selected: v === s.status })));
    const confirm = h("input", { id: "erase-confirm", maxlength: "128" });
    const eraseReason = h("input", { id: "erase-reason", maxlength: "500", size: "40" });
    const withdrawConfirm = h("input", { id: "withdraw-confirm", maxlength: "128" });
    const withdrawReason = h("input", { id: "withdraw-reason", maxlength: "500", size: "40" });
    parts.push(h("section", { class: "card", id: "subject" }, h("h2", { text: s.subject_id }),
      h("dl", { class: "kv" }, ...Object.entries({ name: s.name, status: s.status, created_at: when(s.created_at),
                                                 withdrawn_at: when(s.withdrawn_at) })
        .flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v || "" })])),
      h("h3", { text: t("stored") }),
      h("dl", { class: "kv", id: "stored" }, ...Object.entries(s.stored).flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: String(v) })]))),
      h("section", { class: "card" }, h("h3", { text: t("statusChange") }), status, " ", h("label", {}, t("reason"), reason),
        h("button", { class: "primary", id: "status-save", text: t("save"), onclick: () => guarded(async () => {
          const out = await api("POST", `/subjects/${encodeURIComponent(id)}/status`, { status: status.value, reason: reason.value });
          message(t("statusSaved", { status: out.status }), true);
        }) })),
      h("section", { class: "card" }, h("h3", { text: t("withdraw") }), h("p", { text: t("withdrawExplain") }),
        h("p", { text: t("withdrawConfirm") }), withdrawConfirm,
        h("label", {}, t("reason"), withdrawReason),
        h("button", { class: "danger", id: "withdraw", text: t("withdraw"), onclick: () => guarded(async () => {
          await api("POST", `/subjects/${encodeURIComponent(id)}/withdraw`, { confirm: withdrawConfirm.value,
                                                                             reason: withdrawReason.value });
          await renderSubjects(id);
          message(t("withdrawn", { id }), true);
        }) })),
      h("section", { class: "card" }, h("h3", { text: t("erase") }), h("p", { text: t("eraseConfirm") }), confirm,
        h("label", {}, t("reason"), eraseReason),
        h("button", { class: "danger", id: "erase", text: t("erase"), onclick: () => guarded(async () => {
          await api("POST", `/subjects/${encodeURIComponent(id)}/erase`, { confirm: confirm.value, reason: eraseReason.value });
          location.hash = "#/subjects";
          message(t("erased", { id }), true);
        }) })));
  }
  show(...parts);
}

async function renderAudit(filters = {}, verify = false) {
  // walking the whole chain is costly: only when the operator asks (the server rate-limits it too)
  const out = await api("GET", `/audit${query({ ...filters, ...(verify ? { verify: "true" } : {}), limit: 200 })}`);
  const chain = !out.chain ? null
    : out.chain.ok ? h("p", { class: "good", id: "chain", text: t("chainOk", { rows: out.chain.rows }) })
                   : h("p", { class: "bad", id: "chain", text: t("chainBad", { seq: out.chain.first_bad_seq }) });
  const check = h("button", { class: "secondary", type: "button", id: "verify-chain", text: t("verifyChain"),
                              onclick: () => guarded(() => renderAudit(filters, true)) });
  const bar = filterBar([["subject_id", "colSubject", null], ["operator", "operator", null], ["operation", "operation", null],
                         ["since", "since", null], ["until", "until", null]], filters, (f) => guarded(() => renderAudit(f)));
  show(h("h1", { text: t("auditTitle") }), h("p", {}, check), chain, bar,
       table("audit", ["colTime", "colActor", "operation", "colSubject", "colOutcome", "colDetail"], out.entries.map((e) => [
         e.ts, e.actor, e.operation, e.subject_id || "", e.outcome, e.detail ? JSON.stringify(e.detail) : ""])));
}

// ------------------------------------------------------------------ routing
async function route() {
  if (!state.session) {
    try { state.session = await api("GET", "/me"); } catch { state.session = null; }
  }
  if (!state.session) { renderSignIn(); return; }
  if (state.session.stage !== "active") { await renderSecondFactor(); return; }
  renderChrome();
  const [, name, arg] = (location.hash || "#/queue").split("/");
  await guarded(async () => {
    if (name === "case") await renderCase(Number(arg));
    else if (name === "signals" && can("signals")) await renderSignals();
    else if (name === "periods" && can("reports")) await renderPeriods();
    else if (name === "kiosks" && can("reports")) await renderKiosks();
    else if (name === "subjects" && can("subjects")) await renderSubjects(arg ? decodeURIComponent(arg) : "");
    else if (name === "audit" && can("audit")) await renderAudit();
    else await renderQueue();
  });
  renderChrome();
}

document.getElementById("lang").addEventListener("click", () => {
  state.locale = state.locale === "en" ? "zh-CN" : "en";
  t = translator(state.locale);
  message("");
  route();
});
document.getElementById("signout").addEventListener("click", () => guarded(async () => {
  await api("POST", "/sign-out");
  state.session = null;
  renderSignIn();
}));
window.addEventListener("hashchange", () => { message(""); route(); });
route();
