import copy
from decimal import Decimal

import pytest

from coupa_d365_pipeline.d365.schema import entity_set
from coupa_d365_pipeline.mapping.config import parse_mapping
from coupa_d365_pipeline.mapping.dimensions import parse_display_value
from coupa_d365_pipeline.mapping.fields import Quarantine
from coupa_d365_pipeline.mapping.invoices import MappedInvoice, legal_entity_for, map_invoice
from coupa_d365_pipeline.mapping.master import ENTITY_SETS_AND_SELECT, D365MasterData
from coupa_d365_pipeline.mapping.vendors import VENDOR_SYNC_FIELDS, map_vendor, vendor_account_for, vendor_changes
from coupa_d365_pipeline.sandbox.seed import generate_seed

# what each seed reason code must produce (quarantine code, words in the reason)
CAUSES = {
    "main_account_not_in_d365": ("main_account_not_in_d365", "699999 does not exist in D365"),
    "main_account_not_in_legal_entity": ("main_account_not_in_legal_entity", "602300 does not exist in legal entity"),
    "account_type_unmapped": ("account_type_unmapped", "'CA Plant' is not mapped to a D365 legal entity"),
    "supplier_number_null": ("supplier_number_null", "has no supplier number"),
    "item_not_released": ("item_not_released", "M-9999 is not released in legal entity"),
}


@pytest.fixture(scope="module")
def results(seed, mapping, master):
    return {inv["id"]: map_invoice(inv, mapping, master) for inv in seed.coupa_invoices if inv["status"] == "approved"}


@pytest.fixture(scope="module")
def suppliers(seed):
    return {s["id"]: s for s in seed.coupa_suppliers}


def _invoice(seed, **match):
    return copy.deepcopy(next(i for i in seed.coupa_invoices if all(i.get(k) == v for k, v in match.items())))


def _ok(seed, results):
    """A deep copy of a mapped (non-PO) approved invoice with at least two lines."""
    for inv in seed.coupa_invoices:
        r = results.get(inv["id"])
        if isinstance(r, MappedInvoice) and len(inv["invoice-lines"]) >= 2 and not r.po_lines:
            return copy.deepcopy(inv)
    raise AssertionError("no suitable invoice")


# ---------------------------------------------------------------------------- seed end to end
def test_every_approved_invoice_maps_or_quarantines(results):
    assert results
    for r in results.values():
        assert isinstance(r, (MappedInvoice, Quarantine))


def test_quarantined_ids_equal_expectations(seed, results):
    quarantined = {i for i, r in results.items() if isinstance(r, Quarantine)}
    assert quarantined == set(seed.expectations["unmappable_invoices"])


def test_quarantine_reasons_name_the_cause(seed, results):
    for iid, cause in seed.expectations["unmappable_invoices"].items():
        q = results[iid]
        code, words = CAUSES[cause]
        assert code in q.codes, (iid, q)
        assert any(words in r for r in q.reasons), (iid, q.reasons)
        assert all(r for r in q.reasons)


def test_all_emitted_invoice_properties_exist(results):
    headers, lines = entity_set("VendorInvoiceHeaders"), entity_set("VendorInvoiceLines")
    for r in results.values():
        if isinstance(r, MappedInvoice):
            assert "HeaderReference" not in r.header
            assert headers.unknown_properties(r.header) == []
            for ln in r.lines:
                assert "HeaderReference" not in ln
                assert lines.unknown_properties(ln) == []


def test_all_emitted_vendor_properties_exist(seed, mapping, master):
    vendors = entity_set("VendorsV2")
    n = 0
    for s in seed.coupa_suppliers:
        for le in mapping.mapped_legal_entities:
            body = map_vendor(s, le, mapping, master)
            if isinstance(body, dict):
                assert vendors.unknown_properties(body) == []
                n += 1
    assert n


