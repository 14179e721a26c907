"""Decoding untrusted image uploads into BGR uint8 arrays.

Limits are checked on the header before any pixel is decoded, so a small file that claims to be
a 100,000 x 100,000 image (a decompression bomb) is refused cheaply.
"""
from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps

from facegate.errors import FacegateError

SUPPORTED_FORMATS = {"JPEG", "PNG", "WEBP", "BMP"}

_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
)


def sniff_format(data: bytes) -> str | None:
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_image(data: bytes, max_bytes: int = 15 * 1024 * 1024, max_pixels: int = 25_000_000) -> np.ndarray:
    """Decode JPEG/PNG/WebP/BMP bytes to an HxWx3 BGR uint8 array.

    EXIF orientation is applied; greyscale, palette, alpha and 16-bit images are converted.
    Raises FacegateError ``image_too_large`` or ``unsupported_image``.
    """
    return decode_reduced(data, max_bytes, max_pixels)[0]


def decode_reduced(data: bytes, max_bytes: int = 15 * 1024 * 1024, max_pixels: int = 25_000_000,
                   max_side: int | None = None) -> tuple[np.ndarray, float]:
    """:func:`decode_image`, where a JPEG whose long side is over ``max_side`` is decoded at a
    reduced scale by libjpeg itself (1/2, 1/4 or 1/8, never below ``max_side``): a 24 MP photo
    then costs a quarter of the memory and time. Returns the image and its scale (decoded
    pixels per pixel of the file, 1.0 when not reduced)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FacegateError("unsupported_image", "image data must be bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise FacegateError("image_too_large", f"image is {len(data)} bytes; the limit is {max_bytes}",
                            limit_bytes=max_bytes)
    fmt = sniff_format(data)
    if fmt is None:
        raise FacegateError("unsupported_image", "not a JPEG, PNG, WebP or BMP file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
            w, h = img.size
            if w <= 0 or h <= 0:
                raise FacegateError("unsupported_image", "image has no pixels")
            if w * h > max_pixels:
                raise FacegateError("image_too_large",
                                    f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}",
                                    limit_pixels=max_pixels)
            if fmt == "PNG" and img.mode in _DEEP_GREY:
                return _deep_grey_png(data), 1.0
            if max_side and fmt == "JPEG" and max(w, h) > max_side:
                img.draft("RGB", (max(1, w * max_side // max(w, h)), max(1, h * max_side // max(w, h))))
            img.load()
            scale = img.size[0] / w
            img = ImageOps.exif_transpose(img)
            return _to_bgr(img), scale
    except FacegateError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise FacegateError("image_too_large", "image exceeds the decoder's pixel limit")
    except Exception as exc:  # truncated or corrupt data: every decoder error is the caller's input
        raise FacegateError("unsupported_image", f"could not decode the {fmt} image: {type(exc).__name__}")


_DEEP_GREY = ("I;16", "I;16B", "I;16L", "I")


def _deep_grey_png(data: bytes) -> np.ndarray:
    """A 16-bit grey PNG, decoded by libpng straight to 8 bits row by row (its high byte, as
    :func:`_to_bgr` does): Pillow would hold the 32-bit image and numpy a copy of it, about
    eight times the pixels in bytes, before any conversion."""
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise FacegateError("unsupported_image", "could not decode the PNG image")
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def _to_bgr(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit (or 32-bit) grey to 8 bits in the image's own integer or float32 type: a float64
        # copy of a 24 MP image would cost 190 MB on its own.
        arr = np.asarray(img)
        if arr.dtype.kind == "f":
            grey = np.clip(arr, 0, 255).astype(np.uint8)
        elif int(arr.max(initial=0)) > 255:
            grey = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
        else:
            grey = np.clip(arr, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa"):
        # Transparent pixels become mid-grey rather than whatever colour hides under them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        img = Image.alpha_composite(background, rgba)
    rgb = np.asarray(img.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def read_image_file(path, **limits) -> np.ndarray:
    with open(path, "rb") as fh:
        return decode_image(fh.read(), **limits)


REFERENCE_SIDE = 400      # a reference photo's longer side, at most
REFERENCE_FACTOR = 2.0    # ... and how much of the photo around the face box it keeps


def face_crop_jpeg(bgr: np.ndarray, box, factor: float = REFERENCE_FACTOR, max_side: int = REFERENCE_SIDE,
                   quality: int = 90) -> tuple[bytes, int, int]:
    """The region ``factor`` times the face box (x1, y1, x2, y2 in ``bgr``'s pixels) around its
    centre, clipped to the image, scaled down to a longer side of at most ``max_side``, as JPEG:
    large enough for a person to judge and for a future model to detect and align again.
    Returns (jpeg, width, height)."""
    h, w = bgr.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) * factor / 2
    left, top = max(0, int(round(cx - half))), max(0, int(round(cy - half)))
    right, bottom = min(w, int(round(cx + half))), min(h, int(round(cy + half)))
    if right - left < 2 or bottom - top < 2:
        left, top, right, bottom = 0, 0, w, h
    crop = bgr[top:bottom, left:right]
    scale = min(1.0, max_side / max(crop.shape[:2]))
    if scale < 1.0:
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise FacegateError("unsupported_image", "the face crop could not be encoded")
    return buf.tobytes(), int(crop.shape[1]), int(crop.shape[0])
