import copy
from decimal import Decimal

import pytest

from coupa_d365_pipeline.d365.schema import entity_set
from coupa_d365_pipeline.mapping.config import parse_mapping
from coupa_d365_pipeline.mapping.dimensions import parse_display_value
from coupa_d365_pipeline.mapping.fields import Quarantine
from coupa_d365_pipeline.mapping.master import ENTITY_SETS_AND_SELECT, D365MasterData
from coupa_d365_pipeline.mapping.purchase_orders import (
    PO_LINE_RECEIPT_LOCKED_FIELDS,
    PO_LINE_UPDATE_FIELDS,
    MappedPurchaseOrder,
    legal_entity_for_po,
    map_purchase_order,
    po_line_changes,
)

HEADER_FIELDS = {
    "dataAreaId",
    "PurchaseOrderNumber",
    "OrderVendorAccountNumber",
    "InvoiceVendorAccountNumber",
    "CurrencyCode",
    "PaymentTermsName",
    "VendorOrderReference",
    "PurchaseOrderName",
    "RequestedDeliveryDate",
    "DefaultLedgerDimensionDisplayValue",
}
LINE_FIELDS = {
    "dataAreaId",
    "PurchaseOrderNumber",
    "LineNumber",
    "LineDescription",
    "OrderedPurchaseQuantity",
    "PurchaseUnitSymbol",
    "PurchasePrice",
    "LineAmount",
    "RequestedDeliveryDate",
    "ItemNumber",
    "ProcurementProductCategoryName",
    "MainAccountIdDisplayValue",
    "DefaultLedgerDimensionDisplayValue",
}


@pytest.fixture(scope="module")
def results(seed, mapping, master):
    return {po["po-number"]: map_purchase_order(po, mapping, master) for po in seed.coupa_purchase_orders}


def _po(seed, *, min_lines=1, item=None, status="issued"):
    """A deep copy of a seed PO with at least ``min_lines`` lines (and an item / free-text line if asked)."""
    for po in seed.coupa_purchase_orders:
        lines = po["order-lines"]
        if po["status"] != status or len(lines) < min_lines:
            continue
        if item is True and not any(ln["item"] for ln in lines):
            continue
        if item is False and not any(ln["item"] is None for ln in lines):
            continue
        return copy.deepcopy(po)
    raise AssertionError("no suitable purchase order")


def _quarantine(po, mapping, master, code):
    r = map_purchase_order(po, mapping, master)
    assert isinstance(r, Quarantine), r
    assert code in r.codes, r
    return r


# ---------------------------------------------------------------------------- seed end to end
def test_every_seed_po_maps_or_quarantines_with_reasons(seed, results):
    assert len(results) == len(seed.coupa_purchase_orders) > 0
    for r in results.values():
        assert isinstance(r, (MappedPurchaseOrder, Quarantine))
        if isinstance(r, Quarantine):
            assert r.reasons and r.codes and all(r.reasons)


def test_seed_pos_all_map(seed, results):
    # the seed has no faulty POs (its faults are on invoices): none may be quarantined, whatever the status
    quarantined = {n: r.reasons for n, r in results.items() if isinstance(r, Quarantine)}
    assert quarantined == {}
    issued = [po for po in seed.coupa_purchase_orders if po["status"] == "issued"]
    assert issued and all(isinstance(results[po["po-number"]], MappedPurchaseOrder) for po in issued)
    assert {po["status"] for po in seed.coupa_purchase_orders} == {"issued", "closed", "cancelled"}


def test_every_emitted_property_exists(results):
    headers, lines = entity_set("PurchaseOrderHeadersV2"), entity_set("PurchaseOrderLinesV2")
    for r in results.values():
        if not isinstance(r, MappedPurchaseOrder):
            continue
        assert headers.unknown_properties(r.header) == []
        assert set(r.header) <= HEADER_FIELDS
        for ln in r.lines:
            assert lines.unknown_properties(ln) == []
            assert set(ln) <= LINE_FIELDS
    for f in PO_LINE_UPDATE_FIELDS + PO_LINE_RECEIPT_LOCKED_FIELDS:
        assert f in lines.properties
    assert set(PO_LINE_RECEIPT_LOCKED_FIELDS) <= set(PO_LINE_UPDATE_FIELDS)


