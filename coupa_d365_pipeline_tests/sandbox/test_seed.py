"""Seed generator: determinism, shape, unmappables, D365 records valid against entities.json."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from coupa_d365_pipeline.sandbox.seed import SeedConfig, generate_seed

ENTITIES = json.loads(
    (Path(__import__("coupa_d365_pipeline.d365", fromlist=["x"]).__file__).parent / "entities.json").read_text()
)["entity_sets"]


@pytest.fixture
def seed():
    return generate_seed()  # ~0.05 s: a fresh copy per test, so no test can see another's changes


def test_deterministic_and_seed_sensitive(seed):
    again = generate_seed()
    assert json.dumps(again.__dict__, sort_keys=True, default=str) == json.dumps(
        seed.__dict__, sort_keys=True, default=str
    )
    other = generate_seed(SeedConfig(seed=7))
    assert other.coupa_invoices != seed.coupa_invoices


def test_counts_and_ids(seed):
    assert 45 <= len(seed.coupa_suppliers) <= 60
    assert 180 <= len(seed.coupa_purchase_orders) <= 220
    assert len(seed.coupa_invoices) == 500
    for records in (seed.coupa_suppliers, seed.coupa_purchase_orders, seed.coupa_invoices):
        ids = [r["id"] for r in records]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        for r in records:
            assert r["exported"] is False
            assert r["created-at"].endswith("Z") and r["updated-at"].endswith("Z")
            assert r["created-at"] <= r["updated-at"]
            assert "2026-11-01T00:00:00Z" <= r["updated-at"] < "2026-11-29T00:00:00Z"


def test_invoice_shape_and_totals(seed):
    statuses = Counter(i["status"] for i in seed.coupa_invoices)
    assert statuses["approved"] > 400 and statuses["pending_approval"] > 5 and statuses["voided"] >= 3
    currencies = {i["currency"]["code"] for i in seed.coupa_invoices}
    assert {"USD", "EUR", "GBP", "CAD"} <= currencies
    assert len({i["account-type"]["name"] for i in seed.coupa_invoices}) == 4
    credit = [i for i in seed.coupa_invoices if i["is-credit-note"]]
    assert credit and all(i["document-type"] == "Credit Note" and Decimal(i["gross-total"]) < 0 for i in credit)
    per_supplier = Counter((i["supplier"]["id"], i["invoice-number"]) for i in seed.coupa_invoices)
    assert max(per_supplier.values()) == 1
    numbers = [i["invoice-number"] for i in seed.coupa_invoices]
    assert "O'NEIL-2026-001" in numbers and any("-" in n and "'" not in n for n in numbers)
    for inv in seed.coupa_invoices:
        lines = inv["invoice-lines"]
        assert 1 <= len(lines) <= 10
        total = Decimal(0)
        for ln in lines:
            assert ln["type"] in ("InvoiceQuantityLine", "InvoiceAmountLine")
            assert Decimal(ln["total"]) == (Decimal(ln["quantity"]) * Decimal(ln["price"])).quantize(
                Decimal("0.01"), rounding="ROUND_HALF_UP"
            )
            acc = ln["account"]
            assert acc["code"] == "-".join(acc[f"segment-{k}"] for k in range(1, 5) if acc[f"segment-{k}"])
            assert acc["account-type"] == inv["account-type"]
            total += Decimal(ln["total"])
        assert Decimal(inv["gross-total"]) == total
        assert Decimal(inv["total-with-taxes"]) == total + Decimal(inv["tax-amount"])
    # foreign-currency invoice in a mapped legal entity
    le_cur = {"US Manufacturing": "USD", "DE Manufacturing": "EUR", "UK Manufacturing": "GBP"}
    assert any(
        le_cur.get(i["account-type"]["name"], i["currency"]["code"]) != i["currency"]["code"]
        for i in seed.coupa_invoices
    )
    segs3 = {ln["account"]["segment-3"] for i in seed.coupa_invoices for ln in i["invoice-lines"]}
    assert "CC-10" in segs3
    assert any(ln["account"]["segment-4"] == "" for i in seed.coupa_invoices for ln in i["invoice-lines"])


def test_po_backed_lines_reference_real_po_lines_of_same_supplier(seed):
    pos = {p["id"]: p for p in seed.coupa_purchase_orders}
    lines = {ln["id"]: (p, ln) for p in pos.values() for ln in p["order-lines"]}
    backed = 0
    for inv in seed.coupa_invoices:
        for ln in inv["invoice-lines"]:
            if ln["order-line-id"] is None:
                assert ln["po-number"] is None
                continue
            backed += 1
            po, pl = lines[ln["order-line-id"]]
            assert po["supplier"]["id"] == inv["supplier"]["id"]
            assert ln["po-number"] == ln["order-header-num"] == po["po-number"]
            assert ln["order-line-num"] == pl["line-num"]
            assert (ln["item"] or {}).get("item-number") == (pl["item"] or {}).get("item-number")
    assert backed > 100
    assert set(seed.expectations["po_backed_invoices"]) <= {i["id"] for i in seed.coupa_invoices}
    assert {p["status"] for p in pos.values()} == {"issued", "closed", "cancelled"}
    assert all(1 <= len(p["order-lines"]) <= 6 for p in pos.values())


def test_suppliers(seed):
    sup = seed.coupa_suppliers
    assert Counter(s["status"] for s in sup)["inactive"] >= 2
    assert any(s["number"] and "-" in s["number"] for s in sup)
    assert 1 <= sum(s["number"] is None for s in sup) <= 2
    assert {s["payment-term"]["code"] for s in sup} == {"Net30", "Net45", "Net60"}
    assert all(s["primary-address"]["country"]["code"] for s in sup)
    numbers = [s["number"] for s in sup if s["number"]]
    assert len(numbers) == len(set(numbers))


def test_unmappables_are_real(seed):
    by_id = {i["id"]: i for i in seed.coupa_invoices}
    unm = seed.expectations["unmappable_invoices"]
    assert set(unm.values()) == {
        "main_account_not_in_d365",
        "main_account_not_in_legal_entity",
        "account_type_unmapped",
        "supplier_number_null",
        "item_not_released",
    }
    main_ids = {m["MainAccountId"] for m in seed.d365["MainAccounts"]}
    active = {(m["MainAccountId"], m["LegalEntityId"]) for m in seed.d365["MainAccountLegalEntities"]}
    released = {(r["dataAreaId"], r["ItemNumber"]) for r in seed.d365["ReleasedProductsV2"]}
    for iid, reason in unm.items():
        inv = by_id[iid]
        le = seed.legal_entities.get(inv["account-type"]["name"])
        segs = [ln["account"]["segment-1"] for ln in inv["invoice-lines"]]
        if reason == "main_account_not_in_d365":
            assert any(s not in main_ids for s in segs)
        elif reason == "main_account_not_in_legal_entity":
            assert le in ("demf", "gbsi") and any((s, le) not in active for s in segs)
        elif reason == "account_type_unmapped":
            assert le is None and inv["account-type"]["name"] == "CA Plant"
        elif reason == "supplier_number_null":
            assert inv["supplier"]["number"] is None
        elif reason == "item_not_released":
            assert any(ln["item"] and (le, ln["item"]["item-number"]) not in released for ln in inv["invoice-lines"])
    # every other approved invoice in a mapped entity is fully mappable
    for inv in seed.coupa_invoices:
        if inv["id"] in unm:
            continue
        le = seed.legal_entities[inv["account-type"]["name"]]
        assert inv["supplier"]["number"]
        for ln in inv["invoice-lines"]:
            assert (ln["account"]["segment-1"], le) in active
            if ln["item"]:
                assert (le, ln["item"]["item-number"]) in released


def test_d365_records_valid_against_entities(seed):
    d = seed.d365
    assert {le["LegalEntityId"] for le in d["LegalEntities"]} == {"usmf", "demf", "gbsi"}
    assert seed.legal_entities == {"US Manufacturing": "usmf", "DE Manufacturing": "demf", "UK Manufacturing": "gbsi"}
    for entity_set, records in d.items():
        spec = ENTITIES[entity_set]
        props, enums = spec["properties"], spec.get("enums", {})
        assert records, entity_set
        keys_seen = set()
        for rec in records:
            unknown = set(rec) - set(props)
            assert not unknown, f"{entity_set}: unknown properties {unknown}"
            missing = [k for k in spec["keys"] if k not in rec]
            assert not missing, f"{entity_set}: missing keys {missing}"
            for prop, value in rec.items():
                if prop in enums:
                    assert value in enums[prop], f"{entity_set}.{prop}={value!r}"
            key = tuple(rec[k] for k in spec["keys"])
            assert key not in keys_seen, f"{entity_set}: duplicate key {key}"
            keys_seen.add(key)
    assert any(v["DimensionValue"] == "CC-10" for v in d["FinancialDimensionValues"])
    only_usmf = [m for m in d["MainAccountLegalEntities"] if m["MainAccountId"] == "602300"]
    assert [m["LegalEntityId"] for m in only_usmf] == ["usmf"]
    vendors = {(v["dataAreaId"], v["VendorAccountNumber"]) for v in d["VendorsV2"]}
    supplier_numbers = {s["number"] for s in seed.coupa_suppliers}
    assert 3 <= len(vendors) <= 5 and all(n in supplier_numbers for _, n in vendors)


def test_scaling_to_10k_keeps_the_shape():
    # Only the shape is asserted: how fast generation is belongs to the benchmarks, not to a pass/fail oracle.
    big = generate_seed(SeedConfig(invoices=10_000, seed=3))
    assert len(big.coupa_invoices) == 10_000
    assert len(big.coupa_suppliers) == 1000 and len(big.coupa_purchase_orders) == 4000
    assert len(big.expectations["unmappable_invoices"]) >= 5
