"""Master data flow: Coupa suppliers, D365 legal entities and master data, the validated mapping,
and vendors in D365 — their checks, ``master_data_job`` and its two schedules (hourly, nightly full).

Runs before documents: the documents flow reads the master-data snapshot and needs the vendors."""

from collections import Counter
from datetime import datetime, timedelta

import dagster as dg

from ..common.markdown import table
from ..mapping.invoices import legal_entity_for
from ..mapping.master import D365MasterData
from ..mapping.purchase_orders import legal_entity_for_po
from ..settings import DEFAULT_COUPA_SUPPLIER_OVERLAP_MINUTES, minutes_setting
from ..state.ledger import Ledger
from ..state.store import normalize_timestamp
from ..sync.master_data import MASTER_SNAPSHOT, mapping_problems, read_master_rows
from ..sync.report import SyncReport
from ..sync.vendors import VendorSync
from .coupa_staging import iso, md_counts, stage_in_chunks
from .metadata import StepMeter, sync_metadata
from .outages import fail_if_all_failed_by_system, fail_run_on_outage
from .resources import D365_WRITES_POOL, CoupaResource, D365Resource, MappingResource, SyncStateResource
from .services import build_services
from .unfinished import stuck_check

SUPPLIER_WATERMARK = "coupa.suppliers.updated_at"


class SupplierReadConfig(dg.Config):
    """``full_refresh``: read every supplier again (the nightly schedule does), not only those
    updated since the watermark — a safety net for anything an incremental read ever missed."""

    full_refresh: bool = False


def supplier_overlap() -> timedelta:
    """How far before the watermark an incremental read starts (COUPA_SUPPLIER_OVERLAP_MINUTES, read
    at run start): a supplier saved in a long Coupa transaction carries an updated-at older than its
    commit. Staging compares content hashes, so the overlap re-reads cheaply and changes nothing."""
    return minutes_setting(
        "COUPA_SUPPLIER_OVERLAP_MINUTES",
        timedelta(minutes=DEFAULT_COUPA_SUPPLIER_OVERLAP_MINUTES),
        "the minutes an incremental supplier read starts before the watermark",
    )


@dg.asset(
    key=["coupa", "suppliers"],
    group_name="coupa",
    kinds={"coupa"},
    description="Coupa suppliers, read incrementally on updated-at (stored watermark, re-read with an "
    "overlap) and staged; run config full_refresh reads all of them (nightly schedule).",
)
@fail_run_on_outage
def coupa_suppliers(
    context: dg.AssetExecutionContext, config: SupplierReadConfig, coupa: CoupaResource, sync_state: SyncStateResource
) -> dg.MaterializeResult:
    meter = StepMeter()
    store = sync_state.store
    watermark = store.get_watermark(SUPPLIER_WATERMARK)
    since = None
    if watermark and not config.full_refresh:
        since = iso(datetime.fromisoformat(watermark.replace("Z", "+00:00")) - supplier_overlap())
    filters = {"updated-at[gt_or_eq]": since} if since else {}
    meter.count_requests(coupa=coupa.client)
    statuses: Counter = Counter()
    stamps: list[str] = []

    def count(chunk: list) -> None:
        statuses.update(str(r.get("status")) for r in chunk)
        stamps.append(max((normalize_timestamp(r.get("updated-at")) for r in chunk), default=""))

    records = coupa.client.iter_records("suppliers", filters)
    staged, fetched = stage_in_chunks(store, "supplier", records, context.run.run_id, count)
    for rejected in staged.rejected:
        context.log.error("suppliers: a record was not staged: %s", rejected.reason)
    newest = max(stamps, default="")
    if newest and (watermark is None or newest > normalize_timestamp(watermark)):
        store.set_watermark(SUPPLIER_WATERMARK, newest)
    return dg.MaterializeResult(
        metadata={
            "fetched": fetched,
            "new": staged.new,
            "changed": staged.changed,
            "unchanged": staged.unchanged,
            "staged_total": store.count("supplier"),
            "watermark_before": watermark or "none (full read)",
            "read_since": since or "everything (full read)",
            **meter.metadata(),
            "by_status": dg.MetadataValue.md(md_counts("Status", statuses)),
        }
    )