def test_entity_sets_and_select_exist():
    for name, props in ENTITY_SETS_AND_SELECT.items():
        schema = entity_set(name)
        assert [p for p in props if p not in schema.properties] == []
    assert set(ENTITY_SETS_AND_SELECT) == {
        "LegalEntities",
        "Currencies",
        "MainAccounts",
        "MainAccountLegalEntities",
        "FinancialDimensionValues",
        "ReleasedProductsV2",
        "VendorGroups",
        "PaymentTerms",
        "ProcurementProductCategories",
        "UnitsOfMeasure",
    }


def test_mapped_lines_sum_to_imported_amount_and_use_decimal(seed, results):
    by_id = {i["id"]: i for i in seed.coupa_invoices}
    for iid, r in results.items():
        if not isinstance(r, MappedInvoice):
            continue
        assert isinstance(r.header["ImportedAmount"], Decimal)
        assert sum(ln["Amount"] for ln in r.lines) == r.header["ImportedAmount"]
        assert r.header["ImportedAmount"] == Decimal(by_id[iid]["gross-total"])
        for ln in r.lines:
            for k in ("ReceiveNow", "UnitPrice", "Amount"):
                assert isinstance(ln[k], Decimal)
            assert ln["dataAreaId"] == r.legal_entity == r.header["dataAreaId"]
            assert ln["Currency"] == r.header["Currency"]
            assert ("ItemNumber" in ln) + ("ProcurementCategoryName" in ln) <= 1


def test_header_fields(seed, results):
    inv = seed.coupa_invoices[0]
    r = results[inv["id"]]
    assert isinstance(r, MappedInvoice)
    assert r.header == {
        "dataAreaId": "usmf",
        "InvoiceNumber": inv["invoice-number"],
        "InvoiceAccount": inv["supplier"]["number"],
        "InvoiceDate": inv["invoice-date"][:10] + "T12:00:00Z",
        "Currency": inv["currency"]["code"],
        "ImportedAmount": Decimal(inv["gross-total"]),
        "InvoiceDescription": f"Coupa invoice {inv['id']}",
    }
    assert r.vendor_account == inv["supplier"]["number"] and r.invoice_number == inv["invoice-number"]
    first = inv["invoice-lines"][0]
    ln = r.lines[0]
    assert ln["InvoiceLineNumber"] == first["line-num"]
    assert ln["LineDescription"] == first["description"]
    assert ln["ReceiveNow"] == Decimal(first["quantity"]) and ln["UnitPrice"] == Decimal(first["price"])
    assert ln["MainAccountDisplayValue"] == first["account"]["segment-1"]
    acct = first["account"]
    assert parse_display_value(ln["DimensionDisplayValue"], "-") == [
        acct["segment-2"],
        acct["segment-3"],
        acct["segment-4"],
    ]


def test_line_items_and_categories(seed, results):
    seen_item = seen_cat = False
    by_id = {i["id"]: i for i in seed.coupa_invoices}
    for iid, r in results.items():
        if not isinstance(r, MappedInvoice):
            continue
        for raw, ln in zip(by_id[iid]["invoice-lines"], r.lines, strict=True):
            if raw["item"]:
                assert ln["ItemNumber"] == raw["item"]["item-number"]
                seen_item = True
            else:
                assert ln["ProcurementCategoryName"] == raw["commodity"]["name"]
                assert ln["ProcurementCategoryHierarchyName"] == "Procurement"
                seen_cat = True
    assert seen_item and seen_cat


def test_hyphenated_dimension_value_is_escaped(results):
    found = [
        ln
        for r in results.values()
        if isinstance(r, MappedInvoice)
        for ln in r.lines
        if "CC\\-10" in ln["DimensionDisplayValue"]
    ]
    assert found
    assert parse_display_value(found[0]["DimensionDisplayValue"], "-")[1] == "CC-10"
    empties = [
        ln
        for r in results.values()
        if isinstance(r, MappedInvoice)
        for ln in r.lines
        if ln["DimensionDisplayValue"].endswith("-") and not ln["DimensionDisplayValue"].endswith("\\-")
    ]
    assert empties  # trailing empty Department kept


