"""The code location loads, and every definition in it is there under its published name."""

from datetime import UTC

import dagster as dg

from coupa_d365_pipeline import code_location as package_defs
from coupa_d365_pipeline.definitions import defs

# Published names (UI, schedules, run history, dagster.yaml tag limits): renaming one is a breaking change.
ASSETS_AND_GROUPS = {
    "coupa/suppliers": "coupa",
    "coupa/invoices": "coupa",
    "coupa/purchase_orders": "coupa",
    "coupa/invoice_status": "coupa",
    "d365/legal_entities": "d365",
    "d365/master_data": "d365",
    "d365/gl_mapping": "d365",
    "d365/vendors": "d365",
    "d365/purchase_orders": "d365",
    "d365/vendor_invoices": "d365",
    "d365/invoice_status": "d365",
    "webhooks/coupa_events": "webhooks",
    "reconciliation/coupa_vs_d365": "reconciliation",
}
ASSET_CHECKS = {
    "d365/legal_entities:default_legal_entity_exists",
    "d365/gl_mapping:gl_mapping_matches_d365",
    "d365/vendors:vendors_not_stuck",
    "d365/purchase_orders:purchase_orders_not_stuck",
    "d365/vendor_invoices:vendor_invoices_not_stuck",
    "coupa/invoice_status:invoice_status_delivered",
    "webhooks/coupa_events:webhook_events_delivered",
    "reconciliation/coupa_vs_d365:coupa_d365_reconciled",
}
JOBS = {
    "master_data_job",
    "daily_documents_job",
    "invoice_status_job",
    "replay_invoices_job",
    "coupa_webhook_job",
    "reconciliation_job",
}
SCHEDULES = {  # name -> (job, cron, UTC)
    "master_data_hourly": ("master_data_job", "5 * * * *"),
    "master_data_nightly_full": ("master_data_job", "5 2 * * *"),
    "documents_today": ("daily_documents_job", "15 * * * *"),
    "documents_yesterday": ("daily_documents_job", "30 1 * * *"),
    "invoice_status_every_30_minutes": ("invoice_status_job", "*/30 * * * *"),
    "reconciliation_nightly": ("reconciliation_job", "30 3 * * *"),
}
SENSORS = {"coupa_webhook_sensor": ("coupa_webhook_job", dg.DefaultSensorStatus.RUNNING)}
RESOURCES = {"coupa", "d365", "sync_state", "mapping", "webhook_staging"}


def test_defs_is_exposed_and_loadable():
    assert package_defs is defs
    dg.Definitions.validate_loadable(defs)
    keys = {"/".join(k.path) for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"coupa/suppliers", "coupa/invoices", "coupa/purchase_orders", "d365/legal_entities"} <= keys


def test_every_asset_check_job_schedule_and_sensor_is_there_by_name():
    graph = defs.resolve_asset_graph()
    assert {"/".join(k.path): graph.get(k).group_name for k in graph.get_all_asset_keys()} == ASSETS_AND_GROUPS
    assert {f"{'/'.join(c.asset_key.path)}:{c.name}" for c in graph.asset_check_keys} == ASSET_CHECKS
    assert {j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")} == JOBS
    assert {s.name: (s.job_name, s.cron_schedule) for s in defs.schedules} == SCHEDULES
    assert all(s.execution_timezone == "UTC" for s in defs.schedules)
    assert {s.name: (s.job_name, s.default_status) for s in defs.sensors or []} == SENSORS
    assert set(defs.resources) == RESOURCES


def test_each_job_runs_its_flow():
    def selected(job: str) -> set[str]:
        return {"/".join(k.path) for k in defs.resolve_job_def(job).asset_layer.selected_asset_keys}

    assert selected("master_data_job") == {
        "coupa/suppliers",
        "d365/legal_entities",
        "d365/master_data",
        "d365/gl_mapping",
        "d365/vendors",
    }
    assert selected("daily_documents_job") == {
        "coupa/invoices",
        "coupa/purchase_orders",
        "d365/purchase_orders",
        "d365/vendor_invoices",
    }
    assert selected("invoice_status_job") == {"d365/invoice_status", "coupa/invoice_status"}
    assert selected("reconciliation_job") == {"reconciliation/coupa_vs_d365"}
    assert defs.resolve_job_def("invoice_status_job").run_tags["coupa_d365/flow"] == "invoice_status"


def test_resources_are_configured_by_env_var_names_and_hold_no_credential():
    resources = defs.resources
    assert isinstance(resources["coupa"].base_url, dg.EnvVar)
    assert resources["coupa"].base_url.env_var_name == "COUPA_BASE_URL"
    assert resources["d365"].default_legal_entity.env_var_name == "D365_DEFAULT_LEGAL_ENTITY"
    # read when a run starts: the variable, else the encrypted credential store; never in the config
    assert (resources["coupa"].client_id, resources["coupa"].client_secret) == (None, None)
    assert (resources["d365"].tenant_id, resources["d365"].client_id, resources["d365"].client_secret) == (None,) * 3


def test_schedules_target_today_yesterday_and_master_data():
    from datetime import datetime

    # No instance_for_test here: building the repository inside one leaves Dagster's global
    # definitions-state storage pointing at a disposed instance for later tests.
    schedules = {s.name: s for s in defs.schedules}
    assert set(schedules) == {
        "documents_today",
        "documents_yesterday",
        "master_data_hourly",
        "master_data_nightly_full",
        "invoice_status_every_30_minutes",
        "reconciliation_nightly",
    }
    repository = defs.get_repository_def()
    when = datetime(2026, 11, 20, 10, 15, tzinfo=UTC)
    for name, day in (
        ("documents_today", "2026-11-20"),
        ("documents_yesterday", "2026-11-19"),
        ("reconciliation_nightly", "2026-11-19"),
    ):
        context = dg.build_schedule_context(scheduled_execution_time=when, repository_def=repository)
        request = schedules[name].evaluate_tick(context).run_requests[0]
        assert request.partition_key == day
    early = dg.build_schedule_context(
        repository_def=repository, scheduled_execution_time=datetime(2020, 1, 1, tzinfo=UTC)
    )
    assert schedules["documents_today"].evaluate_tick(early).skip_message
    assert schedules["reconciliation_nightly"].evaluate_tick(early).skip_message
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in schedules.values())


def test_reconciliation_runs_after_the_documents_and_its_check_never_blocks():
    schedules = {s.name: s for s in defs.schedules}
    nightly = schedules["reconciliation_nightly"].cron_schedule.split()
    documents = schedules["documents_yesterday"].cron_schedule.split()
    assert (int(nightly[1]), int(nightly[0])) > (int(documents[1]), int(documents[0]))
    graph = defs.resolve_asset_graph()
    [check] = [c for c in graph.asset_check_keys if c.name == "coupa_d365_reconciled"]
    assert graph.get_check_spec(check).blocking is False
    asset = graph.get(check.asset_key)
    assert asset.partitions_def == graph.get(dg.AssetKey(["d365", "vendor_invoices"])).partitions_def