@dg.asset(
    key=["d365", "legal_entities"],
    group_name="d365",
    kinds={"d365"},
    description="D365 legal entities (dataAreaId) visible to the integration user.",
)
def d365_legal_entities(context: dg.AssetExecutionContext, d365: D365Resource) -> dg.MaterializeResult:
    meter = StepMeter().count_requests(d365=d365.client)
    rows = list(d365.client.query("LegalEntities", select=["LegalEntityId", "Name"]))
    ids = sorted(str(r["LegalEntityId"]).lower() for r in rows)
    default = d365.default_legal_entity.lower()
    entities = table(
        ["dataAreaId", "Name"],
        ([r["LegalEntityId"], r.get("Name", "")] for r in sorted(rows, key=lambda r: r["LegalEntityId"])),
    )
    return dg.MaterializeResult(
        metadata={
            "legal_entities": len(rows),
            "default_legal_entity": default,
            "default_found": default in ids,
            "ids": dg.MetadataValue.json(ids),
            "table": dg.MetadataValue.md(entities),
            **meter.metadata(),
        }
    )


@dg.asset_check(asset=d365_legal_entities, description="D365_DEFAULT_LEGAL_ENTITY exists in D365.")
def default_legal_entity_exists(d365: D365Resource) -> dg.AssetCheckResult:
    default = d365.default_legal_entity.lower()
    rows = list(d365.client.query("LegalEntities", select=["LegalEntityId"]))
    ids = sorted(str(r["LegalEntityId"]).lower() for r in rows)
    return dg.AssetCheckResult(
        passed=default in ids,
        description=None
        if default in ids
        else f"D365_DEFAULT_LEGAL_ENTITY={default!r} is not a legal entity in D365; known: {', '.join(ids)}",
        metadata={"default_legal_entity": default, "known": dg.MetadataValue.json(ids)},
    )


@dg.asset(
    key=["d365", "master_data"],
    group_name="d365",
    kinds={"d365"},
    description="Legal entities, main accounts per legal entity, dimension values, released products, "
    "vendor groups, payment terms and procurement categories, snapshotted for mapping.",
)
@fail_run_on_outage
def d365_master_data(
    context: dg.AssetExecutionContext, d365: D365Resource, sync_state: SyncStateResource, mapping: MappingResource
) -> dg.MaterializeResult:
    meter = StepMeter().count_requests(d365=d365.client)
    rows = read_master_rows(d365.client, mapping.load().mapped_legal_entities)
    sync_state.store.save_snapshot(MASTER_SNAPSHOT, rows)
    counts = table(["entity set", "rows"], ([k, len(v)] for k, v in rows.items()))
    return dg.MaterializeResult(
        metadata={
            **{f"rows_{name}": len(value) for name, value in rows.items()},
            "table": dg.MetadataValue.md(counts),
            **meter.metadata(),
        }
    )


@dg.asset(
    key=["d365", "gl_mapping"],
    group_name="d365",
    kinds={"d365"},
    deps=[d365_master_data],
    description="The Coupa -> D365 mapping file (charts -> legal entities, vendor accounts, dimensions, "
    "items), validated against the D365 master data.",
)
def d365_gl_mapping(
    context: dg.AssetExecutionContext, sync_state: SyncStateResource, mapping: MappingResource
) -> dg.MaterializeResult:
    config = mapping.load()
    master = D365MasterData.from_rows(sync_state.store.load_snapshot(MASTER_SNAPSHOT) or {})
    problems = mapping_problems(config, master)
    charts = table(
        ["Coupa chart of accounts", "D365 legal entity", "in D365"],
        (
            [chart, le, "yes" if master.has_legal_entity(le) else "**no**"]
            for chart, le in sorted(config.legal_entities.items())
        ),
    )
    return dg.MaterializeResult(
        metadata={
            "mapping_file": mapping.resolved_path or "bundled example",
            "charts": dg.MetadataValue.md(charts),
            "dimension_order": " - ".join(config.dimensions.order),
            "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "None."),
            "problem_count": len(problems),
        }
    )