def test_credit_notes_map_with_negative_amounts(seed, results):
    credits = seed.expectations["credit_notes"]
    mapped = [results[i] for i in credits if isinstance(results.get(i), MappedInvoice)]
    assert mapped
    for r in mapped:
        assert r.header["ImportedAmount"] < 0
        assert all(ln["Amount"] < 0 and ln["UnitPrice"] < 0 and ln["ReceiveNow"] > 0 for ln in r.lines)
        assert sum(ln["Amount"] for ln in r.lines) == r.header["ImportedAmount"]


def test_apostrophe_invoice_number_unchanged(seed, results):
    inv = next(i for i in seed.coupa_invoices if "'" in i["invoice-number"])
    r = results[inv["id"]]
    assert isinstance(r, MappedInvoice)
    assert r.invoice_number == r.header["InvoiceNumber"] == "O'NEIL-2026-001"


def test_po_backed_lines_recorded(seed, results):
    by_id = {i["id"]: i for i in seed.coupa_invoices}
    po_backed = [i for i in seed.expectations["po_backed_invoices"] if isinstance(results.get(i), MappedInvoice)]
    assert po_backed
    for iid in po_backed:
        r = results[iid]
        raw_lines = by_id[iid]["invoice-lines"]
        assert set(r.po_lines) == set(range(len(raw_lines)))
        for idx, (po, line) in r.po_lines.items():
            assert po == raw_lines[idx]["po-number"] and line == str(raw_lines[idx]["order-line-num"])
    non_po = [r for i, r in results.items() if isinstance(r, MappedInvoice) and i not in po_backed]
    assert all(r.po_lines == {} for r in non_po)


def test_foreign_currency_invoice_maps(seed, results):
    iid = next(i for i in seed.expectations["foreign_currency_invoices"] if i in results)
    r = results[iid]
    assert isinstance(r, MappedInvoice)
    assert r.header["Currency"] != {"usmf": "USD", "demf": "EUR", "gbsi": "GBP"}[r.legal_entity]


def test_legal_entity_for(seed, mapping):
    inv = _invoice(seed, id=1)
    assert legal_entity_for(inv, mapping) == "usmf"
    inv["account-type"] = None
    assert legal_entity_for(inv, mapping) == "usmf"  # from the first line's account
    ca = next(i for i in seed.coupa_invoices if i["account-type"]["name"] == "CA Plant")
    assert legal_entity_for(ca, mapping) is None


# ---------------------------------------------------------------------------- prefix_id
def test_prefix_id_vendor_accounts(seed, mapping, master, suppliers):
    data = mapping.model_dump()
    data["vendor_account"] = {"source": "prefix_id", "prefix": "CP-"}
    pm = parse_mapping(data)
    assert vendor_account_for({"id": 42, "number": "10042"}, pm) == "CP-42"
    assert vendor_account_for({"id": 42, "number": "10042"}, mapping) == "10042"
    assert vendor_account_for({"id": 14, "number": None}, mapping) is None
    assert vendor_account_for({"id": 14, "number": "  "}, mapping) is None
    # invoices of suppliers without a number map with prefix_id
    for iid, cause in seed.expectations["unmappable_invoices"].items():
        inv = next(i for i in seed.coupa_invoices if i["id"] == iid)
        r = map_invoice(inv, pm, master)
        if cause == "supplier_number_null":
            assert isinstance(r, MappedInvoice)
            assert r.vendor_account == r.header["InvoiceAccount"] == f"CP-{inv['supplier']['id']}"
        else:
            assert isinstance(r, Quarantine)
    body = map_vendor(suppliers[14], "demf", pm, master)
    assert isinstance(body, dict) and body["VendorAccountNumber"] == "CP-14"


