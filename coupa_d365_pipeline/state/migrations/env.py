"""Alembic environment of the sync database.

Run by :mod:`coupa_d365_pipeline.state.migrate` (``ensure_schema`` when a step opens the store, or
``coupa-d365 db upgrade``), which passes an open connection in ``config.attributes`` after taking
the lock (PostgreSQL advisory lock / SQLite ``BEGIN IMMEDIATE``) and with the connector's schema;
the migrations run inside that transaction. Not meant to be run by the ``alembic`` command itself.
"""

from alembic import context

attributes = context.config.attributes
connection = attributes.get("connection")
if connection is None:
    raise RuntimeError("the sync database is migrated with `coupa-d365 db upgrade`, not with the alembic command")

context.configure(
    connection=connection,
    target_metadata=attributes.get("target_metadata"),
    version_table_schema=attributes.get("schema"),
    transaction_per_migration=False,
)
with context.begin_transaction():  # a no-op: the caller's transaction holds the lock
    context.run_migrations()