def test_units_of_measure_master_data(seed, master):
    assert ENTITY_SETS_AND_SELECT["UnitsOfMeasure"] == ["UnitSymbol"]
    assert "UnitSymbol" in entity_set("UnitsOfMeasure").properties
    assert master.has_unit("ea") and master.has_unit(" EA ") and master.unit_symbol("KG") == "kg"
    assert not master.has_unit("box") and master.unit_symbol("box") is None
    assert not D365MasterData.from_rows({}).has_unit("ea")


def test_amounts_are_decimal_and_sum_to_po_total(seed, results):
    for po in seed.coupa_purchase_orders:
        r = results[po["po-number"]]
        assert isinstance(r, MappedPurchaseOrder)
        assert sum(ln["LineAmount"] for ln in r.lines) == Decimal(po["total"])
        for raw, ln in zip(po["order-lines"], r.lines, strict=True):
            for k in ("OrderedPurchaseQuantity", "PurchasePrice", "LineAmount"):
                assert isinstance(ln[k], Decimal)
            assert ln["LineAmount"] == Decimal(raw["total"])
            assert abs(ln["OrderedPurchaseQuantity"] * ln["PurchasePrice"] - ln["LineAmount"]) <= Decimal("0.01")


def test_item_lines_and_free_text_lines(seed, results):
    n_item = n_text = 0
    for po in seed.coupa_purchase_orders:
        r = results[po["po-number"]]
        for raw, ln in zip(po["order-lines"], r.lines, strict=True):
            if raw["item"]:
                assert ln["ItemNumber"] == raw["item"]["item-number"]
                assert "ProcurementProductCategoryName" not in ln
                n_item += 1
            else:
                assert "ItemNumber" not in ln
                assert ln["ProcurementProductCategoryName"] == raw["commodity"]["name"]
                n_text += 1
    assert n_item and n_text


def test_header_and_line_fields(seed, results, mapping):
    po = seed.coupa_purchase_orders[0]
    r = results[po["po-number"]]
    assert isinstance(r, MappedPurchaseOrder)
    le = mapping.legal_entity(po["order-lines"][0]["account"]["account-type"]["name"])
    earliest = min(ln["need-by-date"][:10] for ln in po["order-lines"]) + "T12:00:00Z"
    expected = {
        "dataAreaId": le,
        "PurchaseOrderNumber": po["po-number"],
        "OrderVendorAccountNumber": po["supplier"]["number"],
        "InvoiceVendorAccountNumber": po["supplier"]["number"],
        "CurrencyCode": po["currency"]["code"],
        "PaymentTermsName": po["payment-term"]["code"],
        "VendorOrderReference": po["po-number"],
        "PurchaseOrderName": po["supplier"]["name"],
        "RequestedDeliveryDate": earliest,
    }
    dim_strings = {ln["DefaultLedgerDimensionDisplayValue"] for ln in r.lines}
    if len(dim_strings) == 1:
        expected["DefaultLedgerDimensionDisplayValue"] = dim_strings.pop()
    assert r.header == expected
    assert (r.legal_entity, r.vendor_account, r.purchase_order_number) == (
        le,
        po["supplier"]["number"],
        po["po-number"],
    )
    for raw, ln in zip(po["order-lines"], r.lines, strict=True):
        acct = raw["account"]
        assert ln["dataAreaId"] == le and ln["PurchaseOrderNumber"] == po["po-number"]
        assert ln["LineNumber"] == int(raw["line-num"])
        assert ln["LineDescription"] == raw["description"]
        assert ln["OrderedPurchaseQuantity"] == Decimal(raw["quantity"])
        assert ln["PurchasePrice"] == Decimal(raw["price"])
        assert ln["PurchaseUnitSymbol"] == raw["uom"]["code"]
        assert ln["RequestedDeliveryDate"] == raw["need-by-date"][:10] + "T12:00:00Z"
        assert ln["MainAccountIdDisplayValue"] == acct["segment-1"]
        assert parse_display_value(ln["DefaultLedgerDimensionDisplayValue"], "-") == [
            acct["segment-2"],
            acct["segment-3"],
            acct["segment-4"] or "",
        ]


