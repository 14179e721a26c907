// The capture token's side of facegate's liveness API (docs/liveness.md): the session's status,
// frames in chunks while the person acts, or one WebM, and the verdict. Errors are the
// service's RFC 9457 problems; their stable ``code`` is kept.

export class ApiError extends Error {
  /**
   * ``code``: the problem's code, ``network`` (no answer) or ``http_<status>``; ``unsure``: the
   * request may have reached the server although no answer came back.
   */
  constructor({ code, status = 0, detail = "", retryAfter = null, unsure = false, cause = null }) {
    super(`${code}${status ? ` (${status})` : ""}${detail ? `: ${detail}` : ""}`);
    this.code = code;
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
    this.unsure = unsure;
    this.cause = cause;    // a refused photo's cause (too_bright, ...), when the problem names one
  }
}

const STATUS_CODES = { 401: "unauthorized", 403: "forbidden", 404: "liveness_session_unknown", 409: "liveness_session_closed",
  410: "liveness_session_expired", 413: "image_too_large", 415: "unsupported_image", 422: "invalid_request",
  429: "rate_limited", 503: "overloaded" };

export class CaptureApi {
  constructor({ baseUrl, sessionId, token, timeoutMs = 60000 }) {
    this.base = new URL(`v1/liveness/sessions/${encodeURIComponent(sessionId)}`, baseUrl).href;
    this.token = token;
    this.timeoutMs = timeoutMs;
    this.skewMs = 0;                 // server clock - this clock, from the Date header where readable
  }

  async call(method, path = "", body = undefined, json = false) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.timeoutMs);
    const headers = { Authorization: `Bearer ${this.token}`, Accept: "application/json, application/problem+json" };
    if (json) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(this.base + path, { method, body, headers, credentials: "omit", cache: "no-store",
                                            referrerPolicy: "no-referrer", signal: controller.signal });
    } catch (err) {
      throw new ApiError({ code: "network", detail: String(err && err.name || err), unsure: method !== "GET" });
    } finally {
      clearTimeout(timer);
    }
    const date = Date.parse(res.headers.get("Date") || "");
    if (!Number.isNaN(date)) this.skewMs = date - Date.now();
    let payload = null;
    try {
      payload = await res.json();
    } catch {
      payload = null;
    }
    if (!res.ok) {
      const retry = Number(res.headers.get("Retry-After") || (payload && payload.retry_after));
      throw new ApiError({ code: (payload && payload.code) || STATUS_CODES[res.status] || `http_${res.status}`,
                           status: res.status, detail: (payload && payload.detail) || "",
                           retryAfter: Number.isFinite(retry) ? retry : null,
                           cause: (payload && typeof payload.cause === "string" && payload.cause) || null });
    }
    return payload;
  }

  status() {
    return this.call("GET");
  }

  /** The person's answer to the notice: ``given`` or ``declined``, for ``version``. */
  consent(decision, version) {
    return this.call("POST", "/consent", JSON.stringify({ decision, notice_version: version }), true);
  }

  frames(nonce, frames, complete) {
    const form = new FormData();
    frames.forEach((f, i) => form.append("frames", f.blob, `f${i}.jpg`));
    form.append("timestamps", frames.map((f) => f.t.toFixed(3)).join(","));
    form.append("nonce", nonce);
    if (complete) form.append("complete", "true");
    return this.call("POST", "/frames", form);
  }

  video(nonce, blob, complete) {
    const form = new FormData();
    form.append("video", blob, "capture.webm");
    form.append("nonce", nonce);
    if (complete) form.append("complete", "true");
    return this.call("POST", "/video", form);
  }

  complete(nonce) {
    return this.call("POST", "/complete", JSON.stringify({ nonce }), true);
  }

  /** The session's status once it is no longer being judged (polls while it is). */
  async settled(timeoutMs = 60000) {
    const until = performance.now() + timeoutMs;
    for (;;) {
      const s = await this.status();
      if (s.status !== "judging" || performance.now() > until) return s;
      await new Promise((r) => setTimeout(r, 400));
    }
  }
}

/**
 * Sends frames in chunks while the person acts (one request at a time, in capture order, so the
 * timestamps increase across requests), and the rest with ``complete=true`` at the end. A chunk
 * that fails stays queued and goes with the next one; after an answer that never came back,
 * ``resync()`` asks the session how many frames it holds and drops those already delivered.
 */
export class FrameUploader {
  constructor(api, nonce, { chunk = 12, maxPerRequest = 100 } = {}) {
    this.api = api;
    this.nonce = nonce;
    this.chunk = chunk;
    this.maxPerRequest = maxPerRequest;
    this.queue = [];
    this.acked = 0;
    this.sent = 0;
    this.busy = null;
    this.finishing = false;
    this.retryAt = 0;
    this.requests = 0;
  }

  add(frame) {
    this.queue.push(frame);
    if (this.queue.length >= this.chunk && !this.busy && !this.finishing && performance.now() >= this.retryAt) {
      this.busy = this.send(false).catch(() => { this.retryAt = performance.now() + 800; }).finally(() => { this.busy = null; });
    }
  }

  async send(complete) {
    const part = this.queue.slice(0, this.maxPerRequest);
    const blobs = await Promise.all(part.map((f) => f.blob));
    const frames = part.map((f, i) => ({ t: f.t, blob: blobs[i] })).filter((f) => f.blob && f.blob.size);
    const last = complete && part.length === this.queue.length;
    this.requests += 1;
    const res = frames.length ? await this.api.frames(this.nonce, frames, last) : (last ? await this.api.complete(this.nonce) : null);
    this.queue.splice(0, part.length);
    this.sent += frames.length;
    if (res && typeof res.frames_received === "number") this.acked = res.frames_received;
    else this.acked = this.sent;
    return res;
  }

  /** Send what is left and judge; resolves with the verdict. */
  async finish() {
    this.finishing = true;
    if (this.busy) await this.busy;
    if (!this.queue.length) {
      this.requests += 1;
      return this.api.complete(this.nonce);
    }
    while (this.queue.length > this.maxPerRequest) await this.send(false);
    return this.send(true);
  }

  /** After an uncertain failure: the verdict if the session was judged, else drop what arrived. */
  async resync() {
    const s = await this.api.settled();
    if (s.status !== "pending") return s;
    const arrived = (s.frames_received || 0) - this.acked;
    if (arrived > 0) {
      this.queue.splice(0, arrived);
      this.acked = s.frames_received;
      this.sent = s.frames_received;
    }
    return null;
  }

  clear() {
    this.queue = [];
  }
}
