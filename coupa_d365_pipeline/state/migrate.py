"""The sync database's schema, created and migrated with Alembic (versioned scripts in
``migrations/versions``, the version table next to the tables).

On PostgreSQL the connector's tables live in a schema of their own, :data:`SCHEMA`, so the sync
database may be the database Dagster's storage uses (which owns ``public.snapshots`` and
``public.alembic_version``): engines from :func:`.store.make_engine` map table names without a schema
there (``schema_translate_map``). SQLite is a file of its own and has no schemas.

- :func:`ensure_current`: what every process does when it opens the store — one read of the version
  when the database is at the code's head; otherwise it takes the lock (PostgreSQL advisory lock /
  SQLite ``BEGIN IMMEDIATE``) and upgrades, all in one transaction.
- A database from before migrations existed (no version table) is **adopted**: our tables are moved
  from the schema they were created in (usually ``public``) into :data:`SCHEMA`, columns added since
  their version are added, and it is stamped at the baseline revision. A table that only shares a
  name with ours (Dagster's ``snapshots``) is recognised by its columns and never touched.
- :func:`upgrade` and :func:`status` back ``coupa-d365 db upgrade | current``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from alembic import command
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from .database_url import redact_url

SCHEMA = "coupa_d365"  # PostgreSQL schema holding the connector's tables and its alembic_version
LOCK_ID = 4_365_001  # PostgreSQL advisory lock: processes starting together migrate one at a time
BASELINE = "0001"
MIGRATIONS = Path(__file__).parent / "migrations"
UPGRADE_COMMAND = "coupa-d365 db upgrade"


class SyncSchemaError(RuntimeError):
    """The sync database's schema cannot be used by this code; the message says what to run."""


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None  # None: no version table (empty, or created before migrations existed)
    head: str
    schema: str | None

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def schema_of(bind: Engine | Connection) -> str | None:
    return SCHEMA if bind.dialect.name == "postgresql" else None


def translate_map(dialect_name: str) -> dict[str | None, str] | None:
    return {None: SCHEMA} if dialect_name == "postgresql" else None


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes.update(connection=connection, schema=schema_of(connection), target_metadata=None)
    return config


def head() -> str:
    revision = _script().get_current_head()
    assert revision is not None, "no migration scripts found"
    return revision


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn, opts={"version_table_schema": schema_of(conn)}).get_current_revision()


def status(conn: Connection) -> SchemaStatus:
    return SchemaStatus(current_revision(conn), head(), schema_of(conn))


def ensure_current(conn: Connection) -> None:
    """Bring the database to the code's head unless it is there already (raises :class:`SyncSchemaError`
    when it is newer than the code, or cannot be upgraded by this process)."""
    found = current_revision(conn)
    check_known(conn, found)
    if found == head():
        return
    conn.rollback()
    upgrade(conn)


def upgrade(conn: Connection) -> tuple[str | None, str]:
    """Lock, adopt a database from before migrations, ``alembic upgrade head``, commit; returns the
    revisions before and after."""
    _map_schema(conn)
    before: str | None = None
    try:
        _lock(conn)
        before = current_revision(conn)
        check_known(conn, before)
        if before != head():
            if before is None:
                _adopt(conn)
            if conn.dialect.name == "postgresql":  # raw SQL in a migration lands in our schema too
                conn.execute(sa.text(f"SET LOCAL search_path TO {_quote(conn, SCHEMA)}"))
            command.upgrade(_config(conn), "head")
        conn.commit()
    except SyncSchemaError:
        conn.rollback()
        raise
    except sa_exc.DBAPIError as exc:
        conn.rollback()
        raise _cannot_upgrade(conn, before, exc) from None
    return before, head()


def _map_schema(conn: Connection) -> None:
    mapping = translate_map(conn.dialect.name)
    if mapping:
        conn.execution_options(schema_translate_map=mapping)


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOCK_ID})
        if not sa.inspect(conn).has_schema(SCHEMA):
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {_quote(conn, SCHEMA)}"))
    else:  # SQLite: the write lock for the whole upgrade (waits up to the busy timeout)
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _where(conn: Connection) -> str:
    schema = schema_of(conn)
    return f"the sync database {redact_url(conn.engine.url)!r}" + (f" (schema {schema})" if schema else "")


def check_known(conn: Connection, revision: str | None) -> None:
    if revision is None:
        return
    try:
        _script().get_revision(revision)
    except Exception:  # noqa: BLE001 - alembic raises several kinds for an unknown id
        raise SyncSchemaError(
            f"{_where(conn)} is at revision {revision!r}, newer than this version of the connector "
            f"(its newest is {head()!r}): a newer release migrated it; run that release (or a newer one) "
            "against this database, never an older one"
        ) from None


