"""Replay flow: ``replay_invoices_job`` re-drives chosen invoices (by Coupa id, or everything that
failed since a time) through the same sync path as the scheduled runs (ledger claims, natural-key
lookup), so a replay can never book an invoice twice. Launched by hand from the UI."""

from datetime import UTC, datetime

import dagster as dg

from ..sync.invoices import InvoiceSync
from .metadata import StepMeter, sync_metadata
from .outages import fail_if_all_failed_by_system, fail_run_on_outage
from .resources import D365_WRITES_POOL, CoupaResource, D365Resource, MappingResource, SyncStateResource
from .services import build_services


class ReplayConfig(dg.Config):
    """Which invoices to re-drive through the normal path (same dedupe as every run)."""

    coupa_ids: list[int] = []
    failed_since: str | None = None  # ISO timestamp: every invoice quarantined/failed/stuck or booked but not
    # yet told to Coupa since then
    refetch_from_coupa: bool = True  # read the current version from Coupa first
    rebook_missing: bool = False  # book again invoices whose pending D365 invoice vanished (missing_in_d365)


@dg.op(
    pool=D365_WRITES_POOL,
    description="Re-drive invoices by Coupa id, or everything that failed since a time, through the same "
    "sync path (ledger claims, natural-key lookup) as the scheduled runs.",
)
@fail_run_on_outage
def replay_invoices(
    context: dg.OpExecutionContext,
    config: ReplayConfig,
    coupa: CoupaResource,
    d365: D365Resource,
    sync_state: SyncStateResource,
    mapping: MappingResource,
) -> dg.Output:
    meter = StepMeter()
    services = build_services(context, coupa, d365, sync_state, mapping)
    meter.count_requests(coupa=services.coupa, d365=services.d365)
    ids = set(config.coupa_ids)
    if config.failed_since:
        since = datetime.fromisoformat(config.failed_since.replace("Z", "+00:00"))
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
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
    metadata = sync_metadata(report, "invoice", meter, requested=len(ids))
    context.log.info("replayed %d invoices: %s", len(invoices), dict(report.counts("invoice")))
    return dg.Output(dict(report.counts("invoice")), metadata=metadata)


@dg.job(description="Replay invoices (launch from the UI with coupa_ids or failed_since in the config).")
def replay_invoices_job() -> None:
    replay_invoices()


defs = dg.Definitions(jobs=[replay_invoices_job])
