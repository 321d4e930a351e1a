"""May the connector adopt a D365 invoice its natural-key lookup found? (pure functions)

The lookup (InvoiceNumber + InvoiceAccount in a legal entity) finds what F&O's case-insensitive
collation treats as the same invoice — exactly the invoices D365's duplicate check ("Check the
invoice number used") would compare at posting. Only some of them are this Coupa invoice:

- a pending header with our HeaderReference (``COUPA-<id>``, or the key the ledger recorded): an
  earlier write of ours — adopt it and bring it in line;
- a header keyed by hand (or posted by AP) exactly as we would send it: same invoice number (case
  included), same amount, same currency, and no other Coupa invoice booked under this key — adopt;
- anything else (another amount, a number differing only in case, a header of another Coupa
  invoice) is a *duplicate invoice number*: never adopted, never PATCHed, never reported to Coupa as
  booked; the Coupa user corrects the number or voids one of the two.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from ..d365.odata import fold
from ..mapping.invoices import MappedInvoice

OUR_REFERENCE = re.compile(r"^COUPA-(\d+)$", re.IGNORECASE)


class Adoption(StrEnum):
    OURS = "ours"  # written by us for this Coupa invoice
    SAME_INVOICE = "same_invoice"  # keyed by hand / another path, exactly as we would book it
    DUPLICATE = "duplicate"  # another invoice with this number: quarantine


@dataclass(frozen=True)
class Verdict:
    adoption: Adoption
    reason: str = ""

    @property
    def adoptable(self) -> bool:
        return self.adoption is not Adoption.DUPLICATE


def _amount(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except (InvalidOperation, ValueError):
        return None


def _money(value: Decimal | None, currency: Any) -> str:
    text = f"{value:,.2f}" if value is not None else "?"
    return f"{text} {currency}".strip() if currency else text


def _coupa_amounts(mapped: MappedInvoice) -> set[Decimal]:
    """The amounts this invoice can show in D365: its gross total, or the sum of its lines (posting
    totals the lines; the mapping allows a small rounding difference between the two)."""
    amounts = {a for a in (_amount(mapped.header.get("ImportedAmount")),) if a is not None}
    lines = [_amount(line.get("Amount")) for line in mapped.lines]
    if lines and all(a is not None for a in lines):
        amounts.add(sum((a for a in lines if a is not None), Decimal(0)))
    return amounts


def judge(
    record: Mapping[str, Any],
    mapped: MappedInvoice,
    coupa_id: int,
    *,
    posted: bool,
    our_references: Iterable[str] = (),
    booked_for: Iterable[int] = (),
) -> Verdict:
    """Is ``record`` — a pending ``VendorInvoiceHeaders`` row or, with ``posted``, a posted
    ``VendInvoiceJourBiEntities`` row found by this invoice's natural key — this Coupa invoice?

    ``booked_for``: other Coupa invoices the ledger has booked under the same natural key."""
    number_field, amount_field, currency_field = (
        ("InvoiceId", "InvoiceAmount", "CurrencyCode") if posted else ("InvoiceNumber", "ImportedAmount", "Currency")
    )
    reference = str(record.get("HeaderReference") or "")
    if not posted and reference and fold(reference) in {fold(r) for r in our_references if r}:
        return Verdict(Adoption.OURS)
    number = str(record.get(number_field) or "")
    amount, currency = _amount(record.get(amount_field)), record.get(currency_field)
    held = f"posted voucher {record.get('LedgerVoucher') or '?'}" if posted else f"pending {reference or '?'}"
    ours_amount, ours_currency = _amount(mapped.header.get("ImportedAmount")), mapped.header.get("Currency")
    facts = (
        f"D365 {mapped.legal_entity} already holds invoice {number} of vendor "
        f"{record.get('InvoiceAccount') or mapped.vendor_account} ({held}, amount {_money(amount, currency)} vs "
        f"{_money(ours_amount, ours_currency)} in Coupa)"
    )
    fix = "correct the invoice number in Coupa or void one of them"
    other = OUR_REFERENCE.match(reference) if not posted else None
    others = sorted(({int(other.group(1))} if other else set()) | {int(c) for c in booked_for})
    others = [c for c in others if c != int(coupa_id)]
    if others:
        facts += f", booked for Coupa invoice {', '.join(map(str, others))}"
    if number.strip() != mapped.invoice_number.strip():
        return Verdict(
            Adoption.DUPLICATE,
            f"{facts}: the invoice numbers {number} and {mapped.invoice_number} differ "
            "only in case, which D365 treats as the same number (its duplicate "
            f"invoice number check would stop the posting) — {fix}",
        )
    same_currency = not currency or not ours_currency or fold(currency) == fold(ours_currency)
    if others or amount is None or amount not in _coupa_amounts(mapped) or not same_currency:
        return Verdict(Adoption.DUPLICATE, f"{facts}: this looks like a duplicate invoice number — {fix}")
    return Verdict(Adoption.SAME_INVOICE)
