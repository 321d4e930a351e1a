"""Issue 9, "done when" (broken answers): an HTML page, an empty body or a truncated JSON answer from
Coupa or D365, on every read, ends the documents run failed with one line naming the system, the
request and what was wrong — never a green run that wrote nothing, never an Error alert to Coupa users,
never an export flag for something D365 does not hold. Once the answers are healthy again, the next
run books everything exactly once. (5xx storms and a wrong secret: test_outages.py.)"""

from __future__ import annotations

import pytest

from coupa_d365_pipeline.sandbox.faults import ScriptedFault
from coupa_d365_pipeline_tests.flow.conftest import ledger
from coupa_d365_pipeline_tests.flow.helpers import duplicates, run_documents
from coupa_d365_pipeline_tests.flow.test_outages import all_booked, error_alerts, failure_messages, held_claims

READS = {"coupa": r"^/api/", "d365": r"^/data/"}
SYSTEM_NAME = {"coupa": "Coupa", "d365": "D365"}


def exported_but_not_in_d365(sandboxes) -> list[int]:
    refs = {h["HeaderReference"] for h in sandboxes.d365.state.records("VendorInvoiceHeaders")}
    return [
        i["id"]
        for i in sandboxes.coupa.state.records("invoices")
        if i.get("exported") and i["status"] == "approved" and f"COUPA-{i['id']}" not in refs
    ]


@pytest.mark.parametrize("kind", ["html", "empty", "truncated"])
@pytest.mark.parametrize("system", ["coupa", "d365"])
def test_a_broken_answer_on_every_read_fails_the_run_with_one_line_and_the_next_run_books_all(
    sandbox_env, sandboxes, instance, system, kind, mastered
):
    alerts_before = error_alerts(sandboxes)
    app = sandboxes.coupa if system == "coupa" else sandboxes.d365
    app.injector.script(ScriptedFault(kind=kind, method="GET", path_regex=READS[system], times=10**6))

    result = run_documents(instance)

    assert not result.success, "a run whose every read was unreadable must not end green"
    assert [e for e in app.log.snapshot() if (e.fault or "").startswith(kind)], "the fault never fired"
    messages = [m.strip() for m in failure_messages(result)]
    assert messages, "no step failed"
    for line in messages:  # each failed step: one line naming the system, the request and the problem
        assert "\n" not in line and SYSTEM_NAME[system] in line and "GET /" in line, line
        assert "not JSON" in line or "cut short" in line or "empty body" in line, line
    first_line = " ".join(messages)
    assert sandbox_env["COUPA_CLIENT_SECRET"] not in first_line and sandbox_env["D365_CLIENT_SECRET"] not in first_line
    assert error_alerts(sandboxes) == alerts_before
    assert exported_but_not_in_d365(sandboxes) == []
    assert held_claims(sandbox_env) == []

    app.injector.clear()
    assert run_documents(instance).success
    assert all_booked(sandboxes) and not duplicates(sandboxes)
    assert exported_but_not_in_d365(sandboxes) == []
    assert ledger(sandbox_env).rows("invoice", ["failed", "writing", "new"]) == []
