"""Files and folders private to the service user: a data folder 0700, files 0600.

The data folder holds the database, the data key, index snapshots, import reports and exports:
biometric data or what unlocks it. Modes are set explicitly, whatever the process's umask.
"""
from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: str | Path) -> Path:
    """``path`` (and missing parents) created if needed; ``path`` itself set to 0700."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def open_private(path: str | Path, mode: str = "wb", **kwargs):
    """A new (or truncated) file readable and writable by the service user only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, mode, **kwargs)


def touch_private(path: str | Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (then only its mode is set), so a
    file another library creates in it (SQLite's database) starts private."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    os.close(fd)