def test_header_dimension_only_when_all_lines_agree(seed, mapping, master):
    po = _po(seed, min_lines=2)
    for ln in po["order-lines"]:
        ln["account"] = copy.deepcopy(po["order-lines"][0]["account"])
    r = map_purchase_order(po, mapping, master)
    assert isinstance(r, MappedPurchaseOrder)
    assert r.header["DefaultLedgerDimensionDisplayValue"] == r.lines[0]["DefaultLedgerDimensionDisplayValue"]

    dims = master.dimension_values
    other_cc = next(
        v
        for (d, le), vals in dims.items()
        if d == "costcenter"
        for v in sorted(vals)
        if v != po["order-lines"][0]["account"]["segment-3"].casefold()
    )
    po["order-lines"][1]["account"]["segment-3"] = other_cc
    r = map_purchase_order(po, mapping, master)
    assert isinstance(r, MappedPurchaseOrder)
    assert "DefaultLedgerDimensionDisplayValue" not in r.header
    assert all(ln["DefaultLedgerDimensionDisplayValue"] for ln in r.lines)


def test_delivery_dates(seed, mapping, master):
    po = _po(seed, min_lines=2)
    po["order-lines"][0]["need-by-date"] = "2030-05-02T23:59:59Z"
    po["order-lines"][1]["need-by-date"] = None
    for ln in po["order-lines"][2:]:
        ln["need-by-date"] = "2030-06-01T00:00:00Z"
    r = map_purchase_order(po, mapping, master)
    assert isinstance(r, MappedPurchaseOrder)
    assert r.header["RequestedDeliveryDate"] == "2030-05-02T12:00:00Z"
    assert r.lines[1]["RequestedDeliveryDate"] == "2030-05-02T12:00:00Z"  # the header date

    for ln in po["order-lines"]:
        ln["need-by-date"] = None
    r = map_purchase_order(po, mapping, master)
    assert isinstance(r, MappedPurchaseOrder)
    assert "RequestedDeliveryDate" not in r.header
    assert all("RequestedDeliveryDate" not in ln for ln in r.lines)

    po["order-lines"][0]["need-by-date"] = "next week"
    q = _quarantine(po, mapping, master, "invalid_date")
    assert any("'next week' is not a date" in x for x in q.reasons)


def test_cancelled_and_closed_pos_map_like_issued(seed, mapping, master):
    for status in ("closed", "cancelled"):
        po = _po(seed, status=status)
        r = map_purchase_order(po, mapping, master)
        issued = copy.deepcopy(po)
        issued["status"] = "issued"
        assert isinstance(r, MappedPurchaseOrder)
        assert r == map_purchase_order(issued, mapping, master)


def test_payment_terms_and_name(seed, mapping, master):
    po = _po(seed)
    po["payment-term"] = {"code": "Net999"}
    po["supplier"]["name"] = "X" * 80
    r = map_purchase_order(po, mapping, master)
    assert isinstance(r, MappedPurchaseOrder)
    assert "PaymentTermsName" not in r.header
    assert r.header["PurchaseOrderName"] == "X" * 60

    data = mapping.model_dump()
    data["payment_terms"] = {"N45": "Net45"}
    po["payment-term"] = {"code": "N45"}
    r = map_purchase_order(po, parse_mapping(data), master)
    le = r.legal_entity
    assert r.header["PaymentTermsName"] == "Net45" and master.has_payment_terms(le, "Net45")


def test_supplier_argument_and_prefix_vendor_accounts(seed, mapping, master):
    po = _po(seed)
    sup = dict(po["supplier"], number="V-777", name="Given Supplier")
    r = map_purchase_order(po, mapping, master, supplier=sup)
    assert r.vendor_account == r.header["OrderVendorAccountNumber"] == r.header["InvoiceVendorAccountNumber"] == "V-777"
    assert r.header["PurchaseOrderName"] == "Given Supplier"

    data = mapping.model_dump()
    data["vendor_account"] = {"source": "prefix_id", "prefix": "CP-"}
    r = map_purchase_order(po, parse_mapping(data), master)
    assert r.vendor_account == f"CP-{po['supplier']['id']}"


