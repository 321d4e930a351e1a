"""D365 settlements of a booked invoice as they are *now*, Coupa's payments as they are now, and
the plan that reconciles the two (pure functions plus one small D365 reader).

Every Coupa payment the connector writes carries the D365 settlement id (legal entity + SourceKey)
in its notes, so matching is exact — never by amount, date or reference. Only settlements against a
Payment are cash payments; a credit note settles without a Coupa payment. A settlement Coupa has
but D365 no longer has (reversed) is planned as an offsetting payment with the same id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from ..d365 import odata
from ..state.ledger import NaturalKey
from ..state.status import StatusEvent

EMPTY_DATE = "1900-01-01T12:00:00Z"
CENT = Decimal("0.01")
NOTES_MAX = 255  # Coupa Payment.notes is string(255) (R39 Invoicing API)
PAYMENT_NOTES_MAX = 1000
TRANS_SET, SETTLEMENT_SET, JOURNAL_SET = "VendTransBiEntities", "VendSettlementBiEntities", "VendInvoiceJourBiEntities"


def text_of(value: Any) -> str:
    return str(value or "")


def decimal_of(value: Any) -> Decimal:
    return Decimal(str(value if value not in (None, "") else 0))


def money_text(value: Decimal) -> str:
    """Coupa's amount text: cents, sign kept."""
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def instant_of(value: Any) -> datetime | None:
    text = text_of(value).strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# What D365 holds now
# ---------------------------------------------------------------------------------------------


class SettlementKind(StrEnum):
    PAYMENT = "payment"  # offset VendTrans is a Payment: cash, a Coupa payment
    DOCUMENT = "document"  # offset is another invoice or a credit note: no cash
    OTHER = "other"  # any other offset (journal, write-off): no cash


@dataclass(frozen=True, order=True)
class SettlementId:
    """A VendSettlement row: legal entity + SourceKey (RecId), never reused by F&O."""

    legal_entity: str
    source_key: int

    def marker(self, *, reversal: bool = False) -> str:
        return f"[D365 {self.legal_entity} settlement {self.source_key}{' reversed' if reversal else ''}]"


MARKER = re.compile(r"\[D365 (?P<le>[^\s\]]+) settlement (?P<key>\d+)(?P<reversed> reversed)?\]")


@dataclass(frozen=True)
class D365Settlement:
    id: SettlementId
    kind: SettlementKind
    coupa_amount: Decimal  # Coupa's sign: > 0 pays an invoice, < 0 refunds a credit note
    date: str  # VendSettlement.TransDate
    reference: str  # payment reference (PaymReference, else voucher) / offset document number
    offset_is_credit_note: bool = False

    def label(self) -> str:
        if self.kind == SettlementKind.DOCUMENT:
            return f"{'credit note' if self.offset_is_credit_note else 'invoice'} {self.reference}"
        return self.reference


@dataclass(frozen=True)
class InvoiceSettlements:
    """The invoice's VendTrans and settlements as D365 holds them now (D365 signs kept)."""

    natural_key: NaturalKey
    voucher: str
    amount_cur: Decimal  # VendTrans AmountCur: < 0 for an invoice, > 0 for a credit note
    settle_amount_cur: Decimal  # moves towards AmountCur, same sign
    modified: str  # latest VendTrans SysModifiedDateTime
    settlements: tuple[D365Settlement, ...]

    @property
    def fully_settled(self) -> bool:
        if self.amount_cur < 0:
            return self.settle_amount_cur <= self.amount_cur
        if self.amount_cur > 0:
            return self.settle_amount_cur >= self.amount_cur
        return False

    @property
    def coupa_amount(self) -> Decimal:
        return -self.amount_cur

    @property
    def coupa_open(self) -> Decimal:
        return -(self.amount_cur - self.settle_amount_cur)

    def of_kind(self, kind: SettlementKind) -> list[D365Settlement]:
        return [s for s in self.settlements if s.kind == kind]


def posted_journal_rows(d365: Any, natural: NaturalKey, *, top: int | None = None) -> list[dict[str, Any]]:
    """The posted invoice journal (VendInvoiceJour) rows of an invoice, by its natural key."""
    return list(
        d365.query(
            JOURNAL_SET,
            legal_entity=natural.legal_entity,
            exact={"InvoiceId": natural.document_number, "InvoiceAccount": natural.vendor_account},
            select=["InvoiceId", "InvoiceAccount", "LedgerVoucher", "InvoiceAmount", "CurrencyCode"],
            top=top,
        )
    )


