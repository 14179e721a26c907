import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from facegate.errors import FacegateError
from facegate.images import decode_image


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _rgb(w=40, h=30):
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, :, 0] = 200          # red
    return Image.fromarray(arr)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_supported_formats_decode_to_bgr(fmt):
    out = decode_image(_encode(_rgb(), fmt))
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    assert out[..., 2].mean() > 150 and out[..., 0].mean() < 40      # red lands in channel 2 (BGR)


def test_exif_orientation_is_applied():
    img = _rgb(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6            # rotate 90 degrees clockwise on display
    out = decode_image(_encode(img, "JPEG", exif=exif.tobytes()))
    assert out.shape[:2] == (40, 30)


def test_greyscale_alpha_and_16_bit_are_converted():
    grey = decode_image(_encode(Image.new("L", (8, 6), 77), "PNG"))
    assert grey.shape == (6, 8, 3) and (grey == 77).all()
    rgba = Image.new("RGBA", (8, 6), (255, 0, 0, 0))                  # fully transparent red
    out = decode_image(_encode(rgba, "PNG"))
    assert out.shape == (6, 8, 3) and (out == 128).all()               # composited on grey
    sixteen = Image.fromarray(np.full((6, 8), 65535, np.uint16))
    out = decode_image(_encode(sixteen, "PNG"))
    assert out.shape == (6, 8, 3) and (out == 255).all()


@pytest.mark.parametrize("data", [b"", b"hello world", b"GIF89a" + b"\0" * 20, b"\xff\xd8\xff" + b"\0" * 50])
def test_garbage_and_truncated_data_is_unsupported_image(data):
    with pytest.raises(FacegateError) as err:
        decode_image(data)
    assert err.value.code == "unsupported_image"


def test_truncated_jpeg_is_unsupported_image():
    data = _encode(_rgb(400, 300), "JPEG")
    with pytest.raises(FacegateError) as err:
        decode_image(data[: len(data) // 3])
    assert err.value.code == "unsupported_image"


def test_byte_limit():
    with pytest.raises(FacegateError) as err:
        decode_image(_encode(_rgb(), "BMP"), max_bytes=100)
    assert err.value.code == "image_too_large" and err.value.status == 413


def test_decompression_bomb_is_refused_before_decoding():
    # a valid PNG header claiming 50,000 x 50,000 pixels, followed by almost nothing
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    with pytest.raises(FacegateError) as err:
        decode_image(png)
    assert err.value.code == "image_too_large"
