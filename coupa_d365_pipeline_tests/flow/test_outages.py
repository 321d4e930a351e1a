"""Issue 9 item 3 through Dagster: a D365 5xx storm or a wrong D365 secret fails the documents run
with one clear message (never RUN_SUCCESS that wrote nothing); documents keep their state, Coupa users
get no Error alert for an outage, and the run after the faults are gone books everything."""

import dagster as dg

from coupa_d365_pipeline.sandbox.faults import FaultConfig
from coupa_d365_pipeline_tests.flow.conftest import ledger
from coupa_d365_pipeline_tests.flow.helpers import (
    EDIT_DAY,
    approved,
    d365_invoices,
    duplicates,
    run_documents,
)

STORM = FaultConfig(rate_5xx=1.0, status_5xx=503, retry_after_on_5xx=True, retry_after_s=0)


def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    messages = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        messages.append(data.user_failure_data.description if data.user_failure_data else data.error.message)
    return messages


def error_alerts(sandboxes) -> list[dict]:
    return [r for r in sandboxes.coupa.state.records("integration_history_records") if r["status"] == "Error"]


def held_claims(sandbox_env) -> list:
    book = ledger(sandbox_env)
    return [
        r
        for doc in ("invoice", "purchase_order", "vendor")
        for r in book.rows(doc, ["new", "writing", "written", "failed", "quarantined"])
        if r.claimed_by
    ]


def all_booked(sandboxes) -> bool:
    unmappable = set(sandboxes.seed.expectations["unmappable_invoices"])
    return len(d365_invoices(sandboxes)) == len([i for i in approved(sandboxes.seed) if i["id"] not in unmappable])


def test_d365_5xx_storm_fails_the_run_with_one_message_and_the_next_run_books_everything(
    sandbox_env, sandboxes, instance, mastered
):
    alerts_before = error_alerts(sandboxes)
    sandboxes.d365.injector.configure(STORM)
    result = run_documents(instance)
    assert not result.success
    [message] = failure_messages(result)
    assert message.startswith("D365 is unavailable: 3 requests in a row failed") and "HTTP 503" in message
    assert "\n" not in message and "next run" in message
    assert held_claims(sandbox_env) == []
    failed = [r for doc in ("invoice", "purchase_order") for r in ledger(sandbox_env).rows(doc, ["failed"])]
    assert len(failed) <= 2  # at most the documents whose requests tripped the breaker; none untried
    assert error_alerts(sandboxes) == alerts_before  # an outage is not the documents' fault
    assert ledger(sandbox_env).rows("invoice", ["written"]) == []

    sandboxes.d365.injector.clear()
    assert run_documents(instance).success
    assert all_booked(sandboxes) and not duplicates(sandboxes)
    assert (
        ledger(sandbox_env).rows("invoice", ["failed"]) == []
        and ledger(sandbox_env).rows("purchase_order", ["failed"]) == []
    )


def test_wrong_d365_secret_fails_the_run_with_one_message_and_marks_nothing(
    sandbox_env, sandboxes, instance, monkeypatch, mastered
):
    alerts_before = error_alerts(sandboxes)
    monkeypatch.setenv("D365_CLIENT_SECRET", "expired-secret-42")
    result = run_documents(instance)
    assert not result.success
    [message] = failure_messages(result)
    assert "invalid_client" in message and "D365_CLIENT_SECRET" in message and "expired-secret-42" not in message
    assert held_claims(sandbox_env) == []
    assert (
        ledger(sandbox_env).rows("invoice", ["failed"]) == []
        and ledger(sandbox_env).rows("purchase_order", ["failed"]) == []
    )
    assert error_alerts(sandboxes) == alerts_before

    monkeypatch.setenv("D365_CLIENT_SECRET", sandbox_env["D365_CLIENT_SECRET"])
    assert run_documents(instance).success
    assert all_booked(sandboxes) and not duplicates(sandboxes)


def test_documents_a_stopped_run_never_reached_are_booked_by_the_next_run_of_any_partition(
    sandbox_env, sandboxes, instance, mastered
):
    """The schedule's next run covers today's partition, not the failed one: what the outage left
    untried (staged, never synced) must not wait for someone to re-run the failed partition."""
    sandboxes.d365.injector.configure(STORM)
    assert not run_documents(instance).success
    sandboxes.d365.injector.clear()

    assert run_documents(instance, EDIT_DAY, EDIT_DAY).success  # a later partition, nothing updated in it
    assert all_booked(sandboxes) and not duplicates(sandboxes)
    book = ledger(sandbox_env)
    assert book.rows("invoice", ["new", "failed", "writing"]) == []
    assert book.rows("purchase_order", ["new", "failed", "writing"]) == []
