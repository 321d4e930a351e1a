"""The project's own paths, run as the demo runs them: Dagster jobs executed in process on the local
(SQLite) instance in ``DAGSTER_HOME``. ``setup`` is where every path starts (vendors and the seed's
purchase orders in D365, the master data snapshot in the sync database; not measured); ``documents``
is the measured run: the invoices of a documents run (``coupa/invoices`` staged over every daily
partition, then ``d365/vendor_invoices``) — OData or DMF depending on ``D365_DMF_THRESHOLD`` in the
environment. The baseline and the floor handle invoices only, so the project's paths are measured on
the same work; the purchase orders the invoices match are booked beforehand, as in production."""

from __future__ import annotations

import warnings
from typing import Any

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _dagster() -> tuple[Any, Any]:
    warnings.filterwarnings("ignore", message=".*currently in beta.*")
    import dagster as dg

    from ..definitions import defs

    return dg, defs


def _range_tags(dg: Any, instance: Any) -> dict[str, str]:
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from ..defs.partitions import daily_partitions

    keys = daily_partitions.get_partition_keys(dynamic_partitions_store=instance)
    return {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}


INVOICE_ASSETS = (("coupa", "invoices"), ("d365", "vendor_invoices"))
PURCHASE_ORDER_ASSETS = (("coupa", "purchase_orders"), ("d365", "purchase_orders"))


def run_setup() -> None:
    """Where every path starts: the vendors the seed's documents need and its purchase orders exist in
    D365, the master data snapshot is in the sync database. master_data_job writes vendors for the
    suppliers of staged documents, so: master data, stage the documents (Coupa reads only), master data
    again, then the purchase orders booked (their own assets of the documents job)."""
    dg, defs = _dagster()
    instance = dg.DagsterInstance.get()
    master = defs.resolve_job_def("master_data_job")
    documents = defs.resolve_job_def("daily_documents_job")
    staging = [dg.AssetKey(["coupa", "invoices"]), dg.AssetKey(["coupa", "purchase_orders"])]
    tags = _range_tags(dg, instance)
    steps = [
        lambda: master.execute_in_process(instance=instance, run_config=QUIET),
        lambda: documents.execute_in_process(instance=instance, run_config=QUIET, tags=tags, asset_selection=staging),
        lambda: master.execute_in_process(instance=instance, run_config=QUIET),
        lambda: documents.execute_in_process(
            instance=instance,
            run_config=QUIET,
            tags=tags,
            asset_selection=[dg.AssetKey(list(key)) for key in PURCHASE_ORDER_ASSETS],
        ),
    ]
    for step in steps:
        if not step().success:
            raise RuntimeError(
                "the bench setup (master data, staging, purchase orders) failed; run `coupa-d365 demo` to see why"
            )


def prepare_documents() -> Any:
    """Import Dagster and the definitions (not part of the measured time); returns the run callable."""
    dg, defs = _dagster()
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("daily_documents_job")
    tags = _range_tags(dg, instance)
    invoices = [dg.AssetKey(list(key)) for key in INVOICE_ASSETS]

    def run() -> int:
        result = job.execute_in_process(instance=instance, run_config=QUIET, tags=tags, asset_selection=invoices)
        if not result.success:
            raise RuntimeError("the bench documents run failed; its events are in DAGSTER_HOME")
        booked = 0
        for event in result.get_asset_materialization_events():
            mat = event.event_specific_data.materialization
            if list(mat.asset_key.path) == ["d365", "vendor_invoices"]:
                meta = {k: v.value for k, v in mat.metadata.items()}
                booked += int(meta.get("created", 0) or 0)
        return booked

    return run


def run_phases() -> dict[str, float]:
    """Median seconds per phase of the successful runs on the instance in ``DAGSTER_HOME`` (the
    event-driven runs of ``coupa-d365 bench-webhooks``): queued (enqueued -> the coordinator starts it),
    process start (starting -> started: the run process loads the code location), the sync step, and
    the events' age when their run's step finished (received by the receiver -> synced)."""
    from statistics import median

    dg, _ = _dagster()
    instance = dg.DagsterInstance.get()
    phases: dict[str, list[float]] = {"queued": [], "process_start": [], "sync_step": [], "event_age_at_sync_end": []}
    try:
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS])):
            stamps: dict[str, float] = {}
            for record in instance.get_records_for_run(run.run_id).records:
                entry = record.event_log_entry
                event = entry.dagster_event
                if event is None:
                    continue
                stamps.setdefault(event.event_type_value, entry.timestamp)
                if event.event_type_value == "ASSET_MATERIALIZATION":
                    meta = event.event_specific_data.materialization.metadata  # type: ignore[union-attr]
                    if "event_age_median_s" in meta:
                        phases["event_age_at_sync_end"].append(float(meta["event_age_median_s"].value))
            if {"PIPELINE_ENQUEUED", "PIPELINE_STARTING", "PIPELINE_START"} <= stamps.keys():
                phases["queued"].append(stamps["PIPELINE_STARTING"] - stamps["PIPELINE_ENQUEUED"])
                phases["process_start"].append(stamps["PIPELINE_START"] - stamps["PIPELINE_STARTING"])
            if {"STEP_START", "STEP_SUCCESS"} <= stamps.keys():
                phases["sync_step"].append(stamps["STEP_SUCCESS"] - stamps["STEP_START"])
    finally:
        instance.dispose()
    return {name: round(median(values), 2) for name, values in phases.items() if values}
