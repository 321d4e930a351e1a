"""Coupa extraction assets: read documents and stage them in the sync database."""


import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import dagster as dg

from .partitions import daily_partitions
from .resources import CoupaResource, SyncStateResource
from ..settings import minutes_setting
from ..state.store import normalize_timestamp
from .outages import fail_run_on_outage


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _currency_code(record: dict) -> str:
    """The currency code for the metadata table, whatever shape Coupa's field has: the mapping
    decides what can be booked; counting must never fail the staging of a window."""
    currency = record.get("currency")
    if isinstance(currency, dict):
        return str(currency.get("code"))
    return str(currency)[:20]


def _rejected_md(rejected: list) -> str:
    rows = "\n".join(f"| {str(r.coupa_id)[:40].replace('|', '/')} | {r.reason.replace('|', '/')} |" for r in rejected[:50])
    return f"| Coupa id | why it was not staged |\n|---|---|\n{rows}" if rows else "None."


def _md_counts(title: str, counts: Counter) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0])))
    return f"| {title} | count |\n|---|---|\n{rows}" if rows else f"No {title.lower()} values."


SUPPLIER_WATERMARK = "coupa.suppliers.updated_at"
DEFAULT_SUPPLIER_OVERLAP_MINUTES = 60


class SupplierReadConfig(dg.Config):
    """``full_refresh``: read every supplier again (the nightly schedule does), not only those
    updated since the watermark — a safety net for anything an incremental read ever missed."""

    full_refresh: bool = False


def supplier_overlap() -> timedelta:
    """How far before the watermark an incremental read starts (COUPA_SUPPLIER_OVERLAP_MINUTES, read
    at run start): a supplier saved in a long Coupa transaction carries an updated-at older than its
    commit. Staging compares content hashes, so the overlap re-reads cheaply and changes nothing."""
    return minutes_setting("COUPA_SUPPLIER_OVERLAP_MINUTES", timedelta(minutes=DEFAULT_SUPPLIER_OVERLAP_MINUTES),
                           "the minutes an incremental supplier read starts before the watermark")


@dg.asset(key=["coupa", "suppliers"], group_name="coupa", kinds={"coupa"},
          description="Coupa suppliers, read incrementally on updated-at (stored watermark, re-read with an "
                      "overlap) and staged; run config full_refresh reads all of them (nightly schedule).")
@fail_run_on_outage
def coupa_suppliers(context: dg.AssetExecutionContext, config: SupplierReadConfig, coupa: CoupaResource,
                    sync_state: SyncStateResource) -> dg.MaterializeResult:
    started = time.monotonic()
    store = sync_state.store
    watermark = store.get_watermark(SUPPLIER_WATERMARK)
    since = None
    if watermark and not config.full_refresh:
        since = _iso(datetime.fromisoformat(watermark.replace("Z", "+00:00")) - supplier_overlap())
    filters = {"updated-at[gt_or_eq]": since} if since else {}
    requests_before = coupa.client.request_count
    records = list(coupa.client.iter_records("suppliers", filters))
    staged = store.stage("supplier", records, run_id=context.run.run_id)
    for rejected in staged.rejected:
        context.log.error("suppliers: a record was not staged: %s", rejected.reason)
    newest = max((normalize_timestamp(r.get("updated-at")) for r in records), default="")
    if newest and (watermark is None or newest > normalize_timestamp(watermark)):
        store.set_watermark(SUPPLIER_WATERMARK, newest)
    statuses = Counter(str(r.get("status")) for r in records)
    return dg.MaterializeResult(metadata={
        "fetched": len(records), "new": staged.new, "changed": staged.changed, "unchanged": staged.unchanged,
        "staged_total": store.count("supplier"), "watermark_before": watermark or "none (full read)",
        "read_since": since or "everything (full read)",
        "coupa_requests": coupa.client.request_count - requests_before,
        "duration_s": round(time.monotonic() - started, 3),
        "by_status": dg.MetadataValue.md(_md_counts("Status", statuses)),
    })


def _stage_window(context: dg.AssetExecutionContext, coupa: CoupaResource, sync_state: SyncStateResource,
                  resource: str, doc_type: str, statuses: str) -> dg.MaterializeResult:
    started = time.monotonic()
    window = context.partition_time_window
    filters = {"updated-at[gt_or_eq]": _iso(window.start), "updated-at[lt]": _iso(window.end), "status[in]": statuses}
    requests_before = coupa.client.request_count
    records = list(coupa.client.iter_records(resource, filters))
    staged = sync_state.store.stage(doc_type, records, run_id=context.run.run_id)
    by_status = Counter(str(r.get("status")) for r in records)
    currencies = Counter(_currency_code(r) for r in records)
    context.log.info("%s %s..%s: %d read (%d new, %d changed)", resource, _iso(window.start), _iso(window.end),
                     len(records), staged.new, staged.changed)
    for rejected in staged.rejected:
        context.log.error("%s: a record was not staged: %s", resource, rejected.reason)
    return dg.MaterializeResult(metadata={
        "window_start": _iso(window.start), "window_end": _iso(window.end),
        "partitions": len(context.partition_keys),
        "fetched": len(records), "new": staged.new, "changed": staged.changed, "unchanged": staged.unchanged,
        "rejected": len(staged.rejected), "rejected_records": dg.MetadataValue.md(_rejected_md(staged.rejected)),
        "coupa_requests": coupa.client.request_count - requests_before,
        "duration_s": round(time.monotonic() - started, 3),
        "by_status": dg.MetadataValue.md(_md_counts("Status", by_status)),
        "by_currency": dg.MetadataValue.md(_md_counts("Currency", currencies)),
    })


@dg.asset(key=["coupa", "invoices"], group_name="coupa", kinds={"coupa"}, partitions_def=daily_partitions,
          backfill_policy=dg.BackfillPolicy.single_run(),
          description="Approved and voided Coupa invoices whose updated-at falls in the partition window (UTC).")
@fail_run_on_outage
def coupa_invoices(context: dg.AssetExecutionContext, coupa: CoupaResource,
                   sync_state: SyncStateResource) -> dg.MaterializeResult:
    return _stage_window(context, coupa, sync_state, "invoices", "invoice", "approved,voided")


@dg.asset(key=["coupa", "purchase_orders"], group_name="coupa", kinds={"coupa"}, partitions_def=daily_partitions,
          backfill_policy=dg.BackfillPolicy.single_run(),
          description="Issued, closed and cancelled Coupa purchase orders updated in the partition window (UTC).")
@fail_run_on_outage
def coupa_purchase_orders(context: dg.AssetExecutionContext, coupa: CoupaResource,
                          sync_state: SyncStateResource) -> dg.MaterializeResult:
    return _stage_window(context, coupa, sync_state, "purchase_orders", "purchase_order", "issued,closed,cancelled")
