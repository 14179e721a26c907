"""The liveness judge's two score thresholds, each calibrated on its own question.

    .venv/bin/python -m benchmarks.liveness_calibration [--out benchmarks/results/liveness_calibration.md]

- **Same face throughout a capture** (the identity check): the lowest similarity between the
  identity samples of a genuine capture (every window of 2, 3, 5 and 8 s, starting every 0.5 s,
  of every development clip as the capture page sends it; NUAA's live sessions) against the
  lowest of a capture whose face is swapped half-way (every ordered pair of clips, and of NUAA
  subjects, similar-looking East-Asian volunteers).
- **Passive PAD fusion**: per-frame P(live) of each family on the frames the judge samples
  (calm, frontal, detected) of the same genuine windows, NUAA live and print sessions (as
  captures) and frames, and the spoof-smoke replay crops per source; fusions compared by the
  smallest live margin and APCER on NUAA prints.
"""
from __future__ import annotations

import argparse
import itertools
import math
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from benchmarks._common import REPO, shared_dir, uptime

SHARED = shared_dir()
LENGTHS = (2.0, 3.0, 5.0, 8.0)
FUSIONS = {
    "min of family means (before)": lambda per: min(np.mean(v) for v in per.values()),
    "mean of family means": lambda per: float(np.mean([np.mean(v) for v in per.values()])),
    "mean of family medians": lambda per: float(np.mean([np.median(v) for v in per.values()])),
    "median over frames of the family mean": lambda per: float(np.median(np.mean(list(per.values()), axis=0))),
}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "liveness_calibration.md"))
    args = ap.parse_args()
    from benchmarks.liveness import load_clip
    from facegate.config import Settings
    from facegate.engine import FaceEngine
    from facegate.liveness.judge import FRONTAL_DEGREES, LivenessJudge
    from facegate.liveness.tracker import fill_pose
    from facegate.models.alignment import align_face

    settings = Settings.load(liveness_pad="auto")
    engine = FaceEngine.load(settings)
    judge = LivenessJudge.load(engine, settings)
    fams = judge.pad_models

    def face_of(img):
        from facegate.errors import FacegateError
        try:
            return engine.face(img, min_quality=None, min_face_px=0)
        except FacegateError:
            return None

    def frame_scores(bgr, obs):
        return {m.name: m.score(bgr, obs.box) for m in fams}

    # ---- per-frame material of every clip as the page sends it
    clips = {}
    for path in sorted((SHARED / "data" / "face-videos").glob("*.mp4")):
        cap = load_clip(path.stem)
        obs = judge.observe(cap)
        fill_pose(obs)
        det = [o for o in obs if o.detected and o.has_face]
        emb = np.asarray(engine.embedder.embed([align_face(cap.frames[o.index].bgr, o.landmarks5) for o in det]))
        calm = [o for o in obs if o.has_face and o.detected and abs(o.yaw) < FRONTAL_DEGREES and not o.both_eyes_closed]
        pad = {o.index: frame_scores(cap.frames[o.index].bgr, o) for o in calm}
        clips[path.stem] = {"t": np.array([o.t for o in det]), "emb": emb, "dur": cap.duration,
                            "calm": [(o.t, pad[o.index]) for o in calm]}
        print(f"{path.stem}: {len(obs)} frames, {len(det)} detected, {len(calm)} calm", file=sys.stderr, flush=True)

    def windows():
        for name, c in clips.items():
            for length in LENGTHS:
                for start in np.arange(0.0, max(c["dur"] - length, 0.0) + 1e-9, 0.5):
                    yield name, length, start, start + length

    def picks(items, n):
        return [items[int(i)] for i in np.linspace(0, len(items) - 1, min(n, len(items))).round()] if items else []

    def identity_min(embs):
        sims = embs @ embs.T
        return float(sims.min())

    lines = ["## Liveness calibration: the identity check and the passive fusion\n",
             f"Command: `.venv/bin/python -m benchmarks.liveness_calibration` ({uptime()}). Development clips as the "
             "capture page sends them (20 fps, 640 px, JPEG 85), tracked as the judge tracks.\n"]
    out = lines.append

    # ---- identity: genuine windows vs face swapped half-way
    genuine = []
    for name, length, a, b in windows():
        c = clips[name]
        sel = (c["t"] >= a) & (c["t"] < b)
        e = c["emb"][sel]
        if len(e) >= 2:
            genuine.append((identity_min(e[np.linspace(0, len(e) - 1, min(12, len(e))).round().astype(int)]),
                            name, length, a))
    swapped = []
    for x, y in itertools.permutations(clips, 2):
        ex, ey = clips[x]["emb"], clips[y]["emb"]
        ex, ey = ex[np.linspace(0, len(ex) - 1, 6).round().astype(int)], ey[np.linspace(0, len(ey) - 1, 6).round().astype(int)]
        swapped.append((identity_min(np.vstack([ex, ey])), x, y))
    nuaa = defaultdict(list)
    for p in sorted((SHARED / "data" / "nuaa" / "live").glob("*/*.jpg")):
        subject, _, _, session, _ = p.stem.split("_")
        face = face_of(cv2.imread(str(p)))
        if face is not None and face.embedding is not None:
            nuaa[(subject, session)].append(face.embedding)
    nuaa_genuine = [identity_min(np.asarray(v)) for v in nuaa.values() if len(v) >= 2]
    by_subject = defaultdict(list)
    for (subject, _), v in nuaa.items():
        by_subject[subject] += v
    nuaa_swapped = [identity_min(np.vstack([np.asarray(by_subject[x])[:6], np.asarray(by_subject[y])[:6]]))
                    for x, y in itertools.combinations(sorted(by_subject), 2)]
    g_all = [g[0] for g in genuine] + nuaa_genuine
    s_all = [s[0] for s in swapped] + nuaa_swapped
    worst = min(genuine)
    out("### Same face throughout a capture (identity check)\n")
    out(f"- genuine captures: {len(genuine)} clip windows (lowest {worst[0]:.3f}: {worst[1]} {worst[3]:g} s + "
        f"{worst[2]:g} s) and {len(nuaa_genuine)} NUAA live sessions (lowest {min(nuaa_genuine):.3f}); "
        f"percentiles of the lowest similarity: 1 % {np.percentile(g_all, 1):.3f}, 5 % {np.percentile(g_all, 5):.3f}, "
        f"median {np.median(g_all):.3f}")
    out(f"- face swapped half-way: {len(swapped)} clip pairs (highest {max(swapped)[0]:.3f}: {max(swapped)[1]} -> "
        f"{max(swapped)[2]}) and {len(nuaa_swapped)} NUAA subject pairs (highest {max(nuaa_swapped):.3f})")
    for thr in (0.25, 0.30, 0.334, 0.35, 0.40, 0.46):
        out(f"- at {thr:.3f}: genuine refused {sum(g < thr for g in g_all)}/{len(g_all)}, swaps accepted "
            f"{sum(s >= thr for s in s_all)}/{len(s_all)}")
    out("")

    # ---- passive fusion
    out("### Passive PAD fusion (threshold 0.5)\n")
    out("Per window the judge's 4 sampled calm frames, or 8; per NUAA session (13 frames of one "
        "subject, light and session) all its frames. Margin = the lowest live score minus 0.5.\n")
    nuaa_sessions = {"live": defaultdict(list), "print": defaultdict(list)}
    for kind in ("live", "print"):
        for p in sorted((SHARED / "data" / "nuaa" / kind).glob("*/*.jpg")):
            subject, _, _, session, _ = p.stem.split("_")
            img = cv2.imread(str(p))
            face = face_of(img)
            if face is None:
                continue
            nuaa_sessions[kind][(subject, session)].append({m.name: m.score(img, face.box) for m in fams})
    out("| fusion | frames | clip windows refused (BPCER, 95 % CI) | lowest live window | NUAA live sessions refused | "
        "NUAA print sessions accepted (APCER) | NUAA print frames accepted |")
    out("|---|---|---|---|---|---|---|")
    for fname, fuse in FUSIONS.items():
        for n in (4, 8):
            live = []
            for name, length, a, b in windows():
                calm = [s for t, s in clips[name]["calm"] if a <= t < b]
                if not calm:
                    continue
                chosen = picks(calm, n)
                live.append(fuse({m.name: [s[m.name] for s in chosen] for m in fams}))
            k = sum(v < 0.5 for v in live)
            lo, hi = wilson(k, len(live))
            nl = [fuse({m.name: [s[m.name] for s in v] for m in fams}) for v in nuaa_sessions["live"].values()]
            npr = [fuse({m.name: [s[m.name] for s in v] for m in fams}) for v in nuaa_sessions["print"].values()]
            frames_print = [fuse({m.name: [s[m.name]] for m in fams}) for v in nuaa_sessions["print"].values() for s in v]
            out(f"| {fname} | {n} | {k}/{len(live)} ({100 * lo:.1f}-{100 * hi:.1f} %) | {min(live):.3f} | "
                f"{sum(v < 0.5 for v in nl)}/{len(nl)} | {sum(v >= 0.5 for v in npr)}/{len(npr)} | "
                f"{sum(v >= 0.5 for v in frames_print)}/{len(frames_print)} |")
    per_family = {m.name: [s[m.name] for c in clips.values() for _, s in c["calm"]] for m in fams}
    out("\nPer family on every calm frame of the clips: " + "; ".join(
        f"{k}: {sum(v < 0.5 for v in vals)}/{len(vals)} frames under 0.5, 5th percentile {np.percentile(vals, 5):.3f}"
        for k, vals in per_family.items()) + ".\n")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
