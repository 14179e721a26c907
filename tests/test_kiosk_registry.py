"""Kiosk registration and disabling: the key, the kiosk row and their audit rows in one transaction."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from facegate.storage import audit
from facegate.storage.db import open_database
from facegate.storage.schema import api_keys, kiosks
from facegate.workflows.kiosk import registry


@pytest.fixture
def db(tmp_path):
    engine = open_database(f"sqlite:///{tmp_path / 'facegate.db'}")
    yield engine
    engine.dispose()


def operations(db) -> list[tuple[str, str, str | None]]:
    with db.connect() as conn:
        return [(r["operation"], r["actor"], r["key_id"]) for r in audit.rows(conn)]


def test_adding_and_disabling_a_kiosk_is_audited(db):
    secret, kiosk = registry.add_kiosk(db, "Police station 7", "k-07", actor="cli:clerk")
    assert secret.startswith("fg_") and kiosk["status"] == "active"
    assert operations(db) == [("key.create", "cli:clerk", kiosk["key_id"]), ("kiosk.add", "cli:clerk", kiosk["key_id"])]
    disabled = registry.disable_kiosk(db, "k-07", actor="cli:clerk")
    assert disabled["status"] == "disabled"
    assert operations(db)[2:] == [("key.revoke", "cli:clerk", kiosk["key_id"]),
                                  ("kiosk.disable", "cli:clerk", kiosk["key_id"])]
    with db.connect() as conn:
        assert conn.execute(sa.select(api_keys.c.revoked_at)).scalar() is not None


def failing_on(operation: str, monkeypatch):
    real = audit.append

    def append(conn, **fields):
        if fields["operation"] == operation:
            raise RuntimeError("crash in the middle of the write")
        return real(conn, **fields)
    monkeypatch.setattr(registry.audit, "append", append)


def test_a_crash_while_adding_leaves_no_orphan_key(db, monkeypatch):
    failing_on("kiosk.add", monkeypatch)
    with pytest.raises(RuntimeError):
        registry.add_kiosk(db, "Hall A", "k-08")
    with db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(kiosks)).scalar() == 0
    assert operations(db) == []


def test_a_crash_while_disabling_leaves_the_key_as_it_was(db, monkeypatch):
    registry.add_kiosk(db, "Hall A", "k-09")
    failing_on("kiosk.disable", monkeypatch)
    with pytest.raises(RuntimeError):
        registry.disable_kiosk(db, "k-09")
    with db.connect() as conn:
        assert conn.execute(sa.select(api_keys.c.revoked_at)).scalar() is None
        assert conn.execute(sa.select(kiosks.c.status)).scalar() == "active"
