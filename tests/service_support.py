"""Support for the service tests: a real ``facegate serve`` on loopback and test images.

The server runs as a subprocess on a free port with its own temporary data directory; keys are
made with the real CLI (``facegate keys create``) before it starts.
"""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parent.parent
FACEGATE = [sys.executable, "-m", "facegate"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*FACEGATE, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"facegate {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return proc


def create_key(env: dict, role: str, *extra: str) -> dict:
    return json.loads(cli(env, "keys", "create", "--role", role, "--json", *extra).stdout)


class Server:
    """``facegate serve`` in a subprocess; ``url`` is its base address."""

    def __init__(self, data_dir: Path, workers: int = 1, **settings):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "FACEGATE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1",
                    **{f"FACEGATE_{k.upper()}": str(v) for k, v in settings.items()}}
        self.env.pop("FACEGATE_DATABASE_URL", None)
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(data_dir) / "server.log"

    def start(self, timeout: float = 90) -> "Server":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([*FACEGATE, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--workers", str(self.workers), "--log-level", "warning"],
                                     env=self.env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready within {timeout}s: {self.log()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()


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
