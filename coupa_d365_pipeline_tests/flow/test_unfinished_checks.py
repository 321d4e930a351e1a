"""Issue 9 item 4 through Dagster: a booking Coupa was never told about (its export-flag PUT failed,
or the run ended while telling it) is named by the check, told by the next run of any partition,
and picked up by the replay job's ``failed_since``."""

import dagster as dg

from coupa_d365_pipeline.defs.unfinished import stuck_check as _stuck_check
from coupa_d365_pipeline.sandbox.faults import ScriptedFault
from coupa_d365_pipeline.state.ledger import sync_ledger
from coupa_d365_pipeline.state.store import normalize_timestamp
from coupa_d365_pipeline_tests.flow.conftest import ledger
from coupa_d365_pipeline_tests.flow.helpers import CHARTS, FIRST, LAST, approved, run_documents


def _first_day_invoice(sandboxes) -> dict:
    unmappable = set(sandboxes.seed.expectations["unmappable_invoices"])
    return next(
        i
        for i in approved(sandboxes.seed)
        if i["id"] not in unmappable
        and CHARTS.get(i["account-type"]["name"]) == "usmf"
        and normalize_timestamp(i["updated-at"]).startswith(FIRST)
        and not any(line.get("po-number") for line in i["invoice-lines"])
    )


def _as_left_by_a_terminated_run(sandbox_env, coupa_id: int) -> None:
    """A run ended while telling Coupa: booked, claim released, nothing recorded about it."""
    with ledger(sandbox_env).engine.begin() as conn:
        conn.execute(
            sync_ledger.update()
            .where((sync_ledger.c.doc_type == "invoice") & (sync_ledger.c.coupa_id == coupa_id))
            .values(problem=None, reason=None, coupa_notified=False)
        )


def test_a_booking_coupa_was_not_told_about_is_checked_retried_by_any_partition_and_replayed(
    sandbox_env, sandboxes, instance, mastered
):
    from coupa_d365_pipeline.definitions import defs

    coupa_id = _first_day_invoice(sandboxes)["id"]
    # Coupa refuses the export flag of this one invoice: booked in D365, Coupa not told
    sandboxes.coupa.injector.script(
        ScriptedFault(kind="5xx", status=422, method="PUT", path_regex=f"^/api/invoices/{coupa_id}$")
    )
    first = run_documents(instance, FIRST, FIRST)
    row = ledger(sandbox_env).get("invoice", coupa_id)
    assert row.state == "written" and row.d365_key and not row.coupa_notified
    check = [c for c in first.get_asset_check_evaluations() if c.check_name == "vendor_invoices_not_stuck"][0]
    assert check.passed is False and f"| {coupa_id} |" in check.metadata["details"].value

    _as_left_by_a_terminated_run(sandbox_env, coupa_id)
    result = _stuck_check(ledger(sandbox_env), "invoice", "invoices")
    line = next(ln for ln in result.metadata["details"].value.splitlines() if ln.startswith(f"| {coupa_id} |"))
    assert result.passed is False and "not_notified" in line and "Coupa was not told" in line
    # an invoice in D365 that Coupa does not know about yet heals on the next run: WARN unless worse is listed
    assert result.severity == (
        dg.AssetCheckSeverity.WARN
        if all("not_notified" in ln for ln in result.metadata["details"].value.splitlines()[2:])
        else dg.AssetCheckSeverity.ERROR
    )

    # the next run of a different partition tells Coupa
    assert run_documents(instance, LAST, LAST).success
    assert ledger(sandbox_env).get("invoice", coupa_id).coupa_notified
    assert sandboxes.coupa.state.get("invoices", coupa_id)["exported"] is True

    # replay with failed_since picks such a row up too
    _as_left_by_a_terminated_run(sandbox_env, coupa_id)
    replay = defs.resolve_job_def("replay_invoices_job").execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={"ops": {"replay_invoices": {"config": {"failed_since": "2020-01-01T00:00:00Z"}}}},
    )
    assert replay.success
    assert ledger(sandbox_env).get("invoice", coupa_id).coupa_notified
    success = [
        r
        for r in sandboxes.coupa.state.records("integration_history_records")
        if r.get("document-id") == coupa_id and r.get("status") == "Success"
    ]
    assert len(success) == 1  # told again without a second Success record
