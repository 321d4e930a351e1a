"""The code location loads, and its assets materialize against the sandboxes."""

import dagster as dg

from coupa_d365_pipeline.definitions import defs


def test_defs_is_loadable():
    dg.Definitions.validate_loadable(defs)
    keys = {"/".join(k.path) for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"coupa/suppliers", "coupa/invoices", "coupa/purchase_orders", "d365/legal_entities"} <= keys


def test_resources_are_configured_by_env_var_names_not_values():
    resources = defs.resources
    assert isinstance(resources["coupa"].client_secret, dg.EnvVar)
    assert resources["coupa"].client_secret.env_var_name == "COUPA_CLIENT_SECRET"
    assert resources["d365"].client_secret.env_var_name == "D365_CLIENT_SECRET"


def test_schedules_target_today_yesterday_and_master_data():
    from datetime import datetime, timezone

    # No instance_for_test here: building the repository inside one leaves Dagster's global
    # definitions-state storage pointing at a disposed instance for later tests.
    schedules = {s.name: s for s in defs.schedules}
    assert set(schedules) == {"documents_today", "documents_yesterday", "master_data_hourly",
                              "master_data_nightly_full", "invoice_status_every_30_minutes"}
    repository = defs.get_repository_def()
    when = datetime(2026, 11, 20, 10, 15, tzinfo=timezone.utc)
    for name, day in (("documents_today", "2026-11-20"), ("documents_yesterday", "2026-11-19")):
        context = dg.build_schedule_context(scheduled_execution_time=when, repository_def=repository)
        request = schedules[name].evaluate_tick(context).run_requests[0]
        assert request.partition_key == day
    early = dg.build_schedule_context(repository_def=repository,
                                      scheduled_execution_time=datetime(2020, 1, 1, tzinfo=timezone.utc))
    assert schedules["documents_today"].evaluate_tick(early).skip_message
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in schedules.values())
