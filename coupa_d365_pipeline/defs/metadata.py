"""Materialization metadata every step reports the same way: wall time (``duration_s``) and the
API requests it made per system (``coupa_requests``, ``d365_requests``), plus the sync report."""

from __future__ import annotations

import time
from typing import Any

import dagster as dg

from ..sync.report import SyncReport


class StepMeter:
    """Started when created; :meth:`count_requests` takes each client's request count as the baseline
    (call it once the clients the step measures exist); :meth:`metadata` reports the differences."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._baselines: dict[str, tuple[Any, int]] = {}

    def count_requests(self, **clients: Any) -> StepMeter:
        """``coupa=client, d365=client``: report ``<system>_requests`` made from now on."""
        for system, client in clients.items():
            self._baselines[system] = (client, client.request_count)
        return self

    def metadata(self) -> dict[str, Any]:
        counts = {
            f"{system}_requests": client.request_count - before for system, (client, before) in self._baselines.items()
        }
        return {**counts, "duration_s": round(time.monotonic() - self.started, 3)}


def sync_metadata(report: SyncReport, doc_type: str, meter: StepMeter, **extra: Any) -> dict[str, Any]:
    """What a sync step reports: outcome counts for ``doc_type``, how many it processed, its requests
    and time, the problems table, then ``extra``."""
    processed = len([o for o in report.outcomes if o.doc_type == doc_type])
    return {
        **report.metadata_counts(doc_type),
        "processed": processed,
        **meter.metadata(),
        "problems": dg.MetadataValue.md(report.problems_markdown()),
        **extra,
    }
