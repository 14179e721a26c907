"""Data keys: AES-256-GCM encryption of templates (and optional photos) at rest.

Where the keys come from, first match wins:

1. ``FACEGATE_DATA_KEY``: base64 keys separated by commas, the first one current;
2. ``FACEGATE_DATA_KEY_FILE``: a file with one base64 key per line, the first one current;
3. ``$FACEGATE_DATA_DIR/data.key``, created (mode 0600) with a fresh random key on first use.

The current key encrypts; every listed key decrypts. A key's id is ``dk_`` + 12 hex digits of
a hash of the key, stored beside each ciphertext, so rows name the key they need. Rotation
(:meth:`DataKeys.rotate`) puts a new key first and keeps the old ones until every row has been
re-encrypted (see ``Store.rotate_data_key``); then :meth:`DataKeys.retire` moves them to
``<key file>.retired``. Keep the key file apart from database backups and exports.

A ciphertext is ``nonce (12 bytes) || AES-GCM(ciphertext || tag)``; the associated data binds
it to its subject and model pack, so a template moved to another subject fails to decrypt.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import json
import os
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from facegate.config import Settings
from facegate.errors import FacegateError
from facegate.storage.private import private_dir

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
DEFAULT_KEY_FILE = "data.key"
REFRESH_S = 1.0          # how often a long-running process re-reads the key file for rotations


def key_id(key: bytes) -> str:
    return "dk_" + hashlib.sha256(b"facegate-data-key\0" + key).hexdigest()[:12]


def _parse(text: str, where: str) -> list[bytes]:
    keys = []
    lines = [ln.strip() for ln in text.splitlines() if not ln.strip().startswith("#")]
    for part in (p.strip() for ln in lines for p in ln.split(",")):
        if not part:
            continue
        try:
            key = base64.b64decode(part, validate=True)
        except ValueError:
            raise FacegateError("data_key_unavailable", f"{where}: not base64") from None
        if len(key) != KEY_BYTES:
            raise FacegateError("data_key_unavailable", f"{where}: a data key must be {KEY_BYTES} bytes "
                                f"(base64 of 32 random bytes), got {len(key)}")
        keys.append(key)
    if not keys:
        raise FacegateError("data_key_unavailable", f"{where}: no key found")
    return keys


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _format(keys: list[bytes]) -> str:
    lines = ["# facegate data keys: the first is current, the others only decrypt. Keep this file secret",
             "# and back it up apart from the database and exports: without it templates are unreadable."]
    return "\n".join(lines + [base64.b64encode(k).decode() for k in keys]) + "\n"


class DataKeys:
    """The keyring: ``encrypt`` with the current key, ``decrypt`` with the key a row names."""

    def __init__(self, keys: list[bytes], source: str, path: Path | None = None):
        self.source = source          # "env", "file" or "created"
        self.path = path
        self._set(keys)

    def _set(self, keys: list[bytes]) -> None:
        self._keys = {key_id(k): AESGCM(k) for k in keys}
        self._order = [key_id(k) for k in keys]
        self._raw = list(keys)
        self._mtime = self.path.stat().st_mtime_ns if self.path and self.path.exists() else None
        self._checked = time.monotonic()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, settings: Settings) -> "DataKeys":
        if settings.data_key:
            return cls(_parse(settings.data_key, "FACEGATE_DATA_KEY"), "env")
        if settings.data_key_file:
            path = Path(settings.data_key_file)
            if not path.exists():
                raise FacegateError("data_key_unavailable", f"FACEGATE_DATA_KEY_FILE {path} does not exist")
            return cls(_parse(path.read_text(), str(path)), "file", path)
        path = Path(settings.data_dir) / DEFAULT_KEY_FILE
        if path.exists():
            return cls(_parse(path.read_text(), str(path)), "file", path)
        private_dir(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(_format([os.urandom(KEY_BYTES)]))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)          # atomic create-if-absent: two processes agree on one key
            created = True
        except FileExistsError:
            created = False
        finally:
            os.unlink(tmp)
        keys = cls(_parse(path.read_text(), str(path)), "created" if created else "file", path)
        if created:
            log.warning("created a new template data key %s in %s (mode 0600); back it up separately from "
                        "the database: without it the templates cannot be decrypted", keys.current_id, path)
        return keys

    def _refresh(self, force: bool = False) -> None:
        """Pick up a rotation made by another process (the key file changed); the file is
        looked at no more often than every REFRESH_S seconds unless ``force``."""
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < REFRESH_S:
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime != self._mtime:
            self._set(_parse(self.path.read_text(), str(self.path)))

    # ------------------------------------------------------------------ use
    @property
    def current_id(self) -> str:
        self._refresh()
        return self._order[0]

    @property
    def ids(self) -> list[str]:
        self._refresh(force=True)
        return list(self._order)

    def has(self, kid: str) -> bool:
        if kid not in self._keys:
            self._refresh(force=True)
        return kid in self._keys

    def encrypt(self, plaintext: bytes, aad: bytes, kid: str | None = None) -> tuple[bytes, str]:
        """(nonce || ciphertext, key id) under the current key (or the listed key ``kid``)."""
        kid = kid or self.current_id
        if not self.has(kid):
            raise FacegateError("data_key_unavailable", f"data key {kid} is not in the keyring")
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._keys[kid].encrypt(nonce, plaintext, aad), kid

    def decrypt(self, blob: bytes, kid: str, aad: bytes) -> bytes:
        if not self.has(kid):
            raise FacegateError("data_key_unavailable", f"data key {kid} is not in the keyring "
                                f"(current {self._order[0]}); set FACEGATE_DATA_KEY or FACEGATE_DATA_KEY_FILE "
                                "to the key file that was used, or a retired key file")
        try:
            return self._keys[kid].decrypt(bytes(blob[:NONCE_BYTES]), bytes(blob[NONCE_BYTES:]), aad)
        except InvalidTag:
            raise FacegateError("data_key_unavailable", f"a template encrypted with {kid} failed authentication: "
                                "the row was altered or moved to another subject") from None

    def seal(self, value: dict, aad: bytes) -> str:
        """A small JSON value sealed into URL-safe text (a cookie's content): key id and ciphertext."""
        blob, kid = self.encrypt(json.dumps(value).encode(), aad)
        return base64.urlsafe_b64encode(kid.encode() + b"." + blob).decode()

    def unseal(self, text: str | None, aad: bytes) -> dict | None:
        """The value :meth:`seal` sealed with ``aad``; None for anything else (altered, foreign, garbage)."""
        try:
            raw = base64.urlsafe_b64decode((text or "").encode())
            kid, blob = raw.split(b".", 1)
            value = json.loads(self.decrypt(blob, kid.decode(), aad))
        except (ValueError, UnicodeDecodeError, FacegateError):
            return None
        return value if isinstance(value, dict) else None

    # ------------------------------------------------------------------ rotation
    def rotate(self) -> str:
        """Make a new random key current, keeping the old ones for decryption; returns its id."""
        if self.source == "env":
            raise FacegateError("invalid_request", "the data key comes from FACEGATE_DATA_KEY: put the new key "
                                "first, e.g. FACEGATE_DATA_KEY=NEW,OLD, and rerun `facegate keys rotate-data-key` "
                                "to re-encrypt; then remove OLD")
        self._refresh(force=True)
        keys = [os.urandom(KEY_BYTES)] + self._raw
        _write_private(self.path, _format(keys))
        self._set(keys)
        log.warning("new current data key %s in %s; old keys kept until re-encryption finishes",
                    self._order[0], self.path)
        return self._order[0]

    def retire(self, kids: list[str]) -> Path | None:
        """Drop keys (never the current one) from the key file, appending them to
        ``<key file>.retired`` first. Returns that file, or None when nothing was retired."""
        self._refresh(force=True)
        drop = [k for k in self._raw if key_id(k) in kids and key_id(k) != self._order[0]]
        if not drop or self.source == "env":
            return None
        retired = self.path.with_name(self.path.name + ".retired")
        old = retired.read_text() if retired.exists() else ""
        _write_private(retired, old + "".join(f"{base64.b64encode(k).decode()}\n" for k in drop))
        keep = [k for k in self._raw if k not in drop]
        _write_private(self.path, _format(keep))
        self._set(keep)
        return retired
