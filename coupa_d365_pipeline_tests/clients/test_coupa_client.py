"""CoupaClient against the Coupa sandbox over real HTTP."""

import time
from urllib.parse import parse_qs

import pytest

from coupa_d365_pipeline.coupa.client import CoupaAuthError, CoupaClient, CoupaError
from coupa_d365_pipeline.coupa.models import Invoice, Supplier
from coupa_d365_pipeline.sandbox.faults import ScriptedFault
from coupa_d365_pipeline_tests.conftest import make_coupa_client


def api_entries(sandboxes):
    return [e for e in sandboxes.coupa.log.snapshot()]


def test_reads_every_invoice_once_and_parses_models(sandboxes, coupa_client):
    invoices = list(coupa_client.iter_records("invoices"))
    assert [i["id"] for i in invoices] == sorted(r["id"] for r in sandboxes.seed.coupa_invoices)
    parsed = [Invoice.model_validate(i) for i in invoices]
    assert any(p.invoice_lines and p.invoice_lines[0].account for p in parsed)
    assert all(p.updated_at.tzinfo is not None for p in parsed)
    suppliers = [Supplier.model_validate(s) for s in coupa_client.iter_records("suppliers")]
    assert len(suppliers) == len(sandboxes.seed.coupa_suppliers)
    # 50 per page, id cursor, offset 0
    gets = [e for e in api_entries(sandboxes) if e.path == "/api/invoices"]
    assert len(gets) == len(invoices) // 50 + 1
    for entry in gets:
        query = parse_qs(entry.query)
        assert query["limit"] == ["50"] and query["offset"] == ["0"] and query["order_by"] == ["id"]


def test_paging_is_exact_when_records_leave_the_filter_between_pages(sandboxes, coupa_client):
    """Marking invoices exported while paging exported=false must not skip or repeat any record."""
    expected = sorted(r["id"] for r in sandboxes.seed.coupa_invoices if not r["exported"])
    assert len(expected) > 100
    seen = []
    for record in coupa_client.iter_records("invoices", {"exported": "false"}):
        seen.append(record["id"])
        sandboxes.coupa.state.set_exported("invoices", record["id"], True)  # our own writes change the set
    assert seen == expected

    # Control: naive offset paging over the same changing set really does skip records here.
    for invoice_id in expected:
        sandboxes.coupa.state.set_exported("invoices", invoice_id, False)
    naive, offset = [], 0
    while True:
        page = coupa_client.request("GET", "/api/invoices", params={"exported": "false", "offset": offset,
                                                                    "limit": 50}).json()
        for record in page:
            naive.append(record["id"])
            sandboxes.coupa.state.set_exported("invoices", record["id"], True)
        if len(page) < 50:
            break
        offset += 50
    assert len(naive) < len(expected)


def test_paging_exact_when_records_join_and_change_between_pages(sandboxes, coupa_client):
    ids = []
    iterator = coupa_client.iter_records("suppliers", {"status": "active"}, page_size=10)
    for n, record in enumerate(iterator):
        ids.append(record["id"])
        if n == 10:  # a low-id supplier is deactivated and a new one is added mid-scan
            sandboxes.coupa.state.touch("suppliers", ids[0], status="inactive")
            added = sandboxes.coupa.state.add("suppliers", {"name": "Late Supplier", "number": "99999",
                                                            "status": "active"})
    assert len(ids) == len(set(ids))
    assert added["id"] in ids  # new id is above the cursor, so it is read exactly once


def test_every_request_carries_pinned_version_header_and_json_headers(sandboxes, coupa_client):
    invoice = next(coupa_client.iter_records("invoices", {"status": "approved"}))
    coupa_client.get("invoices", invoice["id"])
    coupa_client.mark_exported("invoices", invoice["id"])
    po = next(coupa_client.iter_records("purchase_orders"))
    coupa_client.mark_exported("purchase_orders", po["id"])
    coupa_client.update_invoice(invoice["id"], {"paid": False, "payment-notes": "partly paid"})
    coupa_client.create_integration_history_record({"document-type": "InvoiceHeader", "document-id": invoice["id"],
                                                    "status": "Success", "integration": {"code": "D365"}})
    coupa_client.create_integration_history_record({"document-type": "InvoiceHeader", "document-id": invoice["id"],
                                                    "status": "Error", "integration": {"code": "D365"},
                                                    "responses": [{"response-code": "E1",
                                                                   "response-message": "unknown vendor"}]},
                                                   alert=True)
    entries = api_entries(sandboxes)
    assert len(entries) >= 8
    assert all(e.headers.get("x-coupa-api-version") == "R39" for e in entries), \
        [e.path for e in entries if e.headers.get("x-coupa-api-version") != "R39"]
    assert all(e.headers.get("accept") == "application/json" for e in entries)
    record = sandboxes.coupa.state.get("invoices", invoice["id"])
    assert record["exported"] is True and record["payment-notes"] == "partly paid"
    put = [e for e in entries if e.method == "PUT" and "exported=true" in e.query]
    assert len(put) == 2 and all(e.body in ("", "null") for e in put)


