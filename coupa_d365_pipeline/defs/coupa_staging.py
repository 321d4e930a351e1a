"""Reading Coupa and staging what it returns in the sync database: the window read shared by the
invoice and purchase-order staging assets, and the small tables their metadata shows. Counting
never fails a staging step: the mapping decides later what can be booked."""

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import dagster as dg

from ..common.markdown import cell, table
from ..state.store import StageResult, SyncStore
from .metadata import StepMeter
from .resources import CoupaResource, SyncStateResource

STAGE_CHUNK_RECORDS = 1000  # Coupa records staged per transaction (20 pages of 50)


def stage_in_chunks(
    store: SyncStore,
    doc_type: str,
    records: Iterator[dict[str, Any]],
    run_id: str,
    each_chunk: Callable[[list[dict[str, Any]]], None] | None = None,
) -> tuple[StageResult, int]:
    """Stage ``records`` STAGE_CHUNK_RECORDS at a time, each chunk its own transaction (staging is an
    idempotent upsert), so a months-long window or a full supplier read never holds more than one
    chunk of parsed records. Returns the summed result and the number of records read."""
    staged = StageResult()
    fetched = 0
    while chunk := list(islice(records, STAGE_CHUNK_RECORDS)):
        result = store.stage(doc_type, chunk, run_id=run_id)
        staged.new += result.new
        staged.changed += result.changed
        staged.unchanged += result.unchanged
        staged.rejected += result.rejected
        if each_chunk is not None:
            each_chunk(chunk)
        fetched += len(chunk)
    return staged, fetched


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
    by_status: Counter = Counter()
    currencies: Counter = Counter()

    def count(chunk: list) -> None:
        by_status.update(str(r.get("status")) for r in chunk)
        currencies.update(_currency_code(r) for r in chunk)

    records = coupa.client.iter_records(resource, filters)
    staged, fetched = stage_in_chunks(sync_state.store, doc_type, records, context.run.run_id, count)
    context.log.info(
        "%s %s..%s: %d read (%d new, %d changed)",
        resource,
        iso(window.start),
        iso(window.end),
        fetched,
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
            "fetched": fetched,
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