@dg.asset_check(
    asset=d365_gl_mapping, description="Every mapped legal entity, vendor group and currency exists in D365."
)
def gl_mapping_matches_d365(sync_state: SyncStateResource, mapping: MappingResource) -> dg.AssetCheckResult:
    master = D365MasterData.from_rows(sync_state.store.load_snapshot(MASTER_SNAPSHOT) or {})
    problems = mapping_problems(mapping.load(), master)
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems) or None,
        metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "None.")},
    )


@dg.asset(
    key=["d365", "vendors"],
    group_name="d365",
    kinds={"d365"},
    deps=[coupa_suppliers, d365_gl_mapping, d365_master_data],
    pool=D365_WRITES_POOL,
    description="Coupa suppliers as D365 VendorsV2 in every legal entity they are used in: created when "
    "missing (read cross-company first), changed fields updated, never created twice.",
)
@fail_run_on_outage
def d365_vendors(
    context: dg.AssetExecutionContext,
    coupa: CoupaResource,
    d365: D365Resource,
    sync_state: SyncStateResource,
    mapping: MappingResource,
) -> dg.MaterializeResult:
    meter = StepMeter()
    services = build_services(context, coupa, d365, sync_state, mapping)
    meter.count_requests(coupa=services.coupa, d365=services.d365)
    store = services.store
    used: dict[int, set[str]] = {}
    for doc_type, legal_entity_of in (("invoice", legal_entity_for), ("purchase_order", legal_entity_for_po)):
        for document in store.iter_documents(doc_type):  # a page at a time: every document ever staged
            le = legal_entity_of(document, services.mapping)
            supplier_id = (
                (document.get("supplier") or {}).get("id") if isinstance(document.get("supplier"), dict) else None
            )
            if le and isinstance(supplier_id, int | str) and str(supplier_id).isdigit():
                used.setdefault(int(supplier_id), set()).add(le)
            # anything else is reported on the document itself when it is synced; it never stops the vendors
    vendors = VendorSync(services)
    prefetched = {le: vendors.prefetch(le) for le in sorted({le for les in used.values() for le in les})}
    report = SyncReport()
    wanted = (
        (supplier, le)
        for supplier in store.iter_documents("supplier")
        for le in sorted(used.get(int(supplier["id"]), set()))
    )
    for outcome in vendors.ensure_many(wanted):
        report.add(outcome)
    fail_if_all_failed_by_system(report, "vendor")
    return dg.MaterializeResult(
        metadata=sync_metadata(
            report, "vendor", meter, existing_vendors_read=dg.MetadataValue.json(prefetched), suppliers_in_use=len(used)
        )
    )


@dg.asset_check(asset=d365_vendors, description="No vendor is quarantined, failed or left half-written.")
def vendors_not_stuck(sync_state: SyncStateResource) -> dg.AssetCheckResult:
    return stuck_check(Ledger(sync_state.store.engine), "vendor", "vendors")


master_data_job = dg.define_asset_job(
    "master_data_job",
    selection=dg.AssetSelection.assets(
        coupa_suppliers, d365_legal_entities, d365_master_data, d365_gl_mapping, d365_vendors
    ),
    description="Suppliers, D365 master data, the validated mapping, and vendors in D365.",
)

# Schedules start STOPPED (Dagster's default); turn them on in the UI (Automation) or per deployment.
master_data_nightly_full = dg.ScheduleDefinition(
    name="master_data_nightly_full",
    job=master_data_job,
    cron_schedule="5 2 * * *",
    execution_timezone="UTC",
    run_config={"ops": {"coupa__suppliers": {"config": {"full_refresh": True}}}},
    description="Every night: master data with every Coupa supplier read again (catches anything an "
    "incremental read missed).",
)
master_data_hourly = dg.ScheduleDefinition(
    name="master_data_hourly",
    job=master_data_job,
    cron_schedule="5 * * * *",
    execution_timezone="UTC",
    description="Every hour: suppliers (incremental), D365 master data, mapping check, vendors.",
)

defs = dg.Definitions(
    assets=[coupa_suppliers, d365_legal_entities, d365_master_data, d365_gl_mapping, d365_vendors],
    asset_checks=[default_legal_entity_exists, gl_mapping_matches_d365, vendors_not_stuck],
    jobs=[master_data_job],
    schedules=[master_data_hourly, master_data_nightly_full],
)
