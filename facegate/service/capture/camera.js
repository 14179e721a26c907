// The camera: opening it (front camera on phones, the kiosk's camera), classifying failures,
// and sampling its frames as JPEGs with their capture times.

export class CameraError extends Error {
  constructor(code, cause) {
    super(`camera: ${code}${cause ? ` (${cause.name || cause})` : ""}`);
    this.code = code;
    this.cause = cause;
  }
}

function classify(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "PermissionDeniedError":
    case "SecurityError":
      return "camera_denied";
    case "NotFoundError":
    case "DevicesNotFoundError":
    case "OverconstrainedError":
      return "no_camera";
    case "NotReadableError":
    case "TrackStartError":
    case "AbortError":
      return "camera_busy";
    default:
      return "camera_failed";
  }
}

/**
 * Open the camera into ``video``; at most ``maxSide`` pixels on the longer side where the
 * browser can scale. Resolves with the MediaStream; rejects with a CameraError.
 */
export async function openCamera(video, { facingMode = "user", maxSide = 640, frameRate = 25 } = {}) {
  if (!window.isSecureContext) throw new CameraError("insecure_context");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) throw new CameraError("no_camera");
  const attempts = [
    { width: { ideal: maxSide, max: maxSide }, height: { ideal: Math.round(maxSide * 0.75), max: maxSide },
      frameRate: { ideal: frameRate, max: 30 }, facingMode: { ideal: facingMode } },
    { width: { ideal: maxSide }, height: { ideal: Math.round(maxSide * 0.75) }, facingMode: { ideal: facingMode } },
    true,
  ];
  let lastError;
  for (const video_ of attempts) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video: video_, audio: false });
      await attach(video, stream);
      return stream;
    } catch (err) {
      lastError = err;
      if (err instanceof CameraError) throw err;
      if (err && (err.name === "OverconstrainedError" || err.name === "ConstraintNotSatisfiedError")) continue;
      throw new CameraError(classify(err), err);
    }
  }
  throw new CameraError(classify(lastError), lastError);
}

async function attach(video, stream) {
  video.muted = true;
  video.playsInline = true;
  video.srcObject = stream;
  if (video.readyState < 1) {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new CameraError("camera_failed")), 10000);
      video.addEventListener("loadedmetadata", () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }
  try {
    await video.play();
  } catch (err) {
    stopStream(stream);
    throw new CameraError("camera_failed", err);
  }
}

export function stopStream(stream) {
  if (stream) for (const track of stream.getTracks()) track.stop();
}

export function closeCamera(video, stream) {
  stopStream(stream || (video && video.srcObject));
  if (video) {
    video.pause();
    video.srcObject = null;
    video.removeAttribute("src");
  }
}

/**
 * Takes the camera's frames at about ``fps`` (of the frames the camera delivers), draws each on
 * a canvas of at most ``maxSide`` pixels, UNMIRRORED (as the camera records them), and hands
 * ``{t, blob}`` to ``onFrame`` in capture order: ``t`` in seconds since the first kept frame,
 * strictly increasing, from the frame's capture time where the browser gives one
 * (requestVideoFrameCallback), else from the time it was drawn.
 */
export class FrameSampler {
  constructor(video, { fps = 20, maxSide = 640, quality = 0.85, onFrame } = {}) {
    this.video = video;
    this.interval = 1000 / fps;
    this.maxSide = maxSide;
    this.quality = quality;
    this.onFrame = onFrame;
    this.canvas = document.createElement("canvas");
    this.ctx = this.canvas.getContext("2d", { alpha: false });
    this.running = false;
    this.count = 0;
    this.t0 = null;
    this.last = -Infinity;
    this.due = null;
    this.encoding = Promise.resolve();
    this.firstAt = null;
    this.lastAt = null;
  }

  start() {
    this.running = true;
    const v = this.video;
    if (typeof v.requestVideoFrameCallback === "function") {
      const tick = (now, meta) => {
        if (!this.running) return;
        this.offer(meta.captureTime || meta.expectedDisplayTime || now);
        this.handle = v.requestVideoFrameCallback(tick);
      };
      this.handle = v.requestVideoFrameCallback(tick);
    } else {
      // no per-frame callback: poll at twice the rate, skipping frames already taken
      let lastMediaTime = -1;
      this.timer = setInterval(() => {
        if (v.currentTime === lastMediaTime) return;
        lastMediaTime = v.currentTime;
        this.offer(performance.now());
      }, this.interval / 2);
    }
  }

  offer(at) {
    if (this.due === null) this.due = at;
    if (at + 2 < this.due || at <= this.last) return;            // keep ~fps of the camera's frames
    this.due = Math.max(this.due + this.interval, at - this.interval);
    const v = this.video;
    const w0 = v.videoWidth, h0 = v.videoHeight;
    if (!w0 || !h0) return;
    const scale = Math.min(1, this.maxSide / Math.max(w0, h0));
    const w = Math.round(w0 * scale), h = Math.round(h0 * scale);
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.ctx.drawImage(v, 0, 0, w, h);
    if (this.t0 === null) this.t0 = at;
    this.last = at;
    const t = Math.round(at - this.t0) / 1000;
    const blob = new Promise((resolve) => this.canvas.toBlob(resolve, "image/jpeg", this.quality));
    this.count += 1;
    if (this.firstAt === null) this.firstAt = performance.now();
    this.lastAt = performance.now();
    this.encoding = blob;
    this.onFrame({ t, blob });
  }

  /** Stop taking frames; resolves once the last frame is encoded. */
  async stop() {
    this.running = false;
    if (this.handle && this.video.cancelVideoFrameCallback) this.video.cancelVideoFrameCallback(this.handle);
    if (this.timer) clearInterval(this.timer);
    await this.encoding;
  }

  /** Frames per second actually taken. */
  get rate() {
    if (this.count < 2 || this.lastAt === this.firstAt) return 0;
    return ((this.count - 1) * 1000) / (this.lastAt - this.firstAt);
  }
}

/** The MediaRecorder type for WebM, or null where the browser cannot record it. */
export function webmType() {
  if (typeof MediaRecorder === "undefined") return null;
  for (const type of ["video/webm;codecs=vp8", "video/webm;codecs=vp9", "video/webm"]) {
    if (MediaRecorder.isTypeSupported(type)) return type;
  }
  return null;
}

/** Records the camera stream as one WebM (the alternative to frames). */
export class WebmRecorder {
  constructor(stream, { type = webmType(), bitsPerSecond = 1_500_000 } = {}) {
    this.recorder = new MediaRecorder(stream, { mimeType: type, videoBitsPerSecond: bitsPerSecond });
    this.chunks = [];
    this.type = type;
    this.recorder.addEventListener("dataavailable", (e) => { if (e.data && e.data.size) this.chunks.push(e.data); });
  }

  start() {
    this.recorder.start(250);
  }

  stop() {
    return new Promise((resolve) => {
      if (this.recorder.state === "inactive") return resolve(new Blob(this.chunks, { type: "video/webm" }));
      this.recorder.addEventListener("stop", () => resolve(new Blob(this.chunks, { type: "video/webm" })), { once: true });
      this.recorder.stop();
    });
  }

  discard() {
    try { if (this.recorder.state !== "inactive") this.recorder.stop(); } catch { /* already stopped */ }
    this.chunks = [];
  }
}