class D365SettlementReader:
    """Reads an invoice's current settlement state: its VendTrans (natural key + voucher), their
    VendSettlement rows (``TransRecId``) and each row's offset VendTrans (``OffsetRecid``)."""

    def __init__(self, d365: Any) -> None:
        self.d365 = d365
        self._offsets: dict[tuple[str, int], dict[str, Any] | None] = {}

    def posted_voucher(self, natural: NaturalKey) -> str | None:
        rows = posted_journal_rows(self.d365, natural)
        return text_of(rows[-1]["LedgerVoucher"]) if rows else None

    def current(self, natural: NaturalKey, voucher: str) -> InvoiceSettlements | None:
        le = natural.legal_entity
        trans = [
            r
            for r in self.d365.query(
                TRANS_SET,
                legal_entity=le,
                exact={"AccountNum": natural.vendor_account, "Invoice": natural.document_number, "Voucher": voucher},
                select=["SourceKey", "Voucher", "TransType", "AmountCur", "SettleAmountCur", "SysModifiedDateTime"],
            )
            if r.get("TransType") != "Payment"
        ]
        if not trans:
            return None
        settlements: list[D365Settlement] = []
        for row in trans:
            for settled in self.d365.query(
                SETTLEMENT_SET,
                legal_entity=le,
                filter=odata.eq("TransRecId", int(row["SourceKey"])),
                select=[
                    "SourceKey",
                    "TransRecId",
                    "OffsetRecid",
                    "OffsetCompany",
                    "SettleAmountCur",
                    "TransDate",
                    "OffsetTransVoucher",
                ],
            ):
                settlements.append(self._settlement(le, settled))
        return InvoiceSettlements(
            natural_key=natural,
            voucher=voucher,
            amount_cur=sum((decimal_of(r["AmountCur"]) for r in trans), Decimal(0)),
            settle_amount_cur=sum((decimal_of(r["SettleAmountCur"]) for r in trans), Decimal(0)),
            modified=max(text_of(r.get("SysModifiedDateTime")) for r in trans),
            settlements=tuple(sorted(settlements, key=lambda s: (s.date, s.id))),
        )

    def _offset(self, company: str, source_key: int) -> dict[str, Any] | None:
        key = (company.lower(), int(source_key))
        if key not in self._offsets:
            self._offsets[key] = self.d365.get(TRANS_SET, {"dataAreaId": key[0], "SourceKey": key[1]})
        return self._offsets[key]

    def _settlement(self, le: str, row: dict[str, Any]) -> D365Settlement:
        offset = self._offset(text_of(row.get("OffsetCompany")) or le, row["OffsetRecid"]) or {}
        settlement_id = SettlementId(le, int(row["SourceKey"]))
        amount = -decimal_of(row["SettleAmountCur"])
        date = text_of(row.get("TransDate"))
        voucher = text_of(offset.get("Voucher")) or text_of(row.get("OffsetTransVoucher"))
        if offset.get("TransType") == "Payment":
            return D365Settlement(
                settlement_id,
                SettlementKind.PAYMENT,
                amount,
                date,
                text_of(offset.get("PaymReference")).strip() or voucher,
            )
        if offset.get("Invoice"):
            return D365Settlement(
                settlement_id,
                SettlementKind.DOCUMENT,
                amount,
                date,
                text_of(offset["Invoice"]),
                offset_is_credit_note=decimal_of(offset.get("AmountCur")) > 0,
            )
        return D365Settlement(settlement_id, SettlementKind.OTHER, amount, date, f"voucher {voucher}")


# ---------------------------------------------------------------------------------------------
# What Coupa holds, and what to send
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoupaPayment:
    amount: Decimal
    notes: str
    settlement: SettlementId | None
    reversal: bool

    @property
    def reference(self) -> str:
        """The readable part of the notes (before the settlement marker)."""
        text = MARKER.sub("", self.notes).strip()
        return text.removeprefix("Reversed in D365:").strip()

    @classmethod
    def parse(cls, payment: Mapping[str, Any]) -> CoupaPayment:
        notes = text_of(payment.get("notes") or payment.get("check-number"))
        try:
            amount = Decimal(str(payment.get("amount-paid")))
        except (InvalidOperation, ValueError):
            amount = Decimal(0)
        found = MARKER.search(notes)
        settlement = SettlementId(found["le"].lower(), int(found["key"])) if found else None
        return cls(amount, notes, settlement, bool(found and found["reversed"]))


def payment_notes(reference: str, settlement_id: SettlementId, *, reversal: bool = False) -> str:
    """``<reference> [D365 <le> settlement <id>]`` within Coupa's 255 characters (the marker always fits)."""
    marker = settlement_id.marker(reversal=reversal)
    readable = f"Reversed in D365: {reference}" if reversal else reference
    room = NOTES_MAX - len(marker) - 1
    return f"{readable[:room].rstrip()} {marker}" if readable else marker


@dataclass
class PaymentPlan:
    to_send: list[dict[str, str]] = field(default_factory=list)
    reversed: dict[SettlementId, tuple[Decimal, str]] = field(default_factory=dict)  # id -> (amount, reference)
    problems: list[str] = field(default_factory=list)


