"""The linear algebra of ivf_pq_refine's candidate stage, apart from its mechanics: how many
principal axes a sample needs, the fixed rotation of the scanned axes, and the cell centroids
as arrays. Functions of their arguments only.
"""
from __future__ import annotations

import math

import faiss
import numpy as np

REFINE_ROTATION_SEED = 20261126  # the random rotation of the scanned axes: fixed, builds are reproducible
ENERGY_SAMPLE = 200_000         # vectors the energy spectrum is taken from (x.T @ x costs n * d^2)


def _rotated_leading_axes(d_in: int, d_out: int) -> faiss.LinearTransform:
    """y = R z[:d_out]: the first ``d_out`` (highest-variance) PCA axes, turned by a fixed random
    rotation R so that every 2-D sub-space the PQ codes quantise carries the same variance
    (without it the first sub-quantisers get most of the energy and rank coarsely)."""
    rotation = np.linalg.qr(np.random.default_rng(REFINE_ROTATION_SEED).standard_normal((d_out, d_out)))[0]
    matrix = np.zeros((d_out, d_in), np.float32)
    matrix[:, :d_out] = rotation.T
    transform = faiss.LinearTransform(d_in, d_out, False)
    faiss.copy_array_to_vector(matrix.ravel(), transform.A)
    transform.is_trained = True
    return transform


def _energy_lost(sample: np.ndarray) -> np.ndarray:
    """``lost[i]``: the share of the sample's energy outside its first ``i + 1`` principal axes
    (uncentred projection)."""
    x = np.asarray(sample[:ENERGY_SAMPLE], dtype=np.float64)
    eig = np.linalg.eigvalsh(x.T @ x)[::-1]
    return 1.0 - np.cumsum(eig) / eig.sum()


def _dims_keeping(lost: np.ndarray, max_loss: float, multiple: int) -> int:
    """The fewest leading axes, a multiple of ``multiple`` (capped at the dimension), that keep
    all but ``max_loss`` of the energy (``lost`` from :func:`_energy_lost`)."""
    need = int(np.argmax(lost <= max_loss)) + 1
    return min(multiple * math.ceil(need / multiple), len(lost))


def _leading_dims(sample: np.ndarray, max_loss: float, multiple: int) -> int:
    """:func:`_dims_keeping` for one sample."""
    return _dims_keeping(_energy_lost(sample), max_loss, multiple)


def _centroids(index: faiss.IndexFlat) -> np.ndarray:
    """The vectors of a flat index (cell centroids), as a read-only view."""
    view = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
    view.flags.writeable = False
    return view
