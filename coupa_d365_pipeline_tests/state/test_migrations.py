"""The sync database is created and migrated by Alembic (issue 13): the migrations build exactly the
tables the code uses, a database created before migrations existed is adopted with its rows (on
PostgreSQL moved out of ``public``, never taking a table that only shares a name with ours), and a
database the code cannot use fails with one line naming what to run."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from coupa_d365_pipeline.cli import main as cli_main
from coupa_d365_pipeline.state.dmf_executions import DmfExecutions  # noqa: F401 - registers its table
from coupa_d365_pipeline.state.ledger import Ledger
from coupa_d365_pipeline.state.ledger_schema import NaturalKey
from coupa_d365_pipeline.state.migrate import BASELINE, SCHEMA, SyncSchemaError, head, schema_of, status
from coupa_d365_pipeline.state.status import StatusEvents  # noqa: F401 - registers its table
from coupa_d365_pipeline.state.store import SyncStore, make_engine, metadata

from .conftest import T0

BASELINE_TABLES = sorted(metadata.tables)


def _baseline_tables() -> list[sa.Table]:
    """Today's tables as the code before migrations created them (unqualified CREATE TABLE)."""
    from coupa_d365_pipeline.state.migrate import _script

    return _script().get_revision(BASELINE).module.baseline_tables(sa.MetaData())


def _create_like_before_migrations(url: str, rows: bool = True, skip: tuple[str, ...] = ()) -> None:
    """A sync database as the previous release left it: tables in the default schema, real rows,
    no version table."""
    engine = sa.create_engine(url)
    tables = {t.name: t for t in _baseline_tables() if t.name not in skip}
    with engine.begin() as conn:
        for table in tables.values():
            table.create(conn)
        if not rows:
            return
        at = T0
        invoice = {"legal_entity": "usmf", "document_number": "INV-7", "coupa_notified": True}
        invoice["d365_key"] = json.dumps({"HeaderReference": "COUPA-4711"})
        ledger = tables["sync_ledger"]
        for doc_type, coupa_id, scope, extra in (("invoice", 4711, "", invoice), ("vendor", 12, "usmf", {})):
            conn.execute(
                ledger.insert().values(doc_type=doc_type, coupa_id=coupa_id, scope=scope, state="written",
                                       vendor_account="US-101", created_at=at, updated_at=at, **extra)
            )  # fmt: skip
        conn.execute(
            tables["sync_audit"].insert(),
            {"at": at, "doc_type": "invoice", "coupa_id": 4711, "action": "created", "http_status": 201},
        )
        conn.execute(
            tables["staged_documents"].insert(),
            {"doc_type": "invoice", "coupa_id": 4711, "status": "approved", "coupa_updated_at": "2026-11-20T08:00:00Z",
             "payload_sha256": "0" * 64, "payload": json.dumps({"id": 4711, "status": "approved"}),
             "fetched_at": "2026-11-20T08:00:00+00:00"},
        )  # fmt: skip
        conn.execute(
            tables["watermarks"].insert(),
            {"name": "suppliers", "value": "2026-11-20T08:00:00Z", "updated_at": "2026-11-20T08:00:00+00:00"},
        )
        conn.execute(
            tables["invoice_status_events"].insert(),
            {"coupa_id": 4711, "kind": "posted", "event_key": "VOUCHER-1", "legal_entity": "usmf",
             "invoice_number": "INV-7", "amount": "100.00", "detected_at": at},
        )  # fmt: skip
        if "snapshots" in tables:
            conn.execute(
                tables["snapshots"].insert(),
                {"name": "legal_entities", "payload": '[{"DataArea": "usmf"}]', "fetched_at": "2026-11-20T08:00:00"},
            )
    engine.dispose()


