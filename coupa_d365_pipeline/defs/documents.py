"""Documents flow: Coupa invoices and purchase orders staged per daily partition, written to D365
(purchase orders first, then vendor invoices), their "not stuck" checks, ``daily_documents_job`` and
its two schedules (today every hour, yesterday every night)."""

from datetime import timedelta
from typing import Any

import dagster as dg

from ..settings import DEFAULT_RETRY_LIMIT, dmf_data_project, dmf_threshold, throughput_settings
from ..state.ledger import Ledger
from ..state.store import coupa_id_of
from ..sync.base import DocumentSync
from ..sync.dmf_route import DmfRoute, Route, route_for_refs, window_chunks
from ..sync.events import SYNCED_STATUSES
from ..sync.invoices import InvoiceSync
from ..sync.odata_route import ODataBulkRoute
from ..sync.purchase_orders import PurchaseOrderSync
from ..sync.report import SyncReport
from .coupa_staging import iso, stage_window
from .master_data import d365_gl_mapping, d365_vendors
from .metadata import StepMeter, sync_metadata
from .outages import fail_if_all_failed_by_system, fail_run_on_outage
from .partitions import daily_partitions, partition_run, utc_day
from .resources import D365_WRITES_POOL, CoupaResource, D365Resource, MappingResource, SyncStateResource
from .services import build_services
from .unfinished import stuck_check