def test_item_and_commodity_mapping_tables(seed, mapping, master):
    po = _po(seed, item=False)
    i = next(k for k, ln in enumerate(po["order-lines"]) if ln["item"] is None)
    po["order-lines"][i]["commodity"] = {"name": "Coupa Freight"}
    data = mapping.model_dump()
    data["procurement_category"] = {"Coupa Freight": "freight"}
    r = map_purchase_order(po, parse_mapping(data), master)
    assert isinstance(r, MappedPurchaseOrder)
    assert r.lines[i]["ProcurementProductCategoryName"] == "Freight"  # as spelled in D365

    po["order-lines"][i]["item"] = {"item-number": "COUPA-1"}
    data["items"] = {"COUPA-1": "M-1000"}
    r = map_purchase_order(po, parse_mapping(data), master)
    assert r.lines[i]["ItemNumber"] == "M-1000" and "ProcurementProductCategoryName" not in r.lines[i]


# ---------------------------------------------------------------------------- quarantine
def test_unknown_unit(seed, mapping, master):
    po = _po(seed)
    po["order-lines"][0]["uom"] = {"code": "box"}
    q = _quarantine(po, mapping, master, "unit_unknown")
    assert any("line 1: unit 'box' does not exist in D365 (UnitsOfMeasure)" in x for x in q.reasons)
    po["order-lines"][0]["uom"] = None
    q = _quarantine(po, mapping, master, "unit_unknown")
    assert any("no unit of measure" in x for x in q.reasons)


def test_unreleased_item(seed, mapping, master):
    po = _po(seed, item=True)
    ln = next(ln for ln in po["order-lines"] if ln["item"])
    ln["item"] = {"id": 114, "name": "Prototype fixture", "item-number": "M-9999"}
    q = _quarantine(po, mapping, master, "item_not_released")
    assert any(f"line {ln['line-num']}: item M-9999 is not released in legal entity" in x for x in q.reasons)


def test_unknown_category(seed, mapping, master):
    po = _po(seed, item=False)
    ln = next(ln for ln in po["order-lines"] if ln["item"] is None)
    ln["commodity"] = {"name": "Catering"}
    q = _quarantine(po, mapping, master, "category_unknown")
    assert any(f"line {ln['line-num']}: procurement category 'Catering' does not exist in D365" in x for x in q.reasons)
    ln["commodity"] = None
    q = _quarantine(po, mapping, master, "category_unknown")
    assert any("neither an item nor a commodity" in x for x in q.reasons)


def test_unknown_commodity_on_item_line_is_fine(seed, mapping, master):
    po = _po(seed, item=True)
    next(ln for ln in po["order-lines"] if ln["item"])["commodity"] = {"name": "Catering"}
    assert isinstance(map_purchase_order(po, mapping, master), MappedPurchaseOrder)


def test_main_account_problems(seed, mapping, master):
    po = _po(seed)
    po["order-lines"][0]["account"]["segment-1"] = ""
    q = _quarantine(po, mapping, master, "main_account_missing")
    assert any("line 1: the account has no main account (segment-1 is empty)" in x for x in q.reasons)

    po["order-lines"][0]["account"]["segment-1"] = "699999"
    q = _quarantine(po, mapping, master, "main_account_not_in_d365")
    assert any("main account 699999 does not exist in D365" in x for x in q.reasons)


def test_main_account_not_in_legal_entity(seed, mapping, master):
    usmf_only = seed.expectations["usmf_only_main_accounts"][0]
    po = next(
        copy.deepcopy(p) for p in seed.coupa_purchase_orders if legal_entity_for_po(p, mapping) not in (None, "usmf")
    )
    po["order-lines"][0]["account"]["segment-1"] = usmf_only
    q = _quarantine(po, mapping, master, "main_account_not_in_legal_entity")
    assert any(f"main account {usmf_only} does not exist in legal entity" in x for x in q.reasons)


def test_dimension_value_missing(seed, mapping, master):
    po = _po(seed)
    po["order-lines"][0]["account"]["segment-3"] = "CC-404"
    q = _quarantine(po, mapping, master, "dimension_value_missing")
    assert any("CostCenter value 'CC-404' (segment-3) does not exist in D365" in x for x in q.reasons)


