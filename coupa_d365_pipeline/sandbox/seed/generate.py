"""Deterministic seed data for the Coupa and D365 sandboxes: the generator (no Dagster imports).

The customer is "Contoso Manufacturing": plants in three D365 legal entities (``usmf`` USD,
``demf`` EUR, ``gbsi`` GBP) plus a Coupa chart of accounts "CA Plant" (CAD) that has no D365
legal entity. ``generate_seed`` returns Coupa suppliers, purchase orders and invoices (JSON
shaped like Coupa's R39 API: hyphenated keys, decimals as strings like Rails' BigDecimal) and the
D365 master data the connector needs (exact property names from ``d365/entities.json``; built in
:mod:`.d365_master` from the catalogue in :mod:`.catalogue`).

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
from datetime import UTC, date, datetime, timedelta

from .catalogue import (
    _CITIES,
    _NAME_A,
    _NAME_B,
    _NAME_C,
    BUSINESS_UNITS,
    CA_PLANT,
    COMMON_MAIN_ACCOUNTS,
    COST_CENTERS,
    COUNTRY_NAMES,
    CURRENCIES,
    DEPARTMENTS,
    FREE_TEXT,
    INVALID_MAIN_ACCOUNT,
    ITEMS,
    LEGAL_ENTITIES,
    MAIN_ACCOUNTS,
    MAPPED,
    PAYMENT_TERMS,
    RELEASED_ITEMS,
    UNRELEASED_ITEM,
    UOMS,
    USMF_ONLY_MAIN_ACCOUNT,
    _mul_round,
    fmt_cents,
)
from .d365_master import _d365_master_data

__all__ = ["SeedConfig", "SeedData", "generate_seed"]


@dataclass(frozen=True)
class SeedConfig:
    seed: int = 42
    invoices: int = 500
    start_date: date = date(2026, 11, 1)
    days: int = 28


@dataclass
class SeedData:
    coupa_suppliers: list[dict]
    coupa_purchase_orders: list[dict]
    coupa_invoices: list[dict]
    d365: dict[str, list[dict]]
    legal_entities: dict[str, str]
    expectations: dict = field(default_factory=dict)


class _Clock:
    """Deterministic created-at/updated-at pairs inside [start, start + days)."""

    def __init__(self, rng: random.Random, config: SeedConfig) -> None:
        self.rng = rng
        self.start = datetime(config.start_date.year, config.start_date.month, config.start_date.day, tzinfo=UTC)
        self.span = max(1, config.days) * 86400

    @staticmethod
    def iso(dt: datetime) -> str:
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")

    def sorted_created(self, n: int) -> list[int]:
        """n ascending second offsets (ids ascend with created-at)."""
        r = self.rng
        lo = -10 * 86400
        return sorted(r.randrange(lo, self.span) for _ in range(n))

    def pair(self, created_off: int) -> tuple[str, str, datetime]:
        r = self.rng
        upd_lo = max(created_off, 0)
        upd_off = r.randrange(upd_lo, self.span) if upd_lo < self.span else self.span - 1
        c = self.start + timedelta(seconds=created_off)
        u = self.start + timedelta(seconds=upd_off)
        return self.iso(c), self.iso(u), c


def _pick_goods(
    rng: random.Random, item_share: float, qty_max: int, amount_price_max_c: int, unit_price_max_c: int
) -> tuple[dict | None, str, str, str, bool, int, int]:
    """A catalogue item (with probability ``item_share``) or a free-text line, with quantity
    (hundredths) and price (cents): (item, description, commodity, uom, amount_line, qty_h, price_c)."""
    if rng.random() < item_share:
        it = RELEASED_ITEMS[rng.randrange(len(RELEASED_ITEMS))]
        item: dict | None = {"id": it[0], "name": it[2], "item-number": it[1]}
        desc, commodity, uom = it[2], it[5], it[3]
    else:
        item = None
        desc, commodity, uom = FREE_TEXT[rng.randrange(len(FREE_TEXT))]
    amount_line = item is None and rng.random() < 0.3
    qty_h = 100 if amount_line else rng.randint(1, qty_max) * (100 if UOMS[uom][2] == 0 else 25)
    price_c = rng.randint(5000, amount_price_max_c) if amount_line else rng.randint(50, unit_price_max_c)
    return item, desc, commodity, uom, amount_line, qty_h, price_c


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
    clock = _Clock(rng, config)
    n_inv = max(0, config.invoices)
    n_sup = max(50, min(5000, n_inv // 10))
    n_po = max(200, int(n_inv * 0.4))

    acct_types = {le[0]: {"id": le[0], "name": le[1]} for le in LEGAL_ENTITIES}
    currency_obj = {code: {"id": v[0], "code": code} for code, v in CURRENCIES.items()}
    pterm_obj = [{"id": i, "code": c, "days-for-net-payment": d} for i, c, d in PAYMENT_TERMS]
    item_by_number = {it[1]: it for it in ITEMS}

    # ---------------------------------------------------------------- accounts (cached by code)
    account_cache: dict[tuple[int, tuple[str, ...]], dict] = {}

    def account(le, seg1: str, seg2: str, seg3: str, seg4: str) -> dict:
        key = (le[0], (seg1, seg2, seg3, seg4))
        acc = account_cache.get(key)
        if acc is None:
            code = "-".join(seg for seg in (seg1, seg2, seg3, seg4) if seg)
            acc = {
                "id": len(account_cache) + 1,
                "name": f"{MAIN_ACCOUNTS.get(seg1, ('Unknown account',))[0]} / {code}",
                "code": code,
                "active": True,
                "account-type": dict(acct_types[le[0]]),
                "segment-1": seg1,
                "segment-2": seg2,
                "segment-3": seg3,
                "segment-4": seg4,
            }
            account_cache[key] = acc
        return dict(acc, **{"account-type": dict(acc["account-type"])})

    def random_account(le, main: str | None = None) -> dict:
        if main is None:
            pool = COMMON_MAIN_ACCOUNTS + ([USMF_ONLY_MAIN_ACCOUNT] if le[2] == "usmf" else [])
            main = str(rng.choice(pool))
        return account(le, main, rng.choice(BUSINESS_UNITS), rng.choice(COST_CENTERS), rng.choice(DEPARTMENTS))

    # ---------------------------------------------------------------- suppliers
    suppliers: list[dict] = []
    sup_le: dict[int, tuple] = {}
    unmappable_suppliers: dict[int, str] = {}
    inactive: list[int] = []
    used_names: set[str] = set()
    null_number_idx = {13, 37} if n_sup >= 50 else {13}
    created = clock.sorted_created(n_sup)
    for i in range(n_sup):
        sid = i + 1
        le = MAPPED[0] if i % 9 in (0, 1, 2, 3) else MAPPED[1] if i % 9 in (4, 5, 6) else MAPPED[2]
        country = le[4]
        if i == 5:
            name = "O'Neil Industrial Supply"
            le = MAPPED[0]
            country = "US"
        else:
            name = f"{_NAME_A[i % len(_NAME_A)]} {_NAME_B[(i // len(_NAME_A)) % len(_NAME_B)]} {_NAME_C[country]}"
            if name in used_names:
                name = f"{name} ({sid})"
        used_names.add(name)
        if i in null_number_idx:
            number = None
            unmappable_suppliers[sid] = "supplier_number_null"
        elif i % 20 == 7:
            number = f"CP-{10001 + i}"
        else:
            number = str(10001 + i)
        status = "inactive" if i % 16 == 15 else "active"
        if status == "inactive":
            inactive.append(sid)
        pt = pterm_obj[i % 3]
        city, state, postal = _CITIES[country]
        c_at, u_at, _ = clock.pair(created[i])
        suppliers.append(
            {
                "id": sid,
                "name": name,
                "display-name": name,
                "number": number,
                "status": status,
                "tax-id": f"{country}{rng.randrange(10**8, 10**9)}",
                "payment-method": "invoice",
                "on-hold": False,
                "invoice-matching-level": "3-way" if i % 3 == 0 else "2-way",
                "po-method": "email",
                "payment-term": dict(pt),
                "primary-address": {
                    "id": 1000 + sid,
                    "street1": f"{100 + i} Industrial Way",
                    "city": city,
                    "state": state,
                    "postal-code": postal,
                    "country": {"code": country, "name": COUNTRY_NAMES[country]},
                },
                "created-at": c_at,
                "updated-at": u_at,
                "exported": False,
            }
        )
        sup_le[sid] = le

    def sup_ref(s: dict) -> dict:
        return {"id": s["id"], "name": s["name"], "number": s["number"], "display-name": s["display-name"]}

    normal_suppliers = [s for s in suppliers if s["number"] is not None and s["status"] == "active"]

    # ---------------------------------------------------------------- purchase orders
    pos: list[dict] = []
    po_by_supplier: dict[int, list[dict]] = {}
    created = clock.sorted_created(n_po)
    line_id = 0
    for j in range(n_po):
        poid = j + 1
        s = normal_suppliers[rng.randrange(len(normal_suppliers))]
        le = sup_le[s["id"]]
        roll = rng.random()
        status = "issued" if roll < 0.8 else "closed" if roll < 0.92 else "cancelled"
        version = 1 + (rng.random() < 0.2) + (rng.random() < 0.05)
        c_at, u_at, c_dt = clock.pair(created[j])
        po_number = str(4000 + poid)
        lines = []
        total_c = 0
        for ln in range(1, rng.randint(1, 6) + 1):
            line_id += 1
            item, desc, commodity, uom, amount_line, qty_h, price_c = _pick_goods(rng, 0.6, 200, 500000, 50000)
            tot = _mul_round(qty_h, price_c)
            total_c += tot
            received_h = 0 if status == "cancelled" else rng.choice([0, qty_h, qty_h, qty_h // 2])
            lines.append(
                {
                    "id": line_id,
                    "line-num": str(ln),
                    "description": desc,
                    "type": "OrderAmountLine" if amount_line else "OrderQuantityLine",
                    "quantity": fmt_cents(qty_h),
                    "price": fmt_cents(price_c),
                    "total": fmt_cents(tot),
                    "uom": {"code": uom},
                    "item": item,
                    "commodity": {"name": commodity},
                    "account": random_account(le),
                    "need-by-date": clock.iso(c_dt + timedelta(days=rng.randint(7, 60))),
                    "received": fmt_cents(received_h),
                    "invoiced": "0.00",
                    "total-invoiced": "0.00",
                    "order-header-id": poid,
                    "order-header-number": po_number,
                    "currency": dict(currency_obj[le[3]]),
                    "match-type": "3-way" if item else "2-way",
                    "receipt-required": item is not None,
                    "status": "cancelled" if status == "cancelled" else "created",
                    "version": version,
                    "created-at": c_at,
                    "updated-at": u_at,
                    "_qty_h": qty_h,
                    "_price_c": price_c,
                }
            )
        po = {
            "id": poid,
            "po-number": po_number,
            "status": status,
            "type": "OrderHeader",
            "version": version,
            "internal-revision": version + rng.randint(0, 2),
            "supplier": sup_ref(s),
            "currency": dict(currency_obj[le[3]]),
            "payment-term": dict(s["payment-term"]),
            "ship-to-address": {
                "id": 900 + le[0],
                "name": f"Contoso {le[1]}",
                "location-code": (le[2] or "caplant").upper(),
                "city": _CITIES[le[4]][0],
                "postal-code": _CITIES[le[4]][2],
                "country": {"code": le[4], "name": COUNTRY_NAMES[le[4]]},
            },
            "account-type": dict(acct_types[le[0]]),
            "total": fmt_cents(total_c),
            "exported": False,
            "last-exported-at": None,
            "transmission-status": "sent_via_email",
            "order-lines": lines,
            "created-at": c_at,
            "updated-at": u_at,
        }
        pos.append(po)
        if status in ("issued", "closed"):
            po_by_supplier.setdefault(s["id"], []).append(po)

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
