"""Reconciliation flow: per daily partition, the approved Coupa invoices of the window against D365
(pending, posted, paid) and the sync ledger — the asset ``reconciliation/coupa_vs_d365``, its
non-blocking check ``coupa_d365_reconciled`` (fails on any unexplained difference, naming the
documents), ``reconciliation_job`` and the nightly schedule after ``documents_yesterday``. The
comparison itself is plain Python (``sync/reconciliation.py``, ``sync/reconciliation_reads.py``)."""

from datetime import timedelta

import dagster as dg

from ..state.ledger import Ledger
from ..sync.reconciliation import Reconciliation
from ..sync.reconciliation_reads import ReconciliationReader
from ..sync.reconciliation_report import check_description, differences_markdown, named, summary, summary_markdown
from .coupa_staging import iso
from .documents import d365_vendor_invoices
from .metadata import StepMeter
from .outages import fail_run_on_outage
from .partitions import daily_partitions, partition_run, utc_day
from .resources import CoupaResource, D365Resource, MappingResource, SyncStateResource

RECONCILIATION_KEY = dg.AssetKey(["reconciliation", "coupa_vs_d365"])
RECONCILED_CHECK = "coupa_d365_reconciled"


def _metadata(rec: Reconciliation) -> dict:
    counts = rec.counts()
    return {
        "approved_in_coupa": sum(int(n) for n in summary(rec)["approved_in_coupa"]),
        **{name: int(n) for name, n in counts.items()},
        "coupa_lookups": rec.coupa_lookups,
        "not_checked_in_coupa": len(rec.unchecked),
        "summary": dg.MetadataValue.md(summary_markdown(rec)),
        "differences": dg.MetadataValue.md(
            differences_markdown(rec.differences, empty="No differences: every approved Coupa invoice is posted.")
        ),
    }


def _check(rec: Reconciliation) -> dg.AssetCheckResult:
    bad = rec.unexplained
    by_kind: dict[str, int] = {}
    for finding in bad:
        by_kind[finding.outcome.value] = by_kind.get(finding.outcome.value, 0) + 1
    return dg.AssetCheckResult(
        check_name=RECONCILED_CHECK,
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR,
        description=check_description(rec),
        metadata={
            "unexplained": len(bad),
            "explained": len(rec.differences) - len(bad),
            "by_difference": dg.MetadataValue.json(by_kind),
            "documents": dg.MetadataValue.json(named(bad)),
            "unexplained_differences": dg.MetadataValue.md(
                differences_markdown(bad, empty="None: Coupa, D365 and the ledger agree.")
            ),
        },
    )


@dg.asset(
    key=RECONCILIATION_KEY,
    group_name="reconciliation",
    kinds={"coupa", "d365", "pandas"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[d365_vendor_invoices],
    check_specs=[
        dg.AssetCheckSpec(
            RECONCILED_CHECK,
            asset=RECONCILIATION_KEY,
            blocking=False,
            description="Every approved Coupa invoice of the window is in D365 (pending, posted or paid) with the "
            "Coupa total, or the ledger says why not (quarantined/failed with a reason); no D365 invoice with our "
            "reference lacks an approved Coupa invoice. Fails naming each other document and what differs.",
        )
    ],
    description="Approved Coupa invoices of the partition window (updated-at, UTC) compared per legal entity with "
    "D365 (pending VendorInvoiceHeaders, posted VendInvoiceJourBiEntities, paid VendTransBiEntities) and the sync "
    "ledger: what agrees, what is pending, quarantined or failed, what is missing on either side, amount mismatches.",
)
@fail_run_on_outage
def coupa_vs_d365(
    context: dg.AssetExecutionContext,
    coupa: CoupaResource,
    d365: D365Resource,
    sync_state: SyncStateResource,
    mapping: MappingResource,
) -> dg.MaterializeResult:
    meter = StepMeter().count_requests(coupa=coupa.client, d365=d365.client)
    window = context.partition_time_window
    start, end = iso(window.start), iso(window.end)
    reader = ReconciliationReader(coupa.client, d365.client, Ledger(sync_state.store.engine), mapping.load())
    rec = reader.run(start, end)
    counts = rec.counts()
    context.log.info(
        "reconciliation %s..%s: %s", start, end, ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "nothing"
    )
    return dg.MaterializeResult(
        metadata={
            "window_start": start,
            "window_end": end,
            "partitions": len(context.partition_keys),
            **_metadata(rec),
            **meter.metadata(),
        },
        check_results=[_check(rec)],
    )


reconciliation_job = dg.define_asset_job(
    "reconciliation_job",
    selection=dg.AssetSelection.assets(coupa_vs_d365),
    description="Compare a day (or a range, as one run) of approved Coupa invoices with D365 and the ledger.",
)


# Starts STOPPED (Dagster's default) like the other schedules; turn it on in the UI (Automation).
@dg.schedule(
    job=reconciliation_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    description="Every night at 03:30 UTC, two hours after documents_yesterday: yesterday's partition reconciled.",
)
def reconciliation_nightly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    day = utc_day(context.scheduled_execution_time - timedelta(days=1))
    return partition_run(day, f"reconciliation-{day}")


defs = dg.Definitions(assets=[coupa_vs_d365], jobs=[reconciliation_job], schedules=[reconciliation_nightly])
