"""Event-driven flow: ``coupa_webhook_sensor`` batches the events the receiver staged
(``coupa-d365 webhooks serve``) into ``coupa_webhook_job`` runs; each run re-reads exactly those
documents from Coupa and syncs them through the same sync core and ledger as the partitioned assets
(suppliers, then purchase orders, then invoices). The check ``webhook_events_delivered`` shows events
that failed every attempt and a backlog the sensor does not pick up.

The schedules of the other flows stay the safety net: whatever a webhook never announced is booked
by the next poll, and a poll overlapping an event-driven run books nothing twice (ledger claims)."""

from datetime import UTC, datetime, timedelta
from statistics import median

import dagster as dg

from ..common.markdown import cell, table
from ..settings import DEFAULT_WEBHOOK_PROCESSED_RETENTION_DAYS, DEFAULT_WEBHOOK_SENSOR_INTERVAL_S
from ..sync.events import EventSync
from ..webhooks.dispatch import DispatchLimits, RunOutcome, TickPlan, plan_tick
from ..webhooks.staging import StagedEvent, WebhookStaging, summary
from .metadata import StepMeter
from .outages import fail_if_all_failed_by_system, fail_run_on_outage
from .resources import (
    D365_WRITES_POOL,
    CoupaResource,
    D365Resource,
    MappingResource,
    SyncStateResource,
    WebhookStagingResource,
)
from .services import build_services

EVENTS_KEY = dg.AssetKey(["webhooks", "coupa_events"])
CHECK_NAME = "webhook_events_delivered"
BACKLOG_WARN_AFTER = timedelta(minutes=15)
D365_ASSET = {
    "supplier": dg.AssetKey(["d365", "vendors"]),
    "purchase_order": dg.AssetKey(["d365", "purchase_orders"]),
    "invoice": dg.AssetKey(["d365", "vendor_invoices"]),
}


class WebhookBatchConfig(dg.Config):
    """Set by the sensor: the batch (a directory under WEBHOOK_STAGING_DIR/batches) this run syncs."""

    batch_id: str


def _age_s(event: StagedEvent, now: datetime) -> float:
    return max(0.0, (now - event.received_at).total_seconds())


@dg.asset(
    key=EVENTS_KEY,
    group_name="webhooks",
    kinds={"coupa", "d365"},
    pool=D365_WRITES_POOL,
    description="Coupa documents announced by signed webhooks, re-read from Coupa and synced to D365 "
    "(one batch of staged events per run, launched by coupa_webhook_sensor): outcomes per event.",
)
@fail_run_on_outage
def coupa_events(
    context: dg.AssetExecutionContext,
    config: WebhookBatchConfig,
    coupa: CoupaResource,
    d365: D365Resource,
    sync_state: SyncStateResource,
    mapping: MappingResource,
    webhook_staging: WebhookStagingResource,
) -> dg.MaterializeResult:
    meter = StepMeter()
    events = webhook_staging.staging.events(config.batch_id)
    services = build_services(context, coupa, d365, sync_state, mapping)
    meter.count_requests(coupa=services.coupa, d365=services.d365)
    report = EventSync(services).run(events)
    for doc_type in ("vendor", "purchase_order", "invoice"):
        fail_if_all_failed_by_system(report.sync, doc_type)
    now = datetime.now(UTC)
    for doc_type, asset_key in D365_ASSET.items():
        touched = [o for o in report.outcomes if o.event.doc_type == doc_type]
        if touched:
            context.log_event(
                dg.AssetObservation(
                    asset_key=asset_key,
                    metadata={
                        "source": "coupa_webhook_sensor",
                        "batch_id": config.batch_id,
                        "coupa_ids": dg.MetadataValue.json(sorted({o.event.coupa_id for o in touched})),
                        "outcomes": dg.MetadataValue.json(
                            {str(o.event.coupa_id): o.result for o in sorted(touched, key=lambda o: o.event.coupa_id)}
                        ),
                    },
                )
            )
    ages = [_age_s(e, now) for e in events]
    context.log.info("webhook batch %s: %d event(s): %s", config.batch_id, len(events), report.counts())
    return dg.MaterializeResult(
        metadata={
            "batch_id": config.batch_id,
            "events": len(events),
            "documents_read": report.documents_read,
            "outcomes": dg.MetadataValue.json(report.counts()),
            "events_table": dg.MetadataValue.md(report.markdown()),
            "problems": dg.MetadataValue.md(report.sync.problems_markdown()),
            "event_age_median_s": round(median(ages), 3) if ages else 0.0,
            "event_age_max_s": round(max(ages), 3) if ages else 0.0,
            **meter.metadata(),
        }
    )


