"""Support for the service tests: a real ``facegate serve`` on loopback and test images.

The server runs as a subprocess on a free port with its own temporary data directory; keys are
made with the real CLI (``facegate keys create``) before it starts. The harness is the
benchmarks' (``benchmarks/_common.py``), so that tests and load benchmarks start the server the
same way.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from benchmarks._common import FACEGATE, REPO, ServerProcess, cli, create_key, free_port

__all__ = ["FACEGATE", "REPO", "Server", "cli", "create_key", "free_port", "encode", "gradient_png", "side_by_side",
           "shrunk", "blurred", "chip_photo", "png_with_size"]

Server = ServerProcess
"""``facegate serve`` in a subprocess; ``url`` is its base address (see :class:`ServerProcess`)."""


# ------------------------------------------------------------------ images
def encode(img: Image.Image, fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return out.getvalue()


def gradient_png(w: int = 320, h: int = 240) -> bytes:
    """A synthetic image without a face."""
    g = np.tile(np.linspace(0, 255, w)[None, :, None], (h, 1, 3)).astype(np.uint8)
    g[:, :, 1] = np.linspace(40, 200, h)[:, None].astype(np.uint8)
    return encode(Image.fromarray(g), "PNG")


def side_by_side(a: bytes, b: bytes) -> bytes:
    """The central face crops of two LFW photos pasted next to each other: two faces."""
    ia = Image.open(io.BytesIO(a)).convert("RGB").crop((50, 40, 200, 210))
    ib = Image.open(io.BytesIO(b)).convert("RGB").crop((50, 40, 200, 210))
    canvas = Image.new("RGB", (300, 170))
    canvas.paste(ia, (0, 0))
    canvas.paste(ib, (150, 0))
    return encode(canvas)


def shrunk(photo: bytes, size: int = 60) -> bytes:
    """An LFW photo scaled down so the face is ~20 px: face_too_small."""
    return encode(Image.open(io.BytesIO(photo)).convert("RGB").resize((size, size)))


def blurred(photo: bytes, radius: float = 4) -> bytes:
    """A heavily blurred photo: the face is found but its quality is too low."""
    return encode(Image.open(io.BytesIO(photo)).convert("RGB").filter(ImageFilter.GaussianBlur(radius)))


def chip_photo(photo: bytes) -> bytes:
    """An ID-card chip style portrait: the head cropped and scaled to 102x126 px."""
    return encode(Image.open(io.BytesIO(photo)).convert("RGB").crop((40, 20, 210, 230)).resize((102, 126)), "JPEG")


def png_with_size(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
