"""Data-key rotation: every ciphertext of every table in :data:`facegate.storage.aad.ENCRYPTED`,
and the index snapshots of this data directory, re-encrypted under a new current key.

Crash-safe: the new key is written to the key file (old keys kept) before any row changes; rows
are re-encrypted in small transactions; old keys are retired only when no row uses them. A
re-run after a crash resumes instead of making yet another key.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import sqlalchemy as sa

from facegate.errors import FacegateError

from facegate.storage import audit
from facegate.storage.aad import ENCRYPTED, EncryptedTable, rows_to_reencrypt
from facegate.storage.datakeys import REFRESH_S
from facegate.storage.db import write_transaction
from facegate.storage.sealed import reseal

log = logging.getLogger(__name__)


def key_usage(db: sa.Engine) -> dict[str, int]:
    """Rows per data key over everything encrypted."""
    usage: dict[str, int] = {}
    with db.connect() as conn:
        for entry in ENCRYPTED:
            t = entry.table
            for k, n in conn.execute(sa.select(t.c.key_id, sa.func.count()).where(t.c.key_id.is_not(None))
                                     .group_by(t.c.key_id)).all():
                usage[k] = usage.get(k, 0) + int(n)
    return usage


def rotate_data_key(store, batch: int = 500, retire_old: bool = True, actor: str = "cli") -> dict:
    """Re-encrypt every ciphertext under a new current data key (see the module docstring)."""
    keys = store.keys
    pending = sum(n for k, n in key_usage(store.db).items() if k != keys.current_id)
    resumed = pending > 0 or keys.source == "env"
    if not resumed:
        keys.rotate()
    new = keys.current_id
    done = 0
    # Other processes re-read the key file within datakeys.REFRESH_S; a second pass after
    # that picks up rows they encrypted with the old key in the meantime.
    for sweep in range(2):
        if sweep:
            time.sleep(2 * REFRESH_S)
        done += sum(_reencrypt(store, entry, new, batch) for entry in ENCRYPTED)
    resealed = reseal_snapshots(store)
    old = [k for k in keys.ids if k != new]
    retired_to = None
    if retire_old and old and not any(k in old for k in key_usage(store.db)):
        retired_to = keys.retire(old)
    audit.record(store.db, actor=actor, operation="keys.rotate_data_key", outcome="ok",
                 detail={"new_key_id": new, "reencrypted": done, "resumed": resumed,
                         "snapshots_resealed": resealed, "retired": old if retired_to else []})
    if store.backend == "sqlite":
        store.checkpoint()
    return {"key_id": new, "reencrypted": done, "resumed": resumed, "snapshots_resealed": resealed,
            "retired_key_ids": old if retired_to else [], "retired_key_file": str(retired_to) if retired_to else None,
            "old_key_ids_still_listed": [] if retired_to else old}


def reseal_snapshots(store) -> int:
    """Seal this data directory's index snapshots under the current key; returns how many were
    rewritten. A replica elsewhere whose snapshot still names a retired key rebuilds its index
    from the database when it next opens it."""
    count = 0
    for path in sorted((Path(store.settings.data_dir) / "index").glob("*.faiss")):
        try:
            count += reseal(path, store.keys)
        except FacegateError as exc:        # not sealed, or sealed with a key no longer held
            log.warning("index snapshot %s not resealed (%s); the gallery rebuilds it on its next open",
                        path, exc.message)
    return count


def _reencrypt(store, entry: EncryptedTable, new: str, batch: int) -> int:
    """Re-encrypt ``entry``'s rows not under key ``new``, ``batch`` rows per transaction."""
    t = entry.table
    done = 0
    while True:
        with write_transaction(store.db) as conn:
            rows = conn.execute(rows_to_reencrypt(entry, new, batch)).mappings().all()
            for r in rows:
                values = {"key_id": new}
                for column, aad_of in entry.aad.items():
                    if r[column] is not None:
                        plain = store.keys.decrypt(r[column], r["key_id"], aad_of(r))
                        values[column] = store.keys.encrypt(plain, aad_of(r), kid=new)[0]
                conn.execute(t.update().where(t.c[entry.key] == r[entry.key]).values(**values))
            done += len(rows)
        if len(rows) < batch:
            return done
