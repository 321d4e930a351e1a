"""Run the main flow against the sandboxes and read back what D365 holds."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

FIRST, LAST = "2026-11-01", "2026-11-06"  # the test seed's updated-at days
EDIT_DAY = "2026-11-30"  # the sandboxes' "today" (conftest.TEST_NOW): edits made by tests
CHARTS = {"US Manufacturing": "usmf", "DE Manufacturing": "demf", "UK Manufacturing": "gbsi"}


def run_master(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    from coupa_d365_pipeline.definitions import defs

    return defs.resolve_job_def("master_data_job").execute_in_process(instance=instance, raise_on_error=False)


def run_documents(instance: dg.DagsterInstance, first: str = FIRST, last: str = LAST) -> dg.ExecuteInProcessResult:
    from coupa_d365_pipeline.definitions import defs

    return defs.resolve_job_def("daily_documents_job").execute_in_process(
        instance=instance,
        raise_on_error=False,
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
    )


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if "/".join(mat.asset_key.path) == asset:
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"{asset} was not materialized")


def d365_invoices(sandboxes) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """(dataAreaId, InvoiceAccount, InvoiceNumber) -> pending headers with that natural key."""
    found: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for header in sandboxes.d365.state.records("VendorInvoiceHeaders"):
        key = (header["dataAreaId"], header["InvoiceAccount"], header["InvoiceNumber"])
        found.setdefault(key, []).append(header)
    return found


def lines_of(sandboxes, data_area: str, ref: str) -> list[dict[str, Any]]:
    return sorted(
        (
            ln
            for ln in sandboxes.d365.state.records("VendorInvoiceLines")
            if ln["dataAreaId"] == data_area and ln["HeaderReference"] == ref
        ),
        key=lambda ln: Decimal(str(ln["InvoiceLineNumber"])),
    )


def d365_writes(sandboxes, since_seq: int = 0) -> list[Any]:
    return [
        e
        for e in sandboxes.d365.log.snapshot()
        if e.seq > since_seq and e.path.startswith("/data/") and e.method in ("POST", "PATCH", "PUT", "DELETE")
    ]


def last_seq(sandboxes) -> int:
    entries = sandboxes.d365.log.snapshot()
    return entries[-1].seq if entries else 0


def expected_display(segments: list[str]) -> str:
    """Independent re-statement of the D365 rule: delimiter '-', '\\-' inside values, empties kept."""
    return "-".join(s.replace("-", "\\-") for s in segments)


def approved(seed) -> list[dict[str, Any]]:
    return [i for i in seed.coupa_invoices if i["status"] == "approved"]


def duplicates(sandboxes) -> Counter:
    return Counter({k: len(v) for k, v in d365_invoices(sandboxes).items() if len(v) > 1})


def run_status(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    from coupa_d365_pipeline.definitions import defs

    return defs.resolve_job_def("invoice_status_job").execute_in_process(instance=instance, raise_on_error=False)
