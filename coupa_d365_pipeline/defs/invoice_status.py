"""Posted-invoice and payment status: read from D365, written back to Coupa (never GL data)."""

import time

import dagster as dg

from .resources import CoupaResource, D365Resource, MappingResource, SyncStateResource
from ..state.status import StatusEvents
from ..sync.status import STATUS_DOC, StatusReader, StatusWriter
from .services import build_services
from .documents import d365_vendor_invoices
from .outages import fail_if_all_failed_by_system, fail_run_on_outage


@dg.asset(key=["d365", "invoice_status"], group_name="d365", kinds={"d365"}, deps=[d365_vendor_invoices],
          description="For invoices we booked: posted in D365 (VendInvoiceJourBiEntities), new settlements "
                      "(VendSettlementBiEntities) and changed invoice VendTrans (reversed settlements); "
                      "incremental with an overlap (STATUS_READ_OVERLAP_MINUTES).")
@fail_run_on_outage
def d365_invoice_status(context: dg.AssetExecutionContext, coupa: CoupaResource, d365: D365Resource,
                        sync_state: SyncStateResource, mapping: MappingResource) -> dg.MaterializeResult:
    started = time.monotonic()
    services = build_services(context, coupa, d365, sync_state, mapping)
    before = services.d365.request_count
    events = StatusEvents(services.store.engine)
    counts = StatusReader(services, events).read()
    return dg.MaterializeResult(metadata={
        **counts, **events.counts(), "d365_requests": services.d365.request_count - before,
        "duration_s": round(time.monotonic() - started, 3)})


@dg.asset(key=["coupa", "invoice_status"], group_name="coupa", kinds={"coupa"}, deps=[d365_invoice_status],
          description="Per invoice, under its ledger claim: D365 posting (history record with invoice number and "
                      "voucher) and payments reconciled with the invoice's current D365 settlements (each payment "
                      "once, by settlement id; reversals offset; paid = fully settled now) back to Coupa.")
@fail_run_on_outage
def coupa_invoice_status(context: dg.AssetExecutionContext, coupa: CoupaResource, d365: D365Resource,
                         sync_state: SyncStateResource, mapping: MappingResource) -> dg.MaterializeResult:
    started = time.monotonic()
    services = build_services(context, coupa, d365, sync_state, mapping)
    before = services.coupa.request_count
    events = StatusEvents(services.store.engine)
    report = StatusWriter(services, events).write()
    fail_if_all_failed_by_system(report, STATUS_DOC)
    counts = report.counts()
    return dg.MaterializeResult(metadata={
        "invoices_updated": int(counts.get("updated", 0)), "unchanged": int(counts.get("already_present", 0)),
        "failed": int(counts.get("failed", 0)), "busy": int(counts.get("busy", 0)), **events.counts(),
        "coupa_requests": services.coupa.request_count - before,
        "problems": dg.MetadataValue.md(report.problems_markdown()),
        "duration_s": round(time.monotonic() - started, 3)})


@dg.asset_check(asset=coupa_invoice_status, description="Every posted/payment event read from D365 is in Coupa.")
def invoice_status_delivered(sync_state: SyncStateResource) -> dg.AssetCheckResult:
    events = StatusEvents(sync_state.store.engine)
    waiting = events.unpushed_invoice_ids()
    return dg.AssetCheckResult(passed=not waiting,
                               description=f"{len(waiting)} invoices have status not yet in Coupa" if waiting else None,
                               metadata={"waiting_invoices": dg.MetadataValue.json(waiting[:200]), **events.counts()})
