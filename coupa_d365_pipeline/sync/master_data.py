"""D365 master data for a run (plain Python, no Dagster): read the entity sets the mapping needs,
and check the mapping file against them.

The snapshot is stored in the sync database under :data:`MASTER_SNAPSHOT` by the master-data asset
and read back by every sync run, so a documents run never re-reads master data it already has.
"""

from __future__ import annotations

from typing import Any

from ..d365.schema import entity_set
from ..mapping.config import MappingConfig
from ..mapping.master import ENTITY_SETS_AND_SELECT, D365MasterData

__all__ = ["MASTER_SNAPSHOT", "mapping_problems", "read_master_rows"]

MASTER_SNAPSHOT = "d365.master_data"


def read_master_rows(d365_client: Any, legal_entities: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Read the master data the mapping needs: shared sets once, company sets per legal entity."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for name, select in ENTITY_SETS_AND_SELECT.items():
        if entity_set(name).company_scoped:
            rows[name] = [r for le in legal_entities for r in d365_client.query(name, legal_entity=le, select=select)]
        else:
            rows[name] = list(d365_client.query(name, select=select))
    return rows


def mapping_problems(mapping_config: MappingConfig, master: D365MasterData) -> list[str]:
    """Every mapped legal entity, vendor group and currency that D365 does not know, one line each."""
    problems: list[str] = []
    for chart, le in mapping_config.legal_entities.items():
        if not master.has_legal_entity(le):
            problems.append(f"legal_entities.{chart!r}: {le!r} is not a D365 legal entity")
    for le, defaults in mapping_config.vendor_defaults.items():
        group = defaults.get("VendorGroupId")
        if group and not master.has_vendor_group(le, str(group)):
            problems.append(f"vendor_defaults.{le}.VendorGroupId: {group!r} is not a vendor group in {le}")
        currency = defaults.get("CurrencyCode")
        if currency and not master.has_currency(str(currency)):
            problems.append(f"vendor_defaults.{le}.CurrencyCode: {currency!r} is not a D365 currency")
    return problems
