"""Issue 9, item 1: wildcards and false adoption.

F&O reads ``*`` inside an ``eq`` string literal as a wildcard and compares strings case-insensitively.
An invoice numbered ``*`` was "adopted" as another D365 invoice: never booked, yet the ledger said
written and Coupa got a Success record and ``exported=true``. A natural-key lookup may only find the
invoice itself, and a D365 invoice found by it is adopted only if it is ours; the same number from
the same supplier that is not ours is a duplicate invoice number a Coupa user has to resolve."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from coupa_d365_pipeline.state.ledger import WRITTEN
from coupa_d365_pipeline_tests.flow.helpers import d365_writes, last_seq
from coupa_d365_pipeline_tests.sync.conftest import (
    as_run,
    mappable_invoice,
    money,
    pending_headers,
    sync_invoice,
    sync_po,
)
from coupa_d365_pipeline_tests.sync.test_booked_invoices import posted_journal
from coupa_d365_pipeline_tests.sync.test_booked_purchase_orders import book_po, d365_lines, issued_po


def success_records(sandboxes, coupa_id: int) -> list[dict[str, Any]]:
    return [
        r
        for r in sandboxes.coupa.state.records("integration_history_records")
        if r["document-id"] == coupa_id and r["document-type"] == "InvoiceHeader" and r["status"] == "Success"
    ]


def book_first(services, sandboxes, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Invoice A booked by the connector; ``where`` = pending | posted. Returns (invoice, D365 record)."""
    invoice = mappable_invoice(sandboxes)
    assert sync_invoice(services, invoice["id"]).action == "created"
    [header] = pending_headers(sandboxes, HeaderReference=f"COUPA-{invoice['id']}")
    if where == "posted":
        sandboxes.d365.state.post_invoice(header["dataAreaId"], header["HeaderReference"])
        [journal] = posted_journal(sandboxes, InvoiceId=header["InvoiceNumber"])
        return invoice, journal
    return invoice, header


def second_invoice_of_the_same_supplier(
    sandboxes, first: dict[str, Any], number: str, *, same_amount: bool = False
) -> dict[str, Any]:
    """Invoice B: another approved invoice, moved to A's supplier and renumbered (optionally A's lines)."""
    other = mappable_invoice(sandboxes, skip=1)
    changes: dict[str, Any] = {"supplier": dict(first["supplier"]), "invoice_number": number}
    if same_amount:
        changes.update({"invoice_lines": copy.deepcopy(first["invoice-lines"]), "gross_total": first["gross-total"]})
    return sandboxes.coupa.state.touch("invoices", other["id"], **changes)


def invoice_writes(sandboxes, seq: int) -> list[Any]:
    return [w for w in d365_writes(sandboxes, seq) if "VendorInvoice" in w.path or "$batch" in w.path]


def d365_state(sandboxes) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    return (
        [dict(r) for r in sandboxes.d365.state.records("VendorInvoiceHeaders")],
        [dict(r) for r in sandboxes.d365.state.records("VendorInvoiceLines")],
        [dict(r) for r in sandboxes.d365.state.records("VendInvoiceJourBiEntities")],
    )


# -- a number F&O would read as a pattern finds only itself -------------------------------------
@pytest.mark.parametrize("where", ["pending", "posted"])
@pytest.mark.parametrize("hostile", ["*", "prefix*", "%", "_"])
def test_invoice_with_a_wildcard_number_is_booked_as_its_own_invoice_never_adopted_as_another(
    services, sandboxes, where, hostile
):
    first, record = book_first(services, sandboxes, where)
    number = first["invoice-number"][:3] + "*" if hostile == "prefix*" else hostile
    second = second_invoice_of_the_same_supplier(sandboxes, first, number)
    headers_before = {h["HeaderReference"]: dict(h) for h in sandboxes.d365.state.records("VendorInvoiceHeaders")}

    outcome = sync_invoice(as_run(services, "run-2"), second["id"])

    assert outcome.action == "created", outcome
    [own] = pending_headers(sandboxes, HeaderReference=f"COUPA-{second['id']}")
    assert own["InvoiceNumber"] == number and money(own["ImportedAmount"]) == money(second["gross-total"])
    for ref, before in headers_before.items():  # the first invoice is untouched
        assert pending_headers(sandboxes, HeaderReference=ref) == [before]
    if where == "posted":
        assert posted_journal(sandboxes, InvoiceId=first["invoice-number"]) == [record]
    row = services.ledger.get("invoice", second["id"])
    assert row.state == WRITTEN and row.d365_key == {"dataAreaId": "usmf", "HeaderReference": f"COUPA-{second['id']}"}
    [told] = success_records(sandboxes, second["id"])
    assert f"COUPA-{second['id']}" in told["responses"][0]["response-message"]


