"""CoupaClient against the Coupa sandbox over real HTTP."""

from datetime import datetime
from itertools import pairwise
from urllib.parse import parse_qs

import httpx
import pytest

from coupa_d365_pipeline.common.http import RateLimiter
from coupa_d365_pipeline.coupa.client import CoupaAuthError, CoupaClient, CoupaError
from coupa_d365_pipeline.sandbox.faults import ScriptedFault
from coupa_d365_pipeline_tests.clients.fake_time import FakeClock
from coupa_d365_pipeline_tests.conftest import make_coupa_client


def api_entries(sandboxes):
    return sandboxes.coupa.log.snapshot()


def bearer(entry) -> str:
    return entry.headers["authorization"].removeprefix("Bearer ")


def test_reads_every_invoice_once_with_its_lines_and_zoned_timestamps(sandboxes, coupa_client):
    invoices = list(coupa_client.iter_records("invoices"))
    assert [i["id"] for i in invoices] == sorted(r["id"] for r in sandboxes.seed.coupa_invoices)
    assert any(i["invoice-lines"] and i["invoice-lines"][0].get("account") for i in invoices)
    assert all(datetime.fromisoformat(i["updated-at"]).tzinfo is not None for i in invoices)
    suppliers = list(coupa_client.iter_records("suppliers"))
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
        page = coupa_client.request(
            "GET", "/api/invoices", params={"exported": "false", "offset": offset, "limit": 50}
        ).json()
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
            added = sandboxes.coupa.state.add(
                "suppliers", {"name": "Late Supplier", "number": "99999", "status": "active"}
            )
    assert len(ids) == len(set(ids))
    assert added["id"] in ids  # new id is above the cursor, so it is read exactly once


def test_every_request_carries_pinned_version_header_and_json_headers(sandboxes, coupa_client):
    invoice = next(coupa_client.iter_records("invoices", {"status": "approved"}))
    coupa_client.get("invoices", invoice["id"])
    coupa_client.mark_exported("invoices", invoice["id"])
    po = next(coupa_client.iter_records("purchase_orders"))
    coupa_client.mark_exported("purchase_orders", po["id"])
    coupa_client.update_invoice(invoice["id"], {"paid": False, "payment-notes": "partly paid"})
    coupa_client.create_integration_history_record(
        {
            "document-type": "InvoiceHeader",
            "document-id": invoice["id"],
            "status": "Success",
            "integration": {"code": "D365"},
        }
    )
    coupa_client.create_integration_history_record(
        {
            "document-type": "InvoiceHeader",
            "document-id": invoice["id"],
            "status": "Error",
            "integration": {"code": "D365"},
            "responses": [{"response-code": "E1", "response-message": "unknown vendor"}],
        },
        alert=True,
    )
    entries = api_entries(sandboxes)
    # token, invoices page, GET invoice, PUT exported, PO page, PUT exported, PUT payment fields, 2 history POSTs
    assert [(e.method, e.path) for e in entries] == [
        ("POST", "/oauth2/token"),
        ("GET", "/api/invoices"),
        ("GET", f"/api/invoices/{invoice['id']}"),
        ("PUT", f"/api/invoices/{invoice['id']}"),
        ("GET", "/api/purchase_orders"),
        ("PUT", f"/api/purchase_orders/{po['id']}"),
        ("PUT", f"/api/invoices/{invoice['id']}"),
        ("POST", "/api/integration_history_records"),
        ("POST", "/api/integration_history_records/create_alert"),
    ]
    assert all(e.headers.get("x-coupa-api-version") == "R39" for e in entries), [
        e.path for e in entries if e.headers.get("x-coupa-api-version") != "R39"
    ]
    assert all(e.headers.get("accept") == "application/json" for e in entries)
    record = sandboxes.coupa.state.get("invoices", invoice["id"])
    assert record["exported"] is True and record["payment-notes"] == "partly paid"
    put = [e for e in entries if e.method == "PUT" and "exported=true" in e.query]
    assert len(put) == 2 and all(e.body in ("", "null") for e in put)


def test_token_renewed_at_five_sixths_of_its_lifetime_by_the_client_clock(sandboxes):
    clock = FakeClock()
    lifetime = sandboxes.coupa.config.token_lifetime_s
    assert lifetime == 86399  # Coupa's 24 h token: renewed after 20 h
    with make_coupa_client(sandboxes, clock=clock) as client:
        client.request("GET", "/api/suppliers", params={"limit": 1})
        clock.set(clock.now + lifetime * 5 / 6 - 1)
        client.request("GET", "/api/suppliers", params={"limit": 1})
        assert client.tokens_minted == 1
        clock.advance(1)
        client.request("GET", "/api/suppliers", params={"limit": 1})
        assert client.tokens_minted == 2
    entries = api_entries(sandboxes)
    assert [(e.path, e.status) for e in entries] == [
        ("/oauth2/token", 200),
        ("/api/suppliers", 200),
        ("/api/suppliers", 200),
        ("/oauth2/token", 200),
        ("/api/suppliers", 200),
    ]
    assert bearer(entries[1]) == bearer(entries[2]) != bearer(entries[4])  # the renewed token is the one used