def _assert_rows_kept(url: str, snapshots: bool = True) -> None:
    store = SyncStore(url)
    try:
        ledger = Ledger(store.engine)
        invoice = ledger.get("invoice", 4711)
        assert invoice is not None and invoice.state == "written" and invoice.coupa_notified
        assert invoice.natural_key == NaturalKey("usmf", "US-101", "INV-7")
        assert invoice.d365_key == {"HeaderReference": "COUPA-4711"}
        assert ledger.get("vendor", 12, "usmf") is not None
        assert [a["action"] for a in ledger.history("invoice", 4711)] == ["created"]
        assert store.documents("invoice") == [{"id": 4711, "status": "approved"}]
        assert store.get_watermark("suppliers") == "2026-11-20T08:00:00Z"
        if snapshots:
            assert store.load_snapshot("legal_entities") == [{"DataArea": "usmf"}]
        with store.engine.connect() as conn:
            assert status(conn).up_to_date
            events = conn.execute(sa.text(f"SELECT count(*) FROM {_qualified(conn, 'invoice_status_events')}"))
            assert events.scalar_one() == 1
        ledger.ensure("invoice", 4712)  # the id sequences moved along with their tables
        assert ledger.get("invoice", 4712) is not None
    finally:
        store.dispose()


def _qualified(conn: sa.Connection, table: str) -> str:
    schema = schema_of(conn)
    return f"{schema}.{table}" if schema else table


def _compare_default(_context, _inspected_column, _column, inspected, _default, rendered) -> bool | None:
    """SQLite reflects defaults as written (``('')``, ``'new'``), alembic renders them bare: compare the
    values, not the quoting."""
    if inspected is not None and rendered is not None:
        return inspected.strip("()").strip("'") != rendered.strip("'")
    return None


def _diff(url: str) -> list:
    """What Alembic's autogenerate would change to make the database match the code's tables."""
    engine = make_engine(url)
    try:
        schema = schema_of(engine)
        target = sa.MetaData()
        for table in metadata.sorted_tables:
            table.to_metadata(target, schema=schema)
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "include_schemas": schema is not None,
                    "include_name": lambda name, kind, _parent: kind != "schema" or name == schema,
                    "version_table_schema": schema,
                    "compare_server_default": _compare_default if schema is None else True,
                },
            )
            return compare_metadata(context, target)
    finally:
        engine.dispose()


def test_the_migrations_build_exactly_the_tables_the_code_uses_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    SyncStore(url).dispose()
    assert _diff(url) == []
    engine = make_engine(url)
    with engine.connect() as conn:
        assert status(conn).current == head()
    engine.dispose()


@pytest.mark.postgres
def test_the_migrations_build_exactly_the_tables_the_code_uses_in_their_own_postgres_schema(postgres_database):
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{postgres_database}"
    SyncStore(url).dispose()
    assert _diff(url) == []
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        assert set(inspector.get_table_names(schema=SCHEMA)) == {*BASELINE_TABLES, "alembic_version"}
        assert inspector.get_table_names(schema="public") == []
    engine.dispose()


def test_a_sqlite_ledger_from_before_migrations_is_adopted_with_its_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _create_like_before_migrations(url)
    _assert_rows_kept(url)
    assert _diff(url) == []


@pytest.mark.postgres
@pytest.mark.parametrize("dagster_first", [False, True], ids=["own-database", "shared-with-dagster"])
def test_a_postgres_ledger_in_public_from_before_migrations_moves_to_its_schema(postgres_database, dagster_first):
    """Previous releases created the tables in ``public``. In a database shared with Dagster,
    ``public.snapshots`` is Dagster's: it is left alone, and ours is created in our schema."""
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{postgres_database}"
    engine = sa.create_engine(url)
    if dagster_first:  # Dagster's table, as dagster-postgres creates it (columns that matter here)
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE snapshots (id SERIAL PRIMARY KEY, snapshot_id VARCHAR(255) UNIQUE NOT NULL, "
                    "snapshot_body BYTEA NOT NULL, snapshot_type VARCHAR(63) NOT NULL)"
                )
            )
            conn.execute(
                sa.text("INSERT INTO snapshots (snapshot_id, snapshot_body, snapshot_type) VALUES ('a', 'b', 'c')")
            )
    _create_like_before_migrations(url, skip=("snapshots",) if dagster_first else ())
    _assert_rows_kept(url, snapshots=not dagster_first)
    assert _diff(url) == []
    with engine.connect() as conn:
        public = set(sa.inspect(conn).get_table_names(schema="public"))
        assert public == ({"snapshots"} if dagster_first else set())
        if dagster_first:
            assert conn.execute(sa.text("SELECT snapshot_id FROM public.snapshots")).scalars().all() == ["a"]
    engine.dispose()


