"""Issue 9 items 2 and 6 at the mapping layer: values D365 cannot hold (too long, control
characters), currencies in the wrong shape, and amounts or quantities no AP clerk would book are
quarantined before anything is sent — each with the rule and the field in the reason."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from coupa_d365_pipeline.mapping.fields import Quarantine
from coupa_d365_pipeline.mapping.invoices import MappedInvoice, map_invoice
from coupa_d365_pipeline.mapping.purchase_orders import MappedPurchaseOrder, map_purchase_order
from coupa_d365_pipeline.mapping.vendors import map_vendor


@pytest.fixture
def invoice(seed, mapping, master) -> dict:
    """A copy of a mappable, non-PO, non-credit approved invoice with at least two lines."""
    for inv in seed.coupa_invoices:
        if inv["status"] != "approved" or inv.get("is-credit-note") or len(inv["invoice-lines"]) < 2:
            continue
        if any(ln.get("po-number") for ln in inv["invoice-lines"]):
            continue
        if isinstance(map_invoice(inv, mapping, master), MappedInvoice):
            return copy.deepcopy(inv)
    raise AssertionError("no suitable invoice")


@pytest.fixture
def credit_note(seed, mapping, master) -> dict:
    for inv in seed.coupa_invoices:
        if (
            inv["status"] == "approved"
            and inv.get("is-credit-note")
            and isinstance(map_invoice(inv, mapping, master), MappedInvoice)
        ):
            return copy.deepcopy(inv)
    raise AssertionError("no credit note")


@pytest.fixture
def purchase_order(seed, mapping, master) -> dict:
    for po in seed.coupa_purchase_orders:
        if po["status"] == "issued" and isinstance(map_purchase_order(po, mapping, master), MappedPurchaseOrder):
            return copy.deepcopy(po)
    raise AssertionError("no mappable PO")


def quarantined(result) -> Quarantine:
    assert isinstance(result, Quarantine), result
    return result


def rebalance(inv: dict) -> None:
    inv["gross-total"] = str(sum(Decimal(str(ln["total"])) for ln in inv["invoice-lines"]))


# -- item 2: field lengths and characters ---------------------------------------------------------
def test_invoice_number_longer_than_d365_allows_is_quarantined(invoice, mapping, master):
    invoice["invoice-number"] = "X" * 300
    q = quarantined(map_invoice(invoice, mapping, master))
    assert "field_too_long" in q.codes
    reason = next(r for r in q.reasons if "InvoiceNumber" in r)
    assert "invoice-number" in reason and "300 characters" in reason and "at most 20" in reason


@pytest.mark.parametrize("number", ["INV\x00001", "INV\x07BELL", "INV\n2"])
def test_invoice_number_with_control_characters_is_quarantined(invoice, mapping, master, number):
    invoice["invoice-number"] = number
    q = quarantined(map_invoice(invoice, mapping, master))
    assert "control_character" in q.codes
    reason = next(r for r in q.reasons if "InvoiceNumber" in r)
    assert "control character" in reason
    assert "\x00" not in str(q)  # the reason itself is safe to store and send anywhere


def test_line_description_with_nul_is_quarantined_but_newlines_are_fine(invoice, mapping, master):
    invoice["invoice-lines"][1]["description"] = "first line\nsecond line"
    assert isinstance(map_invoice(invoice, mapping, master), MappedInvoice)
    invoice["invoice-lines"][1]["description"] = "bad\x00desc"
    q = quarantined(map_invoice(invoice, mapping, master))
    line_no = invoice["invoice-lines"][1]["line-num"]
    assert any(
        r.startswith(f"line {line_no}:") and "LineDescription" in r and "control character" in r for r in q.reasons
    ), q


def test_vendor_fields_are_checked_against_d365_limits(seed, mapping, master):
    supplier = copy.deepcopy(next(s for s in seed.coupa_suppliers if s.get("number")))
    supplier["primary-address"] = dict(supplier.get("primary-address") or {}, city="C" * 80)
    q = quarantined(map_vendor(supplier, "usmf", mapping, master))
    assert any("AddressCity" in r and "80 characters" in r and "at most 60" in r for r in q.reasons), q
    supplier["primary-address"]["city"] = "Seattle"
    supplier["number"] = "SUP\x00X"
    q = quarantined(map_vendor(supplier, "usmf", mapping, master))
    assert any("VendorAccountNumber" in r and "control character" in r for r in q.reasons), q


def test_purchase_order_number_longer_than_d365_allows_is_quarantined(purchase_order, mapping, master):
    purchase_order["po-number"] = "P" * 25
    q = quarantined(map_purchase_order(purchase_order, mapping, master))
    assert any("PurchaseOrderNumber" in r and "at most 20" in r for r in q.reasons), q


# -- item 2: currency in the wrong shape ----------------------------------------------------------
def test_currency_given_as_a_bare_code_is_read_as_that_code(invoice, mapping, master):
    expected = invoice["currency"]["code"]
    invoice["currency"] = expected
    mapped = map_invoice(invoice, mapping, master)
    assert isinstance(mapped, MappedInvoice), mapped
    assert mapped.header["Currency"] == expected


@pytest.mark.parametrize("currency", [840, ["USD"], {"id": 1}])
def test_currency_in_no_known_shape_is_quarantined(invoice, mapping, master, currency):
    invoice["currency"] = currency
    q = quarantined(map_invoice(invoice, mapping, master))
    assert "currency_unknown" in q.codes


# -- item 6: sanity of quantities and amounts ----------------------------------------------------
def test_negative_quantity_on_an_invoice_that_is_not_a_credit_note_is_quarantined(invoice, mapping, master):
    line = invoice["invoice-lines"][1]
    line["quantity"] = "-3"
    line["total"] = str(Decimal("-3") * Decimal(str(line["price"])))
    rebalance(invoice)
    q = quarantined(map_invoice(invoice, mapping, master))
    assert "negative_quantity" in q.codes
    assert any(
        r.startswith(f"line {line['line-num']}: quantity -3 on an invoice that is not a credit note")
        and "issue a credit note" in r
        for r in q.reasons
    ), q


def test_negative_quantity_on_a_credit_note_is_booked(credit_note, mapping, master):
    line = credit_note["invoice-lines"][0]
    line["quantity"] = str(-Decimal(str(line["quantity"])))
    line["price"] = str(-Decimal(str(line["price"])))
    assert isinstance(map_invoice(credit_note, mapping, master), MappedInvoice)


def test_zero_quantity_on_a_quantity_line_is_quarantined(invoice, mapping, master):
    line = invoice["invoice-lines"][0]
    line["type"] = "InvoiceQuantityLine"
    line["quantity"], line["total"] = "0", "0.00"
    rebalance(invoice)
    q = quarantined(map_invoice(invoice, mapping, master))
    assert "zero_quantity" in q.codes
    assert any(r.startswith(f"line {line['line-num']}: quantity 0") for r in q.reasons), q


def test_absurd_amounts_are_quarantined(invoice, mapping, master):
    line = invoice["invoice-lines"][0]
    line["quantity"], line["price"], line["total"] = "1", "12345678901234567.89", "12345678901234567.89"
    rebalance(invoice)
    q = quarantined(map_invoice(invoice, mapping, master))
    assert "absurd_amount" in q.codes
    assert any("12345678901234567.89" in r and "1000000000000" in r for r in q.reasons), q


def test_amounts_just_below_the_limit_are_booked_exactly(invoice, mapping, master):
    line = invoice["invoice-lines"][0]
    line["quantity"], line["price"], line["total"] = "1", "999999999999.99", "999999999999.99"
    invoice["invoice-lines"] = [line]
    rebalance(invoice)
    mapped = map_invoice(invoice, mapping, master)
    assert isinstance(mapped, MappedInvoice), mapped
    assert mapped.lines[0]["Amount"] == Decimal("999999999999.99")
