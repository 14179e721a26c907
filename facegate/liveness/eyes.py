"""Eye state (``fr_eye``): a 24x24 greyscale patch around each eye (located by the 68 points),
/255; output index 1 = open. Only "both eyes closed" is used: one eye alone often reads closed
for a whole clip."""
from __future__ import annotations

import numpy as np

from facegate.liveness.crops import crop_padded
from facegate.liveness.landmarks import EYE_A, EYE_B

# patch side = this many eye widths (corner to corner), centred on the eye's points; 1.3 gave
# cleaner blinks than 1.6 (a fast blink behind glasses in d19 read closed on 3 frames, not 1)
EYE_PATCH_SCALE = 1.3


class EyeStateClassifier:
    def __init__(self, session):
        self.session = session
        self.input = session.get_inputs()[0].name

    def patch_box(self, eye: np.ndarray) -> np.ndarray:
        c = eye.mean(axis=0)
        side = np.linalg.norm(eye[0] - eye[3]) * EYE_PATCH_SCALE
        return np.array([c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2])

    def open_probabilities(self, grey: np.ndarray, pts68: np.ndarray) -> tuple[float, float]:
        """P(open) for the two eyes (image left, image right)."""
        patches = [crop_padded(grey, self.patch_box(pts68[s]), (24, 24)) for s in (EYE_A, EYE_B)]
        out = []
        for p in patches:
            logits = self.session.run(None, {self.input: (p.astype(np.float32) / 255.0)[None, None]})[0][0]
            out.append(float(_as_probability(logits)[1]))
        return out[0], out[1]


def _as_probability(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if v.min() >= 0 and abs(v.sum() - 1) < 1e-3:
        return v
    e = np.exp(v - v.max())
    return e / e.sum()
