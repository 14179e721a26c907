"""Alembic environment: migrations run on the connection that
:func:`facegate.storage.db.open_database` passes in ``config.attributes["connection"]``,
or on ``sqlalchemy.url`` when run from the alembic command line."""
from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from facegate.storage.schema import metadata

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
