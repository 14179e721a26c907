"""Support for the gallery tests: a fresh store per test on SQLite or PostgreSQL.

PostgreSQL tests read ``FACEGATE_TEST_POSTGRES_URL`` (``scripts/start-postgres.sh`` prints one)
and skip when it is unset; each test gets its own new database, dropped afterwards.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def postgres_url() -> str | None:
    return os.environ.get("FACEGATE_TEST_POSTGRES_URL") or None


@contextmanager
def fresh_database(backend: str, data_dir: Path):
    """The database URL for a new empty database ('' = SQLite under ``data_dir``)."""
    if backend == "sqlite":
        yield ""
        return
    base = postgres_url()
    if not base:
        pytest.skip("FACEGATE_TEST_POSTGRES_URL is not set (scripts/start-postgres.sh starts a server)")
    name = f"fg_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def make_settings(data_dir: Path, database_url: str, **kw):
    from facegate.config import Settings
    return Settings.load(**({"data_dir": str(data_dir), "database_url": database_url, "data_key": "",
                             "data_key_file": ""} | kw))


def lfw_people(lfw_images: Path, names: list[str]) -> dict[str, list[Path]]:
    return {n: sorted((lfw_images / n).glob("*.jpg")) for n in names}


class Clock:
    """A settable "now" for the modules that read :func:`facegate.clock.utcnow` (monkeypatched)."""

    def __init__(self):
        from datetime import datetime, timezone
        self.now = datetime.now(timezone.utc)

    def __call__(self):
        return self.now
