"""Similarity of face embeddings: the one place cosine is computed."""
from __future__ import annotations

import numpy as np


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings."""
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def unit64(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def exact_scores(templates: list[np.ndarray], probe: np.ndarray) -> np.ndarray:
    """Cosine of the probe with each stored template, one dot product per template in float64:
    the same numbers whether a template is scored by 1:1 or inside a 1:N candidate list."""
    q = unit64(probe)
    return np.array([float(np.dot(np.asarray(t, dtype=np.float64), q)) for t in templates])