@dg.asset(
    key=["coupa", "invoices"],
    group_name="coupa",
    kinds={"coupa"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="Approved and voided Coupa invoices whose updated-at falls in the partition window (UTC).",
)
@fail_run_on_outage
def coupa_invoices(
    context: dg.AssetExecutionContext, coupa: CoupaResource, sync_state: SyncStateResource
) -> dg.MaterializeResult:
    return stage_window(context, coupa, sync_state, "invoices", "invoice", ",".join(SYNCED_STATUSES["invoice"]))


@dg.asset(
    key=["coupa", "purchase_orders"],
    group_name="coupa",
    kinds={"coupa"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="Issued, closed and cancelled Coupa purchase orders updated in the partition window (UTC).",
)
@fail_run_on_outage
def coupa_purchase_orders(
    context: dg.AssetExecutionContext, coupa: CoupaResource, sync_state: SyncStateResource
) -> dg.MaterializeResult:
    return stage_window(
        context, coupa, sync_state, "purchase_orders", "purchase_order", ",".join(SYNCED_STATUSES["purchase_order"])
    )


def _sync_window(
    context: dg.AssetExecutionContext, services: Any, doc_type: str, syncer: DocumentSync, meter: StepMeter
) -> dg.MaterializeResult:
    """Sync the staged documents of the partition window, plus earlier unfinished ones (quarantined,
    failed, interrupted, not yet told to Coupa) and staged ones no run has tried yet — through DMF when
    more of them are to be written than D365_DMF_THRESHOLD (``sync/dmf_route.py``), else through OData.
    DMF imports an earlier run left unsettled are resumed first, on either route."""
    threshold = dmf_threshold()  # read at run start; a bad value fails the step naming the variable
    throughput = throughput_settings()
    meter.count_requests(coupa=services.coupa, d365=services.d365)
    window = context.partition_time_window
    # ids and statuses first; the documents themselves are read a chunk at a time below
    refs = services.store.refs_updated_between(doc_type, iso(window.start), iso(window.end))
    in_window = {coupa_id for coupa_id, _ in refs}
    # unfinished documents of earlier runs (they succeed once the mapping is fixed), at most DEFAULT_RETRY_LIMIT
    retry_ids = [
        r.coupa_id for r in services.ledger.retry_candidates(doc_type, exclude=in_window, limit=DEFAULT_RETRY_LIMIT)
    ]
    # staged but never synced: left behind by a run an outage stopped, whatever partition it covered
    retry_ids += services.ledger.never_tried(doc_type, exclude=in_window | set(retry_ids), limit=DEFAULT_RETRY_LIMIT)
    retries = list(services.store.documents_by_id(doc_type, retry_ids).values())
    bulk = DmfRoute(syncer, data_project=dmf_data_project(), coupa_concurrency=throughput.coupa_concurrency)
    lean = ODataBulkRoute(
        syncer,
        documents_per_batch=throughput.batch_documents,
        d365_concurrency=throughput.d365_concurrency,
        coupa_concurrency=throughput.coupa_concurrency,
    )
    report = SyncReport()
    settled = bulk.resume(report)
    refs = [(coupa_id, status) for coupa_id, status in refs if coupa_id not in settled]
    retries = [d for d in retries if not (isinstance(d, dict) and coupa_id_of(d.get("id")) in settled)]
    retry_refs = [(coupa_id_of(d.get("id")), d.get("status")) for d in retries if isinstance(d, dict)]
    decision = route_for_refs(services, doc_type, [*refs, *retry_refs], threshold, chunk=throughput.documents_per_chunk)
    context.log.info("%s: route %s (%s)", doc_type, decision.route, decision.reason)
    route = bulk if decision.route == Route.DMF else lean
    chunks = window_chunks([coupa_id for coupa_id, _ in refs], throughput.documents_per_chunk)
    for number, chunk in enumerate(chunks, start=1):
        found = services.store.documents_by_id(doc_type, chunk)
        documents = [found[coupa_id] for coupa_id in chunk if coupa_id in found]
        if number == len(chunks):
            documents += retries  # with the last chunk: one more round of packages/lookups would cost requests
        if len(chunks) > 1:
            context.log.info("%s: chunk %d of %d (%d documents)", doc_type, number, len(chunks), len(documents))
        report = route.sync_many(documents, report)
        del found, documents  # before the next chunk is read: never two chunks in memory at once
    context.log.info("%s %s..%s: %s", doc_type, iso(window.start), iso(window.end), dict(report.counts(doc_type)))
    fail_if_all_failed_by_system(report, doc_type)
    return dg.MaterializeResult(
        metadata=sync_metadata(
            report,
            doc_type,
            meter,
            window_start=iso(window.start),
            window_end=iso(window.end),
            partitions=len(context.partition_keys),
            retried_from_earlier_runs=len(retries),
            route=decision.route.value,
            route_reason=decision.reason,
            documents_to_write=decision.to_write,
            dmf_executions=", ".join(bulk.summary.executions) or "-",
            dmf_statuses=", ".join(f"{k}: {v}" for k, v in bulk.summary.statuses.items()) or "-",
            dmf_packaged=bulk.summary.packaged,
            dmf_redriven_through_odata=bulk.summary.redriven,
            dmf_resumed=", ".join(bulk.summary.resumed) or "-",
            odata_batches=lean.summary.batches,
            odata_batched=lean.summary.batched,
            odata_redriven=lean.summary.redriven,
        )
    )


@dg.asset(
    key=["d365", "purchase_orders"],
    group_name="d365",
    kinds={"d365"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=D365_WRITES_POOL,
    deps=[coupa_purchase_orders, d365_vendors, d365_gl_mapping],
    description="Issued Coupa POs as D365 PurchaseOrderHeadersV2 + PurchaseOrderLinesV2 (D365 number = Coupa "
    "po-number), kept in step where D365 still allows it; cancelled POs cancel unreceived lines.",
)
@fail_run_on_outage
def d365_purchase_orders(
    context: dg.AssetExecutionContext,
    coupa: CoupaResource,
    d365: D365Resource,
    sync_state: SyncStateResource,
    mapping: MappingResource,
) -> dg.MaterializeResult:
    meter = StepMeter()
    services = build_services(context, coupa, d365, sync_state, mapping)
    return _sync_window(context, services, "purchase_order", PurchaseOrderSync(services), meter)


@dg.asset(
    key=["d365", "vendor_invoices"],
    group_name="d365",
    kinds={"d365"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=D365_WRITES_POOL,
    deps=[coupa_invoices, d365_vendors, d365_gl_mapping, d365_purchase_orders],
    description="Approved Coupa invoices as D365 pending vendor invoices (header + lines in one changeset), "
    "exactly once; voided ones removed while still pending; unmappable ones quarantined.",
)
@fail_run_on_outage
def d365_vendor_invoices(
    context: dg.AssetExecutionContext,
    coupa: CoupaResource,
    d365: D365Resource,
    sync_state: SyncStateResource,
    mapping: MappingResource,
) -> dg.MaterializeResult:
    meter = StepMeter()
    services = build_services(context, coupa, d365, sync_state, mapping)
    return _sync_window(context, services, "invoice", InvoiceSync(services), meter)


@dg.asset_check(
    asset=d365_vendor_invoices,
    description="No invoice is quarantined, failed, left "
    "half-written, booked but not yet told to Coupa, or "
    "changed/voided in Coupa after D365 posted it.",
)
def vendor_invoices_not_stuck(sync_state: SyncStateResource) -> dg.AssetCheckResult:
    return stuck_check(Ledger(sync_state.store.engine), "invoice", "invoices")


@dg.asset_check(
    asset=d365_purchase_orders,
    description="No purchase order is quarantined, failed, left "
    "half-written, booked but not yet told to Coupa, or has a "
    "change D365 no longer allows (received lines).",
)
def purchase_orders_not_stuck(sync_state: SyncStateResource) -> dg.AssetCheckResult:
    return stuck_check(Ledger(sync_state.store.engine), "purchase_order", "purchase orders")


daily_documents_job = dg.define_asset_job(
    "daily_documents_job",
    selection=dg.AssetSelection.assets(
        coupa_invoices, coupa_purchase_orders, d365_purchase_orders, d365_vendor_invoices
    ),
    description="One day (or a range, as one run) of Coupa POs and invoices: stage, then write POs, then invoices.",
)


# Schedules: polling that catches whatever webhooks missed. They start STOPPED (Dagster's default);
# turn them on in the UI (Automation) or set them RUNNING per deployment.
@dg.schedule(
    job=daily_documents_job,
    cron_schedule="15 * * * *",
    execution_timezone="UTC",
    description="Every hour: today's partition (Coupa documents updated today) — POs, then invoices.",
)
def documents_today(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    return partition_run(
        utc_day(context.scheduled_execution_time), f"documents-{context.scheduled_execution_time.isoformat()}"
    )


@dg.schedule(
    job=daily_documents_job,
    cron_schedule="30 1 * * *",
    execution_timezone="UTC",
    description="Every night: yesterday's partition again, for documents updated late in the day.",
)
def documents_yesterday(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    day = utc_day(context.scheduled_execution_time - timedelta(days=1))
    return partition_run(day, f"documents-nightly-{day}")


defs = dg.Definitions(
    assets=[coupa_invoices, coupa_purchase_orders, d365_purchase_orders, d365_vendor_invoices],
    asset_checks=[purchase_orders_not_stuck, vendor_invoices_not_stuck],
    jobs=[daily_documents_job],
    schedules=[documents_today, documents_yesterday],
)
