"""Reading Coupa and staging what it returns in the sync database: the window read shared by the
invoice and purchase-order staging assets, and the small tables their metadata shows. Counting
never fails a staging step: the mapping decides later what can be booked."""

from collections import Counter
from datetime import UTC, datetime

import dagster as dg

from ..common.markdown import cell, table
from .metadata import StepMeter
from .resources import CoupaResource, SyncStateResource


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _currency_code(record: dict) -> str:
    """The currency code for the metadata table, whatever shape Coupa's field has: the mapping
    decides what can be booked; counting must never fail the staging of a window."""
    currency = record.get("currency")
    if isinstance(currency, dict):
        return str(currency.get("code"))
    return str(currency)[:20]


def _rejected_md(rejected: list) -> str:
    return table(
        ["Coupa id", "why it was not staged"], ([cell(r.coupa_id, max_chars=40), r.reason] for r in rejected), limit=50
    )


def md_counts(title: str, counts: Counter) -> str:
    return table(
        [title, "count"], sorted(counts.items(), key=lambda kv: str(kv[0])), empty=f"No {title.lower()} values."
    )


def stage_window(
    context: dg.AssetExecutionContext,
    coupa: CoupaResource,
    sync_state: SyncStateResource,
    resource: str,
    doc_type: str,
    statuses: str,
) -> dg.MaterializeResult:
    """Read the Coupa ``resource`` records in ``statuses`` updated in the partition window; stage them."""
    meter = StepMeter()
    window = context.partition_time_window
    filters = {"updated-at[gt_or_eq]": iso(window.start), "updated-at[lt]": iso(window.end), "status[in]": statuses}
    meter.count_requests(coupa=coupa.client)
    records = list(coupa.client.iter_records(resource, filters))
    staged = sync_state.store.stage(doc_type, records, run_id=context.run.run_id)
    by_status = Counter(str(r.get("status")) for r in records)
    currencies = Counter(_currency_code(r) for r in records)
    context.log.info(
        "%s %s..%s: %d read (%d new, %d changed)",
        resource,
        iso(window.start),
        iso(window.end),
        len(records),
        staged.new,
        staged.changed,
    )
    for rejected in staged.rejected:
        context.log.error("%s: a record was not staged: %s", resource, rejected.reason)
    return dg.MaterializeResult(
        metadata={
            "window_start": iso(window.start),
            "window_end": iso(window.end),
            "partitions": len(context.partition_keys),
            "fetched": len(records),
            "new": staged.new,
            "changed": staged.changed,
            "unchanged": staged.unchanged,
            "rejected": len(staged.rejected),
            "rejected_records": dg.MetadataValue.md(_rejected_md(staged.rejected)),
            **meter.metadata(),
            "by_status": dg.MetadataValue.md(md_counts("Status", by_status)),
            "by_currency": dg.MetadataValue.md(md_counts("Currency", currencies)),
        }
    )
