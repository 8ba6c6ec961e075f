"""Alembic environment: the application's metadata, batch mode for SQLite ALTERs."""

from alembic import context
from sqlalchemy import pool

from openreel.ledger.db import make_engine
from openreel.ledger.tables import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None
connectable = make_engine(url) if url.startswith("sqlite") else None
if connectable is None:
    from sqlalchemy import create_engine

    connectable = create_engine(url, poolclass=pool.NullPool)

with connectable.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode rebuilds a table (copy, drop, rename): dropping one that other rows refer to fails
        # while foreign keys are enforced. Set outside the transaction, where SQLite honours it.
        driver = connection.connection.driver_connection
        assert driver is not None
        driver.execute("PRAGMA foreign_keys=OFF")
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=sqlite)
    with context.begin_transaction():
        before = context.get_context().get_current_revision()
        context.run_migrations()
        if sqlite and context.get_context().get_current_revision() != before:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"the migration left rows whose references are gone: {broken[:5]}")
connectable.dispose()
