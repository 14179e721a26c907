"""Files at rest sealed with the data key: AES-256-GCM in independent chunks, streamed.

Biometric data never rests in clear, and the index snapshot holds every template (or its codes):
it is written through :class:`SealedWriter` and read back through :class:`SealedReader`, which
seeks like a plain file (the snapshot reader checks its trailer first), decrypting one chunk at
a time, so neither side holds the file in memory twice nor writes plaintext anywhere.

Layout: ``MAGIC``, the header's length (uint16), the header (UTF-8 JSON ``{"key_id",
"chunk"}``), then chunks of ``chunk`` plaintext bytes (the last one shorter, possibly empty),
each ``nonce (12) || ciphertext || tag (16)``. A chunk's associated data is the header plus its
index and whether it is the last, so chunks cannot be reordered, dropped, or the file cut at a
chunk boundary without the decryption failing.
"""
from __future__ import annotations

import io
import json
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag

from facegate.errors import FacegateError
from facegate.storage.datakeys import NONCE_BYTES, DataKeys
from facegate.storage.private import replaced_atomically

MAGIC = b"FGSEAL01"
CHUNK = 1 << 20          # plaintext bytes per chunk: a seek decrypts at most this much
_TAG = 16
_HEADER_LENGTH = struct.Struct("<H")
_CHUNK_AAD = struct.Struct("<QB")


def is_sealed(path: str | Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


class SealedWriter(io.RawIOBase):
    """Encrypts what is written into ``raw`` under the current data key; :meth:`close` writes
    the last chunk (the underlying file stays open: the caller flushes, syncs and closes it)."""

    def __init__(self, raw, keys: DataKeys, chunk: int = CHUNK):
        super().__init__()
        self._raw, self._keys, self._chunk = raw, keys, chunk
        self._key_id = keys.current_id
        header = json.dumps({"key_id": self._key_id, "chunk": chunk}).encode()
        self._header = MAGIC + _HEADER_LENGTH.pack(len(header)) + header
        raw.write(self._header)
        self._buf = bytearray()
        self._index = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._buf += memoryview(data).cast("B")
        while len(self._buf) > self._chunk:      # keep >= 1 byte back: the last chunk is written by close
            self._seal(bytes(self._buf[:self._chunk]), last=False)
            del self._buf[:self._chunk]
        return len(memoryview(data).cast("B"))

    def _seal(self, plain: bytes, last: bool) -> None:
        aad = self._header + _CHUNK_AAD.pack(self._index, last)
        blob, _ = self._keys.encrypt(plain, aad, kid=self._key_id)
        self._raw.write(blob)
        self._index += 1

    def close(self) -> None:
        if not self.closed:
            self._seal(bytes(self._buf), last=True)
            self._buf.clear()
        super().close()


class SealedReader(io.RawIOBase):
    """Decrypts a sealed file opened as ``raw`` (binary, seekable), one chunk at a time."""

    def __init__(self, raw, keys: DataKeys, name: str = "sealed file"):
        super().__init__()
        self._raw, self._keys, self._name = raw, keys, name
        head = raw.read(len(MAGIC) + _HEADER_LENGTH.size)
        if len(head) < len(MAGIC) + _HEADER_LENGTH.size or head[:len(MAGIC)] != MAGIC:
            raise FacegateError("data_key_unavailable", f"{name} is not a sealed facegate file")
        (hlen,) = _HEADER_LENGTH.unpack(head[len(MAGIC):])
        header = raw.read(hlen)
        try:
            meta = json.loads(header)
            self.key_id, self._chunk = str(meta["key_id"]), int(meta["chunk"])
        except (ValueError, KeyError, TypeError):
            raise FacegateError("data_key_unavailable", f"{name}: damaged header") from None
        self._header = head + header
        body = raw.seek(0, io.SEEK_END) - len(self._header)
        sealed = self._chunk + NONCE_BYTES + _TAG
        self._chunks = max(1, -(-body // sealed))
        last = body - (self._chunks - 1) * sealed - NONCE_BYTES - _TAG
        if last < 0:
            raise FacegateError("data_key_unavailable", f"{name} is truncated")
        self.size = (self._chunks - 1) * self._chunk + last
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def _plain(self, index: int) -> bytes:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        sealed = self._chunk + NONCE_BYTES + _TAG
        self._raw.seek(len(self._header) + index * sealed)
        blob = self._raw.read(sealed)
        aad = self._header + _CHUNK_AAD.pack(index, index == self._chunks - 1)
        try:
            plain = self._keys.decrypt(blob, self.key_id, aad)
        except InvalidTag:
            raise FacegateError("data_key_unavailable", f"{self._name}: chunk {index} does not decrypt") from None
        self._cached = (index, plain)
        return plain

    def readinto(self, buffer) -> int:
        out = memoryview(buffer).cast("B")
        done = 0
        while done < len(out) and self._pos < self.size:
            index, within = divmod(self._pos, self._chunk)
            plain = self._plain(index)
            n = min(len(out) - done, len(plain) - within)
            out[done:done + n] = plain[within:within + n]
            done += n
            self._pos += n
        return done


def reseal(path: str | Path, keys: DataKeys) -> bool:
    """Re-encrypt a sealed file under the current data key (atomically); False when it already is."""
    path = Path(path)
    with open(path, "rb") as raw:
        reader = SealedReader(raw, keys, str(path))
        if reader.key_id == keys.current_id:
            return False
        with replaced_atomically(path) as out:
            writer = SealedWriter(out, keys)
            while chunk := reader.read(CHUNK):
                writer.write(chunk)
            writer.close()
    return True
