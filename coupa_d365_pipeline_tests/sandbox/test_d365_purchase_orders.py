"""Purchase-order lifecycle of the D365 F&O sandbox: defaults, product receipts, and the write rules
F&O enforces on received / canceled lines (over real HTTP via uvicorn + httpx, some through ``D365State``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from coupa_d365_pipeline.sandbox.d365 import D365Sandbox, D365SandboxConfig, D365State
from coupa_d365_pipeline.sandbox.server import SandboxServer, bind_socket

TENANT = "contoso-tenant"
CLIENT, SECRET = "sandbox-app", "sandbox-app-secret"
WRITE_EXCEPTION = "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException"
LINE_AOT = "Write failed for table row of type 'PurchPurchaseOrderLineV2Entity'. Infolog: "
HEADER_AOT = "Write failed for table row of type 'PurchPurchaseOrderHeaderV2Entity'. Infolog: "
PO = "PO-000001"


def master_data() -> dict[str, list[dict]]:
    return {
        "LegalEntities": [{"LegalEntityId": "USMF", "Name": "Contoso US"}],
        "Currencies": [{"CurrencyCode": "USD"}],
        "VendorGroups": [{"dataAreaId": "usmf", "VendorGroupId": "10"}],
        "VendorsV2": [
            {
                "dataAreaId": "usmf",
                "VendorAccountNumber": "US-101",
                "VendorOrganizationName": "Supplies",
                "VendorGroupId": "10",
                "CurrencyCode": "USD",
            }
        ],
        "UnitsOfMeasure": [{"UnitSymbol": "ea"}, {"UnitSymbol": "box"}],
        "ReleasedProductsV2": [
            {"dataAreaId": "usmf", "ItemNumber": "D0001", "PurchaseUnitSymbol": "ea"},
            {"dataAreaId": "usmf", "ItemNumber": "D0002", "PurchaseUnitSymbol": "ea"},
        ],
        "ProcurementProductCategories": [
            {"CategoryName": "Office supplies", "CategoryHierarchyName": "Procurement"},
            {"CategoryName": "Furniture", "CategoryHierarchyName": "Procurement"},
        ],
    }


class Env:
    def __init__(self, sandbox: D365Sandbox, server: SandboxServer) -> None:
        self.sb = sandbox
        self.state: D365State = sandbox.state
        self.url = server.url
        self.http = httpx.Client(base_url=server.url, timeout=10)
        resp = self.http.post(
            f"/{TENANT}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT,
                "client_secret": SECRET,
                "scope": f"{self.url}/.default",
            },
        )
        assert resp.status_code == 200, resp.text
        self.auth = {
            "Authorization": f"Bearer {resp.json()['access_token']}",
            "OData-Version": "4.0",
            "Accept": "application/json",
        }

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params or None, headers=self.auth)

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.http.post(path, json=body, headers=self.auth)

    def patch(self, path: str, body: Any) -> httpx.Response:
        return self.http.patch(path, json=body, headers=self.auth)

    def put(self, path: str, body: Any) -> httpx.Response:
        return self.http.put(path, json=body, headers=self.auth)

    def delete(self, path: str) -> httpx.Response:
        return self.http.delete(path, headers=self.auth)

    def receive(self, line: int, qty: Any, po: str = PO, **extra: Any) -> httpx.Response:
        return self.http.post(
            "/_sandbox/d365/receive",
            json={"dataAreaId": "usmf", "PurchaseOrderNumber": po, "LineNumber": line, "Quantity": qty, **extra},
        )

    def line(self, n: int, po: str = PO) -> dict[str, Any]:
        resp = self.get(line_url(n, po), **{"cross-company": "true"})
        assert resp.status_code == 200, resp.text
        return resp.json()

    def header(self, po: str = PO) -> dict[str, Any]:
        resp = self.get(header_url(po), **{"cross-company": "true"})
        assert resp.status_code == 200, resp.text
        return resp.json()


def line_url(n: int, po: str = PO) -> str:
    return f"/data/PurchaseOrderLinesV2(dataAreaId='usmf',PurchaseOrderNumber='{po}',LineNumber={n})"


def header_url(po: str = PO) -> str:
    return f"/data/PurchaseOrderHeadersV2(dataAreaId='usmf',PurchaseOrderNumber='{po}')"


@pytest.fixture
def env() -> Iterator[Env]:
    sock = bind_socket()
    port = sock.getsockname()[1]
    config = D365SandboxConfig(environment_url=f"http://127.0.0.1:{port}", default_company="usmf")
    sandbox = D365Sandbox(config, master_data())
    server = SandboxServer(sandbox.app, sock=sock).start()
    e = Env(sandbox, server)
    try:
        yield e
    finally:
        e.http.close()
        server.stop()


def inner(resp: httpx.Response) -> str:
    return resp.json()["error"]["innererror"]["message"]


def assert_write_failed(resp: httpx.Response, prefix: str, *texts: str) -> str:
    assert resp.status_code == 500, resp.text
    body = resp.json()["error"]
    assert body["message"] == "An error has occurred." and body["innererror"]["type"] == WRITE_EXCEPTION
    message = body["innererror"]["message"]
    assert message.startswith(prefix), message
    for text in texts:
        assert text in message, message
    return message


def create_po(env: Env, lines: int = 2, **header: Any) -> str:
    resp = env.post(
        "/data/PurchaseOrderHeadersV2",
        {"dataAreaId": "usmf", "OrderVendorAccountNumber": "US-101", "CurrencyCode": "USD", **header},
    )
    assert resp.status_code == 201, resp.text
    po = resp.json()["PurchaseOrderNumber"]
    for n in range(1, lines + 1):
        r = env.post(
            "/data/PurchaseOrderLinesV2",
            {
                "dataAreaId": "usmf",
                "PurchaseOrderNumber": po,
                "LineNumber": n,
                "ItemNumber": "D0001",
                "LineDescription": f"line {n}",
                "OrderedPurchaseQuantity": 5 * n,
                "PurchaseUnitSymbol": "ea",
                "PurchasePrice": 10,
                "ProcurementProductCategoryName": "Office supplies",
                "RequestedDeliveryDate": "2026-12-01T12:00:00Z",
            },
        )
        assert r.status_code == 201, r.text
    return po


# ---------------------------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------------------------


def test_create_defaults(env: Env) -> None:
    resp = env.post(
        "/data/PurchaseOrderHeadersV2",
        {"dataAreaId": "usmf", "OrderVendorAccountNumber": "US-101", "CurrencyCode": "USD"},
    )
    assert resp.status_code == 201, resp.text
    header = resp.json()
    assert header["PurchaseOrderNumber"] == PO
    assert header["PurchaseOrderStatus"] == "Backorder" and header["DocumentApprovalStatus"] == "Approved"
    line = env.post(
        "/data/PurchaseOrderLinesV2",
        {
            "dataAreaId": "usmf",
            "PurchaseOrderNumber": PO,
            "LineNumber": 1,
            "ItemNumber": "D0001",
            "OrderedPurchaseQuantity": 3,
            "PurchasePrice": 12.345,
            "PurchaseUnitSymbol": "ea",
        },
    )
    assert line.status_code == 201, line.text
    body = line.json()
    assert body["PurchaseOrderLineStatus"] == "Backorder"
    assert Decimal(str(body["LineAmount"])) == Decimal("37.04")  # 37.035 rounded half-up
    # values given by the client win
    given = env.post(
        "/data/PurchaseOrderLinesV2",
        {
            "dataAreaId": "usmf",
            "PurchaseOrderNumber": PO,
            "LineNumber": 2,
            "ItemNumber": "D0001",
            "OrderedPurchaseQuantity": 3,
            "PurchasePrice": 10,
            "LineAmount": 25,
        },
    )
    assert given.status_code == 201 and given.json()["LineAmount"] == 25
    draft = env.post(
        "/data/PurchaseOrderHeadersV2",
        {"dataAreaId": "usmf", "OrderVendorAccountNumber": "US-101", "DocumentApprovalStatus": "Draft"},
    )
    assert draft.json()["DocumentApprovalStatus"] == "Draft" and draft.json()["PurchaseOrderStatus"] == "Backorder"


def test_load_applies_the_same_defaults() -> None:
    state = D365State(master_data=master_data())
    state.load(
        "PurchaseOrderHeadersV2",
        [{"dataAreaId": "usmf", "PurchaseOrderNumber": "PO-L", "OrderVendorAccountNumber": "US-101"}],
    )
    state.load(
        "PurchaseOrderLinesV2",
        [
            {
                "dataAreaId": "usmf",
                "PurchaseOrderNumber": "PO-L",
                "LineNumber": 1,
                "OrderedPurchaseQuantity": 4,
                "PurchasePrice": 2.5,
            }
        ],
    )
    header = state.get("PurchaseOrderHeadersV2", {"dataAreaId": "usmf", "PurchaseOrderNumber": "PO-L"})
    line = state.get("PurchaseOrderLinesV2", {"dataAreaId": "usmf", "PurchaseOrderNumber": "PO-L", "LineNumber": 1})
    assert header and line
    assert (header["PurchaseOrderStatus"], header["DocumentApprovalStatus"]) == ("Backorder", "Approved")
    assert line["PurchaseOrderLineStatus"] == "Backorder" and line["LineAmount"] == Decimal("10.00")


def test_quantity_change_on_open_line_recomputes_line_amount(env: Env) -> None:
    create_po(env, lines=1)
    assert env.patch(line_url(1), {"OrderedPurchaseQuantity": 7}).status_code == 204
    assert env.line(1)["LineAmount"] == 70
    assert env.patch(line_url(1), {"PurchasePrice": 2, "LineAmount": 13}).status_code == 204
    assert env.line(1)["LineAmount"] == 13


# ---------------------------------------------------------------------------------------------
# Receiving
# ---------------------------------------------------------------------------------------------


def test_receive_partially_then_fully(env: Env) -> None:
    create_po(env)  # line 1: 5 ea, line 2: 10 ea
    resp = env.receive(1, 2, Date="2026-11-21")
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["ReceivedQuantity"] == 2 and result["RemainingQuantity"] == 3
    rline = result["ProductReceiptLine"]
    assert rline["ProductReceiptNumber"] == "PR-000001" and rline["ProductReceiptDate"] == "2026-11-21T12:00:00Z"
    assert (rline["PurchaseOrderNumber"], rline["PurchaseOrderLineNumber"]) == (PO, 1)
    assert (
        rline["ReceivedPurchaseQuantity"],
        rline["RemainingPurchaseQuantity"],
        rline["OrderedPurchaseQuantity"],
    ) == (2, 3, 5)
    assert rline["ItemNumber"] == "D0001" and rline["PurchaseUnitSymbol"] == "ea"
    assert rline["ProductReceiptHeaderRecordId"] == result["ProductReceiptHeader"]["RecordId"]
    assert env.line(1)["PurchaseOrderLineStatus"] == "Backorder"
    assert env.header()["PurchaseOrderStatus"] == "Backorder"

    # the default date and the rest of line 1
    full = env.receive(1, 3)
    assert full.status_code == 200
    assert full.json()["ProductReceiptLine"]["RemainingPurchaseQuantity"] == 0
    assert full.json()["ProductReceiptLine"]["ProductReceiptDate"] == "2026-11-20T12:00:00Z"
    assert env.line(1)["PurchaseOrderLineStatus"] == "Received"
    assert env.header()["PurchaseOrderStatus"] == "Backorder"  # line 2 is still open

    # receipts are readable over OData; V1 lines mirror V2 with the same RecordId
    headers = env.get(
        "/data/ProductReceiptHeaders", **{"cross-company": "true", "$filter": f"PurchaseOrderNumber eq '{PO}'"}
    ).json()["value"]
    assert [h["ProductReceiptNumber"] for h in headers] == ["PR-000001", "PR-000002"]
    assert {h["OrderVendorAccountNumber"] for h in headers} == {"US-101"}
    v2 = env.get(
        "/data/ProductReceiptLinesV2",
        **{
            "cross-company": "true",
            "$orderby": "ProductReceiptNumber",
            "$filter": f"PurchaseOrderNumber eq '{PO}' and PurchaseOrderLineNumber eq 1",
        },
    ).json()["value"]
    v1 = env.get("/data/ProductReceiptLines", **{"cross-company": "true", "$orderby": "ProductReceiptNumber"}).json()
    assert [(r["ReceivedPurchaseQuantity"], r["RemainingPurchaseQuantity"]) for r in v2] == [(2, 3), (3, 0)]
    assert [r["RecordId"] for r in v1["value"]] == [r["RecordId"] for r in v2]
    assert env.state.received_quantity("usmf", PO, 1) == Decimal(5)

    assert env.receive(2, 10).status_code == 200
    assert env.line(2)["PurchaseOrderLineStatus"] == "Received"
    assert env.header()["PurchaseOrderStatus"] == "Received"


def test_receive_through_state_directly() -> None:
    state = D365State(master_data=master_data())
    state.create(
        "PurchaseOrderHeadersV2",
        {"dataAreaId": "usmf", "PurchaseOrderNumber": "PO-S", "OrderVendorAccountNumber": "US-101"},
    )
    state.create(
        "PurchaseOrderLinesV2",
        {
            "dataAreaId": "usmf",
            "PurchaseOrderNumber": "PO-S",
            "LineNumber": 1,
            "OrderedPurchaseQuantity": 2,
            "PurchasePrice": 1,
        },
    )
    result = state.receive_po_line("USMF", "PO-S", 1, 2)
    assert result["PurchaseOrderLine"]["PurchaseOrderLineStatus"] == "Received"
    assert result["PurchaseOrderHeader"]["PurchaseOrderStatus"] == "Received"
    assert result["ProductReceiptLine"]["ProductReceiptDate"] == "2026-11-20T12:00:00Z"
    assert len(state.records("ProductReceiptHeaders")) == 1
    assert len(state.records("ProductReceiptLinesV2")) == len(state.records("ProductReceiptLines")) == 1
    with pytest.raises(ValueError, match="exceeds the ordered quantity"):
        state.receive_po_line("usmf", "PO-S", 1, Decimal("0.5"))
    with pytest.raises(KeyError):
        state.receive_po_line("usmf", "PO-S", 9, 1)
    with pytest.raises(ValueError, match="positive"):
        state.receive_po_line("usmf", "PO-S", 1, 0)


def test_over_receipt_is_rejected(env: Env) -> None:
    create_po(env, lines=1)
    assert env.receive(1, 4).status_code == 200
    over = env.receive(1, 2)
    assert over.status_code == 400
    assert "exceeds the ordered quantity 5" in over.json()["error"] and "already received 4" in over.json()["error"]
    assert len(env.state.records("ProductReceiptLinesV2")) == 1
    assert env.receive(1, "abc").status_code == 400
    assert env.receive(1, -1).status_code == 400
    assert env.http.post("/_sandbox/d365/receive", json={"dataAreaId": "usmf", "LineNumber": 1}).status_code == 400
    assert env.line(1)["PurchaseOrderLineStatus"] == "Backorder"


def test_receive_unknown_line_is_404(env: Env) -> None:
    create_po(env, lines=1)
    assert env.receive(7, 1).status_code == 404
    assert env.receive(1, 1, po="PO-NOPE").status_code == 404
    assert env.state.records("ProductReceiptHeaders") == []


def test_receive_unapproved_po_is_rejected(env: Env) -> None:
    po = create_po(env, lines=1, DocumentApprovalStatus="Draft")
    resp = env.receive(1, 1, po=po)
    assert resp.status_code == 400 and "is not approved" in resp.json()["error"]


# ---------------------------------------------------------------------------------------------
# Rules on received lines
# ---------------------------------------------------------------------------------------------

RECEIVED_MSG = (
    f"Warning: Purchase order line {PO} line 1 has been received; quantity, price, item and unit cannot be changed."
)


@pytest.mark.parametrize(
    "change",
    [
        {"OrderedPurchaseQuantity": 6},
        {"OrderedPurchaseQuantity": 4},
        {"PurchasePrice": 11},
        {"ItemNumber": "D0002"},
        {"PurchaseUnitSymbol": "box"},
        {"LineAmount": 1},
        {"ProcurementProductCategoryName": "Furniture"},
        {"LineDescription": "new text", "PurchasePrice": 9},
    ],
)
def test_received_line_frozen_fields(env: Env, change: dict) -> None:
    create_po(env)
    assert env.receive(1, 2).status_code == 200
    before = env.line(1)
    resp = env.patch(line_url(1), change)
    field = next(k for k in change if k != "LineDescription")
    assert_write_failed(
        resp,
        LINE_AOT + RECEIVED_MSG,
        f"Warning: validateField failed on field 'PurchPurchaseOrderLineV2Entity.{field}'.",
    )
    after = env.line(1)
    assert {k: v for k, v in after.items() if k != "@odata.etag"} == {
        k: v for k, v in before.items() if k != "@odata.etag"
    }


def test_quantity_below_received_names_the_received_quantity(env: Env) -> None:
    create_po(env)
    env.receive(1, 4)
    resp = env.patch(line_url(1), {"OrderedPurchaseQuantity": 3})
    assert_write_failed(
        resp, LINE_AOT + RECEIVED_MSG, "Warning: The ordered quantity 3 is less than the quantity already received (4)."
    )


def test_fully_received_and_invoiced_lines_are_frozen_too(env: Env) -> None:
    create_po(env)
    env.receive(1, 5)
    assert_write_failed(env.patch(line_url(1), {"PurchasePrice": 1}), LINE_AOT + RECEIVED_MSG)
    # a line in status Invoiced (no receipt rows) is treated the same way
    env.state.load(
        "PurchaseOrderLinesV2",
        [
            {
                "dataAreaId": "usmf",
                "PurchaseOrderNumber": PO,
                "LineNumber": 3,
                "OrderedPurchaseQuantity": 1,
                "PurchasePrice": 1,
                "PurchaseOrderLineStatus": "Invoiced",
            }
        ],
    )
    assert_write_failed(
        env.patch(line_url(3), {"OrderedPurchaseQuantity": 2}),
        LINE_AOT,
        f"Warning: Purchase order line {PO} line 3 has been invoiced; quantity, price, item and unit "
        "cannot be changed.",
    )
    assert_write_failed(
        env.delete(line_url(3)),
        LINE_AOT,
        f"Warning: Purchase order line {PO} line 3 has been invoiced and cannot be deleted.",
    )


def test_received_line_accepts_date_description_and_unchanged_values(env: Env) -> None:
    create_po(env)
    env.receive(1, 2)
    resp = env.patch(
        line_url(1),
        {
            "RequestedDeliveryDate": "2027-01-15T12:00:00Z",
            "LineDescription": "late",
            "OrderedPurchaseQuantity": 5,
            "PurchasePrice": 10,
            "ItemNumber": "d0001",
            "PurchaseOrderLineStatus": "Backorder",
        },
    )
    assert resp.status_code == 204, resp.text
    line = env.line(1)
    assert line["RequestedDeliveryDate"] == "2027-01-15T12:00:00Z" and line["LineDescription"] == "late"
    assert line["OrderedPurchaseQuantity"] == 5 and line["LineAmount"] == 50


def test_delete_received_line_and_header_are_rejected(env: Env) -> None:
    create_po(env)
    env.receive(1, 1)
    assert_write_failed(
        env.delete(line_url(1)),
        LINE_AOT,
        f"Warning: Purchase order line {PO} line 1 has been received and cannot be deleted.",
    )
    assert_write_failed(
        env.delete(header_url()), HEADER_AOT, f"Warning: Purchase order {PO} has been received and cannot be deleted."
    )
    assert len(env.state.find("PurchaseOrderLinesV2", PurchaseOrderNumber=PO)) == 2
    # an unreceived line can go; the header status follows the remaining lines
    env.receive(1, 4)
    assert env.header()["PurchaseOrderStatus"] == "Backorder"
    assert env.delete(line_url(2)).status_code == 204
    assert env.header()["PurchaseOrderStatus"] == "Received"
    # a new line re-opens the order
    r = env.post(
        "/data/PurchaseOrderLinesV2",
        {
            "dataAreaId": "usmf",
            "PurchaseOrderNumber": PO,
            "LineNumber": 3,
            "OrderedPurchaseQuantity": 1,
            "PurchasePrice": 1,
        },
    )
    assert r.status_code == 201
    assert env.header()["PurchaseOrderStatus"] == "Backorder"


def test_delete_unreceived_po_cascades(env: Env) -> None:
    create_po(env)
    assert env.delete(header_url()).status_code == 204
    assert env.state.find("PurchaseOrderLinesV2", PurchaseOrderNumber=PO) == []


# ---------------------------------------------------------------------------------------------
# Status and cancellation
# ---------------------------------------------------------------------------------------------


def test_cancel_unreceived_lines_and_header_turns_canceled(env: Env) -> None:
    create_po(env)
    assert env.patch(line_url(1), {"PurchaseOrderLineStatus": "Canceled"}).status_code == 204
    assert env.line(1)["PurchaseOrderLineStatus"] == "Canceled"
    assert env.header()["PurchaseOrderStatus"] == "Backorder"
    assert env.patch(line_url(2), {"PurchaseOrderLineStatus": "Canceled", "LineDescription": "gone"}).status_code == 204
    assert env.header()["PurchaseOrderStatus"] == "Canceled"

    # a canceled line: description and dates only
    assert (
        env.patch(
            line_url(1), {"LineDescription": "was line 1", "RequestedDeliveryDate": "2027-02-01T12:00:00Z"}
        ).status_code
        == 204
    )
    assert_write_failed(
        env.patch(line_url(1), {"PurchasePrice": 3}),
        LINE_AOT,
        f"Warning: Purchase order line {PO} line 1 is canceled; only the description and the delivery "
        "dates can be changed.",
        "Warning: validateField failed on field 'PurchPurchaseOrderLineV2Entity.PurchasePrice'.",
    )
    assert_write_failed(
        env.patch(line_url(1), {"PurchaseOrderLineStatus": "Backorder"}),
        LINE_AOT,
        f"Warning: The status of purchase order line {PO} line 1 is set by D365 itself (product "
        "receipt, invoicing, cancellation) and cannot be changed to 'Backorder'.",
    )
    assert env.receive(1, 1).status_code == 400  # nothing can be received on a canceled line
    # re-sending the current status is no change
    assert env.patch(line_url(1), {"PurchaseOrderLineStatus": "Canceled"}).status_code == 204


def test_partly_canceled_po_is_received_when_the_rest_is(env: Env) -> None:
    create_po(env)
    env.patch(line_url(2), {"PurchaseOrderLineStatus": "Canceled"})
    env.receive(1, 5)
    assert env.header()["PurchaseOrderStatus"] == "Received"


@pytest.mark.parametrize("received", [1, 5])
def test_cancel_received_line_is_rejected(env: Env, received: int) -> None:
    create_po(env)
    env.receive(1, received)
    assert_write_failed(
        env.patch(line_url(1), {"PurchaseOrderLineStatus": "Canceled"}),
        LINE_AOT,
        f"Warning: Purchase order line {PO} line 1 has been received and cannot be canceled.",
    )
    assert env.line(1)["PurchaseOrderLineStatus"] == ("Received" if received == 5 else "Backorder")


@pytest.mark.parametrize("status", ["Received", "Invoiced", "None"])
def test_line_status_is_set_by_d365(env: Env, status: str) -> None:
    create_po(env)
    assert_write_failed(
        env.patch(line_url(1), {"PurchaseOrderLineStatus": status}),
        LINE_AOT,
        f"Warning: The status of purchase order line {PO} line 1 is set by D365 itself (product "
        f"receipt, invoicing, cancellation) and cannot be changed to '{status}'.",
    )
    assert env.line(1)["PurchaseOrderLineStatus"] == "Backorder"


@pytest.mark.parametrize("status", ["Canceled", "Received", "Invoiced", "None"])
def test_header_status_is_set_by_d365(env: Env, status: str) -> None:
    create_po(env)
    assert_write_failed(
        env.patch(header_url(), {"PurchaseOrderStatus": status}),
        HEADER_AOT,
        f"Warning: The status of purchase order {PO} is set by D365 itself from its lines and cannot "
        f"be changed to '{status}'.",
    )
    assert env.header()["PurchaseOrderStatus"] == "Backorder"
    # unchanged status and other header fields are fine
    assert env.patch(header_url(), {"PurchaseOrderStatus": "Backorder", "PurchaseOrderName": "x"}).status_code == 204


def test_put_keeps_the_status_when_omitted(env: Env) -> None:
    create_po(env)
    env.receive(1, 5)
    line = {k: v for k, v in env.line(1).items() if not k.startswith("@") and k != "PurchaseOrderLineStatus"}
    line["LineDescription"] = "put"
    assert env.put(line_url(1), line).status_code == 204
    assert env.line(1)["PurchaseOrderLineStatus"] == "Received" and env.line(1)["LineDescription"] == "put"


# ---------------------------------------------------------------------------------------------
# $batch: the same rules, atomic changesets
# ---------------------------------------------------------------------------------------------


def batch(env: Env, requests: list[tuple[str, str, dict | None]]) -> httpx.Response:
    parts = []
    for n, (method, path, body) in enumerate(requests, start=1):
        payload = json.dumps(body) if body is not None else ""
        parts.append(
            f"--changeset_c1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: {n}\r\n\r\n{method} {env.url}{path} HTTP/1.1\r\nOData-Version: 4.0\r\n"
            f"Content-Type: application/json;odata.metadata=minimal\r\n\r\n{payload}\r\n"
        )
    text = (
        "--batch_b1\r\nContent-Type: multipart/mixed; boundary=changeset_c1\r\n\r\n"
        + "".join(parts)
        + "--changeset_c1--\r\n--batch_b1--\r\n"
    )
    return env.http.post(
        "/data/$batch",
        content=text.encode(),
        headers={**env.auth, "Content-Type": "multipart/mixed; boundary=batch_b1", "Accept": "multipart/mixed"},
    )


def statuses(resp: httpx.Response) -> list[tuple[str, str]]:
    return re.findall(r"Content-ID: (\d+)\r\n\r\nHTTP/1.1 (\d{3})", resp.text)


def test_batch_applies_the_rules_and_rolls_back(env: Env) -> None:
    create_po(env)
    env.receive(1, 2)
    resp = batch(
        env,
        [
            ("PATCH", line_url(1), {"LineDescription": "in batch"}),
            ("PATCH", line_url(2), {"PurchaseOrderLineStatus": "Canceled"}),
            ("PATCH", line_url(1), {"PurchasePrice": 99}),
        ],
    )
    assert resp.status_code == 200
    assert statuses(resp) == [("3", "500")]
    assert RECEIVED_MSG in resp.text and WRITE_EXCEPTION in resp.text
    assert env.line(1)["LineDescription"] == "line 1"  # rolled back
    assert env.line(2)["PurchaseOrderLineStatus"] == "Backorder"
    assert env.header()["PurchaseOrderStatus"] == "Backorder"

    resp = batch(env, [("PATCH", line_url(2), {"PurchaseOrderLineStatus": "Canceled"}), ("DELETE", header_url(), None)])
    assert statuses(resp) == [("2", "500")]
    assert f"Purchase order {PO} has been received and cannot be deleted." in resp.text
    assert env.line(2)["PurchaseOrderLineStatus"] == "Backorder"

    resp = batch(
        env,
        [
            ("PATCH", line_url(2), {"PurchaseOrderLineStatus": "Canceled"}),
            ("PATCH", header_url(), {"PurchaseOrderName": "after cancel"}),
        ],
    )
    assert statuses(resp) == [("1", "204"), ("2", "204")]
    assert env.line(2)["PurchaseOrderLineStatus"] == "Canceled"
    assert env.header()["PurchaseOrderName"] == "after cancel"
    env.receive(1, 3)
    assert env.header()["PurchaseOrderStatus"] == "Received"

    resp = batch(env, [("DELETE", line_url(1), None)])
    assert statuses(resp) == [("1", "500")]
    assert f"Purchase order line {PO} line 1 has been received and cannot be deleted." in resp.text
