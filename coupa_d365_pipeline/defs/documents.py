"""Vendors and vendor invoices written to D365, their checks, and the replay job."""

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg

from .coupa_staging import coupa_invoices, coupa_purchase_orders, coupa_suppliers
from ..mapping.documents import legal_entity_for
from ..mapping.purchase_orders import legal_entity_for_po
from .partitions import daily_partitions
from .resources import CoupaResource, D365Resource, MappingResource, SyncStateResource
from ..state.ledger import Ledger
from ..sync.base import DocumentSync
from ..sync.invoices import InvoiceSync
from ..sync.purchase_orders import PurchaseOrderSync
from ..sync.report import SyncReport
from ..sync.vendors import VendorSync
from .master_data import d365_gl_mapping, d365_master_data
from .services import build_services
from .outages import fail_if_all_failed_by_system, fail_run_on_outage

RETRY_LIMIT = 500  # quarantined/failed invoices re-tried per run (they succeed once the mapping is fixed)


def _utc(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _requests(services: Any) -> tuple[int, int]:
    return services.coupa.request_count, services.d365.request_count


def _metadata(report: SyncReport, doc_type: str, before: tuple[int, int], services: Any, started: float,
              **extra: Any) -> dict[str, Any]:
    coupa_now, d365_now = _requests(services)
    processed = len([o for o in report.outcomes if o.doc_type == doc_type])
    return {**report.metadata_counts(doc_type), "processed": processed,
            "d365_requests": d365_now - before[1], "coupa_requests": coupa_now - before[0],
            "duration_s": round(time.monotonic() - started, 3),
            "problems": dg.MetadataValue.md(report.problems_markdown()), **extra}


@dg.asset(key=["d365", "vendors"], group_name="d365", kinds={"d365"},
          deps=[coupa_suppliers, d365_gl_mapping, d365_master_data], pool="d365_writes",
          description="Coupa suppliers as D365 VendorsV2 in every legal entity they are used in: created when "
                      "missing (read cross-company first), changed fields updated, never created twice.")
@fail_run_on_outage
def d365_vendors(context: dg.AssetExecutionContext, coupa: CoupaResource, d365: D365Resource,
                 sync_state: SyncStateResource, mapping: MappingResource) -> dg.MaterializeResult:
    started = time.monotonic()
    services = build_services(context, coupa, d365, sync_state, mapping)
    before = _requests(services)
    store = services.store
    used: dict[int, set[str]] = {}
    for doc_type, legal_entity_of in (("invoice", legal_entity_for), ("purchase_order", legal_entity_for_po)):
        for document in store.documents(doc_type):
            le = legal_entity_of(document, services.mapping)
            supplier_id = (document.get("supplier") or {}).get("id") if isinstance(document.get("supplier"), dict) \
                else None
            if le and isinstance(supplier_id, int | str) and str(supplier_id).isdigit():
                used.setdefault(int(supplier_id), set()).add(le)
            # anything else is reported on the document itself when it is synced; it never stops the vendors
    vendors = VendorSync(services)
    prefetched = {le: vendors.prefetch(le) for le in sorted({le for les in used.values() for le in les})}
    report = SyncReport()
    for supplier in store.documents("supplier"):
        for le in sorted(used.get(int(supplier["id"]), set())):
            report.add(vendors.ensure(supplier, le))
    fail_if_all_failed_by_system(report, "vendor")
    return dg.MaterializeResult(metadata=_metadata(
        report, "vendor", before, services, started, existing_vendors_read=dg.MetadataValue.json(prefetched),
        suppliers_in_use=len(used)))


def _sync_window(context: dg.AssetExecutionContext, services: Any, doc_type: str, syncer: DocumentSync,
                 started: float) -> dg.MaterializeResult:
    """Sync the staged documents of the partition window, plus earlier unfinished ones (quarantined,
    failed, interrupted, not yet told to Coupa) and staged ones no run has tried yet."""
    before = _requests(services)
    window = context.partition_time_window
    documents = services.store.documents_updated_between(doc_type, _utc(window.start), _utc(window.end))
    in_window = {int(d["id"]) for d in documents}
    retry_ids = [r.coupa_id for r in services.ledger.retry_candidates(doc_type, exclude=in_window, limit=RETRY_LIMIT)]
    # staged but never synced: left behind by a run an outage stopped, whatever partition it covered
    retry_ids += services.ledger.never_tried(doc_type, exclude=in_window | set(retry_ids), limit=RETRY_LIMIT)
    retries = list(services.store.documents_by_id(doc_type, retry_ids).values())
    report = syncer.sync_many([*documents, *retries])
    context.log.info("%s %s..%s: %s", doc_type, _utc(window.start), _utc(window.end), dict(report.counts(doc_type)))
    fail_if_all_failed_by_system(report, doc_type)
    return dg.MaterializeResult(metadata=_metadata(
        report, doc_type, before, services, started, window_start=_utc(window.start), window_end=_utc(window.end),
        partitions=len(context.partition_keys), retried_from_earlier_runs=len(retries), route="odata"))


@dg.asset(key=["d365", "purchase_orders"], group_name="d365", kinds={"d365"}, partitions_def=daily_partitions,
          backfill_policy=dg.BackfillPolicy.single_run(), pool="d365_writes",
          deps=[coupa_purchase_orders, d365_vendors, d365_gl_mapping],
          description="Issued Coupa POs as D365 PurchaseOrderHeadersV2 + PurchaseOrderLinesV2 (D365 number = Coupa "
                      "po-number), kept in step where D365 still allows it; cancelled POs cancel unreceived lines.")
@fail_run_on_outage
def d365_purchase_orders(context: dg.AssetExecutionContext, coupa: CoupaResource, d365: D365Resource,
                         sync_state: SyncStateResource, mapping: MappingResource) -> dg.MaterializeResult:
    started = time.monotonic()
    services = build_services(context, coupa, d365, sync_state, mapping)
    return _sync_window(context, services, "purchase_order", PurchaseOrderSync(services), started)


@dg.asset(key=["d365", "vendor_invoices"], group_name="d365", kinds={"d365"}, partitions_def=daily_partitions,
          backfill_policy=dg.BackfillPolicy.single_run(), pool="d365_writes",
          deps=[coupa_invoices, d365_vendors, d365_gl_mapping, d365_purchase_orders],
          description="Approved Coupa invoices as D365 pending vendor invoices (header + lines in one changeset), "
                      "exactly once; voided ones removed while still pending; unmappable ones quarantined.")
@fail_run_on_outage
def d365_vendor_invoices(context: dg.AssetExecutionContext, coupa: CoupaResource, d365: D365Resource,
                         sync_state: SyncStateResource, mapping: MappingResource) -> dg.MaterializeResult:
    started = time.monotonic()
    services = build_services(context, coupa, d365, sync_state, mapping)
    return _sync_window(context, services, "invoice", InvoiceSync(services), started)


def _age(age: timedelta) -> str:
    minutes = int(age.total_seconds() // 60)
    return f"{minutes // 1440}d {minutes % 1440 // 60}h" if minutes >= 1440 else f"{minutes // 60}h {minutes % 60}m"


def _stuck_check(ledger: Ledger, doc_type: str, what: str) -> dg.AssetCheckResult:
    """Every unfinished row with its reason and age. ERROR when a person is needed or D365's state is
    unknown (quarantined, failed, interrupted write, missing/changed/void after posting); WARN when
    the only thing left is telling Coupa about a booking D365 already holds (the next run does it)."""
    items = ledger.unfinished(doc_type)
    table = ("| Coupa id | scope | state | reason | age | since |\n|---|---|---|---|---|---|\n" + "\n".join(
        f"| {i.row.coupa_id} | {i.row.scope or i.row.legal_entity or ''} | {i.kind} "
        f"| {i.reason.replace('|', '/').replace(chr(10), ' ')[:300]} | {_age(i.age)} "
        f"| {i.row.updated_at:%Y-%m-%d %H:%M} |" for i in items[:200])
        + (f"\n| … | {len(items) - 200} more | | | | |" if len(items) > 200 else ""))
    by_state: dict[str, int] = {}
    for i in items:
        by_state[i.kind] = by_state.get(i.kind, 0) + 1
    errors = any(i.severity == "error" for i in items)
    oldest = max((i.age for i in items), default=None)
    return dg.AssetCheckResult(
        passed=not items,
        severity=dg.AssetCheckSeverity.ERROR if errors else dg.AssetCheckSeverity.WARN,
        description=None if not items else f"{len(items)} {what} need attention: " +
        ", ".join(f"{n} {s}" for s, n in sorted(by_state.items())),
        metadata={"stuck": len(items), "by_state": dg.MetadataValue.json(by_state),
                  "oldest_age_s": int(oldest.total_seconds()) if oldest is not None else 0,
                  "details": dg.MetadataValue.md(table if items else "Nothing stuck.")})


@dg.asset_check(asset=d365_vendor_invoices, description="No invoice is quarantined, failed, left "
                                                        "half-written, booked but not yet told to Coupa, or "
                                                        "changed/voided in Coupa after D365 posted it.")
def vendor_invoices_not_stuck(sync_state: SyncStateResource) -> dg.AssetCheckResult:
    return _stuck_check(Ledger(sync_state.store.engine), "invoice", "invoices")


@dg.asset_check(asset=d365_purchase_orders, description="No purchase order is quarantined, failed, left "
                                                         "half-written, booked but not yet told to Coupa, or has a "
                                                         "change D365 no longer allows (received lines).")
def purchase_orders_not_stuck(sync_state: SyncStateResource) -> dg.AssetCheckResult:
    return _stuck_check(Ledger(sync_state.store.engine), "purchase_order", "purchase orders")


@dg.asset_check(asset=d365_vendors, description="No vendor is quarantined, failed or left half-written.")
def vendors_not_stuck(sync_state: SyncStateResource) -> dg.AssetCheckResult:
    return _stuck_check(Ledger(sync_state.store.engine), "vendor", "vendors")


class ReplayConfig(dg.Config):
    """Which invoices to re-drive through the normal path (same dedupe as every run)."""

    coupa_ids: list[int] = []
    failed_since: str | None = None     # ISO timestamp: every invoice quarantined/failed/stuck or booked but not
                                        # yet told to Coupa since then
    refetch_from_coupa: bool = True     # read the current version from Coupa first
    rebook_missing: bool = False        # book again invoices whose pending D365 invoice vanished (missing_in_d365)


@dg.op(description="Re-drive invoices by Coupa id, or everything that failed since a time, through the same "
                   "sync path (ledger claims, natural-key lookup) as the scheduled runs.")
@fail_run_on_outage
def replay_invoices(context: dg.OpExecutionContext, config: ReplayConfig, coupa: CoupaResource, d365: D365Resource,
                    sync_state: SyncStateResource, mapping: MappingResource) -> dg.Output:
    started = time.monotonic()
    services = build_services(context, coupa, d365, sync_state, mapping)
    before = _requests(services)
    ids = set(config.coupa_ids)
    if config.failed_since:
        since = datetime.fromisoformat(config.failed_since.replace("Z", "+00:00"))
        since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
        ids |= {r.coupa_id for r in services.ledger.replay_candidates("invoice", since=since)}
    if not ids:
        raise dg.Failure("nothing to replay: give coupa_ids or failed_since")
    invoices = []
    for coupa_id in sorted(ids):
        if config.refetch_from_coupa:
            invoice = services.coupa.get("invoices", coupa_id)
            services.store.stage("invoice", [invoice], run_id=services.run_id)
        else:
            invoice = services.store.documents_by_id("invoice", [coupa_id]).get(coupa_id)
        if invoice is not None:
            invoices.append(invoice)
    report = InvoiceSync(services, rebook_missing=config.rebook_missing).sync_many(invoices)
    fail_if_all_failed_by_system(report, "invoice")
    metadata = _metadata(report, "invoice", before, services, started, requested=len(ids))
    context.log.info("replayed %d invoices: %s", len(invoices), dict(report.counts("invoice")))
    return dg.Output(dict(report.counts("invoice")), metadata=metadata)


@dg.job(description="Replay invoices (launch from the UI with coupa_ids or failed_since in the config).")
def replay_invoices_job() -> None:
    replay_invoices()