# -- the same number from the same supplier that is not ours is a duplicate invoice number -------
@pytest.mark.parametrize("where", ["pending", "posted"])
def test_same_number_same_supplier_different_amount_is_quarantined_as_a_duplicate_invoice_number(
    services, sandboxes, where
):
    first, record = book_first(services, sandboxes, where)
    second = second_invoice_of_the_same_supplier(sandboxes, first, first["invoice-number"])
    assert money(second["gross-total"]) != money(first["gross-total"])
    before = d365_state(sandboxes)
    seq = last_seq(sandboxes)

    outcome = sync_invoice(as_run(services, "run-2"), second["id"])

    assert outcome.action == "quarantined", outcome
    reason = outcome.detail
    assert "duplicate invoice number" in reason and first["invoice-number"] in reason, reason
    assert first["supplier"]["number"] in reason and "usmf" in reason
    held = f"pending COUPA-{first['id']}" if where == "pending" else f"posted voucher {record['LedgerVoucher']}"
    assert held in reason, reason
    assert f"{money(first['gross-total']):,.2f}" in reason and f"{money(second['gross-total']):,.2f}" in reason
    assert "correct the invoice number in Coupa" in reason
    assert invoice_writes(sandboxes, seq) == [] and d365_state(sandboxes) == before
    row = services.ledger.get("invoice", second["id"])
    assert row.state == "quarantined" and row.d365_key is None
    assert success_records(sandboxes, second["id"]) == []
    assert sandboxes.coupa.state.get("invoices", second["id"])["exported"] is False


@pytest.mark.parametrize("where", ["pending", "posted"])
def test_number_differing_only_in_case_is_quarantined_even_with_the_same_amount(services, sandboxes, where):
    first, _ = book_first(services, sandboxes, where)
    second = second_invoice_of_the_same_supplier(sandboxes, first, first["invoice-number"].swapcase(), same_amount=True)
    assert second["invoice-number"] != first["invoice-number"]
    before = d365_state(sandboxes)
    seq = last_seq(sandboxes)

    outcome = sync_invoice(as_run(services, "run-2"), second["id"])

    assert outcome.action == "quarantined", outcome
    assert "differ only in case" in outcome.detail and first["invoice-number"] in outcome.detail, outcome.detail
    assert invoice_writes(sandboxes, seq) == [] and d365_state(sandboxes) == before
    assert success_records(sandboxes, second["id"]) == []
    assert sandboxes.coupa.state.get("invoices", second["id"])["exported"] is False


def test_another_coupa_invoice_with_the_same_number_and_amount_is_not_adopted(services, sandboxes):
    """A header carrying another Coupa invoice's HeaderReference belongs to that invoice."""
    first, _ = book_first(services, sandboxes, "pending")
    second = second_invoice_of_the_same_supplier(sandboxes, first, first["invoice-number"], same_amount=True)
    seq = last_seq(sandboxes)

    outcome = sync_invoice(as_run(services, "run-2"), second["id"])

    assert outcome.action == "quarantined", outcome
    assert f"COUPA-{first['id']}" in outcome.detail and f"Coupa invoice {first['id']}" in outcome.detail
    assert invoice_writes(sandboxes, seq) == []
    assert sandboxes.coupa.state.get("invoices", second["id"])["exported"] is False


