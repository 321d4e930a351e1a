"""Issue 9 items 3 and 5 at the sync core, over real HTTP: a system that is down or refuses our
credentials stops the sync with one clear error — documents keep their state, no Coupa user is told
a document failed — and a $batch answer lost after D365 applied it is settled by lookup."""

from __future__ import annotations

import time

import pytest

from coupa_d365_pipeline.common.http import RetryPolicy, SystemUnavailableError
from coupa_d365_pipeline.d365.client import D365Client
from coupa_d365_pipeline.sandbox.faults import FaultConfig, ScriptedFault
from coupa_d365_pipeline.sync.invoices import InvoiceSync
from coupa_d365_pipeline_tests.conftest import make_d365_client
from coupa_d365_pipeline_tests.sync.conftest import as_run, mappable_invoice, pending_headers, sync_invoice

# D365 answers 503 to everything; Retry-After: 0 keeps the test fast (the client honours it exactly)
STORM = FaultConfig(rate_5xx=1.0, status_5xx=503, retry_after_on_5xx=True, retry_after_s=0)


def history(sandboxes, coupa_id: int, status: str) -> list[dict]:
    return [
        r
        for r in sandboxes.coupa.state.records("integration_history_records")
        if r["document-id"] == coupa_id and r["status"] == status
    ]


def staged_invoices(sandboxes, services, n: int) -> list[dict]:
    invoices = [services.coupa.get("invoices", mappable_invoice(sandboxes, skip=i)["id"]) for i in range(n)]
    services.store.stage("invoice", invoices, run_id=services.run_id)
    return invoices


@pytest.mark.parametrize("kind", ["truncated", "empty_after", "html_after"])
def test_lost_batch_answer_after_d365_applied_it_is_booked_once_without_an_error_alert(sandboxes, services, kind):
    invoice = mappable_invoice(sandboxes)
    coupa_id = invoice["id"]
    sandboxes.d365.injector.script(ScriptedFault(kind=kind, method="POST", path_regex=r"^/data/\$batch$"))
    outcome = sync_invoice(services, coupa_id)
    assert [e for e in sandboxes.d365.log.snapshot() if (e.fault or "").startswith(kind)]  # the fault fired
    assert outcome.action == "created", outcome.detail
    row = services.ledger.get("invoice", coupa_id)
    assert row.state == "written" and row.coupa_notified and row.problem is None
    assert len(pending_headers(sandboxes, HeaderReference=f"COUPA-{coupa_id}")) == 1
    assert len([e for e in sandboxes.d365.log.snapshot() if e.path == "/data/$batch"]) == 1  # never resent
    assert len(history(sandboxes, coupa_id, "Success")) == 1 and history(sandboxes, coupa_id, "Error") == []
    assert "create_ambiguous" in [h["action"] for h in services.ledger.history("invoice", coupa_id)]


def test_d365_5xx_storm_stops_the_sync_documents_keep_their_state_and_the_next_run_books_them(sandboxes, services):
    invoices = staged_invoices(sandboxes, services, 6)
    ids = [i["id"] for i in invoices]
    sandboxes.d365.injector.configure(STORM)
    before = len(sandboxes.d365.log.snapshot())
    with pytest.raises(SystemUnavailableError) as err:
        InvoiceSync(services).sync_many(invoices)
    message = str(err.value)
    assert message.startswith("D365 is unavailable: 3 requests in a row failed") and "HTTP 503" in message
    assert "\n" not in message
    assert len(sandboxes.d365.log.snapshot()) - before <= 3 * 6  # stopped early: 3 requests x 6 attempts
    rows = [services.ledger.get("invoice", i) for i in ids]
    assert all(r is None or r.claimed_by is None for r in rows)  # every claim released
    touched = [r for r in rows if r is not None and r.state != "new"]
    assert len(touched) <= 2 and all(r.state == "failed" and "RetriesExhaustedError" in r.reason for r in touched)
    assert all(history(sandboxes, i, "Error") == [] for i in ids)  # an outage is not the document's fault
    assert [o.action for o in err.value.report.outcomes] == ["failed"] * len(touched)

    sandboxes.d365.injector.clear()
    with make_d365_client(sandboxes) as d365:
        report = InvoiceSync(as_run(services, "run-2", d365=d365)).sync_many(invoices)
    assert report.counts("invoice")["created"] == 6
    assert all(len(pending_headers(sandboxes, HeaderReference=f"COUPA-{i}")) == 1 for i in ids)
    assert all(history(sandboxes, i, "Error") == [] for i in ids)


def test_wrong_d365_secret_stops_at_the_first_document_and_marks_nothing(sandboxes, services):
    invoices = staged_invoices(sandboxes, services, 3)
    env = sandboxes.env()
    with D365Client(
        env["D365_BASE_URL"],
        env["D365_TENANT_ID"],
        env["D365_CLIENT_ID"],
        "expired-secret-42",
        authority_url=env["D365_AUTHORITY_URL"],
    ) as wrong:
        with pytest.raises(SystemUnavailableError) as err:
            InvoiceSync(as_run(services, "run-1", d365=wrong)).sync_many(invoices)
    message = str(err.value)
    assert "invalid_client" in message and "D365_CLIENT_SECRET" in message and "expired-secret-42" not in message
    for invoice in invoices:
        row = services.ledger.get("invoice", invoice["id"])
        assert row is None or (row.state == "new" and row.claimed_by is None)
        assert history(sandboxes, invoice["id"], "Error") == []
    report = InvoiceSync(services).sync_many(invoices)
    assert report.counts("invoice")["created"] == 3


def test_slow_d365_trips_the_breaker_in_bounded_time(sandboxes, services):
    invoices = staged_invoices(sandboxes, services, 4)
    sandboxes.d365.injector.configure(FaultConfig(latency_ms=1500))
    policy = RetryPolicy(max_attempts=6, backoff_initial_s=0.01, deadline_s=1.0)
    with make_d365_client(sandboxes, timeout_s=0.3, retry_policy=policy) as slow:
        started = time.monotonic()
        with pytest.raises(SystemUnavailableError, match="ReadTimeout"):
            InvoiceSync(as_run(services, "run-1", d365=slow)).sync_many(invoices)
        elapsed = time.monotonic() - started
    # 3 requests, each cut off by its deadline after ~4 attempts of 0.3 s: seconds, not attempts x timeout x invoices
    assert elapsed < 3 * (1.0 + 0.3 + 0.5) + 2
    assert all(history(sandboxes, i["id"], "Error") == [] for i in invoices)