def test_token_renewed_before_expiry(sandboxes, seed_data):
    sandboxes.coupa.config.token_lifetime_s = 2
    with make_coupa_client(sandboxes) as client:
        list(client.iter_records("suppliers"))
        time.sleep(1.8)  # past 5/6 of the 2 s lifetime
        list(client.iter_records("suppliers"))
        assert client.tokens_minted == 2
    assert not [e for e in api_entries(sandboxes) if e.status == 401]


def test_token_renewed_once_on_401(sandboxes, coupa_client):
    list(coupa_client.iter_records("suppliers"))
    sandboxes.coupa.revoke_tokens()
    assert len(list(coupa_client.iter_records("suppliers"))) == len(sandboxes.seed.coupa_suppliers)
    assert coupa_client.tokens_minted == 2
    statuses = [e.status for e in api_entries(sandboxes) if e.path == "/api/suppliers"]
    assert statuses.count(401) == 1


def test_bad_secret_and_bad_scope_fail_clearly(sandboxes):
    with CoupaClient(sandboxes.coupa_url, "sandbox-client", "wrong-secret-value", token_warmup_s=0) as client:
        with pytest.raises(CoupaAuthError) as err:
            client.ping()
    assert "invalid_client" in str(err.value) and "COUPA_CLIENT_SECRET" in str(err.value)
    assert "wrong-secret-value" not in str(err.value)
    with make_coupa_client(sandboxes, scopes="core.invoice.read core.madeup.read") as client:
        with pytest.raises(CoupaAuthError, match="invalid_scope.*COUPA_SCOPES"):
            client.ping()


def test_429_retry_after_is_waited(sandboxes, coupa_client):
    sandboxes.coupa.injector.script(ScriptedFault(kind="429", method="GET", path_regex="^/api/suppliers$",
                                                  retry_after_s=2))
    started = time.monotonic()
    suppliers = list(coupa_client.iter_records("suppliers"))
    assert len(suppliers) == len(sandboxes.seed.coupa_suppliers)
    entries = [e for e in api_entries(sandboxes) if e.path == "/api/suppliers"]
    assert entries[0].status == 429 and entries[1].status == 200
    assert entries[1].time - entries[0].time >= 2.0
    assert time.monotonic() - started >= 2.0


def test_5xx_and_dropped_reads_are_retried(sandboxes, coupa_client):
    sandboxes.coupa.injector.script(ScriptedFault(kind="5xx", method="GET", status=503))
    sandboxes.coupa.injector.script(ScriptedFault(kind="drop_after", method="GET"))
    assert len(list(coupa_client.iter_records("suppliers"))) == len(sandboxes.seed.coupa_suppliers)


def test_client_rate_limit_at_most_20_per_second(sandboxes):
    with make_coupa_client(sandboxes, max_requests_per_second=20) as client:
        client.ping()
        for _ in range(45):
            client.request("GET", "/api/suppliers", params={"limit": 1})
    times = sorted(e.time for e in api_entries(sandboxes))
    # no 1-second window holds more than 20 requests (+1 for a request exactly on the window edge)
    worst = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert worst <= 21


def test_api_errors_are_explained(sandboxes, coupa_client):
    with pytest.raises(CoupaError) as err:
        coupa_client.get("invoices", 999999)
    assert err.value.status == 404
    with pytest.raises(CoupaError) as err:
        list(coupa_client.iter_records("invoices", {"no-such-attribute": "x"}))
    assert err.value.status == 400 and "no-such-attribute" in str(err.value)
