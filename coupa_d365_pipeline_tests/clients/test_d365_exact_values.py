"""Issue 9 items 2 and 6 at the D365 client and sandbox: money reaches D365 with exactly the digits
of its Decimal (never through a float), and the sandbox refuses text F&O cannot hold."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from coupa_d365_pipeline.d365.batch import BatchOperation, Changeset
from coupa_d365_pipeline_tests.clients.test_d365_client import a_main_account, existing_vendor, header_body, line_body

BIG = Decimal("12345678901234567.89")  # beyond 2**53: a float keeps 12345678901234568
TENTH = Decimal("0.1")


def stored(sandboxes, entity_set: str, **equals) -> dict:
    [record] = [
        r for r in sandboxes.d365.state.records(entity_set) if all(str(r.get(k)) == str(v) for k, v in equals.items())
    ]
    return record


def test_decimals_arrive_in_d365_with_exactly_their_digits(sandboxes, d365_client):
    vendor = existing_vendor(sandboxes)
    created = d365_client.create("VendorInvoiceHeaders", header_body(vendor, "EXACT-1", amount=BIG))
    ref = created["HeaderReference"]
    assert stored(sandboxes, "VendorInvoiceHeaders", HeaderReference=ref)["ImportedAmount"] == BIG

    key = {"dataAreaId": "usmf", "HeaderReference": ref}
    d365_client.update("VendorInvoiceHeaders", key, {"ImportedAmount": BIG + Decimal("0.01")})
    assert stored(sandboxes, "VendorInvoiceHeaders", HeaderReference=ref)["ImportedAmount"] == Decimal(
        "12345678901234567.90"
    )

    line = line_body(ref, 1, a_main_account(sandboxes)) | {
        "UnitPrice": TENTH,
        "ReceiveNow": Decimal("3"),
        "Amount": Decimal("0.3"),
    }
    results = d365_client.batch([Changeset([BatchOperation("POST", "VendorInvoiceLines", line)])])
    assert results[0].ok, results
    record = stored(sandboxes, "VendorInvoiceLines", HeaderReference=ref)
    assert (record["UnitPrice"], record["Amount"]) == (TENTH, Decimal("0.3"))
    assert str(record["UnitPrice"]) == "0.1"  # not 0.1000000000000000055511151231257827...


@pytest.mark.parametrize("number, why", [("N" * 21, "too long"), ("INV\u0000001", "control character")])
def test_sandbox_refuses_text_d365_cannot_hold(sandboxes, d365_client, number, why):
    vendor = existing_vendor(sandboxes)
    token = d365_client.auth.token()
    response = httpx.post(
        f"{sandboxes.d365_url}/data/VendorInvoiceHeaders",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        content=json.dumps(header_body(vendor, number)),
    )
    assert response.status_code == 400, response.text
    assert "InvoiceNumber" in response.text and why in response.text
    assert not [h for h in sandboxes.d365.state.records("VendorInvoiceHeaders") if h["InvoiceNumber"] == number]
