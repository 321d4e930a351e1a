"""Invoice status flow: posted-invoice and payment status read from D365 and written back to Coupa
(never GL data) — the two assets, their check, ``invoice_status_job`` and its schedule."""

import dagster as dg

from ..state.status import StatusEvents
from ..sync.status import STATUS_DOC, StatusReader, StatusWriter
from .documents import d365_vendor_invoices
from .metadata import StepMeter
from .outages import fail_if_all_failed_by_system, fail_run_on_outage
from .resources import CoupaResource, D365Resource, MappingResource, SyncStateResource
from .services import build_services


@dg.asset(
    key=["d365", "invoice_status"],
    group_name="d365",
    kinds={"d365"},
    deps=[d365_vendor_invoices],
    description="For invoices we booked: posted in D365 (VendInvoiceJourBiEntities), new settlements "
    "(VendSettlementBiEntities) and changed invoice VendTrans (reversed settlements); "
    "incremental with an overlap (STATUS_READ_OVERLAP_MINUTES).",
)
@fail_run_on_outage
def d365_invoice_status(
    context: dg.AssetExecutionContext,
    coupa: CoupaResource,
    d365: D365Resource,
    sync_state: SyncStateResource,
    mapping: MappingResource,
) -> dg.MaterializeResult:
    meter = StepMeter()
    services = build_services(context, coupa, d365, sync_state, mapping)
    meter.count_requests(d365=services.d365)
    events = StatusEvents(services.store.engine)
    counts = StatusReader(services, events).read()
    return dg.MaterializeResult(metadata={**counts, **events.counts(), **meter.metadata()})


@dg.asset(
    key=["coupa", "invoice_status"],
    group_name="coupa",
    kinds={"coupa"},
    deps=[d365_invoice_status],
    description="Per invoice, under its ledger claim: D365 posting (history record with invoice number and "
    "voucher) and payments reconciled with the invoice's current D365 settlements (each payment "
    "once, by settlement id; reversals offset; paid = fully settled now) back to Coupa.",
)
@fail_run_on_outage
def coupa_invoice_status(
    context: dg.AssetExecutionContext,
    coupa: CoupaResource,
    d365: D365Resource,
    sync_state: SyncStateResource,
    mapping: MappingResource,
) -> dg.MaterializeResult:
    meter = StepMeter()
    services = build_services(context, coupa, d365, sync_state, mapping)
    meter.count_requests(coupa=services.coupa)
    events = StatusEvents(services.store.engine)
    report = StatusWriter(services, events).write()
    fail_if_all_failed_by_system(report, STATUS_DOC)
    counts = report.counts()
    return dg.MaterializeResult(
        metadata={
            "invoices_updated": int(counts.get("updated", 0)),
            "unchanged": int(counts.get("already_present", 0)),
            "failed": int(counts.get("failed", 0)),
            "busy": int(counts.get("busy", 0)),
            **events.counts(),
            "problems": dg.MetadataValue.md(report.problems_markdown()),
            **meter.metadata(),
        }
    )


@dg.asset_check(asset=coupa_invoice_status, description="Every posted/payment event read from D365 is in Coupa.")
def invoice_status_delivered(sync_state: SyncStateResource) -> dg.AssetCheckResult:
    events = StatusEvents(sync_state.store.engine)
    waiting = events.unpushed_invoice_ids()
    return dg.AssetCheckResult(
        passed=not waiting,
        description=f"{len(waiting)} invoices have status not yet in Coupa" if waiting else None,
        metadata={"waiting_invoices": dg.MetadataValue.json(waiting[:200]), **events.counts()},
    )


# One status run at a time: dagster.yaml limits runs tagged STATUS_RUN_TAG to 1 (QueuedRunCoordinator).
# Correctness does not depend on it — the writer claims each invoice's ledger row — but two status
# runs would only fight over the same invoices.
STATUS_RUN_TAG = {"coupa_d365/flow": "invoice_status"}

invoice_status_job = dg.define_asset_job(
    "invoice_status_job",
    selection=dg.AssetSelection.assets(d365_invoice_status, coupa_invoice_status),
    run_tags=STATUS_RUN_TAG,
    description="Posted-invoice and payment status from D365 back to Coupa (one run at a time).",
)

# Starts STOPPED (Dagster's default); turn it on in the UI (Automation) or per deployment.
invoice_status_every_30_minutes = dg.ScheduleDefinition(
    name="invoice_status_every_30_minutes",
    job=invoice_status_job,
    cron_schedule="*/30 * * * *",
    execution_timezone="UTC",
    description="Every 30 minutes: posted and paid status from D365 back to Coupa.",
)

defs = dg.Definitions(
    assets=[d365_invoice_status, coupa_invoice_status],
    asset_checks=[invoice_status_delivered],
    jobs=[invoice_status_job],
    schedules=[invoice_status_every_30_minutes],
)
