"""Passive presentation-attack detection (PAD): one face crop in, P(live) out.

Two families, both pluggable through model packs:
- ``fr_liveness`` (default pack, MiniFASNetV1SE-style at 128x128): the face box scaled 2.7x,
  raw 0..255 **BGR**, softmax index 0 = live.
- MiniFASNetV2 (scale 2.7) + MiniFASNetV1SE (scale 4.0) from the ``minifasnet`` pack built by
  ``facegate liveness build-pad``: 80x80 raw BGR, softmax class 1 = real; the two networks'
  softmax outputs are averaged as in the original demo.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facegate.liveness.crops import shifted_inside_crop


def softmax(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class FrLivenessPAD:
    """The npm package's ``fr_liveness.onnx``."""

    name = "fr_liveness"
    crop_scale = 2.7
    size = 128
    live_index = 0

    def __init__(self, session):
        self.session = session
        self.input = session.get_inputs()[0].name

    def score(self, bgr: np.ndarray, box) -> float:
        crop = shifted_inside_crop(bgr, box, self.crop_scale, (self.size, self.size))
        x = crop.astype(np.float32).transpose(2, 0, 1)[None]
        return float(softmax(self.session.run(None, {self.input: x})[0][0])[self.live_index])


class MiniFASNetPAD:
    """MiniFASNetV2 + V1SE, averaged softmax, class 1 = real."""

    name = "minifasnet"
    size = 80
    live_index = 1

    def __init__(self, sessions_and_scales: list[tuple[object, float]]):
        self.nets = [(s, s.get_inputs()[0].name, scale) for s, scale in sessions_and_scales]

    def score(self, bgr: np.ndarray, box) -> float:
        probs = []
        for sess, inp, scale in self.nets:
            crop = shifted_inside_crop(bgr, box, scale, (self.size, self.size))
            x = crop.astype(np.float32).transpose(2, 0, 1)[None]
            probs.append(softmax(sess.run(None, {inp: x})[0][0]))
        return float(np.mean(probs, axis=0)[self.live_index])


def load_pad_models(settings, default_pack) -> list:
    """The PAD models named by ``settings.liveness_pad`` that are installed.

    ``auto`` = every installed family; ``none`` = no passive PAD (results then say
    "passive: unavailable"). A family named explicitly but missing raises ``model_unavailable``.
    """
    from facegate.errors import FacegateError
    from facegate.models.pack import load_pack
    from facegate.models.runtime import open_model

    wanted = [w.strip() for w in (settings.liveness_pad or "auto").split(",") if w.strip()]
    if wanted == ["none"]:
        return []
    auto = wanted == ["auto"]
    models = []

    def session(pack, name):
        return open_model(pack.verified_path(name), settings)

    if auto or "fr_liveness" in wanted:
        if default_pack.has("fr_liveness"):
            models.append(FrLivenessPAD(session(default_pack, "fr_liveness")))
        elif not auto:
            raise FacegateError("model_unavailable", "fr_liveness is not in the model pack")
    if auto or "minifasnet" in wanted:
        from facegate.liveness.minifasnet import PACK_NAME
        mf = Path(settings.model_dir).expanduser() / PACK_NAME / "manifest.json"
        if mf.exists():
            pack = load_pack(settings.model_dir, PACK_NAME)
            nets = [(session(pack, m["name"]), float(m["crop_scale"])) for m in json.loads(mf.read_text())["models"]]
            models.append(MiniFASNetPAD(nets))
        elif not auto:
            raise FacegateError("model_unavailable",
                                "the minifasnet pack is not installed; run `facegate liveness build-pad --weights DIR`")
    return models
