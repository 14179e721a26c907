// Live guidance before and during the capture: is there one face, big enough, in the middle,
// in enough light? Runs on a 160-pixel-wide copy of the camera image a few times a second with
// the vendored tracking.js Viola-Jones face detector (vendor/tracking/README.md). It only guides
// the person; liveness and identity are judged by the server.

import "./vendor/tracking/tracking-min.js";
import "./vendor/tracking/face-min.js";

const WIDTH = 160;

export const LIMITS = {
  tooDark: 45,          // mean luma (0-255) of the middle of the picture
  tooBright: 235,
  minFace: 0.25,        // face width / the picture's shorter side: under it, "move closer"
  maxFace: 0.92,        // over it, "move back"
  offCentre: 0.2,       // the face's centre this far (fraction of the side) from the middle
  secondFace: 0.45,     // another face at least this fraction of the largest one's width
};

export class Guidance {
  constructor(video) {
    this.video = video;
    this.canvas = document.createElement("canvas");
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true, alpha: false });
    const vj = globalThis.tracking && globalThis.tracking.ViolaJones;
    this.detector = vj && vj.classifiers && vj.classifiers.face ? vj : null;
  }

  /** Whether faces can be looked for (else only the light is checked). */
  get available() {
    return this.detector !== null;
  }

  /**
   * ``{status, faces, brightness, face}``; status is one of ``ok``, ``no_face``, ``move_closer``,
   * ``move_back``, ``center``, ``one_face``, ``too_dark``, ``too_bright``, or ``unknown``
   * (no picture yet).
   */
  analyse() {
    const v = this.video;
    if (!v || !v.videoWidth || !v.videoHeight || v.readyState < 2) return { status: "unknown", faces: 0 };
    const w = WIDTH;
    const h = Math.max(1, Math.round((WIDTH * v.videoHeight) / v.videoWidth));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.ctx.drawImage(v, 0, 0, w, h);
    const { data } = this.ctx.getImageData(0, 0, w, h);
    const brightness = meanLuma(data, w, h);
    if (brightness < LIMITS.tooDark) return { status: "too_dark", faces: 0, brightness };
    if (!this.detector) {
      return { status: brightness > LIMITS.tooBright ? "too_bright" : "ok", faces: null, brightness };
    }
    const rects = this.detector.detect(data, w, h, 1.0, 1.25, 1.5, 0.1, this.detector.classifiers.face)
      .filter((r) => r.width >= 0.1 * Math.min(w, h))
      .sort((a, b) => b.width - a.width);
    if (!rects.length) {
      return { status: brightness > LIMITS.tooBright ? "too_bright" : "no_face", faces: 0, brightness };
    }
    const side = Math.min(w, h);
    const main = rects[0];
    const others = rects.slice(1).filter((r) => r.width >= LIMITS.secondFace * main.width && !overlaps(r, main));
    const face = { cx: (main.x + main.width / 2) / w, cy: (main.y + main.height / 2) / h, size: main.width / side };
    const faces = 1 + others.length;
    let status = "ok";
    if (faces > 1) status = "one_face";
    else if (brightness > LIMITS.tooBright) status = "too_bright";
    else if (face.size < LIMITS.minFace) status = "move_closer";
    else if (face.size > LIMITS.maxFace) status = "move_back";
    else if (Math.abs(face.cx - 0.5) > LIMITS.offCentre || Math.abs(face.cy - 0.5) > LIMITS.offCentre + 0.05) {
      status = "center";
    }
    return { status, faces, brightness, face };
  }

  release() {
    this.canvas.width = 0;
    this.canvas.height = 0;
  }
}

function meanLuma(data, w, h) {
  // the middle 60 % of the picture, every 3rd pixel
  let sum = 0, n = 0;
  const x0 = Math.floor(w * 0.2), x1 = Math.ceil(w * 0.8), y0 = Math.floor(h * 0.2), y1 = Math.ceil(h * 0.8);
  for (let y = y0; y < y1; y += 3) {
    for (let x = x0; x < x1; x += 3) {
      const i = (y * w + x) * 4;
      sum += 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
      n += 1;
    }
  }
  return n ? sum / n : 0;
}

function overlaps(a, b) {
  const ix = Math.max(0, Math.min(a.x + a.width, b.x + b.width) - Math.max(a.x, b.x));
  const iy = Math.max(0, Math.min(a.y + a.height, b.y + b.height) - Math.max(a.y, b.y));
  return ix * iy > 0.2 * Math.min(a.width * a.height, b.width * b.height);
}

/**
 * Smooths the detector's answers: a status is shown once it is seen twice in the last three
 * looks, and ``steady(ms)`` says whether the picture has been ``ok`` for ``ms`` (one miss of the
 * detector in between is forgiven).
 */
export class GuidanceFilter {
  constructor() {
    this.history = [];
    this.shown = "unknown";
    this.okSince = null;
    this.misses = 0;
  }

  push(status, now = performance.now()) {
    this.history.push(status);
    if (this.history.length > 3) this.history.shift();
    const count = this.history.filter((s) => s === status).length;
    if (count >= 2 || this.shown === "unknown") this.shown = status;
    if (status === "ok") {
      if (this.okSince === null) this.okSince = now;
      this.misses = 0;
    } else if (this.okSince !== null && status !== "too_dark" && this.misses === 0) {
      this.misses = 1;                      // forgive one miss
    } else {
      this.okSince = null;
      this.misses = 0;
    }
    return this.shown;
  }

  steady(ms, now = performance.now()) {
    return this.okSince !== null && now - this.okSince >= ms;
  }
}
