"""The Alembic chain creates exactly the tables facegate.storage.schema declares."""
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from facegate.storage.db import open_database
from facegate.storage.schema import metadata


def test_migrations_match_the_declared_schema(tmp_path):
    engine = open_database(f"sqlite:///{tmp_path / 'm.db'}")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []
    assert set(sa.inspect(engine).get_table_names()) >= {"certifications", "certification_captures",
                                                         "fraud_signals", "kiosks", "kiosk_events"}
