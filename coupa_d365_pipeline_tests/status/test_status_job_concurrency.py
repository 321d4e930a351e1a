"""Defect 4, Dagster side: the production instance (root dagster.yaml) lets one invoice status run
in progress at a time. Dagster 1.13 has no per-pool limit in dagster.yaml (``concurrency.pools``
takes only ``default_limit``/``granularity``/``op_granularity_run_buffer``; a named pool's limit
lives in the instance database), so the limit is a run tag limit the QueuedRunCoordinator enforces."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.storage.dagster_run import DagsterRun
from dagster._utils.tags import TagConcurrencyLimitsCounter

from coupa_d365_pipeline.definitions import defs

REPO = Path(__file__).resolve().parents[2]


def production_instance_without_storage(tmp_path: Path) -> dg.DagsterInstance:
    """The root dagster.yaml as Dagster validates it, on local SQLite storage (the queue, concurrency
    and monitoring settings do not depend on the storage)."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config.pop("storage")
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return dg.DagsterInstance.from_config(str(home))


@pytest.mark.usefixtures("production_pg_env")
def test_the_production_instance_runs_one_invoice_status_run_at_a_time(tmp_path: Path) -> None:
    instance = production_instance_without_storage(tmp_path)
    try:
        # what the QueuedRunCoordinator daemon dequeues by (the `concurrency:` block merged over the
        # run coordinator's own config)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        limits = queue.tag_concurrency_limits
        job = defs.resolve_job_def("invoice_status_job")
        run_tags = dict(job.run_tags)
        status_limits = [
            limit
            for limit in limits
            if limit["key"] in run_tags and limit.get("value") in (None, run_tags[limit["key"]])
        ]
        assert [limit["limit"] for limit in status_limits] == [1]

        running = DagsterRun(job_name=job.name, run_id="status-running", tags=run_tags)
        counter = TagConcurrencyLimitsCounter(limits, [running])
        assert counter.is_blocked(DagsterRun(job_name=job.name, run_id="status-queued", tags=run_tags))
        other = defs.resolve_job_def("daily_documents_job")
        assert not counter.is_blocked(DagsterRun(job_name=other.name, run_id="documents", tags=dict(other.run_tags)))

        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings.get("free_slots_after_run_end_seconds", 0) > 0
    finally:
        instance.dispose()
