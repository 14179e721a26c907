"""Files and folders private to the service user: a data folder 0700, files 0600.

The data folder holds the database, the data key, index snapshots, import reports and exports:
biometric data or what unlocks it. Modes are set explicitly, whatever the process's umask.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from facegate.errors import FacegateError


def private_dir(path: str | Path) -> Path:
    """``path`` (and missing parents) created if needed; ``path`` itself set to 0700. A folder
    this process may not create or own (a bind mount of a host folder owned by root) is
    ``data_dir_not_writable``, whose message names this process's uid and the fixes."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
    except PermissionError:
        raise FacegateError("data_dir_not_writable", _not_ours(path)) from None
    return path


def _not_ours(path: Path) -> str:
    uid, gid = os.getuid(), os.getgid()
    where = path if os.path.lexists(path) else next(p for p in path.parents if os.path.lexists(p))
    try:
        owner = where.stat().st_uid
        whose = f"it belongs to uid {owner}" if where == path else f"it would be made in {where}, owned by uid {owner}"
    except OSError as exc:
        whose = f"{where}: {exc.strerror}"
    return (f"uid {uid} cannot make {path} its private folder (0700): {whose}. Give it to uid {uid} "
            f"(`chown -R {uid}:{gid} {where}`; for a bind mount, on the host: `chown -R {uid}:{gid} <host folder>`) "
            f"or mount a named volume there instead of a host folder")


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


@contextmanager
def replaced_atomically(path: str | Path) -> Iterator[BinaryIO]:
    """A new private file (0600) that replaces ``path`` when the block ends: written beside it,
    fsynced, renamed over it and the folder synced, so a crash leaves either the old file or the
    new one; on an error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open_private(tmp) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
