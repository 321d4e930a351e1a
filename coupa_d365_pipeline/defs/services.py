"""Glue between Dagster runs and the plain-Python sync core (shared by assets, jobs and sensors)."""

from __future__ import annotations

from typing import Any

import dagster as dg

from ..common.redact import redacting
from ..mapping.master import ENTITY_SETS_AND_SELECT, D365MasterData
from .resources import CoupaResource, D365Resource, MappingResource, SyncStateResource
from ..state.ledger import Ledger
from ..sync.context import SyncServices

MASTER_SNAPSHOT = "d365.master_data"


def read_master_rows(d365_client: Any, legal_entities: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Read the master data the mapping needs: shared sets once, company sets per legal entity."""
    from ..d365.schema import entity_set

    rows: dict[str, list[dict[str, Any]]] = {}
    for name, select in ENTITY_SETS_AND_SELECT.items():
        if entity_set(name).company_scoped:
            rows[name] = [r for le in legal_entities for r in d365_client.query(name, legal_entity=le, select=select)]
        else:
            rows[name] = list(d365_client.query(name, select=select))
    return rows


def run_finished_checker(instance: dg.DagsterInstance):
    def is_finished(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and run.is_finished
    return is_finished


def build_services(context: Any, coupa: CoupaResource, d365: D365Resource, sync_state: SyncStateResource,
                   mapping: MappingResource) -> SyncServices:
    store = sync_state.store
    mapping_config = mapping.load()
    snapshot = store.load_snapshot(MASTER_SNAPSHOT)
    if snapshot is None:
        snapshot = read_master_rows(d365.client, mapping_config.mapped_legal_entities)
        store.save_snapshot(MASTER_SNAPSHOT, snapshot)
    ledger = Ledger(store.engine, is_run_finished=run_finished_checker(context.instance))
    return SyncServices(coupa=coupa.client, d365=d365.client, store=store, ledger=ledger, mapping=mapping_config,
                        master=D365MasterData.from_rows(snapshot), run_id=context.run.run_id,
                        logger=redacting(context.log))
