"""Judging one liveness capture against its challenge: tracking, actions in order, identity
consistency, capture checks and passive PAD, fused into one result with machine-readable reasons.

    judge = LivenessJudge.load(engine, settings)
    result = judge.judge(["blink", "turn_left"], capture)
    result["live"], result["reasons"], result["embedding"]
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from facegate.liveness.actions import match_challenge
from facegate.liveness.capture import Capture, capture_checks
from facegate.liveness.eyes import EyeStateClassifier
from facegate.liveness.landmark_box import LandmarkBox
from facegate.liveness.landmarks import Landmarker68
from facegate.liveness.pad import load_pad_models
from facegate.liveness.pose import HeadPoseEstimator
from facegate.liveness.tracker import FaceTracker, FrameObservation, fill_pose
from facegate.models.alignment import align_face
from facegate.models.runtime import open_model
from facegate.models.registry import build_detector

MIN_FACE_FRACTION = 0.8           # of frames in which the one face must be found
MAX_MULTI_FACE_FRAMES = 2
MAX_IDENTITY_SAMPLES = 12
FRONTAL_DEGREES = 20.0
# A jump of the face box centre by more than this many box widths between neighbouring frames
# (less than 0.2 s apart) is a cut, not a movement.
MAX_BOX_JUMP = 0.5
PASSIVE_UNAVAILABLE = "passive: unavailable"


class Observations(list):
    """A capture's frame observations (the list) with ``differences``: per frame, the mean
    |difference| of its face region from the frame before (None after a frame without a face)."""

    def __init__(self, observations: list[FrameObservation], differences: list[float | None]):
        super().__init__(observations)
        self.differences = differences

    @classmethod
    def of(cls, observations: list[FrameObservation]) -> "Observations":
        return cls(observations, [o.difference for o in observations])


class LivenessJudge:
    def __init__(self, engine, settings, tracker: FaceTracker, pad_models: list):
        self.engine = engine
        self.settings = settings
        self.tracker = tracker
        self.pad_models = pad_models

    @classmethod
    def load(cls, engine, settings=None) -> "LivenessJudge":
        settings = settings or engine.settings

        # One capture's frames are one request's work: the tracker's models run on one thread each
        # (concurrent captures use the cores), with a detector of their own.
        threads = dataclasses.replace(settings, intra_op_threads=settings.liveness_intra_op_threads)
        detector = build_detector(engine.pack, threads)

        def session(name):
            return open_model(engine.pack.verified_path(name), threads)

        tracker = FaceTracker(detector, Landmarker68(session("fr_landmark")),
                              EyeStateClassifier(session("fr_eye")), HeadPoseEstimator(session("fr_pose")),
                              LandmarkBox.shipped(), detect_side=settings.liveness_detect_side,
                              detect_every=settings.liveness_detect_every, pose_every=settings.liveness_pose_every,
                              pose_every_moving=settings.liveness_pose_every_moving)
        return cls(engine, settings, tracker, load_pad_models(settings, engine.pack))

    @property
    def passive_status(self) -> str:
        return ",".join(m.name for m in self.pad_models) if self.pad_models else PASSIVE_UNAVAILABLE

    # ---------------------------------------------------------------- pieces
    def observe(self, capture: Capture) -> "Observations":
        """Every frame's observation (each frame decoded once), the whole capture in one pass."""
        return Observations.of(self.tracker.observe_all((f.t, f.bgr) for f in capture.frames))

    def _embed(self, capture: Capture, picks: list[FrameObservation]) -> np.ndarray:
        aligned = [align_face(capture.frames[o.index].bgr, o.landmarks5) for o in picks]
        return np.asarray(self.engine.embedder.embed(aligned))

    def identity(self, capture: Capture, faced: list[FrameObservation], actions: list[dict]) -> dict:
        """Embeddings on evenly spaced frames plus the frames at each detected action's edges."""
        faced = [o for o in faced if o.detected] or faced
        step = max(1, int(np.ceil(len(faced) / MAX_IDENTITY_SAMPLES)))
        picks = {o.index: o for o in faced[::step]}
        for a in actions:
            for key in ("start", "end"):
                if a.get(key) is not None:
                    o = min(faced, key=lambda f: abs(f.t - a[key]))
                    picks[o.index] = o
        picks = [picks[i] for i in sorted(picks)]
        emb = self._embed(capture, picks)
        sims = emb @ emb.T
        worst = float(sims.min())
        frontal = [i for i, o in enumerate(picks) if abs(o.yaw) < FRONTAL_DEGREES] or list(range(len(picks)))
        mean = emb[frontal].mean(axis=0)
        limit = self.settings.liveness_identity_threshold
        return {"samples": len(picks), "min_similarity": round(worst, 4), "threshold": limit,
                "consistent": worst >= limit,
                "embedding": (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)}

    def passive(self, capture: Capture, faced: list[FrameObservation]) -> dict:
        if not self.pad_models:
            return {"available": False, "status": PASSIVE_UNAVAILABLE}
        calm = [o for o in faced if abs(o.yaw) < FRONTAL_DEGREES and not o.both_eyes_closed and o.detected] or faced
        n = min(self.settings.liveness_pad_frames, len(calm))
        picks = [calm[int(i)] for i in np.linspace(0, len(calm) - 1, n).round()] if n else []
        per_model, per_frame = {}, {o.index: {} for o in picks}
        for m in self.pad_models:
            values = [float(m.score(capture.frames[o.index].bgr, o.box)) for o in picks]
            for o, v in zip(picks, values):
                per_frame[o.index][m.name] = round(v, 4)
            per_model[m.name] = round(float(np.median(values)), 4)
        # Neither one family nor one frame decides alone: each family's median over the sampled
        # frames, averaged over the families (benchmarks/results/liveness_calibration.md).
        score = float(np.mean(list(per_model.values()))) if per_model else 0.0
        return {"available": True, "status": "ok", "score": round(score, 4), "models": per_model,
                "threshold": self.settings.liveness_pad_threshold,
                "frames": [round(o.t, 3) for o in picks], "live": score >= self.settings.liveness_pad_threshold,
                "per_frame": [{"index": o.index, "t": round(o.t, 3), "yaw": round(float(o.yaw), 1),
                               "pad": per_frame[o.index]} for o in picks]}

    # ---------------------------------------------------------------- the verdict
    def judge(self, challenge: list[str], capture: Capture, observations: "Observations | None" = None) -> dict:
        """The verdict on ``capture`` for ``challenge``; ``observations`` (from :meth:`observe` on
        the same capture) may be passed to judge several challenges on one capture."""
        t0 = time.perf_counter()
        reasons: list[str] = []
        if len(capture.frames) < 2:
            return self._result(challenge, ["too_few_frames"], [], {"frames": len(capture.frames)},
                                None, {"available": bool(self.pad_models), "status": "not_run"}, t0, {})
        obs = observations if observations is not None else self.observe(capture)
        fill_pose(obs)
        t1 = time.perf_counter()
        faced = [o for o in obs if o.has_face]
        cap_reasons, cap = capture_checks(capture, obs, obs.differences)
        reasons += cap_reasons
        cap["face_frames"] = len(faced)
        if not faced:
            return self._result(challenge, reasons + ["no_face"], [], cap, None,
                                {"available": bool(self.pad_models), "status": "not_run"}, t0, {"track": t1 - t0})
        if len(faced) < MIN_FACE_FRACTION * len(obs):
            reasons.append("face_not_tracked")
        if sum(o.faces > 1 for o in obs if o.detected) > MAX_MULTI_FACE_FRAMES:
            reasons.append("multiple_faces")
        if _has_cut(faced):
            reasons.append("face_discontinuity")
        actions = match_challenge(challenge, obs)
        reasons += [f"action_not_detected:{a['action']}" for a in actions if not a["detected"]]
        t2 = time.perf_counter()
        ident = self.identity(capture, faced, actions)
        if not ident["consistent"]:
            reasons.append("identity_changed")
        t3 = time.perf_counter()
        passive = self.passive(capture, faced)
        if not passive["available"]:
            if self.settings.liveness_require_passive:
                reasons.append("passive_unavailable")
        elif not passive["live"]:
            reasons.append("passive_spoof_suspected")
        t4 = time.perf_counter()
        return self._result(challenge, reasons, actions, cap, ident, passive, t0,
                            {"track": t1 - t0, "actions": t2 - t1, "identity": t3 - t2, "passive": t4 - t3})

    def _result(self, challenge, reasons, actions, cap, ident, passive, t0, stages) -> dict:
        live = not reasons
        if live:
            score = passive.get("score", 1.0) if passive.get("available") else 1.0
        else:
            score = 0.0
        out = {
            "live": live,
            "score": round(float(score), 4),
            "challenge": list(challenge),
            "actions": actions,
            "passive": passive,
            "capture": cap,
            "reasons": sorted(set(reasons), key=reasons.index),
            "timing_ms": {k: round(1000 * v, 1) for k, v in stages.items()} | {"total": round(1000 * (time.perf_counter() - t0), 1)},
        }
        if ident is not None:
            out["identity"] = {k: v for k, v in ident.items() if k != "embedding"}
            out["embedding"] = ident["embedding"]
        else:
            out["embedding"] = None
        return out


def _has_cut(faced: list[FrameObservation]) -> bool:
    for a, b in zip(faced, faced[1:]):
        if b.t - a.t > 0.2:
            continue
        width = max(a.box[2] - a.box[0], 1.0)
        ca = (a.box[:2] + a.box[2:]) / 2
        cb = (b.box[:2] + b.box[2:]) / 2
        size_ratio = (b.box[2] - b.box[0]) / width
        if np.linalg.norm(cb - ca) > MAX_BOX_JUMP * width or not 0.67 < size_ratio < 1.5:
            return True
    return False
