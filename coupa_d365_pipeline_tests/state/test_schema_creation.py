"""The first run on a fresh sync database starts several step processes at once; each creates the
schema. That must never fail (seen: ``table staged_documents already exists`` on SQLite). Every module
that defines tables is imported here, so the expected set does not depend on which tests ran before."""

from __future__ import annotations

import multiprocessing

import pytest
import sqlalchemy as sa

from coupa_d365_pipeline.state.dmf_executions import DmfExecutions
from coupa_d365_pipeline.state.ledger import Ledger
from coupa_d365_pipeline.state.migrate import schema_of
from coupa_d365_pipeline.state.status import StatusEvents
from coupa_d365_pipeline.state.store import SyncStore, make_engine, metadata

PROCESSES = 6
ROUNDS = 4


def _create_schema(url: str, barrier, errors) -> None:
    try:
        barrier.wait(timeout=60)
        store = SyncStore(url)  # what every step process does when its sync_state resource starts
        Ledger(store.engine)  # ... and when a sync step builds its services
        StatusEvents(store.engine)
        DmfExecutions(store.engine)  # ... and a documents step, which may take the DMF route
        store.dispose()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        errors.put(f"{type(exc).__name__}: {exc}")


def _race(url: str) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    errors = ctx.Queue()
    workers = [ctx.Process(target=_create_schema, args=(url, barrier, errors)) for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert all(w.exitcode == 0 for w in workers)
    return found


def _tables(url: str) -> set[str]:
    """The tables in the connector's place: the SQLite file, or its own schema on PostgreSQL."""
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names(schema=schema_of(engine)))
    finally:
        engine.dispose()


def test_parallel_first_runs_on_fresh_sqlite_databases_never_fail(tmp_path):
    for round_number in range(ROUNDS):
        url = f"sqlite:///{tmp_path / f'fresh-{round_number}.db'}"
        assert _race(url) == []
        assert set(metadata.tables) <= _tables(url)


@pytest.mark.postgres
def test_parallel_first_runs_on_a_fresh_postgres_database_never_fail(postgres_database):
    url = f"postgresql://postgres@127.0.0.1:5432/{postgres_database}"
    assert _race(url) == []
    assert set(metadata.tables) <= _tables(url)
