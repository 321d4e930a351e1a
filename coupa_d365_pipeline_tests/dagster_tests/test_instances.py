"""The embedded default (SQLite) and the production instance (root dagster.yaml on PostgreSQL)."""

import shutil
from pathlib import Path

import dagster as dg
import pytest

from coupa_d365_pipeline.defs.master_data import coupa_suppliers, d365_legal_entities
from coupa_d365_pipeline.defs.resources import build_resources
from coupa_d365_pipeline.demo import prepare_dagster_home

REPO = Path(__file__).resolve().parents[2]


def _run_on(instance: dg.DagsterInstance) -> str:
    result = dg.materialize([coupa_suppliers, d365_legal_entities], resources=build_resources(), instance=instance)
    assert result.success
    return result.run_id


def test_embedded_default_instance_is_sqlite(tmp_path, sandbox_env):
    home = prepare_dagster_home(tmp_path / "home")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        run_id = _run_on(instance)
        assert instance.get_run_by_id(run_id).is_success
        assert (home / "history" / "runs.db").exists()
        assert instance.get_latest_materialization_event(dg.AssetKey(["coupa", "suppliers"])) is not None
    finally:
        instance.dispose()


@pytest.mark.postgres
def test_production_dagster_yaml_on_postgres(tmp_path, sandbox_env, postgres_database, monkeypatch):
    home = tmp_path / "prod_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    for name, value in {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": postgres_database,
    }.items():
        monkeypatch.setenv(name, value)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance).__name__ == "ProductionInstance"  # Dagster's, plus the DAGSTER_PG_* check
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_monitoring_enabled
        run_id = _run_on(instance)
        assert instance.get_run_by_id(run_id).is_success
        records = instance.fetch_materializations(dg.AssetKey(["d365", "legal_entities"]), limit=10).records
        assert len(records) == 1 and records[0].run_id == run_id
    finally:
        instance.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("connector_first", [False, True], ids=["dagster-first", "connector-first"])
def test_the_sync_ledger_shares_a_database_with_dagsters_postgres_storage(
    tmp_path, postgres_database, monkeypatch, connector_first
):
    """Issue 13: production on ONE PostgreSQL database. Dagster's storage owns a table ``snapshots``
    (and ``alembic_version``); the connector's tables must not collide with them, whichever comes first."""
    import sqlalchemy as sa

    from coupa_d365_pipeline.state.ledger import Ledger
    from coupa_d365_pipeline.state.store import SyncStore

    home = tmp_path / "prod_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    for name, value in {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": postgres_database,
    }.items():
        monkeypatch.setenv(name, value)
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{postgres_database}"
    if connector_first:
        SyncStore(url).dispose()
    instance = dg.DagsterInstance.from_config(str(home))  # Dagster's tables, as the webserver creates them
    try:
        dagster_columns = _columns(url, "public", "snapshots")
        assert {"snapshot_id", "snapshot_body"} <= dagster_columns
        store = SyncStore(url)
        store.save_snapshot("legal_entities", [{"DataArea": "usmf"}])
        assert store.load_snapshot("legal_entities") == [{"DataArea": "usmf"}]
        store.set_watermark("suppliers", "2026-11-30T09:00:00Z")
        ledger = Ledger(store.engine)
        ledger.ensure("invoice", 4711)
        assert ledger.get("invoice", 4711) is not None
        store.dispose()
        # Dagster's storage is untouched and still works
        assert _columns(url, "public", "snapshots") == dagster_columns
        assert instance.get_runs() == []
        with sa.create_engine(url).connect() as conn:
            public = set(sa.inspect(conn).get_table_names(schema="public"))
        assert "sync_ledger" not in public and "staged_documents" not in public
    finally:
        instance.dispose()


def _columns(url: str, schema: str, table: str) -> set[str]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table(table, schema=schema):
                return set()
            return {c["name"] for c in inspector.get_columns(table, schema=schema)}
    finally:
        engine.dispose()
