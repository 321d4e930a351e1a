"""Schedules: polling that catches whatever webhooks missed. They start STOPPED (Dagster's default);
turn them on in the UI (Automation) or set them RUNNING per deployment."""

from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg

from .partitions import daily_partitions


def _day(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d")


def build_schedules(daily_documents_job: Any, master_data_job: Any,
                    invoice_status_job: Any) -> list[dg.ScheduleDefinition]:
    """Schedules for the two asset jobs (passed in: they are defined next to ``defs``)."""
    @dg.schedule(job=daily_documents_job, cron_schedule="15 * * * *", execution_timezone="UTC",
                 description="Every hour: today's partition (Coupa documents updated today) — POs, then invoices.")
    def documents_today(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        day = _day(context.scheduled_execution_time)
        if day < daily_partitions.start.strftime("%Y-%m-%d"):
            return dg.SkipReason(f"{day} is before SYNC_START_DATE")
        return dg.RunRequest(run_key=f"documents-{context.scheduled_execution_time.isoformat()}", partition_key=day)

    @dg.schedule(job=daily_documents_job, cron_schedule="30 1 * * *", execution_timezone="UTC",
                 description="Every night: yesterday's partition again, for documents updated late in the day.")
    def documents_yesterday(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        day = _day(context.scheduled_execution_time - timedelta(days=1))
        if day < daily_partitions.start.strftime("%Y-%m-%d"):
            return dg.SkipReason(f"{day} is before SYNC_START_DATE")
        return dg.RunRequest(run_key=f"documents-nightly-{day}", partition_key=day)

    master_nightly_full = dg.ScheduleDefinition(
        name="master_data_nightly_full", job=master_data_job, cron_schedule="5 2 * * *", execution_timezone="UTC",
        run_config={"ops": {"coupa__suppliers": {"config": {"full_refresh": True}}}},
        description="Every night: master data with every Coupa supplier read again (catches anything an "
                    "incremental read missed).")
    master_hourly = dg.ScheduleDefinition(
        name="master_data_hourly", job=master_data_job, cron_schedule="5 * * * *", execution_timezone="UTC",
        description="Every hour: suppliers (incremental), D365 master data, mapping check, vendors.")
    status = dg.ScheduleDefinition(
        name="invoice_status_every_30_minutes", job=invoice_status_job, cron_schedule="*/30 * * * *",
        execution_timezone="UTC", description="Every 30 minutes: posted and paid status from D365 back to Coupa.")
    return [documents_today, documents_yesterday, master_hourly, master_nightly_full, status]