def test_supplier_argument_overrides_invoice_reference(seed, mapping, master, suppliers):
    inv = _invoice(seed, id=1)
    r = map_invoice(inv, mapping, master, supplier=dict(suppliers[inv["supplier"]["id"]], number="X1"))
    assert isinstance(r, MappedInvoice) and r.header["InvoiceAccount"] == "X1"
    q = map_invoice(inv, mapping, master, supplier=dict(suppliers[inv["supplier"]["id"]], number=None))
    assert isinstance(q, Quarantine) and "supplier_number_null" in q.codes


# ---------------------------------------------------------------------------- invoice quarantines
def test_collects_all_reasons(seed, mapping, master):
    inv = _invoice(seed, id=1)
    inv["account-type"] = {"id": 4, "name": "CA Plant"}
    inv["supplier"]["number"] = None
    inv["currency"] = {"code": "XXX"}
    q = map_invoice(inv, mapping, master)
    assert isinstance(q, Quarantine)
    assert {"account_type_unmapped", "supplier_number_null", "currency_unknown"} <= set(q.codes)
    assert len(q.reasons) >= 3
    assert any("currency XXX does not exist in D365" in r for r in q.reasons)


def test_invalid_line_amounts(seed, results, mapping, master):
    inv = _ok(seed, results)
    inv["invoice-lines"][1]["total"] = str(Decimal(inv["invoice-lines"][1]["total"]) + Decimal("0.02"))
    inv["gross-total"] = str(sum(Decimal(ln["total"]) for ln in inv["invoice-lines"]))
    q = map_invoice(inv, mapping, master)
    assert isinstance(q, Quarantine) and q.codes == ("invalid_amounts",)
    assert q.reasons[0].startswith(f"line {inv['invoice-lines'][1]['line-num']}: quantity")
    assert "fix the line amounts in Coupa" in q.reasons[0]


def test_rounding_within_tolerance_passes(seed, results, mapping, master):
    inv = _ok(seed, results)
    ln = inv["invoice-lines"][0]
    ln["quantity"], ln["price"], ln["total"] = "3.00", "0.333", "1.00"  # 0.999 vs 1.00
    inv["gross-total"] = str(sum(Decimal(x["total"]) for x in inv["invoice-lines"]))
    assert isinstance(map_invoice(inv, mapping, master), MappedInvoice)


def test_unparseable_numbers(seed, results, mapping, master):
    inv = _ok(seed, results)
    inv["invoice-lines"][0]["price"] = "12,50"
    inv["invoice-lines"][1]["quantity"] = None
    q = map_invoice(inv, mapping, master)
    assert isinstance(q, Quarantine)
    assert any("price '12,50' is not a number" in r for r in q.reasons)
    assert any("quantity None is not a number" in r for r in q.reasons)


def test_gross_total_mismatch(seed, results, mapping, master):
    inv = _ok(seed, results)
    inv["gross-total"] = str(Decimal(inv["gross-total"]) + Decimal("0.05"))
    q = map_invoice(inv, mapping, master)
    assert isinstance(q, Quarantine) and q.codes == ("invalid_amounts",)
    assert "gross-total" in q.reasons[0] and "sum of line totals" in q.reasons[0]
    inv["gross-total"] = str(Decimal(inv["gross-total"]) - Decimal("0.04"))  # within 0.01
    assert isinstance(map_invoice(inv, mapping, master), MappedInvoice)


def test_no_lines(seed, mapping, master):
    inv = _invoice(seed, id=1)
    inv["invoice-lines"] = []
    inv["gross-total"] = "0.00"
    q = map_invoice(inv, mapping, master)
    assert isinstance(q, Quarantine) and q.codes == ("no_lines",)


def test_missing_dimension_value_and_main_account_segment(seed, results, mapping, master):
    inv = _ok(seed, results)
    inv["invoice-lines"][0]["account"]["segment-3"] = "999"
    inv["invoice-lines"][1]["account"]["segment-1"] = ""
    q = map_invoice(inv, mapping, master)
    assert isinstance(q, Quarantine)
    assert {"dimension_value_missing", "main_account_missing"} == set(q.codes)
    assert any("CostCenter value '999' (segment-3) does not exist in D365" in r for r in q.reasons)
    assert any("has no main account (segment-1 is empty)" in r for r in q.reasons)


def test_legal_entity_dimension_values_count(seed, results, mapping):
    rows = copy.deepcopy(seed.d365)
    rows["FinancialDimensionValues"].append(
        {"FinancialDimension": "CostCenter", "LegalEntityId": "USMF", "DimensionValue": "999"}
    )
    m = D365MasterData.from_rows(rows)
    assert m.dimension_value_exists("CostCenter", "999", "usmf")
    assert not m.dimension_value_exists("CostCenter", "999", "demf")
    assert m.dimension_value_exists("CostCenter", "cc-10", "demf")  # shared, case-insensitive


def test_legal_entity_not_in_d365(seed, mapping, master):
    data = mapping.model_dump()
    data["legal_entities"]["US Manufacturing"] = "frrt"
    data["vendor_defaults"].pop("usmf")
    data["default_legal_entity"] = "demf"
    m2 = parse_mapping(data)
    q = map_invoice(_invoice(seed, id=1), m2, master)
    assert isinstance(q, Quarantine) and q.codes == ("legal_entity_not_in_d365",)
    assert "'frrt'" in q.reasons[0] and "LegalEntities" in q.reasons[0]


def test_line_account_from_other_chart(seed, results, mapping, master):
    inv = _ok(seed, results)
    inv["invoice-lines"][0]["account"]["account-type"] = {"id": 4, "name": "CA Plant"}
    q = map_invoice(inv, mapping, master)
    assert isinstance(q, Quarantine) and "account_type_mismatch" in q.codes


def test_mapping_items_and_categories_rename(seed, results, mapping, master):
    data = mapping.model_dump()
    data["items"] = {"M-1009": "NEW-1009"}
    data["procurement_category"] = {"MRO": "Maintenance"}
    rows = copy.deepcopy(seed.d365)
    rows["ProcurementProductCategories"].append({"CategoryName": "Maintenance", "CategoryHierarchyName": "Procurement"})
    r = map_invoice(_invoice(seed, id=1), parse_mapping(data), D365MasterData.from_rows(rows))
    assert isinstance(r, Quarantine)  # NEW-1009 is not released
    assert any("item NEW-1009 is not released in legal entity usmf" in x for x in r.reasons)
    rows["ReleasedProductsV2"].append({"dataAreaId": "usmf", "ItemNumber": "NEW-1009"})
    r = map_invoice(_invoice(seed, id=1), parse_mapping(data), D365MasterData.from_rows(rows))
    assert isinstance(r, MappedInvoice)
    assert r.lines[0]["ItemNumber"] == "NEW-1009"
    assert r.lines[1]["ProcurementCategoryName"] == "Maintenance"


def test_unknown_category_is_omitted(seed, mapping, master):
    inv = _invoice(seed, id=1)
    inv["invoice-lines"][1]["commodity"] = {"name": "Unknown stuff"}
    r = map_invoice(inv, mapping, master)
    assert isinstance(r, MappedInvoice)
    assert "ProcurementCategoryName" not in r.lines[1] and "ItemNumber" not in r.lines[1]


# ---------------------------------------------------------------------------- vendors
def test_map_vendor_fields(mapping, master, suppliers):
    s = suppliers[1]
    body = map_vendor(s, "usmf", mapping, master)
    assert body == {
        "dataAreaId": "usmf",
        "VendorAccountNumber": "10001",
        "VendorGroupId": "10",
        "CurrencyCode": "USD",
        "VendorOrganizationName": s["name"],
        "VendorSearchName": s["name"][:20],
        "AddressStreet": s["primary-address"]["street1"],
        "AddressCity": "Chicago",
        "AddressZipCode": "60601",
        "AddressCountryRegionId": "USA",
        "DefaultPaymentTermsName": "Net30",
        "OnHoldStatus": "No",
    }


def test_inactive_supplier_is_on_hold(seed, mapping, master, suppliers):
    for sid in seed.expectations["inactive_suppliers"]:
        body = map_vendor(suppliers[sid], "usmf", mapping, master)
        assert isinstance(body, dict) and body["OnHoldStatus"] == "All"
    held = dict(suppliers[1], **{"on-hold": True})
    assert map_vendor(held, "usmf", mapping, master)["OnHoldStatus"] == "All"


def test_vendor_name_truncated(mapping, master, suppliers):
    body = map_vendor(dict(suppliers[1], name="N" * 150), "usmf", mapping, master)
    assert len(body["VendorOrganizationName"]) == 100


def test_unknown_payment_terms_omitted(mapping, master, suppliers):
    s = dict(suppliers[1], **{"payment-term": {"code": "Net90"}})
    body = map_vendor(s, "usmf", mapping, master)
    assert isinstance(body, dict) and "DefaultPaymentTermsName" not in body


def test_payment_terms_mapped(mapping, master, suppliers):
    data = mapping.model_dump()
    data["payment_terms"] = {"N30": "Net30"}
    s = dict(suppliers[1], **{"payment-term": {"code": "N30"}})
    assert map_vendor(s, "usmf", parse_mapping(data), master)["DefaultPaymentTermsName"] == "Net30"


def test_vendor_quarantines(seed, mapping, master, suppliers):
    sid = next(iter(seed.expectations["unmappable_suppliers"]))
    q = map_vendor(suppliers[sid], "usmf", mapping, master)
    assert isinstance(q, Quarantine) and q.codes == ("no_vendor_account",)
    assert "has no supplier number" in q.reasons[0]
    data = mapping.model_dump()
    data["vendor_defaults"]["usmf"]["VendorGroupId"] = "99"
    q = map_vendor(suppliers[1], "usmf", parse_mapping(data), master)
    assert isinstance(q, Quarantine) and q.codes == ("vendor_group_missing",)
    assert "vendor group '99' does not exist in legal entity usmf" in q.reasons[0]
    data["vendor_defaults"]["usmf"].pop("VendorGroupId")
    q = map_vendor(suppliers[1], "usmf", parse_mapping(data), master)
    assert isinstance(q, Quarantine) and "vendor_defaults.usmf.VendorGroupId" in q.reasons[0]


def test_vendor_changes_only_real_differences(seed, mapping, master, suppliers):
    desired = map_vendor(suppliers[1], "usmf", mapping, master)
    current = dict(desired)
    current["VendorOrganizationName"] = "  " + desired["VendorOrganizationName"].upper() + " "
    current["AddressStreet"] = desired["AddressStreet"].replace(" ", "  ")
    current["VendorSearchName"] = "something else"  # not a sync field
    current["VendorGroupId"] = "20"  # not a sync field
    assert vendor_changes(current, desired) == {}
    current["AddressCity"] = "Detroit"
    current["OnHoldStatus"] = "All"
    assert vendor_changes(current, desired) == {"AddressCity": "Chicago", "OnHoldStatus": "No"}
    assert set(vendor_changes({}, desired)) == set(VENDOR_SYNC_FIELDS) & set(desired)
    # a field missing from desired (e.g. omitted payment terms) is never reported
    d2 = {k: v for k, v in desired.items() if k != "DefaultPaymentTermsName"}
    assert "DefaultPaymentTermsName" not in vendor_changes({"DefaultPaymentTermsName": "Net60"}, d2)
    assert vendor_changes({"AddressZipCode": None}, {"AddressZipCode": ""}) == {}


