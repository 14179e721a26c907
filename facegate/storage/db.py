"""Opening the database: one code path for SQLite (WAL, the default) and PostgreSQL.

``open_database(url)`` creates the engine and brings the schema to the newest Alembic revision.
Writes go through :func:`write_transaction`, which serialises writers so that change-log and
audit sequence numbers are assigned in commit order (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL:
a transaction-scoped advisory lock), and readers never see seq 11 before seq 10.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from facegate.storage.private import private_dir, touch_private

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
WRITE_LOCK_KEY = 0x66616365  # pg_advisory_xact_lock key shared by all facegate writers ("face")
_WRITE_OPTION = "facegate_write"


def _sqlite_events(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite otherwise defers it).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")     # an acknowledged commit survives power loss (cost: benchmarks/results/security.md)
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA secure_delete=ON")   # erased rows are overwritten, not left in free pages
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get(_WRITE_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_engine(url: str) -> sa.Engine:
    """The SQLAlchemy engine for ``url``; SQLite files get WAL and a parent folder."""
    u = sa.engine.make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            private_dir(Path(u.database).parent)
            touch_private(u.database)     # SQLite gives its -wal and -shm files the database file's mode
        engine = sa.create_engine(u, connect_args={"timeout": 60})
        _sqlite_events(engine)
        return engine
    return sa.create_engine(u, pool_pre_ping=True)


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that holds the database-wide write lock until it commits."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK_KEY})
            yield conn


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(engine: sa.Engine) -> None:
    """``alembic upgrade head`` on ``engine`` unless it is already there (under the write lock)."""
    head = head_revision()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            return
    with write_transaction(engine) as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            return
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        log.info("migrating %s to schema revision %s", engine.url.render_as_string(), head)
        command.upgrade(cfg, "head")


def open_database(url: str) -> sa.Engine:
    engine = create_engine(url)
    upgrade(engine)
    return engine