def delivery_check_result(staging: WebhookStaging) -> dg.AssetCheckResult:
    """ERROR: events whose runs failed every attempt (named, with the reason); WARN: incoming events
    older than BACKLOG_WARN_AFTER (the sensor is stopped, or cannot keep up)."""
    if not staging.exists():
        return dg.AssetCheckResult(
            passed=True, description=f"No staging directory at {staging.root}: no webhook was received yet."
        )
    failed = staging.failed_events()
    backlog_age = staging.oldest_incoming_age_s()
    counts = summary(staging)
    details = table(
        ["event", "Coupa id", "webhook-id", "received", "why it failed"],
        (
            [
                e.event_type.value,
                e.coupa_id,
                cell(e.webhook_id, max_chars=60),
                f"{e.received_at:%Y-%m-%d %H:%M}",
                cell(e.failure or "", max_chars=300),
            ]
            for e in failed
        ),
        limit=200,
        empty="No failed events.",
    )
    metadata = {
        **{f"{place}_events" if place != "batches" else "batches_in_flight": n for place, n in counts.items()},
        "oldest_incoming_age_s": round(backlog_age, 1),
        "failed_events": dg.MetadataValue.md(details),
    }
    if failed:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{len(failed)} webhook event(s) failed every attempt (see failed_events); fix the cause, "
            "then `coupa-d365 webhooks requeue-failed` (the next poll books them anyway)",
            metadata=metadata,
        )
    if backlog_age > BACKLOG_WARN_AFTER.total_seconds():
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{counts['incoming']} event(s) waiting, the oldest for {int(backlog_age // 60)} min: "
            "is coupa_webhook_sensor running?",
            metadata=metadata,
        )
    return dg.AssetCheckResult(passed=True, metadata=metadata)


@dg.asset_check(
    asset=EVENTS_KEY,
    name=CHECK_NAME,
    description="No webhook event failed every attempt, and none waits longer than 15 minutes for a run.",
)
def webhook_events_delivered(webhook_staging: WebhookStagingResource) -> dg.AssetCheckResult:
    return delivery_check_result(webhook_staging.staging)


coupa_webhook_job = dg.define_asset_job(
    "coupa_webhook_job",
    selection=dg.AssetSelection.assets(EVENTS_KEY),
    description="One batch of webhook events (launched by coupa_webhook_sensor): the documents they name, "
    "re-read from Coupa and synced.",
    tags={"coupa_d365/flow": "webhooks"},
    # one process per run: a step subprocess per asset/check (the multiprocess default) costs seconds
    # of interpreter start and resource setup each, which is most of a small batch's latency
    executor_def=dg.in_process_executor,
)


def _outcome_of(context: dg.SensorEvaluationContext):
    def outcome_of(run_key: str) -> tuple[RunOutcome, str]:
        runs = context.instance.get_runs(
            filters=dg.RunsFilter(tags={"dagster/run_key": run_key, "dagster/sensor_name": context.sensor_name}),
            limit=1,
        )
        if not runs:
            return RunOutcome.NONE, "no run"
        run = runs[0]
        described = f"run {run.run_id} {run.status.value}"
        if run.status == dg.DagsterRunStatus.SUCCESS:
            return RunOutcome.SUCCEEDED, described
        if run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            return RunOutcome.FAILED, described
        return RunOutcome.IN_FLIGHT, described

    return outcome_of


def _run_requests(plan: TickPlan) -> list[dg.RunRequest]:
    return [
        dg.RunRequest(
            run_key=state.run_key,
            run_config={"ops": {"webhooks__coupa_events": {"config": {"batch_id": state.batch_id}}}},
            tags={"coupa_d365/webhook_batch": state.batch_id, "coupa_d365/attempt": str(state.attempt)},
        )
        for state in plan.launch
    ]


def _prune_if_due(staging: WebhookStaging, cursor: str | None, now: datetime) -> str | None:
    """Forget processed events after the retention, at most once an hour (the cursor holds the time)."""
    last = float(cursor) if cursor and cursor.replace(".", "", 1).isdigit() else 0.0
    if 0 <= now.timestamp() - last < 3600:
        return cursor
    staging.prune_processed(timedelta(days=DEFAULT_WEBHOOK_PROCESSED_RETENTION_DAYS))
    return str(int(now.timestamp()))


@dg.sensor(
    name="coupa_webhook_sensor",
    job=coupa_webhook_job,
    minimum_interval_seconds=DEFAULT_WEBHOOK_SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Picks up webhook events staged by `coupa-d365 webhooks serve` and launches one run per batch "
    "(run_key from the batch content and attempt; failed runs are re-driven up to 3 times). An empty staging "
    "directory costs one directory listing.",
)
def coupa_webhook_sensor(
    context: dg.SensorEvaluationContext, webhook_staging: WebhookStagingResource
) -> dg.SensorResult | dg.SkipReason:
    staging = webhook_staging.staging
    if not staging.exists():
        return dg.SkipReason(f"no staging directory at {staging.root} (start `coupa-d365 webhooks serve`)")
    now = datetime.now(UTC)
    plan = plan_tick(staging, _outcome_of(context), DispatchLimits())
    cursor = _prune_if_due(staging, context.cursor, now)
    asset_events: list = []
    if plan.failed:
        asset_events.append(
            dg.AssetCheckEvaluation(
                asset_key=EVENTS_KEY,
                check_name=CHECK_NAME,
                **_evaluation_fields(delivery_check_result(staging)),
            )
        )
    if not plan.changed and not asset_events:
        return dg.SensorResult(skip_reason=f"nothing new: {plan.summary()}", cursor=cursor)
    context.log.info("webhook tick in %.3f s: %s", plan.duration_s, plan.summary())
    return dg.SensorResult(run_requests=_run_requests(plan), cursor=cursor, asset_events=asset_events)


def _evaluation_fields(result: dg.AssetCheckResult) -> dict:
    return {
        "passed": result.passed,
        "severity": result.severity,
        "description": result.description,
        "metadata": result.metadata,
    }


defs = dg.Definitions(
    assets=[coupa_events],
    asset_checks=[webhook_events_delivered],
    jobs=[coupa_webhook_job],
    sensors=[coupa_webhook_sensor],
)
