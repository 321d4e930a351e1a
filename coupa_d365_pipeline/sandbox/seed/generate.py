"""Deterministic seed data for the Coupa and D365 sandboxes: the generator (no Dagster imports).

The customer is "Contoso Manufacturing": plants in three D365 legal entities (``usmf`` USD,
``demf`` EUR, ``gbsi`` GBP) plus a Coupa chart of accounts "CA Plant" (CAD) that has no D365
legal entity. ``generate_seed`` returns Coupa suppliers, purchase orders and invoices (JSON
shaped like Coupa's R39 API: hyphenated keys, decimals as strings like Rails' BigDecimal) and the
D365 master data the connector needs (exact property names from ``d365/entities.json``; built in
:mod:`.d365_master` from the catalogue in :mod:`.catalogue`). This module holds the public types, the
invoices and the expectations; the suppliers, purchase orders, accounts and clock are built in
:mod:`.documents`.

Coupa money/quantity fields are decimal strings ("989.00", "-12.30"); line ``total`` =
quantity*price rounded half-up to 2 dp; header ``gross-total`` = sum of line totals; account
``code`` = the non-empty segments joined by "-" (segment-4 is "" on some lines).

Everything derives from ``random.Random(config.seed)``; no wall clock is read, so the same config
always produces identical data. 100k invoices take a few seconds.

Deliberately unmappable records are listed in ``SeedData.expectations`` with a reason code:

* ``main_account_not_in_d365``       – a line's segment-1 ("699999") is no D365 main account
* ``main_account_not_in_legal_entity`` – a demf/gbsi line uses "602300", active in usmf only
* ``account_type_unmapped``          – invoice on the "CA Plant" chart (no D365 legal entity)
* ``supplier_number_null``           – supplier without ``number`` (no vendor account)
* ``item_not_released``              – catalogue item "M-9999" is not released in D365
"""

from __future__ import annotations

import gc
import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from .catalogue import (
    CA_PLANT,
    CURRENCIES,
    INVALID_MAIN_ACCOUNT,
    ITEMS,
    LEGAL_ENTITIES,
    MAPPED,
    PAYMENT_TERMS,
    UNRELEASED_ITEM,
    USMF_ONLY_MAIN_ACCOUNT,
    _mul_round,
    fmt_cents,
)
from .d365_master import _d365_master_data
from .documents import _Accounts, _Clock, _pick_goods, build_purchase_orders, build_suppliers, sup_ref

__all__ = ["SeedConfig", "SeedData", "generate_seed"]


@dataclass(frozen=True)
class SeedConfig:
    seed: int = 42
    invoices: int = 500
    start_date: date = date(2026, 11, 1)
    days: int = 28
    suppliers: int | None = None  # None: max(50, invoices // 10), up to 5000
    purchase_orders: int | None = None  # None: max(200, 40 % of invoices)


@dataclass
class SeedData:
    coupa_suppliers: list[dict]
    coupa_purchase_orders: list[dict]
    coupa_invoices: list[dict]
    d365: dict[str, list[dict]]
    legal_entities: dict[str, str]
    expectations: dict = field(default_factory=dict)