def test_unmapped_chart_of_accounts(seed, mapping, master):
    po = _po(seed)
    for ln in po["order-lines"]:
        ln["account"]["account-type"] = {"id": 9, "name": "CA Plant"}
    assert legal_entity_for_po(po, mapping) is None
    q = _quarantine(po, mapping, master, "account_type_unmapped")
    assert any("'CA Plant' is not mapped to a D365 legal entity" in x for x in q.reasons)

    for ln in po["order-lines"]:
        ln["account"].pop("account-type")
    po.pop("account-type", None)
    q = _quarantine(po, mapping, master, "account_type_unmapped")
    assert any("has no chart of accounts" in x for x in q.reasons)


def test_header_account_type_is_only_a_fallback(seed, mapping, master):
    po = _po(seed)
    le = legal_entity_for_po(po, mapping)
    other = next(name for name, v in mapping.legal_entities.items() if v != le)
    po["account-type"] = {"name": other}
    assert legal_entity_for_po(po, mapping) == le
    for ln in po["order-lines"]:
        ln["account"].pop("account-type")
    assert legal_entity_for_po(po, mapping) == mapping.legal_entity(other)


def test_legal_entity_disagreement_between_lines(seed, mapping, master):
    po = _po(seed, min_lines=2)
    le = legal_entity_for_po(po, mapping)
    assert le is not None
    other = next(name for name, v in mapping.legal_entities.items() if v != le)
    po["order-lines"][-1]["account"]["account-type"] = {"id": 99, "name": other}
    assert legal_entity_for_po(po, mapping) is None
    q = _quarantine(po, mapping, master, "account_type_mismatch")
    assert any("different legal entities" in x and repr(other) in x for x in q.reasons)

    # two chart names of the same legal entity agree
    data = mapping.model_dump()
    data["legal_entities"] = dict(data["legal_entities"], **{"Alias chart": le})
    alias = parse_mapping(data)
    po["order-lines"][-1]["account"]["account-type"] = {"name": "Alias chart"}
    assert legal_entity_for_po(po, alias) == le
    assert isinstance(map_purchase_order(po, alias, master), MappedPurchaseOrder)


def test_amount_problems(seed, mapping, master):
    po = _po(seed, min_lines=2)
    ln = po["order-lines"][0]
    ln["total"] = str(Decimal(ln["total"]) + Decimal("0.02"))
    q = _quarantine(po, mapping, master, "invalid_amounts")
    assert any("line 1: quantity" in x and "differs by more than 0.01" in x for x in q.reasons)

    ln["total"] = str(Decimal(ln["total"]) - Decimal("0.01"))  # off by 0.01: tolerated
    assert isinstance(map_purchase_order(po, mapping, master), MappedPurchaseOrder)

    po["order-lines"][1]["price"] = "12,50"
    q = _quarantine(po, mapping, master, "invalid_amounts")
    assert any("line 2: price '12,50' is not a number" in x for x in q.reasons)


def test_line_numbers(seed, mapping, master):
    po = _po(seed, min_lines=2)
    po["order-lines"][0]["line-num"] = "A1"
    q = _quarantine(po, mapping, master, "invalid_line_number")
    assert any("line-num 'A1' is not a whole number" in x for x in q.reasons)
    for bad in (None, "0", "1.5", "-1", "\u00b2", True):
        po["order-lines"][0]["line-num"] = bad
        _quarantine(po, mapping, master, "invalid_line_number")
    po["order-lines"][0]["line-num"] = po["order-lines"][1]["line-num"]
    _quarantine(po, mapping, master, "duplicate_line_number")
    po["order-lines"][0]["line-num"] = 7  # an int is fine
    r = map_purchase_order(po, mapping, master)
    assert isinstance(r, MappedPurchaseOrder) and r.lines[0]["LineNumber"] == 7


def test_header_problems(seed, mapping, master):
    po = _po(seed)
    po["currency"] = {"code": "XYZ"}
    q = _quarantine(po, mapping, master, "currency_unknown")
    assert any("currency XYZ does not exist in D365" in x for x in q.reasons)
    po["currency"] = None
    _quarantine(po, mapping, master, "currency_unknown")

    po = _po(seed)
    po["supplier"]["number"] = None
    q = _quarantine(po, mapping, master, "supplier_number_null")
    assert any("has no supplier number" in x for x in q.reasons)

    po = _po(seed)
    po["order-lines"] = []
    q = _quarantine(po, mapping, master, "no_lines")
    assert any("has no lines" in x for x in q.reasons)

    po = _po(seed)
    po["po-number"] = " "
    _quarantine(po, mapping, master, "po_number_missing")


