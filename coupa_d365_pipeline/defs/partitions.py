"""Daily (UTC) partitions by Coupa ``updated-at``, starting at SYNC_START_DATE."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import dagster as dg

from ..settings import ConfigError, parse_start_date


def _start_date() -> str:
    problems: list[str] = []
    start = parse_start_date(os.environ.get("SYNC_START_DATE"), problems)
    if problems:
        raise ConfigError(problems)
    return start.isoformat()


daily_partitions = dg.DailyPartitionsDefinition(start_date=_start_date(), timezone="UTC", end_offset=1)


def utc_day(moment: datetime) -> str:
    """The daily partition key (UTC date) ``moment`` falls in."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def partition_run(day: str, run_key: str) -> dg.RunRequest | dg.SkipReason:
    """What a schedule asks for: a run of the daily partition ``day``, or a skip when ``day`` is
    before SYNC_START_DATE (no such partition)."""
    if day < daily_partitions.start.strftime("%Y-%m-%d"):
        return dg.SkipReason(f"{day} is before SYNC_START_DATE")
    return dg.RunRequest(run_key=run_key, partition_key=day)
