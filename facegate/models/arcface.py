"""Face embedders: aligned 112x112 BGR crops in, L2-normalised vectors out."""
from __future__ import annotations

import numpy as np


def pixels(bgr_nchw: np.ndarray, mean: float, std: float, swap_rb: bool) -> np.ndarray:
    arr = bgr_nchw[:, ::-1] if swap_rb else bgr_nchw
    return np.ascontiguousarray((arr - mean) / std, dtype=np.float32)


class ArcFaceStyleEmbedder:
    """An ArcFace-style ONNX embedder: NCHW input, (pixel - mean) / std, one embedding output.

    The default pack's MobileFaceNet wants BGR and (p - 127) / 128; insightface-style packs want
    RGB and (p - 127.5) / 127.5. Both are this class with different settings.
    """

    def __init__(self, session, mean: float = 127.0, std: float = 128.0, swap_rb: bool = False,
                 max_batch: int = 32):
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = session.get_outputs()[0].name
        self.input_size = int(inp.shape[2]) if isinstance(inp.shape[2], int) else 112
        batch = inp.shape[0]
        self.max_batch = max_batch if not isinstance(batch, int) else 1
        self.mean, self.std, self.swap_rb = mean, std, swap_rb
        self.dim = int(session.get_outputs()[0].shape[-1])

    def _blob(self, crops: list[np.ndarray]) -> np.ndarray:
        arr = np.stack(crops).astype(np.float32)
        return self.pixels(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))

    def pixels(self, bgr_nchw: np.ndarray) -> np.ndarray:
        """BGR crops as float NCHW -> what the model wants (colour order, scaling)."""
        return pixels(bgr_nchw, self.mean, self.std, self.swap_rb)

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """Embeddings (N x dim, float32, unit length) for aligned BGR crops."""
        if not crops:
            return np.empty((0, self.dim), dtype=np.float32)
        out = []
        for i in range(0, len(crops), self.max_batch):
            blob = self._blob(crops[i:i + self.max_batch])
            out.append(self.session.run([self.output_name], {self.input_name: blob})[0])
        emb = np.concatenate(out).astype(np.float32)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb
