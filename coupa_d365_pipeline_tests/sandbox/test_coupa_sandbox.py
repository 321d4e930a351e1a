"""Coupa sandbox over real HTTP: OAuth, headers, paging, filters, export flag, payments, history, faults."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from coupa_d365_pipeline.sandbox.coupa import CoupaSandbox, CoupaSandboxConfig
from coupa_d365_pipeline.sandbox.faults import ScriptedFault
from coupa_d365_pipeline.sandbox.seed import generate_seed
from coupa_d365_pipeline.sandbox.server import SandboxServer
from coupa_d365_pipeline_tests.clients.fake_time import FakeClock

SEED = generate_seed()  # read-only: CoupaState copies the records it is given
CID, SECRET = "sandbox-client", "sandbox-secret"


class SwappableApp:
    """ASGI app forwarding to the sandbox of the current test: one server per module, a fresh
    sandbox (state, tokens, log, faults) per test."""

    def __init__(self) -> None:
        self.target: Any = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self.target(scope, receive, send)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[SandboxServer, SwappableApp]]:
    app = SwappableApp()
    with SandboxServer(app) as running:
        yield running, app


@pytest.fixture
def serve(server):
    """Serve a new sandbox on the module's server; returns its base URL."""
    running, app = server

    def serve_sandbox(sandbox: CoupaSandbox) -> str:
        app.target = sandbox.app
        return running.url

    yield serve_sandbox
    app.target = None


@pytest.fixture
def env(serve):
    sandbox = CoupaSandbox(seed=SEED)
    with httpx.Client(base_url=serve(sandbox), timeout=10) as client:
        resp = client.post(
            "/oauth2/token", data={"grant_type": "client_credentials", "client_id": CID, "client_secret": SECRET}
        )
        token = resp.json()["access_token"]
        client.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})
        yield sandbox, client


