"""Glue between a Dagster run and the plain-Python sync core: the run's resources become one
:class:`SyncServices` (master data from the stored snapshot, read once if missing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from ..common.redact import redacting
from ..mapping.master import D365MasterData
from ..state.ledger import Ledger
from ..sync.context import SyncServices
from ..sync.master_data import MASTER_SNAPSHOT, read_master_rows
from .resources import CoupaResource, D365Resource, MappingResource, SyncStateResource


def run_finished_checker(instance: dg.DagsterInstance) -> Callable[[str], bool]:
    def is_finished(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and run.is_finished

    return is_finished


def build_services(
    context: Any, coupa: CoupaResource, d365: D365Resource, sync_state: SyncStateResource, mapping: MappingResource
) -> SyncServices:
    store = sync_state.store
    mapping_config = mapping.load()
    snapshot = store.load_snapshot(MASTER_SNAPSHOT)
    if snapshot is None:
        snapshot = read_master_rows(d365.client, mapping_config.mapped_legal_entities)
        store.save_snapshot(MASTER_SNAPSHOT, snapshot)
    ledger = Ledger(store.engine, is_run_finished=run_finished_checker(context.instance))
    return SyncServices(
        coupa=coupa.client,
        d365=d365.client,
        store=store,
        ledger=ledger,
        mapping=mapping_config,
        master=D365MasterData.from_rows(dict(snapshot)),
        run_id=context.run.run_id,
        logger=redacting(context.log) or context.log,
    )
