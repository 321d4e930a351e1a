"""D365 master data snapshot and the validated Coupa -> D365 mapping (resolve before documents)."""

import time

import dagster as dg

from ..mapping.master import D365MasterData
from .resources import D365Resource, MappingResource, SyncStateResource
from .services import MASTER_SNAPSHOT, read_master_rows
from .outages import fail_run_on_outage


@dg.asset(key=["d365", "master_data"], group_name="d365", kinds={"d365"},
          description="Legal entities, main accounts per legal entity, dimension values, released products, "
                      "vendor groups, payment terms and procurement categories, snapshotted for mapping.")
@fail_run_on_outage
def d365_master_data(context: dg.AssetExecutionContext, d365: D365Resource, sync_state: SyncStateResource,
                     mapping: MappingResource) -> dg.MaterializeResult:
    started = time.monotonic()
    before = d365.client.request_count
    rows = read_master_rows(d365.client, mapping.load().mapped_legal_entities)
    sync_state.store.save_snapshot(MASTER_SNAPSHOT, rows)
    table = "| entity set | rows |\n|---|---|\n" + "\n".join(f"| {k} | {len(v)} |" for k, v in rows.items())
    return dg.MaterializeResult(metadata={
        **{f"rows_{name}": len(value) for name, value in rows.items()},
        "table": dg.MetadataValue.md(table), "d365_requests": d365.client.request_count - before,
        "duration_s": round(time.monotonic() - started, 3)})


def mapping_problems(mapping_config, master: D365MasterData) -> list[str]:
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


@dg.asset(key=["d365", "gl_mapping"], group_name="d365", kinds={"d365"}, deps=[d365_master_data],
          description="The Coupa -> D365 mapping file (charts -> legal entities, vendor accounts, dimensions, "
                      "items), validated against the D365 master data.")
def d365_gl_mapping(context: dg.AssetExecutionContext, sync_state: SyncStateResource,
                    mapping: MappingResource) -> dg.MaterializeResult:
    config = mapping.load()
    master = D365MasterData.from_rows(sync_state.store.load_snapshot(MASTER_SNAPSHOT) or {})
    problems = mapping_problems(config, master)
    charts = "| Coupa chart of accounts | D365 legal entity | in D365 |\n|---|---|---|\n" + "\n".join(
        f"| {chart} | {le} | {'yes' if master.has_legal_entity(le) else '**no**'} |"
        for chart, le in sorted(config.legal_entities.items()))
    return dg.MaterializeResult(metadata={
        "mapping_file": mapping.resolved_path or "bundled example",
        "charts": dg.MetadataValue.md(charts), "dimension_order": " - ".join(config.dimensions.order),
        "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "None."),
        "problem_count": len(problems)})


@dg.asset_check(asset=d365_gl_mapping, description="Every mapped legal entity, vendor group and currency exists in D365.")
def gl_mapping_matches_d365(sync_state: SyncStateResource, mapping: MappingResource) -> dg.AssetCheckResult:
    master = D365MasterData.from_rows(sync_state.store.load_snapshot(MASTER_SNAPSHOT) or {})
    problems = mapping_problems(mapping.load(), master)
    return dg.AssetCheckResult(passed=not problems, description="; ".join(problems) or None,
                               metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "None.")})
