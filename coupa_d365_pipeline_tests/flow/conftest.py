"""Fixtures of the flow tests: a temporary Dagster instance and a fully synced sandbox.

A full sync (master data, then every partition of the test seed) takes tens of seconds, and a dozen
and a half tests start from one. It runs once per session (:func:`synced_snapshot`, on sandboxes and
a sync database of its own, never handed to a test); each test that wants one (:func:`synced`, :func:`mastered`) gets
its own sandboxes and sync database restored to a deep copy of what that run left — data, request
logs, clock — so tests cannot see each other's changes, in any order, alone or together.
"""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from coupa_d365_pipeline.common.clock import SimulatedClock
from coupa_d365_pipeline.d365.dmf import DmfClient
from coupa_d365_pipeline.sandbox.launch import RunningSandboxes, SandboxOptions, start_sandboxes
from coupa_d365_pipeline.sandbox.seed import SeedData
from coupa_d365_pipeline.state.ledger import Ledger
from coupa_d365_pipeline.state.store import make_engine
from coupa_d365_pipeline_tests.conftest import TEST_NOW, TEST_SEED
from coupa_d365_pipeline_tests.flow.helpers import run_documents, run_master


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@dataclass(frozen=True)
class SyncedSnapshot:
    """What the session's full sync left; read-only (stopped sandboxes), copied into each test."""

    sandboxes: RunningSandboxes
    database: Path
    now: datetime  # the sandboxes' clock when the sync ended
    result: dg.ExecuteInProcessResult  # the last run's (documents, or master data alone)


def _sync_once(
    seed_data: SeedData, tmp_path_factory: pytest.TempPathFactory, *, documents: bool
) -> Iterator[SyncedSnapshot]:
    """Master data (and with ``documents`` every partition of the test seed) on sandboxes of its own."""
    database = tmp_path_factory.mktemp("synced") / "sync.db"
    clock = SimulatedClock(TEST_NOW)
    running = start_sandboxes(SandboxOptions(seed=TEST_SEED, clock=clock), seed=copy.deepcopy(seed_data))
    env = running.env() | {"SYNC_DATABASE_URL": f"sqlite:///{database}", "COUPA_MAX_REQUESTS_PER_SECOND": "1000"}
    try:
        with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
            for name, value in env.items():
                patch.setenv(name, value)
            result = run_master(instance)
            assert result.success
            if documents:
                result = run_documents(instance)
                assert result.success
        running.stop()
        yield SyncedSnapshot(running, database, clock.now(), result)
    finally:
        running.stop()


@pytest.fixture(scope="session")
def synced_snapshot(seed_data: SeedData, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncedSnapshot]:
    yield from _sync_once(seed_data, tmp_path_factory, documents=True)


@pytest.fixture(scope="session")
def master_snapshot(seed_data: SeedData, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncedSnapshot]:
    yield from _sync_once(seed_data, tmp_path_factory, documents=False)


def _restore(target: Any, source: Any, shared: dict[int, Any]) -> None:
    """Make ``target`` hold a deep copy of ``source``'s attributes; ``shared`` maps id(source part)
    to the target's own part (its lock, clock, itself) so those stay the target's."""
    vars(target).update(copy.deepcopy(vars(source), dict(shared)))


def restore_synced(snapshot: SyncedSnapshot, sandboxes: RunningSandboxes, database_url: str) -> None:
    clock = sandboxes.clock
    if isinstance(clock, SimulatedClock) and clock.now() < snapshot.now:
        clock.set(snapshot.now)  # time went on during the sync: later edits stay later than its stamps
    source = snapshot.sandboxes
    for src, dst in ((source.coupa, sandboxes.coupa), (source.d365, sandboxes.d365)):
        parts: dict[int, Any] = {id(src.state): dst.state, id(src.state.lock): dst.state.lock}
        parts[id(src.state.clock)] = dst.state.clock
        if hasattr(src.state, "schema"):
            parts[id(src.state.schema)] = dst.state.schema  # immutable and large: shared, not copied
        _restore(dst.state, src.state, parts)
        _restore(dst.log, src.log, {id(src.log._changed): dst.log._changed})
    make_engine(database_url).dispose()  # creates the database file as the connector does (owner-only)
    src_db, dst_db = sqlite3.connect(snapshot.database), sqlite3.connect(database_url.removeprefix("sqlite:///"))
    try:
        src_db.backup(dst_db)
    finally:
        src_db.close()
        dst_db.close()


@pytest.fixture
def synced(sandbox_env, sandboxes, instance, synced_snapshot: SyncedSnapshot) -> dg.ExecuteInProcessResult:
    """Master data, then every partition of the test seed in one single-run backfill (run once per
    session, restored here); returns that documents run's result."""
    restore_synced(synced_snapshot, sandboxes, sandbox_env["SYNC_DATABASE_URL"])
    return synced_snapshot.result


@pytest.fixture
def mastered(sandbox_env, sandboxes, instance, master_snapshot: SyncedSnapshot) -> dg.ExecuteInProcessResult:
    """A successful master-data run (run once per session, restored here); returns its result."""
    restore_synced(master_snapshot, sandboxes, sandbox_env["SYNC_DATABASE_URL"])
    return master_snapshot.result


def ledger(sandbox_env) -> Ledger:
    return Ledger(make_engine(sandbox_env["SYNC_DATABASE_URL"]))


@pytest.fixture
def quick_dmf(sandbox_options, monkeypatch) -> None:
    """DMF imports finish in 0.05 s on the sandbox and are polled every 0.05 s instead of backing off
    from 1 s: for the flow tests that run the DMF route (``pytestmark = usefixtures("quick_dmf")``)."""
    sandbox_options.d365_dmf_execution_s = 0.05
    wait = DmfClient.wait

    def quick(self, execution_id, **kwargs):
        return wait(self, execution_id, **{**kwargs, "initial_delay_s": 0.05, "max_delay_s": 0.1})

    monkeypatch.setattr(DmfClient, "wait", quick)
