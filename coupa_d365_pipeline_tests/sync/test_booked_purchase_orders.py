"""Issue 8 regressions for purchase orders: a booked PO follows its Coupa cancellation even when the
new version no longer maps, and a native D365 PO that happens to carry the same number is never
adopted or changed."""

from __future__ import annotations

from typing import Any

from coupa_d365_pipeline.state.ledger import WRITTEN
from coupa_d365_pipeline_tests.flow.helpers import CHARTS, d365_writes, last_seq
from coupa_d365_pipeline_tests.sync.conftest import as_run, sync_po


def issued_po(sandboxes, skip: int = 0, lines_at_least: int = 2) -> dict[str, Any]:
    candidates = [
        p
        for p in sandboxes.seed.coupa_purchase_orders
        if p["status"] == "issued"
        and len(p["order-lines"]) >= lines_at_least
        and CHARTS.get(p["order-lines"][0]["account"]["account-type"]["name"]) == "usmf"
    ]
    return candidates[skip]


def d365_lines(sandboxes, le: str, number: str) -> list[dict[str, Any]]:
    return sorted(
        (
            ln
            for ln in sandboxes.d365.state.records("PurchaseOrderLinesV2")
            if ln["dataAreaId"] == le and ln["PurchaseOrderNumber"] == number
        ),
        key=lambda ln: int(ln["LineNumber"]),
    )


def book_po(services, sandboxes, skip: int = 0) -> dict[str, Any]:
    for n in range(skip, skip + 20):
        po = issued_po(sandboxes, n)
        outcome = sync_po(services, po["id"])
        if outcome.action == "created":
            return po
    raise AssertionError("no mappable issued PO in the seed")


def test_booked_po_cancelled_in_coupa_is_cancelled_in_d365_even_if_the_new_version_no_longer_maps(services, sandboxes):
    po = book_po(services, sandboxes)
    number = po["po-number"]
    assert all(ln["PurchaseOrderLineStatus"] != "Canceled" for ln in d365_lines(sandboxes, "usmf", number))
    unmappable_lines = [
        dict(line, account=dict(line["account"], **{"account-type": {"id": 99, "name": "Atlantis"}}))
        for line in po["order-lines"]
    ]
    sandboxes.coupa.state.touch("purchase_orders", po["id"], status="cancelled", **{"order-lines": unmappable_lines})

    outcome = sync_po(as_run(services, "run-2"), po["id"])

    assert outcome.action == "cancelled", outcome
    lines = d365_lines(sandboxes, "usmf", number)
    assert lines and all(ln["PurchaseOrderLineStatus"] == "Canceled" for ln in lines)
    row = services.ledger.get("purchase_order", po["id"])
    assert row.state == "cancelled" and row.d365_key == {"dataAreaId": "usmf", "PurchaseOrderNumber": number}


def test_unmappable_change_to_a_booked_po_keeps_its_booking(services, sandboxes):
    po = book_po(services, sandboxes)
    unmappable_lines = [
        dict(line, account=dict(line["account"], **{"account-type": {"id": 99, "name": "Atlantis"}}))
        for line in po["order-lines"]
    ]
    sandboxes.coupa.state.touch("purchase_orders", po["id"], **{"order-lines": unmappable_lines})
    outcome = sync_po(as_run(services, "run-2"), po["id"])
    assert outcome.action == "quarantined"
    row = services.ledger.get("purchase_order", po["id"])
    assert (row.state, row.problem) == (WRITTEN, "quarantined")
    assert row.d365_key == {"dataAreaId": "usmf", "PurchaseOrderNumber": po["po-number"]}


def test_native_d365_po_with_the_same_number_is_never_adopted_or_changed(services, sandboxes):
    po = issued_po(sandboxes)
    native_vendor = next(
        v["VendorAccountNumber"]
        for v in sandboxes.d365.state.records("VendorsV2")
        if v["dataAreaId"] == "usmf" and v["VendorAccountNumber"] != po["supplier"]["number"]
    )
    sandboxes.d365.state.create(
        "PurchaseOrderHeadersV2",
        {
            "dataAreaId": "usmf",
            "PurchaseOrderNumber": po["po-number"],
            "OrderVendorAccountNumber": native_vendor,
            "InvoiceVendorAccountNumber": native_vendor,
            "CurrencyCode": "USD",
            "PurchaseOrderName": "Native D365 PO",
        },
    )
    sandboxes.d365.state.create(
        "PurchaseOrderLinesV2",
        {
            "dataAreaId": "usmf",
            "PurchaseOrderNumber": po["po-number"],
            "LineNumber": 1,
            "ItemNumber": "M-1000",
            "OrderedPurchaseQuantity": 3,
            "PurchasePrice": 10,
        },
    )
    before = [dict(ln) for ln in d365_lines(sandboxes, "usmf", po["po-number"])]
    seq = last_seq(sandboxes)

    outcome = sync_po(services, po["id"])

    assert outcome.action == "quarantined", outcome
    assert "did not create" in outcome.detail and native_vendor in outcome.detail
    assert [w for w in d365_writes(sandboxes, seq) if "PurchaseOrder" in w.path or "PurchaseOrder" in w.body] == []
    assert d365_lines(sandboxes, "usmf", po["po-number"]) == before
    [header] = [
        h
        for h in sandboxes.d365.state.records("PurchaseOrderHeadersV2")
        if h["dataAreaId"] == "usmf" and h["PurchaseOrderNumber"] == po["po-number"]
    ]
    assert header["PurchaseOrderName"] == "Native D365 PO"