def get(client, path, **params):
    resp = client.get(path, params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


# ------------------------------------------------------------------------------------------ oauth
def test_token_success_form_and_basic(env):
    sandbox, client = env
    r = httpx.post(
        f"{client.base_url}/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CID,
            "client_secret": SECRET,
            "scope": "core.invoice.read core.supplier.read",
        },
    )
    body = r.json()
    assert r.status_code == 200 and body["token_type"] == "bearer" and body["expires_in"] == 86399
    assert body["scope"] == "core.invoice.read core.supplier.read"
    assert body["access_token"].count(".") == 2 and len(body["access_token"]) > 200
    basic = base64.b64encode(f"{CID}:{SECRET}".encode()).decode()
    r2 = httpx.post(
        f"{client.base_url}/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert r2.status_code == 200 and r2.json()["access_token"] != body["access_token"]
    # the narrow token can read invoices but not purchase orders (403) nor write (403)
    h = {"Authorization": f"Bearer {body['access_token']}", "Accept": "application/json"}
    assert httpx.get(f"{client.base_url}/api/invoices", headers=h).status_code == 200
    r3 = httpx.get(f"{client.base_url}/api/purchase_orders", headers=h)
    assert r3.status_code == 403 and "core.purchase_order.read" in r3.text
    assert httpx.put(f"{client.base_url}/api/invoices/1?exported=true", headers=h).status_code == 403


def test_token_errors(env):
    _, client = env
    url = f"{client.base_url}/oauth2/token"
    r = httpx.post(url, data={"grant_type": "client_credentials", "client_id": CID, "client_secret": "nope"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = httpx.post(url, data={"grant_type": "client_credentials", "client_id": "who", "client_secret": SECRET})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = httpx.post(url, data={"grant_type": "password", "client_id": CID, "client_secret": SECRET})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = httpx.post(
        url,
        data={
            "grant_type": "client_credentials",
            "client_id": CID,
            "client_secret": SECRET,
            "scope": "core.invoice.read core.everything.admin",
        },
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"


def test_token_expiry_by_the_sandbox_clock_and_revoke(serve):
    clock = FakeClock()
    url = serve(CoupaSandbox(CoupaSandboxConfig(token_lifetime_s=60), seed=SEED, clock=clock))
    form = {"grant_type": "client_credentials", "client_id": CID, "client_secret": SECRET}
    tok = httpx.post(f"{url}/oauth2/token", data=form).json()
    assert tok["expires_in"] == 60
    h = {"Authorization": f"Bearer {tok['access_token']}", "Accept": "application/json"}
    clock.advance(59.5)
    assert httpx.get(f"{url}/api/suppliers", headers=h).status_code == 200
    clock.advance(0.5)  # exactly 60 s after it was issued
    r = httpx.get(f"{url}/api/suppliers", headers=h)
    assert r.status_code == 401 and "expired" in r.text
    tok2 = httpx.post(f"{url}/oauth2/token", data=form).json()
    h2 = {"Authorization": f"Bearer {tok2['access_token']}", "Accept": "application/json"}
    assert httpx.get(f"{url}/api/suppliers", headers=h2).status_code == 200
    assert httpx.post(f"{url}/_sandbox/tokens/revoke").status_code == 204
    assert httpx.get(f"{url}/api/suppliers", headers=h2).status_code == 401


def test_tokens_revoked_every_n_requests_by_the_fault_config(serve):
    from coupa_d365_pipeline.sandbox.faults import FaultConfig

    sandbox = CoupaSandbox(CoupaSandboxConfig(fault=FaultConfig(revoke_tokens_every=4)), seed=SEED)
    url = serve(sandbox)
    form = {"grant_type": "client_credentials", "client_id": CID, "client_secret": SECRET}
    tok = httpx.post(f"{url}/oauth2/token", data=form).json()  # request 1
    h = {"Authorization": f"Bearer {tok['access_token']}", "Accept": "application/json"}
    statuses = [httpx.get(f"{url}/api/suppliers", headers=h, params={"limit": 1}).status_code for _ in range(4)]
    assert statuses == [200, 200, 401, 401]  # request 4 revoked every token; the old one stays revoked
    assert [e.injected for e in sandbox.log.snapshot()] == [None, None, None, "revoke", None]
    tok2 = httpx.post(f"{url}/oauth2/token", data=form).json()
    h2 = {"Authorization": f"Bearer {tok2['access_token']}", "Accept": "application/json"}
    assert httpx.get(f"{url}/api/suppliers", headers=h2, params={"limit": 1}).status_code == 200


def test_401_without_token_and_406_without_json_accept(env):
    _, client = env
    r = httpx.get(f"{client.base_url}/api/invoices", headers={"Accept": "application/json"})
    assert r.status_code == 401 and "errors" in r.json() and "WWW-Authenticate" in r.headers
    r = httpx.get(
        f"{client.base_url}/api/invoices",
        headers={"Accept": "application/json", "Authorization": "Bearer forged.token.x"},
    )
    assert r.status_code == 401
    r = client.get("/api/invoices", headers={"Accept": "application/xml"})
    assert r.status_code == 406 and "application/json" in r.json()["errors"]["base"][0]
    r = client.get("/api/invoices", headers={"Accept": "*/*"})
    assert r.status_code == 406


# ------------------------------------------------------------------------------------------ listing
def test_paging_limit_offset(env):
    _, client = env
    page = get(client, "/api/invoices")
    assert isinstance(page, list) and len(page) == 50 and [r["id"] for r in page] == list(range(1, 51))
    assert len(get(client, "/api/invoices", limit=100)) == 50
    small = get(client, "/api/invoices", limit=7, offset=50)
    assert [r["id"] for r in small] == list(range(51, 58))
    last = get(client, "/api/invoices", offset=490)
    assert [r["id"] for r in last] == list(range(491, 501))
    assert get(client, "/api/invoices", offset=500) == []
    desc = get(client, "/api/invoices", order_by="id", dir="desc", limit=3)
    assert [r["id"] for r in desc] == [500, 499, 498]
    by_upd = get(client, "/api/invoices", order_by="updated_at", dir="asc", limit=50)
    assert [r["updated-at"] for r in by_upd] == sorted(r["updated-at"] for r in by_upd)
    assert by_upd[0]["updated-at"] == min(i["updated-at"] for i in SEED.coupa_invoices)
    one = get(client, "/api/invoices/42")
    assert one["id"] == 42 and one["invoice-number"] == SEED.coupa_invoices[41]["invoice-number"]
    r = client.get("/api/invoices/999999")
    assert r.status_code == 404 and "errors" in r.json()


def test_keyset_paging_id_gt(env):
    _, client = env
    seen, last = [], 0
    while True:
        page = get(client, "/api/purchase_orders", order_by="id", dir="asc", **{"id[gt]": last})
        if not page:
            break
        seen.extend(r["id"] for r in page)
        last = page[-1]["id"]
        if len(page) < 50:
            break
    assert seen == [p["id"] for p in SEED.coupa_purchase_orders]


def _ids(client, path, params):
    out, offset = [], 0
    while True:
        page = get(client, path, offset=offset, **params)
        out.extend(r["id"] for r in page)
        if len(page) < 50:
            return out
        offset += 50


def test_every_filter_op(env):
    _, client = env
    inv = SEED.coupa_invoices
    sup = SEED.coupa_suppliers
    # eq and booleans
    assert _ids(client, "/api/invoices", {"status": "voided"}) == [i["id"] for i in inv if i["status"] == "voided"]
    assert len(_ids(client, "/api/invoices", {"exported": "false"})) == 500
    assert _ids(client, "/api/invoices", {"is-credit-note": "true"}) == SEED.expectations["credit_notes"]
    # in / not_in
    want = [i["id"] for i in inv if i["status"] in ("approved", "voided")]
    assert _ids(client, "/api/invoices", {"status[in]": "approved,voided"}) == want
    assert _ids(client, "/api/invoices", {"status[not_in]": "approved,voided"}) == [
        i["id"] for i in inv if i["status"] not in ("approved", "voided")
    ]
    assert _ids(client, "/api/invoices", {"status[not_eq]": "approved"}) == [
        i["id"] for i in inv if i["status"] != "approved"
    ]
    # datetime comparisons, hyphen and underscore spelling, Z and +00:00 and bare date
    t = "2026-11-15T00:00:00Z"
    gt = [i["id"] for i in inv if i["updated-at"] > t]
    assert _ids(client, "/api/invoices", {"updated-at[gt]": t}) == gt
    assert _ids(client, "/api/invoices", {"updated_at[gt]": "2026-11-15T00:00:00+00:00"}) == gt
    assert _ids(client, "/api/invoices", {"updated_at[gt_or_eq]": "2026-11-15"}) == [
        i["id"] for i in inv if i["updated-at"] >= t
    ]
    assert _ids(client, "/api/invoices", {"updated-at[lt]": "2026-11-15T01:00:00+01:00"}) == [
        i["id"] for i in inv if i["updated-at"] < t
    ]
    assert _ids(client, "/api/invoices", {"created-at[lt_or_eq]": inv[9]["created-at"]}) == [
        i["id"] for i in inv if i["created-at"] <= inv[9]["created-at"]
    ]
    # string ops
    assert _ids(client, "/api/suppliers", {"number[starts_with]": "CP-"}) == [
        s["id"] for s in sup if (s["number"] or "").startswith("CP-")
    ]
    assert _ids(client, "/api/suppliers", {"name[contains]": "gmbh"}) == [
        s["id"] for s in sup if "gmbh" in s["name"].lower()
    ]
    assert _ids(client, "/api/suppliers", {"name[ends_with]": "Ltd"}) == [
        s["id"] for s in sup if s["name"].endswith("Ltd")
    ]
    assert _ids(client, "/api/suppliers", {"number[blank]": "true"}) == [s["id"] for s in sup if s["number"] is None]
    assert len(_ids(client, "/api/suppliers", {"number[blank]": "false"})) == len(sup) - 2
    # numeric id ops and decimal comparison
    assert _ids(client, "/api/invoices", {"id[gt]": "495"}) == [496, 497, 498, 499, 500]
    assert _ids(client, "/api/invoices", {"id[lt]": "3"}) == [1, 2]
    assert _ids(client, "/api/invoices", {"gross-total[lt]": "0"}) == [
        i["id"] for i in inv if float(i["gross-total"]) < 0
    ]
    # nested one level and collections
    s = sup[6]
    assert _ids(client, "/api/invoices", {"supplier[id]": s["id"]}) == [
        i["id"] for i in inv if i["supplier"]["id"] == s["id"]
    ]
    assert _ids(client, "/api/invoices", {"supplier[number]": s["number"]}) == [
        i["id"] for i in inv if i["supplier"]["number"] == s["number"]
    ]
    assert _ids(client, "/api/invoices", {"account-type[name]": "CA Plant"}) == [
        i["id"] for i in inv if i["account-type"]["name"] == "CA Plant"
    ]
    po_num = SEED.coupa_purchase_orders[0]["po-number"]
    assert _ids(client, "/api/invoices", {"invoice-lines[po-number]": po_num}) == [
        i["id"] for i in inv if any(ln["po-number"] == po_num for ln in i["invoice-lines"])
    ]
    # apostrophe invoice number round-trips
    assert len(_ids(client, "/api/invoices", {"invoice-number": "O'NEIL-2026-001"})) == 1
    # combined filters
    assert _ids(client, "/api/invoices", {"status": "approved", "currency[code]": "GBP", "id[lt_or_eq]": "100"}) == [
        i["id"] for i in inv if i["status"] == "approved" and i["currency"]["code"] == "GBP" and i["id"] <= 100
    ]
    # no match -> []
    assert get(client, "/api/invoices", **{"invoice-number": "does-not-exist"}) == []
    # ignored params accepted
    assert len(get(client, "/api/invoices", fields='["id"]', return_object="shallow", limit=2)) == 2


def test_filter_errors(env):
    _, client = env
    r = client.get("/api/invoices", params={"colour": "blue"})
    assert r.status_code == 400 and "colour" in r.json()["errors"]["base"][0]
    r = client.get("/api/invoices", params={"updated-at[gt]": "yesterday"})
    assert r.status_code == 400
    r = client.get("/api/invoices", params={"updated-at[gt]": "2026-11-15T00:00:00 00:00"})  # unencoded '+'
    assert r.status_code == 400 and "%2B" in r.text
    r = client.get("/api/invoices", params={"order_by": "colour"})
    assert r.status_code == 400


# ------------------------------------------------------------------------------------------ writes
def test_mark_exported_and_unmark(env):
    sandbox, client = env
    before = get(client, "/api/invoices/10")
    r = client.put(
        "/api/invoices/10", params={"exported": "true", "fields": '["id","exported"]'}, json={"status": "ignored"}
    )
    assert r.status_code == 200 and r.json()["exported"] is True and r.json()["last-exported-at"]
    after = get(client, "/api/invoices/10")
    assert after["updated-at"] == before["updated-at"] and after["status"] == before["status"]
    assert 10 not in _ids(client, "/api/invoices", {"exported": "false"})
    assert client.put("/api/purchase_orders/3", params={"exported": "true"}).json()["exported"] is True
    assert sandbox.state.purchase_orders[3]["exported"] is True
    r = client.put("/api/invoices/10", params={"exported": "false"})
    assert r.json()["exported"] is False and r.json()["last-exported-at"] is None
    assert client.put("/api/invoices/99999", params={"exported": "true"}).status_code == 404


def test_payments_append_and_validation(env):
    sandbox, client = env
    body = {
        "paid": True,
        "payment-date": "2026-12-01T00:00:00Z",
        "payment-notes": "ERP pay run 1",
        "payments": [{"amount-paid": "100.5", "notes": "CHK 1003", "payment-date": "2026-12-01"}],
    }
    r = client.put("/api/invoices/20", json=body)
    inv = r.json()
    assert r.status_code == 200 and inv["paid"] is True and inv["payment-notes"] == "ERP pay run 1"
    assert inv["payment-date"] == "2026-12-01T00:00:00Z"
    assert [(p["amount-paid"], p["notes"], p["payable-type"], p["payable-id"]) for p in inv["payments"]] == [
        ("100.50", "CHK 1003", "InvoiceHeader", 20)
    ]
    assert inv["updated-at"] > SEED.coupa_invoices[19]["updated-at"]
    # identical PUT appends a duplicate (documented worst case)
    assert len(client.put("/api/invoices/20", json=body).json()["payments"]) == 2
    # format 4
    fmt4 = {
        "payments": {
            "payment": [
                {
                    "payable-type": "InvoiceHeader",
                    "payable-id": "20",
                    "amount-paid": "5.00",
                    "notes": "X",
                    "payment-date": "2026-12-02T00:00:00Z",
                }
            ]
        }
    }
    pays = client.put("/api/invoices/20", json=fmt4).json()["payments"]
    assert len(pays) == 3 and len({p["id"] for p in pays}) == 3
    assert sandbox.state.invoices[20]["payments"][2]["amount-paid"] == "5.00"
    # read-only / unknown keys and bad values -> 400 with errors; nothing changes
    r = client.put("/api/invoices/20", json={"exported": True, "paid": True})
    assert r.status_code == 400 and "exported" in r.json()["errors"]
    r = client.put("/api/invoices/20", json={"status": "paid"})
    assert r.status_code == 400 and "status" in r.json()["errors"]
    r = client.put("/api/invoices/20", json={"payments": [{"amount-paid": "abc"}]})
    assert r.status_code == 400
    assert len(sandbox.state.invoices[20]["payments"]) == 3
    r = client.put("/api/invoices/20", content=b"paid=true", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


def test_integration_history_records(env):
    _, client = env
    ok = {
        "document-type": "InvoiceHeader",
        "document-id": 30,
        "document-status": "approved",
        "contact-alert-type": "Functional",
        "status": "Success",
        "integration": {"code": "D365-AP"},
        "responses": [{"response-code": "Success-1", "response-message": "Posted as APINV-1"}],
    }
    r = client.post("/api/integration_history_records", json=ok)
    rec = r.json()
    assert r.status_code == 201 and rec["resolved"] is False and rec["id"] >= 1 and rec["created-at"]
    assert rec["responses"][0]["response-code"] == "Success-1" and rec["alert"] is False
    r = client.post(
        "/api/integration_history_records/create_alert",
        json={
            "document-type": "InvoiceHeader",
            "document-id": 31,
            "responses": [{"response-code": "Error-1", "response-message": "Main account 699999 unknown"}],
        },
    )
    alert = r.json()
    assert r.status_code == 201 and alert["status"] == "Error" and alert["alert"] is True
    assert client.post("/api/integration_history_records", json={"document-id": 30}).status_code == 400
    assert client.post("/api/integration_history_records", json={"document-type": "InvoiceHeader"}).status_code == 400
    r = client.post("/api/integration_history_records", json={"document-type": "InvoiceHeader", "document-id": 999999})
    assert r.status_code == 400 and "document-id" in r.json()["errors"]
    listed = get(
        client,
        "/api/integration_history_records",
        **{"resolved": "false", "document-type": "InvoiceHeader", "document-id": "31"},
    )
    assert [x["id"] for x in listed] == [alert["id"]]
    assert [
        x["id"] for x in get(client, "/api/integration_history_records", status="Success", **{"document-id": "30"})
    ] == [rec["id"]]
    r = client.put(f"/api/integration_history_records/{alert['id']}/resolve")
    assert r.status_code == 200 and r.json()["resolved"] is True
    assert get(client, "/api/integration_history_records", resolved="false", **{"document-id": "31"}) == []
    assert client.put("/api/integration_history_records/9999/resolve").status_code == 404


# ------------------------------------------------------------------------------------------ control, log, faults
def test_control_endpoints_and_state_touch(env):
    sandbox, client = env
    base = str(client.base_url)
    r = httpx.patch(f"{base}/_sandbox/coupa/invoices/40", json={"status": "voided"})
    assert r.status_code == 200 and r.json()["status"] == "voided"
    assert get(client, "/api/invoices/40")["status"] == "voided"
    newest = get(client, "/api/invoices", order_by="updated-at", dir="desc", limit=1)[0]
    assert newest["id"] == 40  # touch bumps updated-at past everything stored
    rec = sandbox.state.touch("suppliers", 2, **{"display-name": "Renamed"})
    assert get(client, "/api/suppliers/2")["display-name"] == "Renamed" == rec["display-name"]
    r = httpx.post(
        f"{base}/_sandbox/coupa/suppliers", json={"name": "Brand New Ltd", "number": "99999", "status": "active"}
    )
    assert r.status_code == 201
    new_id = r.json()["id"]
    assert new_id == len(SEED.coupa_suppliers) + 1
    assert get(client, "/api/suppliers", number="99999")[0]["id"] == new_id
    raw = httpx.get(f"{base}/_sandbox/coupa/invoices/40").json()
    assert raw["id"] == 40 and "payments" in raw


def test_request_log_and_scripted_429(env):
    sandbox, client = env
    httpx.delete(f"{client.base_url}/_sandbox/requests")
    sandbox.injector.script(ScriptedFault(kind="429", method="GET", path_regex=r"^/api/suppliers$", retry_after_s=7))
    r = client.get("/api/suppliers", params={"limit": 5})
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    r = client.get("/api/suppliers", params={"limit": 5})
    assert r.status_code == 200 and len(r.json()) == 5
    client.put("/api/invoices/11", params={"exported": "true"})
    log = httpx.get(f"{client.base_url}/_sandbox/requests").json()
    assert [(e["method"], e["path"], e["status"], e["fault"], e["injected"]) for e in log] == [
        ("GET", "/api/suppliers", 429, "429", "429"),
        ("GET", "/api/suppliers", 200, None, None),
        ("PUT", "/api/invoices/11", 200, None, None),
    ]
    assert log[1]["query"] == "limit=5" and log[1]["headers"]["authorization"].startswith("Bearer ")
    assert log[2]["query"] == "exported=true"
    assert all("/_sandbox/" not in e.path for e in sandbox.log.snapshot())


def test_retry_after_as_http_date_from_the_injector_clock(env):
    sandbox, client = env
    sandbox.injector.clock = FakeClock()  # 2027-01-15T08:00:00Z
    sandbox.injector.script(ScriptedFault(kind="429", method="GET", retry_after_s=90, retry_after_format="http-date"))
    r = client.get("/api/suppliers")
    assert r.status_code == 429 and r.headers["Retry-After"] == "Fri, 15 Jan 2027 08:01:30 GMT"


def test_injected_faults_are_marked_in_the_log(env):
    sandbox, client = env
    for kind in ("5xx", "drop_before", "drop_after", "latency"):
        sandbox.injector.script(ScriptedFault(kind=kind, method="PUT", path_regex=r"^/api/invoices/12$", delay_ms=1))
    answers = []
    for _ in range(5):
        try:
            answers.append(client.put("/api/invoices/12", params={"exported": "true"}).status_code)
        except httpx.TransportError:
            answers.append("dropped")
    assert answers == [503, "dropped", "dropped", 200, 200]
    assert [(e.status, e.fault, e.injected) for e in sandbox.log.snapshot() if e.path == "/api/invoices/12"] == [
        (503, "5xx", "5xx"),
        (-1, "drop_before", "drop_before"),
        (200, "drop_after(status=200)", "drop_after"),
        (200, None, "latency"),
        (200, None, None),
    ]
    assert sandbox.state.invoices[12]["exported"] is True  # the write behind the drop_after did happen


def test_held_request_is_logged_on_arrival_and_runs_when_released(env):
    sandbox, client = env
    hold = sandbox.injector.script(ScriptedFault(kind="hold", method="PUT", path_regex=r"^/api/invoices/13$"))
    answer: list[int] = []
    sender = threading.Thread(
        target=lambda: answer.append(client.put("/api/invoices/13", params={"exported": "true"}).status_code)
    )
    sender.start()
    [held] = sandbox.log.wait_for(lambda entries: [e for e in entries if e.injected == "hold"], timeout_s=30)
    assert held.status is None and sandbox.state.invoices[13]["exported"] is False and not answer
    hold.release()
    sender.join(timeout=30)
    assert answer == [200] and held.status == 200 and sandbox.state.invoices[13]["exported"] is True