def test_all_reasons_are_collected(seed, mapping, master):
    po = _po(seed, min_lines=2, item=False)
    po["currency"] = {"code": "XYZ"}
    po["supplier"]["number"] = None
    lines = po["order-lines"]
    lines[0]["uom"] = {"code": "box"}
    lines[0]["account"]["segment-1"] = "699999"
    lines[1]["line-num"] = "two"
    lines[1]["account"]["segment-2"] = "BU-404"
    text = next(ln for ln in lines if ln["item"] is None)
    text["commodity"] = {"name": "Catering"}
    q = _quarantine(po, mapping, master, "currency_unknown")
    assert {
        "currency_unknown",
        "supplier_number_null",
        "unit_unknown",
        "main_account_not_in_d365",
        "invalid_line_number",
        "dimension_value_missing",
        "category_unknown",
    } <= set(q.codes)
    assert len(q.reasons) >= 7 and "; " in str(q)
    assert all(" in Coupa" in r or " in D365" in r or "mapping" in r for r in q.reasons)  # says what to fix


def test_mapping_does_not_modify_the_input(seed, mapping, master):
    po = _po(seed, min_lines=2)
    before = copy.deepcopy(po)
    map_purchase_order(po, mapping, master)
    assert po == before


# ---------------------------------------------------------------------------- updates
def test_po_line_changes_only_real_differences():
    desired = {
        "dataAreaId": "usmf",
        "PurchaseOrderNumber": "4001",
        "LineNumber": 1,
        "OrderedPurchaseQuantity": Decimal("5.00"),
        "PurchasePrice": Decimal("10.50"),
        "LineAmount": Decimal("52.50"),
        "RequestedDeliveryDate": "2026-11-29T12:00:00Z",
        "LineDescription": "Hex  bolt",
        "ItemNumber": "M-1000",
        "PurchaseUnitSymbol": "pcs",
        "MainAccountIdDisplayValue": "601200",
        "DefaultLedgerDimensionDisplayValue": "001-CC\\-10-022",
    }
    current = {
        "dataAreaId": "USMF",
        "PurchaseOrderNumber": "4001",
        "LineNumber": 1,
        "OrderedPurchaseQuantity": 5,
        "PurchasePrice": 10.5,
        "LineAmount": "52.5",
        "RequestedDeliveryDate": "2026-11-29T00:00:00Z",
        "LineDescription": "hex bolt ",
        "ItemNumber": "m-1000",
        "PurchaseUnitSymbol": "PCS",
        "ProcurementProductCategoryName": "MRO",  # D365 fills it for item lines
        "MainAccountIdDisplayValue": "601200",
        "DefaultLedgerDimensionDisplayValue": "001-cc\\-10-022",
        "PurchaseOrderLineStatus": "Backorder",
    }
    assert po_line_changes(current, desired) == {}

    changed = dict(
        current,
        OrderedPurchaseQuantity=6,
        RequestedDeliveryDate="2026-11-30T12:00:00Z",
        LineDescription="Hex nut",
        MainAccountIdDisplayValue="601300",
    )
    assert po_line_changes(changed, desired) == {
        "OrderedPurchaseQuantity": Decimal("5.00"),
        "RequestedDeliveryDate": "2026-11-29T12:00:00Z",
        "LineDescription": "Hex  bolt",
        "MainAccountIdDisplayValue": "601200",
    }

    assert po_line_changes({}, {"LineAmount": Decimal("0")}) == {"LineAmount": Decimal("0")}
    assert po_line_changes({"LineDescription": None}, {"LineDescription": ""}) == {}
    assert po_line_changes({"PurchasePrice": "n/a"}, {"PurchasePrice": Decimal("1")}) == {"PurchasePrice": Decimal("1")}
    category = {"ProcurementProductCategoryName": "Freight"}
    assert po_line_changes({"ProcurementProductCategoryName": "MRO"}, category) == category


def test_po_line_changes_against_own_mapping_is_empty(results):
    for r in results.values():
        for ln in r.lines:
            as_json = {k: (float(v) if isinstance(v, Decimal) else v) for k, v in ln.items()}
            assert po_line_changes(as_json, ln) == {}