def test_token_warmup_waits_once_per_new_token(sandboxes):
    clock = FakeClock()
    with make_coupa_client(sandboxes, clock=clock, sleep=clock.sleep, token_warmup_s=5.0) as client:
        for _ in range(3):
            client.request("GET", "/api/suppliers", params={"limit": 1})
        assert clock.sleeps == [5.0]  # Coupa: >= 5 s between minting and first use, then no more waits
        client.invalidate_token()
        clock.advance(2.0)
        client.request("GET", "/api/suppliers", params={"limit": 1})
        assert clock.sleeps == [5.0, 5.0]
        assert client.tokens_minted == 2


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


def test_429_waits_exactly_retry_after_seconds(sandboxes):
    sandboxes.coupa.injector.script(
        ScriptedFault(kind="429", method="GET", path_regex="^/api/suppliers$", retry_after_s=2)
    )
    sleeps: list[float] = []
    with make_coupa_client(sandboxes, sleep=sleeps.append) as client:
        suppliers = list(client.iter_records("suppliers"))
    assert len(suppliers) == len(sandboxes.seed.coupa_suppliers)
    assert sleeps == [2.0]
    entries = [e for e in api_entries(sandboxes) if e.path == "/api/suppliers"]
    assert [(e.status, e.injected) for e in entries] == [(429, "429"), (200, None), (200, None)]
    assert entries[0].query == entries[1].query  # the same page again, not the next one


def test_429_waits_exactly_until_an_http_date_retry_after(sandboxes):
    clock = FakeClock()
    sandboxes.coupa.injector.clock = clock  # the sandbox dates Retry-After with the same clock
    sandboxes.coupa.injector.script(
        ScriptedFault(
            kind="429", method="GET", path_regex="^/api/suppliers$", retry_after_s=7, retry_after_format="http-date"
        )
    )
    with make_coupa_client(sandboxes, clock=clock, sleep=clock.sleep) as client:
        assert len(list(client.iter_records("suppliers"))) == len(sandboxes.seed.coupa_suppliers)
    assert clock.sleeps == [7.0]
    assert [e.injected for e in api_entries(sandboxes) if e.path == "/api/suppliers"] == ["429", None, None]


def test_5xx_and_dropped_reads_are_retried(sandboxes):
    sandboxes.coupa.injector.script(ScriptedFault(kind="5xx", method="GET", status=503))
    sandboxes.coupa.injector.script(ScriptedFault(kind="drop_after", method="GET"))
    sleeps: list[float] = []
    with make_coupa_client(sandboxes, sleep=sleeps.append) as client:
        assert len(list(client.iter_records("suppliers"))) == len(sandboxes.seed.coupa_suppliers)
    entries = [e for e in api_entries(sandboxes) if e.path == "/api/suppliers"]
    assert [(e.status, e.injected) for e in entries] == [(503, "5xx"), (200, "drop_after"), (200, None), (200, None)]
    assert entries[0].query == entries[1].query == entries[2].query
    assert sandboxes.coupa.injector.pending() == []
    # exponential backoff with jitter: attempt n waits 0.5 * 2**(n-1) s times a factor in [0.5, 1]
    assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


def test_every_request_goes_through_the_rate_limiter_spaced_evenly(sandboxes):
    monotonic = FakeClock(start=0.0)
    sent_at: list[float] = []
    http = httpx.Client(timeout=10, event_hooks={"request": [lambda request: sent_at.append(monotonic())]})
    limiter = RateLimiter(20, burst=1, monotonic=monotonic, sleep=monotonic.sleep)
    with make_coupa_client(sandboxes, http=http, rate_limiter=limiter) as client:
        client.ping()
        for _ in range(45):
            client.request("GET", "/api/suppliers", params={"limit": 1})
    http.close()
    assert len(sent_at) == len(api_entries(sandboxes)) == 47  # token + ping read + 45 reads
    assert all(later - earlier == pytest.approx(0.05) for earlier, later in pairwise(sent_at))
    assert all(sent_at[i + 20] - sent_at[i] >= 1.0 - 1e-9 for i in range(len(sent_at) - 20))  # <= 20 per second
    with make_coupa_client(sandboxes) as default:  # the production default: 20/s, no burst
        assert (default.sender.rate_limiter.rate, default.sender.rate_limiter.capacity) == (20.0, 1.0)


def test_api_errors_are_explained(sandboxes, coupa_client):
    with pytest.raises(CoupaError) as err:
        coupa_client.get("invoices", 999999)
    assert err.value.status == 404
    with pytest.raises(CoupaError) as err:
        list(coupa_client.iter_records("invoices", {"no-such-attribute": "x"}))
    assert err.value.status == 400 and "no-such-attribute" in str(err.value)