def generate_seed(config: SeedConfig = SeedConfig()) -> SeedData:
    """Build the whole data set; cyclic GC is paused meanwhile (millions of small dicts, no cycles)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _generate(config)
    finally:
        if gc_was_enabled:
            gc.enable()


class _FastRandom(random.Random):
    """random.Random with cheaper choice/randrange/randint (same determinism, different stream)."""

    def choice(self, seq):  # type: ignore[override]
        return seq[int(self.random() * len(seq))]

    def randrange(self, start, stop=None, step=1):  # type: ignore[override]
        if stop is None:
            start, stop = 0, start
        return start + int(self.random() * (stop - start))

    def randint(self, a, b):  # type: ignore[override]
        return a + int(self.random() * (b - a + 1))


def _generate(config: SeedConfig) -> SeedData:
    rng = _FastRandom(config.seed)
    clock = _Clock(rng, config.start_date, config.days)
    n_inv = max(0, config.invoices)
    n_sup = config.suppliers if config.suppliers is not None else max(50, min(5000, n_inv // 10))
    n_po = config.purchase_orders if config.purchase_orders is not None else max(200, int(n_inv * 0.4))

    acct_types = {le[0]: {"id": le[0], "name": le[1]} for le in LEGAL_ENTITIES}
    currency_obj = {code: {"id": v[0], "code": code} for code, v in CURRENCIES.items()}
    pterm_obj = [{"id": i, "code": c, "days-for-net-payment": d} for i, c, d in PAYMENT_TERMS]
    item_by_number = {it[1]: it for it in ITEMS}
    accounts = _Accounts(rng, acct_types)
    account = accounts.account
    random_account = accounts.random_account

    suppliers, sup_le, unmappable_suppliers, inactive = build_suppliers(rng, clock, n_sup, pterm_obj)
    normal_suppliers = [s for s in suppliers if s["number"] is not None and s["status"] == "active"]
    pos, po_by_supplier = build_purchase_orders(
        rng, clock, n_po, normal_suppliers, sup_le, accounts, currency_obj, acct_types
    )

    # ---------------------------------------------------------------- invoices
    invoices: list[dict] = []
    unmappable: dict[int, str] = {}
    exp_credit, exp_void, exp_pending, exp_po_backed, exp_foreign = [], [], [], [], []
    inv_counter: dict[int, int] = {}
    created = clock.sorted_created(n_inv)
    # special invoice slots, spread deterministically over the index range
    reasons = [
        "main_account_not_in_d365",
        "main_account_not_in_legal_entity",
        "account_type_unmapped",
        "supplier_number_null",
        "item_not_released",
    ]
    per_reason = max(1, n_inv // 250) if n_inv >= 10 else 0
    special: dict[int, str] = {}
    if n_inv >= 10:
        slots = rng.sample(range(10, n_inv), min(n_inv - 10, per_reason * len(reasons) + 3))
        k = 0
        for reason in reasons:
            for _ in range(per_reason):
                special[slots[k]] = reason
                k += 1
        special[slots[k]] = "apostrophe"
        special[slots[k + 1]] = "hyphen"
        special[slots[k + 2]] = "foreign_currency"
    if n_inv >= 4:
        special.setdefault(3, "hyphen")
    null_suppliers = [s for s in suppliers if s["number"] is None]
    oneil = suppliers[5]
    line_id = 0
    for k in range(n_inv):
        iid = k + 1
        kind = special.get(k)
        s = normal_suppliers[rng.randrange(len(normal_suppliers))]
        if kind == "apostrophe":
            s = oneil
        elif kind == "supplier_number_null":
            s = null_suppliers[k % len(null_suppliers)]
        le = sup_le[s["id"]]
        if kind == "account_type_unmapped":
            le = CA_PLANT
        elif kind == "main_account_not_in_legal_entity" and le[2] == "usmf":
            le = MAPPED[1 + k % 2]
        is_special_unmappable = kind in reasons
        roll = rng.random()
        if is_special_unmappable or kind in ("apostrophe", "hyphen", "foreign_currency"):
            status = "approved"
        else:
            status = "approved" if roll < 0.93 else "pending_approval" if roll < 0.98 else "voided"
        credit = (not is_special_unmappable) and kind is None and rng.random() < 0.05
        currency = le[3]
        if kind == "foreign_currency" or (kind is None and not credit and rng.random() < 0.03):
            currency = rng.choice([c for c in ("USD", "EUR", "GBP") if c != le[3]])
            if le[2] is not None:
                exp_foreign.append(iid)
        po = None
        cands = po_by_supplier.get(s["id"])
        if cands and not credit and not is_special_unmappable and currency == le[3] and rng.random() < 0.5:
            po = cands[rng.randrange(len(cands))]
        c_at, u_at, c_dt = clock.pair(created[k])
        lines = []
        gross_c = 0
        if po is not None:
            po_lines = po["order-lines"]
            n_lines = rng.randint(1, len(po_lines))
            chosen = sorted(rng.sample(range(len(po_lines)), n_lines))
            for ln, idx in enumerate(chosen, 1):
                pl = po_lines[idx]
                line_id += 1
                qty_h = pl["_qty_h"] if rng.random() < 0.7 else max(1, pl["_qty_h"] // 2)
                price_c = pl["_price_c"]
                tot = _mul_round(qty_h, price_c)
                gross_c += tot
                lines.append(
                    {
                        "id": line_id,
                        "line-num": ln,
                        "description": pl["description"],
                        "type": "InvoiceAmountLine" if pl["type"] == "OrderAmountLine" else "InvoiceQuantityLine",
                        "quantity": fmt_cents(qty_h),
                        "price": fmt_cents(price_c),
                        "total": fmt_cents(tot),
                        "uom": dict(pl["uom"]),
                        "item": dict(pl["item"]) if pl["item"] else None,
                        "commodity": dict(pl["commodity"]),
                        "account": dict(pl["account"], **{"account-type": dict(pl["account"]["account-type"])}),
                        "order-line-id": pl["id"],
                        "order-line-num": pl["line-num"],
                        "order-header-num": po["po-number"],
                        "po-number": po["po-number"],
                        "created-at": c_at,
                        "updated-at": u_at,
                    }
                )
            exp_po_backed.append(iid)
        else:
            for ln in range(1, rng.randint(1, 10) + 1):
                line_id += 1
                item, desc, commodity, uom, amount_line, qty_h, price_c = _pick_goods(rng, 0.4, 100, 300000, 30000)
                if credit:
                    price_c = -price_c
                tot = _mul_round(qty_h, price_c)
                gross_c += tot
                lines.append(
                    {
                        "id": line_id,
                        "line-num": ln,
                        "description": desc,
                        "type": "InvoiceAmountLine" if amount_line else "InvoiceQuantityLine",
                        "quantity": fmt_cents(qty_h),
                        "price": fmt_cents(price_c),
                        "total": fmt_cents(tot),
                        "uom": {"code": uom},
                        "item": item,
                        "commodity": {"name": commodity},
                        "account": random_account(le),
                        "order-line-id": None,
                        "order-line-num": None,
                        "order-header-num": None,
                        "po-number": None,
                        "created-at": c_at,
                        "updated-at": u_at,
                    }
                )
        # inject the unmappable defect into the first line
        first = lines[0]
        if kind == "main_account_not_in_d365":
            first["account"] = account(le, INVALID_MAIN_ACCOUNT, "001", "007", "022")
        elif kind == "main_account_not_in_legal_entity":
            first["account"] = account(le, USMF_ONLY_MAIN_ACCOUNT, "002", "011", "023")
        elif kind == "item_not_released":
            it = item_by_number[UNRELEASED_ITEM]
            first["item"] = {"id": it[0], "name": it[2], "item-number": it[1]}
            first["description"] = it[2]
            first["uom"] = {"code": it[3]}
        if is_special_unmappable:
            unmappable[iid] = kind
        # numbering: unique per supplier
        seq = inv_counter.get(s["id"], 0) + 1
        inv_counter[s["id"]] = seq
        if kind == "apostrophe":
            number = "O'NEIL-2026-001"
        elif kind == "hyphen":
            number = f"INV-2026-{s['id']:04d}-{seq:03d}"
        elif credit:
            number = f"CN{s['id']:04d}{seq:05d}"
        else:
            number = f"INV{s['id']:04d}{seq:05d}"
        tax_c = 0 if le[5] == 0 else _mul_round(gross_c, le[5])
        total_c = gross_c + tax_c
        inv_date = (c_dt - timedelta(days=rng.randint(0, 10))).date()
        inv = {
            "id": iid,
            "invoice-number": number,
            "invoice-date": f"{inv_date.isoformat()}T00:00:00Z",
            "status": status,
            "document-type": "Credit Note" if credit else "Invoice",
            "is-credit-note": credit,
            "currency": dict(currency_obj[currency]),
            "supplier": sup_ref(s),
            "account-type": dict(acct_types[le[0]]),
            "payment-term": dict(s["payment-term"]),
            "gross-total": fmt_cents(gross_c),
            "total-with-taxes": fmt_cents(total_c),
            "amount-due": fmt_cents(total_c),
            "tax-amount": fmt_cents(tax_c),
            "line-level-taxation": False,
            "exported": False,
            "last-exported-at": None,
            "paid": False,
            "payment-date": None,
            "payment-notes": None,
            "payments": [],
            "invoice-lines": lines,
            "created-at": c_at,
            "updated-at": u_at,
        }
        if credit:
            inv["original-invoice-number"] = None
            exp_credit.append(iid)
        if status == "voided":
            exp_void.append(iid)
        elif status == "pending_approval":
            exp_pending.append(iid)
        invoices.append(inv)

    for po in pos:  # drop generator-private fields
        for pl in po["order-lines"]:
            del pl["_qty_h"], pl["_price_c"]

    existing_vendor_suppliers = [s for s in normal_suppliers[:4]]
    d365 = _d365_master_data(existing_vendor_suppliers, sup_le)
    legal_entities = {le[1]: str(le[2]) for le in MAPPED}
    special_numbers = {
        inv["id"]: inv["invoice-number"]
        for inv in invoices
        if "'" in inv["invoice-number"] or "-" in inv["invoice-number"]
    }
    expectations = {
        "unmappable_invoices": unmappable,
        "unmappable_suppliers": unmappable_suppliers,
        "unmapped_account_types": {CA_PLANT[1]: "account_type_unmapped"},
        "credit_notes": exp_credit,
        "voided_invoices": exp_void,
        "pending_invoices": exp_pending,
        "po_backed_invoices": exp_po_backed,
        "foreign_currency_invoices": exp_foreign,
        "inactive_suppliers": inactive,
        "existing_vendors": [
            {"dataAreaId": sup_le[s["id"]][2], "VendorAccountNumber": s["number"], "supplier_id": s["id"]}
            for s in existing_vendor_suppliers
        ],
        "special_invoice_numbers": special_numbers,
        "unreleased_items": [UNRELEASED_ITEM],
        "invalid_main_accounts": [INVALID_MAIN_ACCOUNT],
        "usmf_only_main_accounts": [USMF_ONLY_MAIN_ACCOUNT],
        "counts": {"suppliers": len(suppliers), "purchase_orders": len(pos), "invoices": len(invoices)},
    }
    return SeedData(suppliers, pos, invoices, d365, legal_entities, expectations)
