"""The simulated AP user's work for the soak and the end-state comparison.

The comparison reads both sandboxes' state directly and judges it against the seed (what Coupa
holds and what the seed says cannot be booked) and against the payments the AP user made — never
against the connector's own reconciliation, so a bug there cannot hide one here. The ledger is read
only for purchase orders it quarantined, each with a stated reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..sandbox.launch import RunningSandboxes
from ..sync.settlements import CoupaPayment
from .model import EndState

PAID_AT = ("2026-11-27T12:00:00Z", "2026-11-28T12:00:00Z")


@dataclass(frozen=True)
class Payment:
    coupa_id: int
    reference: str
    amount: Decimal


@dataclass
class APWork:
    posted: int
    payments: list[Payment]
    fully_paid: set[int]  # Coupa ids of invoices the AP user settled in full


def _money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


def _coupa_id(header_reference: str) -> int | None:
    prefix = "COUPA-"
    tail = header_reference[len(prefix) :] if header_reference.upper().startswith(prefix) else ""
    return int(tail) if tail.isdigit() else None


def simulate_accounts_payable(sandboxes: RunningSandboxes, share: float = 0.3) -> APWork:
    """Post every n-th pending invoice of ours (``share`` of them, by HeaderReference order); pay
    every other posted one: every fourth posted one in full with two payments, the others in part."""
    state = sandboxes.d365.state
    headers = sorted(
        (h for h in state.records("VendorInvoiceHeaders") if _coupa_id(str(h.get("HeaderReference", "")))),
        key=lambda h: (h["dataAreaId"], h["HeaderReference"]),
    )
    step = max(1, round(1 / share))
    work = APWork(0, [], set())
    for n, header in enumerate(headers[::step]):
        coupa_id = _coupa_id(header["HeaderReference"])
        assert coupa_id is not None
        journal = state.post_invoice(header["dataAreaId"], header["HeaderReference"])["VendInvoiceJourBiEntity"]
        work.posted += 1
        amount = abs(_money(journal["InvoiceAmount"]))
        if n % 2 or amount <= 0 or Decimal(str(journal["InvoiceAmount"])) < 0:
            continue  # credit notes are not paid
        first = (amount / 2).quantize(Decimal("0.01"))
        parts = [first, amount - first] if n % 4 == 0 else [first]
        for k, part in enumerate(parts):
            reference = f"SOAK-PAY-{n:05d}-{'AB'[k]}"
            state.settle_invoice(
                header["dataAreaId"], journal["InvoiceId"], journal["InvoiceAccount"], part, PAID_AT[k], reference
            )
            work.payments.append(Payment(coupa_id, reference, part))
        if len(parts) == 2:
            work.fully_paid.add(coupa_id)
    return work


def _fold(*parts: Any) -> tuple[str, ...]:
    return tuple(str(p).casefold() for p in parts)


def compare(sandboxes: RunningSandboxes, ap: APWork | None, quarantined_pos: set[int]) -> EndState:
    seed = sandboxes.seed
    d365 = sandboxes.d365.state
    coupa = sandboxes.coupa.state
    end = EndState()
    suppliers = {s["id"]: s for s in seed.coupa_suppliers}
    unmappable = {int(i) for i in seed.expectations["unmappable_invoices"]}

    # -- invoices: pending headers and posted journals, by natural key
    booked: dict[tuple[str, ...], list[tuple[Decimal, int | None]]] = {}
    lines = Counter(_fold(ln["dataAreaId"], ln["HeaderReference"]) for ln in d365.records("VendorInvoiceLines"))
    for h in d365.records("VendorInvoiceHeaders"):
        key = _fold(h["dataAreaId"], h["InvoiceAccount"], h["InvoiceNumber"])
        booked.setdefault(key, []).append(
            (_money(h["ImportedAmount"]), lines[_fold(h["dataAreaId"], h["HeaderReference"])])
        )
    for j in d365.records("VendInvoiceJourBiEntities"):
        key = _fold(j["dataAreaId"], j["InvoiceAccount"], j["InvoiceId"])
        booked.setdefault(key, []).append((_money(j["InvoiceAmount"]) - _money(j.get("SumTax") or 0), None))
    expected_keys: set[tuple[str, ...]] = set()
    for invoice in coupa.records("invoices"):
        if invoice["status"] != "approved" or int(invoice["id"]) in unmappable:
            continue
        legal_entity = seed.legal_entities[invoice["account-type"]["name"]]
        key = _fold(legal_entity, suppliers[invoice["supplier"]["id"]]["number"], invoice["invoice-number"])
        expected_keys.add(key)
        end.invoices_expected += 1
        rows = booked.get(key, [])
        if not rows:
            end.invoices_missing += 1
            continue
        end.invoices_booked += 1
        end.invoice_duplicates += len(rows) - 1
        amount, line_count = rows[0]
        if amount != _money(invoice["gross-total"]):
            end.invoice_amount_differences += 1
        if line_count is not None and line_count != len(invoice["invoice-lines"]):
            end.invoice_line_differences += 1
    end.invoices_unexpected = sum(len(rows) for key, rows in booked.items() if key not in expected_keys)

    # -- purchase orders: every issued one once (unless the ledger quarantined it, with a reason)
    po_rows: dict[tuple[str, ...], int] = Counter(
        _fold(h["dataAreaId"], h["PurchaseOrderNumber"]) for h in d365.records("PurchaseOrderHeadersV2")
    )
    po_amounts: dict[tuple[str, ...], Decimal] = {}
    for ln in d365.records("PurchaseOrderLinesV2"):
        key = _fold(ln["dataAreaId"], ln["PurchaseOrderNumber"])
        po_amounts[key] = po_amounts.get(key, Decimal(0)) + _money(ln["LineAmount"])
    end.purchase_order_duplicates = sum(n - 1 for n in po_rows.values() if n > 1)
    for po in coupa.records("purchase_orders"):
        if po["status"] != "issued":
            continue
        if int(po["id"]) in quarantined_pos:
            end.purchase_orders_quarantined += 1
            continue
        end.purchase_orders_expected += 1
        legal_entity = seed.legal_entities[po["order-lines"][0]["account"]["account-type"]["name"]]
        key = _fold(legal_entity, po["po-number"])
        if not po_rows.get(key):
            end.purchase_orders_missing += 1
        elif po_amounts.get(key, Decimal(0)) != sum((_money(ln["total"]) for ln in po["order-lines"]), Decimal(0)):
            end.purchase_order_amount_differences += 1

    vendors = Counter(_fold(v["dataAreaId"], v["VendorAccountNumber"]) for v in d365.records("VendorsV2"))
    end.vendor_duplicates = sum(n - 1 for n in vendors.values() if n > 1)

    # -- payments: each AP payment exactly once in Coupa, with its amount; nothing else
    if ap is not None:
        end.payments_made = len(ap.payments)
        made = {(p.coupa_id, p.reference): p for p in ap.payments}
        paid_ids = {p.coupa_id for p in ap.payments}
        seen: Counter[tuple[int, str]] = Counter()
        for invoice in coupa.records("invoices"):
            coupa_id = int(invoice["id"])
            for raw in invoice.get("payments") or []:
                payment = CoupaPayment.parse(raw)
                match = made.get((coupa_id, payment.reference))
                if match is None or payment.reversal:
                    end.payments_unexpected += 1
                    continue
                seen[(coupa_id, payment.reference)] += 1
                if payment.amount.quantize(Decimal("0.01")) != match.amount:
                    end.payment_amount_differences += 1
            if coupa_id in paid_ids or invoice.get("paid"):
                if bool(invoice.get("paid")) != (coupa_id in ap.fully_paid):
                    end.paid_flag_differences += 1
        end.payments_in_coupa = sum(1 for key in made if seen[key])
        end.payments_missing = sum(1 for key in made if not seen[key])
        end.payment_duplicates = sum(n - 1 for n in seen.values() if n > 1)
    return end