def _cannot_upgrade(conn: Connection, before: str | None, exc: sa_exc.DBAPIError) -> SyncSchemaError:
    text = str(getattr(exc, "orig", None) or exc).strip()
    password = conn.engine.url.password
    if password:
        text = text.replace(str(password), "***")
    first = text.splitlines()[0] if text else type(exc).__name__
    who = "a user that may create and alter that schema" if schema_of(conn) else "write access to the file"
    return SyncSchemaError(
        f"{_where(conn)} is at revision {before or 'none'} and this connector needs {head()!r}, but this "
        f"process cannot upgrade it ({first}); run `{UPGRADE_COMMAND}` with SYNC_DATABASE_URL naming {who}"
    )


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


# -- databases from before migrations ------------------------------------------------------------------


def _required(table: sa.Table) -> set[str]:
    """Columns every version of our table had: additive upgrades only ever added nullable or
    defaulted columns, so these tell our table from another one with the same name."""
    return {c.name for c in table.columns if not c.nullable and c.server_default is None}


def _columns(conn: Connection, name: str, schema: str | None) -> set[str]:
    return {c["name"] for c in sa.inspect(conn).get_columns(name, schema=schema)}


def _adopt(conn: Connection) -> bool:
    """Make a database created before migrations look like the baseline and stamp it; False when
    none of our tables exist (the baseline migration then creates them)."""
    schema = schema_of(conn)
    tables: list[sa.Table] = _script().get_revision(BASELINE).module.baseline_tables(sa.MetaData())
    own = set(sa.inspect(conn).get_table_names(schema=schema))
    legacy: str | None = None
    if schema is not None:  # where the connector's unqualified CREATE TABLE went before
        legacy = conn.execute(sa.text("SELECT current_schema()")).scalar_one_or_none()
    old = set(sa.inspect(conn).get_table_names(schema=legacy)) if legacy and legacy != schema else set()
    adopted: set[str] = set()
    for table in tables:
        if table.name in own:
            missing = _required(table) - _columns(conn, table.name, schema)
            if missing:
                raise SyncSchemaError(
                    f"{_where(conn)} holds a table {table.name} that is not the connector's (it lacks "
                    f"{', '.join(sorted(missing))}); point SYNC_DATABASE_URL at a database of its own"
                )
            adopted.add(table.name)
        elif table.name in old and _required(table) <= _columns(conn, table.name, legacy):
            moved = f"{_quote(conn, str(legacy))}.{_quote(conn, table.name)}"
            conn.execute(sa.text(f"ALTER TABLE {moved} SET SCHEMA {_quote(conn, str(schema))}"))
            adopted.add(table.name)
        # else: absent, or another application's table of that name (left alone): created below
    if not adopted:
        return False
    ops = Operations(MigrationContext.configure(conn))
    for table in tables:
        if table.name not in adopted:
            table.create(conn)
            continue
        present = _columns(conn, table.name, schema)
        for column in table.columns:
            if column.name not in present:
                ops.add_column(table.name, column._copy(), schema=schema)
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes(table.name, schema=schema)}
        for index in table.indexes:
            if index.name not in indexes:
                ops.create_index(str(index.name), table.name, [c.name for c in index.columns], schema=schema)
    _backfill_structured_keys(conn, schema)
    command.stamp(_config(conn), BASELINE)
    return True


def _backfill_structured_keys(conn: Connection, schema: str | None) -> None:
    """Ledgers from before the structured key hold ``natural_key`` as 'le|vendor|number' (invoices),
    'le|number' (POs) or the account (vendors): copy it into the structured columns once."""
    if "natural_key" not in _columns(conn, "sync_ledger", schema):
        return
    names = ("id", "doc_type", "natural_key", "vendor_account", "document_number")
    ledger = sa.table("sync_ledger", *(sa.column(n) for n in names), schema=schema)
    c = ledger.c
    rows = conn.execute(
        sa.select(c.id, c.doc_type, c.natural_key).where(
            c.natural_key.is_not(None), c.document_number.is_(None), c.vendor_account.is_(None)
        )
    ).all()
    for row_id, doc_type, natural in rows:
        values: dict[str, Any] = {}
        if doc_type == "invoice":
            parts = str(natural).split("|", 2)
            if len(parts) == 3:
                values = {"vendor_account": parts[1], "document_number": parts[2]}
        elif doc_type == "purchase_order":
            parts = str(natural).split("|", 1)
            if len(parts) == 2:
                values = {"document_number": parts[1]}
        elif doc_type == "vendor":
            values = {"vendor_account": str(natural)}
        if values:
            conn.execute(ledger.update().where(c.id == row_id).values(**values))
