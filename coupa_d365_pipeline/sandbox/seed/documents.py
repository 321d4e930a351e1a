"""Coupa supplier and purchase-order builders for the seed generator (no Dagster imports).

Holds the pieces :func:`.generate._generate` drives in order, all sharing its one seeded RNG: the
created-at/updated-at ``_Clock``, ``_pick_goods`` (a catalogue or free-text goods line),
``_Accounts`` (Coupa account objects cached by legal entity and segments), ``build_suppliers`` and
``build_purchase_orders``. The invoices and the expectations stay in :mod:`.generate`. Every RNG
draw happens in the same order as before the split, so the generated seed is unchanged.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

from .catalogue import (
    _CITIES,
    _NAME_A,
    _NAME_B,
    _NAME_C,
    BUSINESS_UNITS,
    COMMON_MAIN_ACCOUNTS,
    COST_CENTERS,
    COUNTRY_NAMES,
    DEPARTMENTS,
    FREE_TEXT,
    MAIN_ACCOUNTS,
    MAPPED,
    RELEASED_ITEMS,
    UOMS,
    USMF_ONLY_MAIN_ACCOUNT,
    _mul_round,
    fmt_cents,
)


class _Clock:
    """Deterministic created-at/updated-at pairs inside [start, start + days)."""

    def __init__(self, rng: random.Random, start_date: date, days: int) -> None:
        self.rng = rng
        self.start = datetime(start_date.year, start_date.month, start_date.day, tzinfo=UTC)
        self.span = max(1, days) * 86400

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


class _Accounts:
    """Coupa account objects, one per (account type, segments), handed out as fresh copies."""

    def __init__(self, rng: random.Random, acct_types: dict[int, dict]) -> None:
        self.rng = rng
        self.acct_types = acct_types
        self.cache: dict[tuple[int, tuple[str, ...]], dict] = {}

    def account(self, le, seg1: str, seg2: str, seg3: str, seg4: str) -> dict:
        account_cache = self.cache
        key = (le[0], (seg1, seg2, seg3, seg4))
        acc = account_cache.get(key)
        if acc is None:
            code = "-".join(seg for seg in (seg1, seg2, seg3, seg4) if seg)
            acc = {
                "id": len(account_cache) + 1,
                "name": f"{MAIN_ACCOUNTS.get(seg1, ('Unknown account',))[0]} / {code}",
                "code": code,
                "active": True,
                "account-type": dict(self.acct_types[le[0]]),
                "segment-1": seg1,
                "segment-2": seg2,
                "segment-3": seg3,
                "segment-4": seg4,
            }
            account_cache[key] = acc
        return dict(acc, **{"account-type": dict(acc["account-type"])})

    def random_account(self, le, main: str | None = None) -> dict:
        rng = self.rng
        if main is None:
            pool = COMMON_MAIN_ACCOUNTS + ([USMF_ONLY_MAIN_ACCOUNT] if le[2] == "usmf" else [])
            main = str(rng.choice(pool))
        return self.account(le, main, rng.choice(BUSINESS_UNITS), rng.choice(COST_CENTERS), rng.choice(DEPARTMENTS))


def sup_ref(s: dict) -> dict:
    """The supplier reference embedded in purchase orders and invoices."""
    return {"id": s["id"], "name": s["name"], "number": s["number"], "display-name": s["display-name"]}


def build_suppliers(
    rng: random.Random, clock: _Clock, n_sup: int, pterm_obj: list[dict]
) -> tuple[list[dict], dict[int, tuple], dict[int, str], list[int]]:
    """``n_sup`` Coupa suppliers: (suppliers, legal entity by supplier id, unmappable suppliers, inactive ids)."""
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
    return suppliers, sup_le, unmappable_suppliers, inactive


def build_purchase_orders(
    rng: random.Random,
    clock: _Clock,
    n_po: int,
    normal_suppliers: list[dict],
    sup_le: dict[int, tuple],
    accounts: _Accounts,
    currency_obj: dict[str, dict],
    acct_types: dict[int, dict],
) -> tuple[list[dict], dict[int, list[dict]]]:
    """``n_po`` purchase orders (lines keep private ``_qty_h``/``_price_c`` for the invoices; the caller
    drops them): (purchase orders, issued/closed orders by supplier id)."""
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
                    "account": accounts.random_account(le),
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
    return pos, po_by_supplier