def plan_payments(
    state: InvoiceSettlements, coupa: list[CoupaPayment], legacy_sent: Sequence[StatusEvent] = ()
) -> PaymentPlan:
    """Which payments Coupa needs so that, per D365 settlement id, its payments add up to what D365
    holds now: the settlement amount for a current cash settlement, zero for anything else.

    ``legacy_sent``: settlements the first version of this flow sent without a settlement id (pushed
    ``payment`` events); each is recognised in Coupa by the amount and notes it sent, one to one."""
    plan = PaymentPlan()
    net: dict[SettlementId, Decimal] = {}
    reference: dict[SettlementId, str] = {}
    for payment in coupa:
        if payment.settlement is not None:
            net[payment.settlement] = net.get(payment.settlement, Decimal(0)) + payment.amount
            reference.setdefault(payment.settlement, payment.reference)
    unmarked = [p for p in coupa if p.settlement is None]
    for event in legacy_sent:
        settlement_id = SettlementId(event.legal_entity.lower(), int(event.event_key))
        if settlement_id in net:
            continue
        sent = next(
            (
                p
                for p in unmarked
                if p.amount == decimal_of(event.amount).quantize(CENT)
                and p.notes.strip() == text_of(event.reference).strip()
            ),
            None,
        )
        if sent is not None:
            unmarked.remove(sent)
            net[settlement_id], reference[settlement_id] = sent.amount, sent.notes.strip()

    cash = {s.id: s for s in state.of_kind(SettlementKind.PAYMENT)}
    for settlement_id, settlement in cash.items():
        have = net.get(settlement_id, Decimal(0))
        if have == 0:
            plan.to_send.append(
                {
                    "amount-paid": money_text(settlement.coupa_amount),
                    "notes": payment_notes(settlement.reference, settlement_id),
                    "payment-date": settlement.date,
                }
            )
        elif have != Decimal(money_text(settlement.coupa_amount)):  # Coupa keeps cents
            plan.problems.append(
                f"Coupa's payments for D365 settlement {settlement_id.legal_entity}/{settlement_id.source_key} "
                f"({settlement.reference}) add up to {money_text(have)} but D365 settled "
                f"{money_text(settlement.coupa_amount)}; correct the payments of this Coupa invoice by hand "
                "(D365 is the record of payments)"
            )
    for settlement_id, have in sorted(net.items()):
        if settlement_id in cash:
            continue
        ref = reference.get(settlement_id, "")
        if have != 0:  # Coupa has it, D365 no longer does (reversed) or never did as cash: offset it
            plan.to_send.append(
                {
                    "amount-paid": money_text(-have),
                    "notes": payment_notes(ref, settlement_id, reversal=True),
                    "payment-date": state.modified,
                }
            )
            plan.reversed[settlement_id] = (have, ref)
        elif any(p.settlement == settlement_id and p.reversal for p in coupa):
            original = sum((p.amount for p in coupa if p.settlement == settlement_id and not p.reversal), Decimal(0))
            plan.reversed[settlement_id] = (original, ref)
    return plan


def describe(state: InvoiceSettlements, plan: PaymentPlan) -> str:
    """``payment-notes``: fully settled or what is open, and how (cash, credit notes, reversals)."""
    natural = state.natural_key
    head = f"D365 {natural.legal_entity} invoice {natural.document_number}: " + (
        "fully settled"
        if state.fully_settled
        else f"open {money_text(state.coupa_open)} of {money_text(state.coupa_amount)}"
    )
    parts = [head]
    cash = state.of_kind(SettlementKind.PAYMENT)
    if cash:
        parts.append(
            f"{len(cash)} cash payment(s) {money_text(sum((s.coupa_amount for s in cash), Decimal(0)))}: "
            + ", ".join(f"{s.reference} {money_text(s.coupa_amount)} on {s.date[:10]}" for s in cash)
        )
    documents = state.of_kind(SettlementKind.DOCUMENT)
    if documents:
        parts.append(
            "settled without cash against "
            + ", ".join(f"{s.label()} {money_text(s.coupa_amount)} on {s.date[:10]}" for s in documents)
        )
    other = state.of_kind(SettlementKind.OTHER)
    if other:
        parts.append("other settlements " + ", ".join(f"{s.label()} {money_text(s.coupa_amount)}" for s in other))
    if plan.reversed:
        parts.append(
            "reversed in D365: "
            + ", ".join(
                f"{ref or i.source_key} {money_text(amount)}" for i, (amount, ref) in sorted(plan.reversed.items())
            )
        )
    text = "; ".join(parts)
    return text if len(text) <= PAYMENT_NOTES_MAX else text[: PAYMENT_NOTES_MAX - 1] + "…"