def test_vendor_changes_against_existing_d365_vendors(seed, mapping, master, suppliers):
    for row in seed.d365["VendorsV2"]:
        ex = next(
            e for e in seed.expectations["existing_vendors"] if e["VendorAccountNumber"] == row["VendorAccountNumber"]
        )
        desired = map_vendor(suppliers[ex["supplier_id"]], row["dataAreaId"], mapping, master)
        changes = vendor_changes(row, desired)
        # name, group, currency, terms and hold status agree; only the address (absent in the seed row) differs
        assert set(changes) <= {"AddressStreet", "AddressCity", "AddressZipCode", "AddressCountryRegionId"}


def test_vendor_sync_fields_are_vendorsv2_properties():
    assert set(VENDOR_SYNC_FIELDS) <= set(entity_set("VendorsV2").properties)


# ---------------------------------------------------------------------------- master data
def test_master_data_queries(seed, master):
    assert master.has_legal_entity("USMF") and not master.has_legal_entity("frrt")
    assert master.has_currency("usd") and master.has_currency("CAD") and not master.has_currency("XXX")
    assert master.main_account_in("usmf", "602300") and not master.main_account_in("demf", "602300")
    assert master.main_account_exists("602300") and not master.main_account_exists("699999")
    assert master.item_released("gbsi", "M-1000") and not master.item_released("gbsi", "M-9999")
    assert master.dimension_value_exists("BusinessUnit", "001", "demf")
    assert not master.dimension_value_exists("Department", "", "demf")
    assert master.has_payment_terms("demf", "net30") and not master.has_payment_terms("frrt", "Net30")
    assert master.has_vendor_group("gbsi", "10") and not master.has_vendor_group("gbsi", "99")
    assert master.has_procurement_category("MRO") and not master.has_procurement_category("Nope")


def test_main_accounts_fallback_without_legal_entity_rows(seed):
    rows = {k: v for k, v in seed.d365.items() if k != "MainAccountLegalEntities"}
    m = D365MasterData.from_rows(rows)
    assert m.main_account_in("demf", "602300")  # falls back to MainAccounts
    assert not m.main_account_in("demf", "699999")


def test_suspended_rows_do_not_count(seed):
    rows = copy.deepcopy(seed.d365)
    for r in rows["MainAccountLegalEntities"]:
        if r["MainAccountId"] == "600150" and r["LegalEntityId"] == "usmf":
            r["IsSuspended"] = "Yes"
    for r in rows["FinancialDimensionValues"]:
        if r["DimensionValue"] == "001":
            r["IsSuspended"] = "Yes"
    m = D365MasterData.from_rows(rows)
    assert not m.main_account_in("usmf", "600150") and m.main_account_in("demf", "600150")
    assert not m.dimension_value_exists("BusinessUnit", "001", "usmf")


def test_from_rows_tolerates_missing_sets():
    m = D365MasterData.from_rows({})
    assert not m.has_legal_entity("usmf") and not m.main_account_in("usmf", "600150")


@pytest.mark.parametrize("seed_no", [1, 7])
def test_quarantine_matches_expectations_for_other_seeds(seed_no, mapping):
    from coupa_d365_pipeline.sandbox.seed import SeedConfig

    s = generate_seed(SeedConfig(seed=seed_no, invoices=2000))
    m = D365MasterData.from_rows(s.d365)
    quarantined = {}
    for inv in s.coupa_invoices:
        if inv["status"] == "approved":
            r = map_invoice(inv, mapping, m)
            if isinstance(r, Quarantine):
                quarantined[inv["id"]] = r
    assert set(quarantined) == set(s.expectations["unmappable_invoices"])
    for iid, cause in s.expectations["unmappable_invoices"].items():
        assert CAUSES[cause][0] in quarantined[iid].codes