def test_a_table_that_is_not_ours_is_never_adopted_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE snapshots (id INTEGER PRIMARY KEY, snapshot_body BLOB)"))
    engine.dispose()
    _create_like_before_migrations(url, rows=False, skip=("snapshots",))
    with pytest.raises(SyncSchemaError) as raised:
        SyncStore(url)
    message = str(raised.value)
    assert "holds a table snapshots that is not the connector's" in message
    assert "fetched_at, name, payload" in message and "database of its own" in message
    assert "\n" not in message


def test_a_database_newer_than_the_code_fails_naming_what_to_run(tmp_path, capsys, monkeypatch):
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    SyncStore(url).dispose()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(SyncSchemaError) as raised:
        SyncStore(url)
    message = str(raised.value)
    assert "at revision '9999', newer than this version of the connector" in message
    assert f"its newest is {head()!r}" in message and "run that release" in message
    monkeypatch.setenv("SYNC_DATABASE_URL", url)
    assert cli_main(["db", "current"]) == 2
    assert "newer than this version" in capsys.readouterr().err
    assert cli_main(["db", "upgrade"]) == 2


def test_db_current_and_db_upgrade_on_a_database_from_before_migrations(tmp_path, capsys, monkeypatch):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    _create_like_before_migrations(url)
    monkeypatch.setenv("SYNC_DATABASE_URL", url)
    assert cli_main(["db", "current"]) == 1
    out = capsys.readouterr().out
    assert "revision  none" in out and f"head      {head()} (run: coupa-d365 db upgrade)" in out
    assert cli_main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out.strip() == f"sync database upgraded: none -> {head()}"
    assert cli_main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out.strip() == f"sync database already at {head()}"
    assert cli_main(["db", "current"]) == 0
    assert f"head      {head()} (up to date)" in capsys.readouterr().out
    _assert_rows_kept(url)


@pytest.mark.postgres
def test_a_process_that_may_not_migrate_names_the_command_and_works_once_it_ran(postgres_database, monkeypatch):
    """A production role without DDL rights: the step fails with one line naming ``coupa-d365 db
    upgrade``; once an owner ran it (and granted the role its tables), the same role works."""
    role = f"coupa_d365_rw_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
    owner_url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{postgres_database}"
    role_url = f"postgresql+psycopg2://{role}@127.0.0.1:5432/{postgres_database}"
    try:
        with pytest.raises(SyncSchemaError) as raised:
            SyncStore(role_url)
        message = str(raised.value)
        assert f"(schema {SCHEMA}) is at revision none and this connector needs {head()!r}" in message
        assert "permission denied" in message and "run `coupa-d365 db upgrade`" in message
        assert "\n" not in message

        monkeypatch.setenv("SYNC_DATABASE_URL", owner_url)
        assert cli_main(["db", "upgrade"]) == 0
        owner = sa.create_engine(owner_url)
        with owner.begin() as conn:
            conn.execute(sa.text(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {role}"))
            conn.execute(sa.text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {SCHEMA} TO {role}"))
            conn.execute(sa.text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {SCHEMA} TO {role}"))
        owner.dispose()
        store = SyncStore(role_url)
        Ledger(store.engine).ensure("invoice", 1)
        store.set_watermark("suppliers", datetime(2026, 11, 30, tzinfo=UTC).isoformat())
        store.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"), {"r": role}
            )
        owner = sa.create_engine(owner_url)
        with owner.begin() as conn:  # the grants live in the test database
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
        owner.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()
