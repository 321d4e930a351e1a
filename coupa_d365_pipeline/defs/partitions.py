"""Daily (UTC) partitions by Coupa ``updated-at``, starting at SYNC_START_DATE."""

from __future__ import annotations

import os

import dagster as dg

from ..settings import ConfigError, parse_start_date


def _start_date() -> str:
    problems: list[str] = []
    start = parse_start_date(os.environ.get("SYNC_START_DATE"), problems)
    if problems:
        raise ConfigError(problems)
    return start.isoformat()


daily_partitions = dg.DailyPartitionsDefinition(start_date=_start_date(), timezone="UTC", end_offset=1)
