"""From a model pack to its detector and embedder: one entry per manifest ``kind``.

    detector, embedder = build(load_pack(settings.model_dir, settings.pack), settings)

Adding a pack kind means a module with a ``build(pack, settings)`` and one line in ``BUILDERS``.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from facegate.errors import FacegateError
from facegate.models import fast_path, insightface, mtcnn
from facegate.models.arcface import ArcFaceStyleEmbedder, pixels
from facegate.models.base import Detector, Embedder
from facegate.models.runtime import open_model
from facegate.models.pack import ModelPack


def _facegate_detector(pack: ModelPack, settings) -> Detector:
    """YuNet's boxes with MTCNN's O-Net landmarks (full MTCNN when YuNet finds nothing; plain
    MTCNN on a pack built before YuNet joined it)."""
    detector: Detector = mtcnn.load(pack, settings)
    if pack.has("yunet"):
        detector = fast_path.load(pack, settings, detector)
    return detector


def _embedder(pack: ModelPack, settings, name: str, how: dict) -> ArcFaceStyleEmbedder:
    """An embedder where the runtime seam places it (the gate faces scaled as the model wants them)."""
    session = open_model(pack.verified_path(name), settings, partial(pixels, **how))
    return ArcFaceStyleEmbedder(session, **how)


def _facegate(pack: ModelPack, settings) -> tuple[Detector, Embedder]:
    """The default pack: its detector, and the MobileFaceNet embedder on BGR (p - 127) / 128."""
    return _facegate_detector(pack, settings), _embedder(pack, settings, "fr_feature",
                                                         {"mean": 127.0, "std": 128.0, "swap_rb": False})


BUILDERS: dict[str, Callable[[ModelPack, object], tuple[Detector, Embedder]]] = {
    "facegate": _facegate,
    "insightface": insightface.build,
}


# A pack's second-opinion embedders (name in the pack -> how it wants its pixels): the 1:N
# shortlist is rescored with the mean of the main and the second model's cosines.
SECOND_OPINIONS: dict[str, dict] = {
    "sface": {"mean": 0.0, "std": 1.0, "swap_rb": True},      # OpenCV zoo SFace 2021dec: RGB 0..255
}


def second_opinion(pack: ModelPack, settings) -> tuple[str, Embedder] | tuple[None, None]:
    """(model name, embedder) of the pack's second opinion, or (None, None) when the pack has none
    or ``settings.second_opinion`` is off."""
    if not getattr(settings, "second_opinion", False) or pack.manifest.get("kind", "facegate") != "facegate":
        return None, None
    for name, how in SECOND_OPINIONS.items():
        if pack.has(name):
            return name, _embedder(pack, settings, name, how)
    return None, None


def _kind(pack: ModelPack) -> str:
    kind = pack.manifest.get("kind", "facegate")
    if kind not in BUILDERS:
        raise FacegateError("model_unavailable", f"pack {pack.path} is of kind {kind!r}; this facegate knows "
                            f"{', '.join(sorted(BUILDERS))}")
    return kind


def build(pack: ModelPack, settings) -> tuple[Detector, Embedder]:
    return BUILDERS[_kind(pack)](pack, settings)


def build_detector(pack: ModelPack, settings) -> Detector:
    """The pack's detector alone (e.g. a second instance with other thread settings)."""
    kind = _kind(pack)
    if kind == "facegate":
        return _facegate_detector(pack, settings)
    return BUILDERS[kind](pack, settings)[0]