@pytest.mark.parametrize("where", ["pending", "posted"])
def test_invoice_keyed_by_hand_with_another_amount_is_quarantined_not_patched(services, sandboxes, where):
    """AP keyed the supplier's invoice number by hand with another amount: not ours, never PATCHed."""
    from coupa_d365_pipeline.sync.vendors import VendorSync

    invoice = mappable_invoice(sandboxes)
    supplier = next(s for s in sandboxes.seed.coupa_suppliers if s["id"] == invoice["supplier"]["id"])
    assert VendorSync(services).ensure(supplier, "usmf").action in ("created", "already_present")
    other_amount = money(invoice["gross-total"]) + Decimal("1000")
    sandboxes.d365.state.create(
        "VendorInvoiceHeaders",
        {
            "dataAreaId": "usmf",
            "HeaderReference": "AP-MANUAL-9",
            "InvoiceNumber": invoice["invoice-number"],
            "InvoiceAccount": supplier["number"],
            "Currency": invoice["currency"]["code"],
            "ImportedAmount": other_amount,
        },
    )
    if where == "posted":
        sandboxes.d365.state.post_invoice("usmf", "AP-MANUAL-9")
    before = d365_state(sandboxes)
    seq = last_seq(sandboxes)

    outcome = sync_invoice(services, invoice["id"])

    assert outcome.action == "quarantined", outcome
    assert "duplicate invoice number" in outcome.detail and f"{other_amount:,.2f}" in outcome.detail
    assert ("pending AP-MANUAL-9" in outcome.detail) == (where == "pending")
    assert invoice_writes(sandboxes, seq) == [] and d365_state(sandboxes) == before
    assert success_records(sandboxes, invoice["id"]) == []
    assert sandboxes.coupa.state.get("invoices", invoice["id"])["exported"] is False


# -- purchase orders ------------------------------------------------------------------------------
def test_po_numbered_wildcard_reads_and_cancels_only_its_own_lines(services, sandboxes):
    other = book_po(services, sandboxes)
    others_before = [dict(ln) for ln in d365_lines(sandboxes, "usmf", other["po-number"])]
    candidate = next(p for n in range(1, 30) if (p := issued_po(sandboxes, n))["id"] != other["id"])
    sandboxes.coupa.state.touch("purchase_orders", candidate["id"], po_number="*")
    assert sync_po(services, candidate["id"]).action == "created"
    own = d365_lines(sandboxes, "usmf", "*")
    assert own and len(own) == len(candidate["order-lines"])
    sandboxes.coupa.state.touch("purchase_orders", candidate["id"], status="cancelled")

    outcome = sync_po(as_run(services, "run-2"), candidate["id"])

    assert outcome.action == "cancelled", outcome
    assert outcome.detail.startswith(f"{len(own)} unreceived lines cancelled"), outcome.detail
    assert all(ln["PurchaseOrderLineStatus"] == "Canceled" for ln in d365_lines(sandboxes, "usmf", "*"))
    assert d365_lines(sandboxes, "usmf", other["po-number"]) == others_before


def test_po_number_differing_only_in_case_is_not_adopted_as_another_coupa_po(services, sandboxes):
    """F&O finds PO ``po-1`` under the key ``PO-1``; a Coupa PO of the same supplier with that number
    is not the PO we booked for another Coupa PO and must never change it."""
    number = "Po-Case-1"
    for n in range(20):
        first = sandboxes.coupa.state.touch("purchase_orders", issued_po(sandboxes, n)["id"], po_number=number)
        if sync_po(services, first["id"]).action == "created":
            break
    else:
        raise AssertionError("no mappable issued PO in the seed")
    candidate = next(p for n in range(n + 1, 40) if (p := issued_po(sandboxes, n))["id"] != first["id"])
    sandboxes.coupa.state.touch(
        "purchase_orders", candidate["id"], po_number=number.swapcase(), supplier=dict(first["supplier"])
    )
    before = [dict(ln) for ln in d365_lines(sandboxes, "usmf", number)]
    seq = last_seq(sandboxes)

    outcome = sync_po(as_run(services, "run-2"), candidate["id"])

    assert outcome.action == "quarantined", outcome
    assert "only in case" in outcome.detail, outcome.detail
    assert [w for w in d365_writes(sandboxes, seq) if "PurchaseOrder" in w.path or "PurchaseOrder" in w.body] == []
    assert d365_lines(sandboxes, "usmf", number) == before
