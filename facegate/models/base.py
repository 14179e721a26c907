"""The written contract between the engine and its models: what a detector and an embedder are.

A new model kind implements one of these protocols in its own module and adds one entry to
:mod:`facegate.models.registry`; nothing above the models layer changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class Detection:
    box: np.ndarray        # x1, y1, x2, y2 (float, pixels)
    score: float
    landmarks: np.ndarray  # 5 x 2: left eye, right eye, nose, mouth left, mouth right (image left/right)


class Detector(Protocol):
    """Finds faces with the five landmarks the aligner needs."""

    smallest_face: int     # side (px) of the smallest face it can find; images smaller than this hold none

    def detect(self, bgr: np.ndarray, min_face: int = 20) -> list[Detection]:
        """Faces of at least ``min_face`` px in an HxWx3 uint8 BGR image, best score first."""
        ...


class Embedder(Protocol):
    """Turns aligned 112x112 BGR face crops into unit-length vectors compared by cosine."""

    dim: int

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """N x dim float32 unit vectors for N aligned crops (an empty N x dim array for none)."""
        ...
