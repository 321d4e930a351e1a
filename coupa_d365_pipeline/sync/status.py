"""Posted-invoice and payment status: D365 -> events -> Coupa. Never any general-ledger data.

Reading (``StatusReader``), per legal entity; each source has its own watermark in the sync
database and is re-read with an overlap (``STATUS_READ_OVERLAP_MINUTES``, default 240): F&O stamps
``CreatedOn``/``SysModifiedDateTime`` when a row is inserted, but a long batch posting commits —
and shows — it much later. Unique event keys make the re-reads harmless:

- ``VendInvoiceJourBiEntities`` on ``CreatedOn`` -> a *posted* event for every invoice our ledger
  booked (structured natural key: legal entity, vendor, invoice number);
- ``VendSettlementBiEntities`` on ``CreatedOn`` -> a *settlement* event per settlement of such an
  invoice (its ``TransRecId`` VendTrans names the invoice);
- ``VendTransBiEntities`` on ``SysModifiedDateTime`` -> a *trans_changed* event when a booked
  invoice's VendTrans changed: reversing a settlement deletes its VendSettlement row and leaves no
  other trace than the invoice VendTrans' SettleAmountCur/Closed/SysModifiedDateTime.

Writing (``StatusWriter``), per Coupa invoice with waiting events, under the invoice's ledger claim
(the same ``("invoice", coupa_id)`` row the document sync claims; busy -> left for the next run):

- posted: the ledger records the voucher on the *claimed* row — ``written``/``missing_in_d365``/
  ``writing`` become ``posted``, any other state (``void_blocked_posted``, ``changed_after_post``…)
  is kept; the Coupa custom fields named in the mapping are filled and one Success integration
  history record names the D365 invoice number and voucher;
- settlements: Coupa is reconciled with the invoice's settlements as D365 holds them *now* (the
  invoice VendTrans, its VendSettlement rows, each offset VendTrans). Every Coupa payment carries
  the D365 settlement id (legal entity + SourceKey) in its notes, after the readable payment
  reference, so matching is exact — never by amount, date or reference. Only settlements against a
  Payment are cash payments; a credit note (or any other offset) settles without a Coupa payment.
  A settlement that Coupa has but D365 no longer has (reversed) gets an offsetting payment with the
  same settlement id marked ``reversed`` — Coupa's payment API only appends — and one alert.
  ``paid`` is true exactly when the invoice VendTrans is fully settled now (SettleAmountCur reaches
  AmountCur, same sign); ``payment-notes`` say how (cash payments, credit notes, reversals). The
  Coupa invoice is read first, so a lost answer or a re-run never adds a payment twice.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Mapping, Sequence

from ..d365 import odata
from ..state.ledger import (
    MISSING_IN_D365, POSTED as POSTED_STATE, VOID_BLOCKED, WRITING, WRITTEN, ClaimLostError, LedgerRow, NaturalKey,
)
from ..state.status import LEGACY_PAYMENT, POSTED, SETTLEMENT, TRANS_CHANGED, StatusEvent, StatusEvents
from .context import SyncServices, error_text
from .report import Outcome, SyncReport

READ_OVERLAP_ENV = "STATUS_READ_OVERLAP_MINUTES"
# Long enough for a large AP batch posting (thousands of invoices) to commit; re-reading costs a
# few extra rows per run, and the unique event keys keep it from doing anything twice.
DEFAULT_READ_OVERLAP = timedelta(hours=4)
EMPTY_DATE = "1900-01-01T12:00:00Z"
CENT = Decimal("0.01")
NOTES_MAX = 255              # Coupa Payment.notes is string(255) (R39 Invoicing API)
PAYMENT_NOTES_MAX = 1000
DOC = "invoice"
STATUS_DOC = "invoice_status"
REVERSAL_ALERT_CODE = "D365-PAYMENT-REVERSED"
# ledger states that a D365 posting moves to ``posted``; every other state is kept
MOVES_TO_POSTED = (WRITTEN, MISSING_IN_D365, WRITING)

TRANS_SET, SETTLEMENT_SET, JOURNAL_SET = "VendTransBiEntities", "VendSettlementBiEntities", "VendInvoiceJourBiEntities"


def read_overlap(environ: Mapping[str, str] | None = None) -> timedelta:
    """How far before each watermark the readers start again (``STATUS_READ_OVERLAP_MINUTES``)."""
    raw = ((os.environ if environ is None else environ).get(READ_OVERLAP_ENV) or "").strip()
    if not raw:
        return DEFAULT_READ_OVERLAP
    try:
        minutes = int(raw)
    except ValueError:
        minutes = -1
    if minutes < 0:
        raise ValueError(f"{READ_OVERLAP_ENV}={raw!r} is not a whole number of minutes >= 0: set it to at least "
                         "the duration of the longest D365 posting batch (default "
                         f"{int(DEFAULT_READ_OVERLAP.total_seconds() // 60)}), or unset it")
    return timedelta(minutes=minutes)


def _text(value: Any) -> str:
    return str(value or "")


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value if value not in (None, "") else 0))


def _money(value: Decimal) -> str:
    """Coupa's amount text: cents, sign kept."""
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def _instant(value: Any) -> datetime | None:
    text = _text(value).strip()
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
    PAYMENT = "payment"        # offset VendTrans is a Payment: cash, a Coupa payment
    DOCUMENT = "document"      # offset is another invoice or a credit note: no cash
    OTHER = "other"            # any other offset (journal, write-off): no cash


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
    coupa_amount: Decimal       # Coupa's sign: > 0 pays an invoice, < 0 refunds a credit note
    date: str                   # VendSettlement.TransDate
    reference: str              # payment reference (PaymReference, else voucher) / offset document number
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
    amount_cur: Decimal         # VendTrans AmountCur: < 0 for an invoice, > 0 for a credit note
    settle_amount_cur: Decimal  # moves towards AmountCur, same sign
    modified: str               # latest VendTrans SysModifiedDateTime
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


class D365SettlementReader:
    """Reads an invoice's current settlement state: its VendTrans (natural key + voucher), their
    VendSettlement rows (``TransRecId``) and each row's offset VendTrans (``OffsetRecid``)."""

    def __init__(self, d365: Any) -> None:
        self.d365 = d365
        self._offsets: dict[tuple[str, int], dict[str, Any] | None] = {}

    def posted_voucher(self, natural: NaturalKey) -> str | None:
        rows = list(self.d365.query(JOURNAL_SET, legal_entity=natural.legal_entity, filter=odata.and_(
            odata.eq("InvoiceAccount", natural.vendor_account), odata.eq("InvoiceId", natural.document_number)),
            select=["InvoiceId", "InvoiceAccount", "LedgerVoucher"]))
        return _text(rows[-1]["LedgerVoucher"]) if rows else None

    def current(self, natural: NaturalKey, voucher: str) -> InvoiceSettlements | None:
        le = natural.legal_entity
        trans = [r for r in self.d365.query(TRANS_SET, legal_entity=le, filter=odata.and_(
            odata.eq("AccountNum", natural.vendor_account), odata.eq("Invoice", natural.document_number),
            odata.eq("Voucher", voucher)), select=["SourceKey", "Voucher", "TransType", "AmountCur",
                                                    "SettleAmountCur", "SysModifiedDateTime"])
                 if r.get("TransType") != "Payment"]
        if not trans:
            return None
        settlements: list[D365Settlement] = []
        for row in trans:
            for settled in self.d365.query(SETTLEMENT_SET, legal_entity=le,
                                           filter=odata.eq("TransRecId", int(row["SourceKey"])),
                                           select=["SourceKey", "TransRecId", "OffsetRecid", "OffsetCompany",
                                                   "SettleAmountCur", "TransDate", "OffsetTransVoucher"]):
                settlements.append(self._settlement(le, settled))
        return InvoiceSettlements(
            natural_key=natural, voucher=voucher,
            amount_cur=sum((_decimal(r["AmountCur"]) for r in trans), Decimal(0)),
            settle_amount_cur=sum((_decimal(r["SettleAmountCur"]) for r in trans), Decimal(0)),
            modified=max(_text(r.get("SysModifiedDateTime")) for r in trans),
            settlements=tuple(sorted(settlements, key=lambda s: (s.date, s.id))))

    def _offset(self, company: str, source_key: int) -> dict[str, Any] | None:
        key = (company.lower(), int(source_key))
        if key not in self._offsets:
            self._offsets[key] = self.d365.get(TRANS_SET, {"dataAreaId": key[0], "SourceKey": key[1]})
        return self._offsets[key]

    def _settlement(self, le: str, row: dict[str, Any]) -> D365Settlement:
        offset = self._offset(_text(row.get("OffsetCompany")) or le, row["OffsetRecid"]) or {}
        settlement_id = SettlementId(le, int(row["SourceKey"]))
        amount = -_decimal(row["SettleAmountCur"])
        date = _text(row.get("TransDate"))
        voucher = _text(offset.get("Voucher")) or _text(row.get("OffsetTransVoucher"))
        if offset.get("TransType") == "Payment":
            return D365Settlement(settlement_id, SettlementKind.PAYMENT, amount, date,
                                  _text(offset.get("PaymReference")).strip() or voucher)
        if offset.get("Invoice"):
            return D365Settlement(settlement_id, SettlementKind.DOCUMENT, amount, date, _text(offset["Invoice"]),
                                  offset_is_credit_note=_decimal(offset.get("AmountCur")) > 0)
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
    def parse(cls, payment: Mapping[str, Any]) -> "CoupaPayment":
        notes = _text(payment.get("notes") or payment.get("check-number"))
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


def plan_payments(state: InvoiceSettlements, coupa: list[CoupaPayment],
                  legacy_sent: Sequence[StatusEvent] = ()) -> PaymentPlan:
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
        sent = next((p for p in unmarked if p.amount == _decimal(event.amount).quantize(CENT)
                     and p.notes.strip() == _text(event.reference).strip()), None)
        if sent is not None:
            unmarked.remove(sent)
            net[settlement_id], reference[settlement_id] = sent.amount, sent.notes.strip()

    cash = {s.id: s for s in state.of_kind(SettlementKind.PAYMENT)}
    for settlement_id, settlement in cash.items():
        have = net.get(settlement_id, Decimal(0))
        if have == 0:
            plan.to_send.append({"amount-paid": _money(settlement.coupa_amount),
                                 "notes": payment_notes(settlement.reference, settlement_id),
                                 "payment-date": settlement.date})
        elif have != Decimal(_money(settlement.coupa_amount)):   # Coupa keeps cents
            plan.problems.append(
                f"Coupa's payments for D365 settlement {settlement_id.legal_entity}/{settlement_id.source_key} "
                f"({settlement.reference}) add up to {_money(have)} but D365 settled "
                f"{_money(settlement.coupa_amount)}; correct the payments of this Coupa invoice by hand "
                "(D365 is the record of payments)")
    for settlement_id, have in sorted(net.items()):
        if settlement_id in cash:
            continue
        ref = reference.get(settlement_id, "")
        if have != 0:   # Coupa has it, D365 no longer does (reversed) or never did as cash: offset it
            plan.to_send.append({"amount-paid": _money(-have),
                                 "notes": payment_notes(ref, settlement_id, reversal=True),
                                 "payment-date": state.modified})
            plan.reversed[settlement_id] = (have, ref)
        elif any(p.settlement == settlement_id and p.reversal for p in coupa):
            original = sum((p.amount for p in coupa if p.settlement == settlement_id and not p.reversal), Decimal(0))
            plan.reversed[settlement_id] = (original, ref)
    return plan


def describe(state: InvoiceSettlements, plan: PaymentPlan) -> str:
    """``payment-notes``: fully settled or what is open, and how (cash, credit notes, reversals)."""
    natural = state.natural_key
    head = (f"D365 {natural.legal_entity} invoice {natural.document_number}: "
            + ("fully settled" if state.fully_settled
               else f"open {_money(state.coupa_open)} of {_money(state.coupa_amount)}"))
    parts = [head]
    cash = state.of_kind(SettlementKind.PAYMENT)
    if cash:
        parts.append(f"{len(cash)} cash payment(s) {_money(sum((s.coupa_amount for s in cash), Decimal(0)))}: "
                     + ", ".join(f"{s.reference} {_money(s.coupa_amount)} on {s.date[:10]}" for s in cash))
    documents = state.of_kind(SettlementKind.DOCUMENT)
    if documents:
        parts.append("settled without cash against " + ", ".join(
            f"{s.label()} {_money(s.coupa_amount)} on {s.date[:10]}" for s in documents))
    other = state.of_kind(SettlementKind.OTHER)
    if other:
        parts.append("other settlements " + ", ".join(f"{s.label()} {_money(s.coupa_amount)}" for s in other))
    if plan.reversed:
        parts.append("reversed in D365: " + ", ".join(
            f"{ref or i.source_key} {_money(amount)}" for i, (amount, ref) in sorted(plan.reversed.items())))
    text = "; ".join(parts)
    return text if len(text) <= PAYMENT_NOTES_MAX else text[:PAYMENT_NOTES_MAX - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------


class StatusReader:
    def __init__(self, services: SyncServices, events: StatusEvents, *, overlap: timedelta | None = None) -> None:
        self.s = services
        self.events = events
        self.overlap = read_overlap() if overlap is None else overlap
        self._trans: dict[tuple[str, int], dict[str, Any] | None] = {}

    def _booked(self) -> dict[tuple[str, str, str], LedgerRow]:
        """Folded natural key (legal entity, vendor, invoice number) -> ledger row, for every invoice
        we booked — whatever happened to its later Coupa versions."""
        return self.s.ledger.booked_by_natural_key(DOC)

    def _since(self, name: str) -> datetime | None:
        value = self.s.store.get_watermark(name)
        if not value:
            return None
        return datetime.fromisoformat(value.replace("Z", "+00:00")) - self.overlap

    def _rows_since(self, watermark: str, entity_set: str, le: str, counts: dict[str, int], select: list[str],
                    stamp: str = "CreatedOn", since: datetime | None = None,
                    condition: str | None = None) -> list[dict[str, Any]]:
        """Rows of ``entity_set`` stamped (``stamp``) since the watermark minus the overlap."""
        since = self._since(watermark) if since is None else since
        rows = list(self.s.d365.query(entity_set, legal_entity=le,
                                      filter=odata.and_(odata.compare(stamp, "ge", since) if since else None,
                                                        condition) or None,
                                      select=[*select, stamp]))
        counts["rows_read"] += len(rows)
        return rows

    def read(self) -> dict[str, int]:
        booked = self._booked()
        counts = {"posted_new": 0, "settlements_new": 0, "trans_changes_new": 0, "rows_read": 0}
        for le in self.s.mapping.mapped_legal_entities:
            self._read_posted(le, booked, counts)
            self._read_settlements(le, booked, counts)
            self._read_trans_changes(le, booked, counts)
        return counts

    @staticmethod
    def _coupa_id(booked: dict[tuple[str, str, str], LedgerRow], le: str, vendor: Any, number: Any) -> int | None:
        row = booked.get(NaturalKey(le, _text(vendor), _text(number)).folded())
        return row.coupa_id if row is not None else None

    def _read_posted(self, le: str, booked: dict[tuple[str, str, str], LedgerRow], counts: dict[str, int]) -> None:
        name = f"d365.posted.{le}"
        rows = self._rows_since(name, JOURNAL_SET, le, counts,
                                ["InvoiceId", "InvoiceAccount", "LedgerVoucher", "InvoiceAmount", "InvoiceDate"])
        for row in rows:
            coupa_id = self._coupa_id(booked, le, row["InvoiceAccount"], row["InvoiceId"])
            if coupa_id is None:
                continue
            if self.events.record(coupa_id=coupa_id, kind=POSTED, event_key=row["LedgerVoucher"], legal_entity=le,
                                  invoice_number=row["InvoiceId"], amount=_decimal(row["InvoiceAmount"]),
                                  event_date=_text(row.get("InvoiceDate")), reference=row["LedgerVoucher"],
                                  run_id=self.s.run_id):
                counts["posted_new"] += 1
        self._advance(name, rows, "CreatedOn")

    def _invoice_trans(self, le: str, source_key: int) -> dict[str, Any] | None:
        cache_key = (le, int(source_key))
        if cache_key not in self._trans:
            self._trans[cache_key] = self.s.d365.get(TRANS_SET, {"dataAreaId": le, "SourceKey": int(source_key)})
        return self._trans[cache_key]

    def _read_settlements(self, le: str, booked: dict[tuple[str, str, str], LedgerRow],
                          counts: dict[str, int]) -> None:
        name = f"d365.settlements.{le}"
        rows = self._rows_since(name, SETTLEMENT_SET, le, counts,
                                ["SourceKey", "TransRecId", "SettleAmountCur", "TransDate", "OffsetTransVoucher"])
        for row in rows:
            invoice = self._invoice_trans(le, row["TransRecId"])
            if invoice is None or not invoice.get("Invoice"):
                continue   # the payment's side of a settlement, or a VendTrans that is no invoice
            coupa_id = self._coupa_id(booked, le, invoice["AccountNum"], invoice["Invoice"])
            if coupa_id is None:
                continue
            if self.events.record(coupa_id=coupa_id, kind=SETTLEMENT, event_key=str(row["SourceKey"]),
                                  legal_entity=le, invoice_number=invoice["Invoice"],
                                  amount=-_decimal(row["SettleAmountCur"]), event_date=_text(row.get("TransDate")),
                                  reference=_text(row.get("OffsetTransVoucher")), run_id=self.s.run_id):
                counts["settlements_new"] += 1
        self._advance(name, rows, "CreatedOn")

    def _read_trans_changes(self, le: str, booked: dict[tuple[str, str, str], LedgerRow],
                            counts: dict[str, int]) -> None:
        """A changed VendTrans of a booked invoice: the only trace of a reversed settlement."""
        name = f"d365.vendtrans.{le}"
        since = self._since(name)
        if since is None:
            # First read of this source in a deployment whose other status readers already ran (an
            # upgrade): start where they are instead of reading every vendor transaction ever.
            started = [w for w in (self._since(f"d365.posted.{le}"), self._since(f"d365.settlements.{le}")) if w]
            since = min(started) if started else None
        rows = self._rows_since(name, TRANS_SET, le, counts,
                                ["SourceKey", "AccountNum", "Invoice", "TransType", "SettleAmountCur",
                                 "SysRecVersion"], stamp="SysModifiedDateTime", since=since,
                                condition=odata.compare("TransType", "ne", odata.Enum("LedgerTransType", "Payment")))
        with_settlements: set[int] | None = None
        for row in rows:
            if not row.get("Invoice") or row.get("TransType") == "Payment":
                continue
            coupa_id = self._coupa_id(booked, le, row["AccountNum"], row["Invoice"])
            if coupa_id is None:
                continue
            if _decimal(row.get("SettleAmountCur")) == 0:
                # Never settled as far as we know (e.g. just posted): nothing Coupa could hold to correct.
                if with_settlements is None:
                    with_settlements = self.events.invoices_with_settlements()
                if coupa_id not in with_settlements:
                    continue
            key = f"{row['SourceKey']}@{row['SysModifiedDateTime']}#{row.get('SysRecVersion')}"
            if self.events.record(coupa_id=coupa_id, kind=TRANS_CHANGED, event_key=key, legal_entity=le,
                                  invoice_number=row["Invoice"], amount=-_decimal(row.get("SettleAmountCur")),
                                  event_date=_text(row.get("SysModifiedDateTime")), reference=None,
                                  run_id=self.s.run_id):
                counts["trans_changes_new"] += 1
        self._advance(name, rows, "SysModifiedDateTime")

    def _advance(self, name: str, rows: list[dict[str, Any]], stamp: str) -> None:
        stamps = [str(r[stamp]) for r in rows if r.get(stamp) and str(r[stamp]) != EMPTY_DATE]
        if stamps:
            current = self.s.store.get_watermark(name)
            newest = max(stamps)
            if current is None or newest > current:
                self.s.store.set_watermark(name, newest)


# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------


class StatusConflict(Exception):
    """Coupa and D365 disagree in a way the writer must not guess at; the message says what to fix."""


class StatusWriter:
    def __init__(self, services: SyncServices, events: StatusEvents) -> None:
        self.s = services
        self.events = events
        self.d365 = D365SettlementReader(services.d365)

    def write(self) -> SyncReport:
        report = SyncReport()
        for coupa_id in self.events.unpushed_invoice_ids():
            report.add(self._write_invoice(coupa_id))
        return report

    def _write_invoice(self, coupa_id: int) -> Outcome:
        s, run = self.s, self.s.run_id
        events = self.events.for_invoice(coupa_id)
        number = events[0].invoice_number if events else ""
        le = events[0].legal_entity if events else None
        row = s.ledger.claim(DOC, coupa_id, run)
        if row is None:
            return Outcome(STATUS_DOC, coupa_id, "busy", number, le,
                           "another run (document sync or status) holds this invoice; the next status run writes it")
        try:
            return self._write_claimed(row, events)
        except ClaimLostError as exc:
            return Outcome(STATUS_DOC, coupa_id, "busy", number, le, f"{exc}; the next status run finishes it")
        except Exception as exc:  # noqa: BLE001 - one invoice's trouble must not stop the others; the
            # outcome, the audit row and the waiting events (invoice_status_delivered) make it visible
            reason = error_text(exc)
            s.ledger.audit(run_id=run, doc_type=DOC, coupa_id=coupa_id, action="status_write_failed", error=reason)
            return Outcome(STATUS_DOC, coupa_id, "failed", number, le, reason)
        finally:
            s.ledger.release(row, run)   # no-op when the claim was lost

    def _write_claimed(self, row: LedgerRow, events: list[StatusEvent]) -> Outcome:
        s, run = self.s, self.s.run_id
        coupa_id = row.coupa_id
        waiting = [e for e in events if not e.pushed]
        actions: list[str] = []
        for event in (e for e in waiting if e.kind == POSTED):
            row = self._record_posting(row, event)
            fields = s.mapping.coupa_custom_fields
            if fields:  # idempotent PUT (no payments): safe to repeat after a lost answer
                values = {"d365_voucher": event.reference, "d365_invoice_number": event.invoice_number}
                s.coupa.update_invoice(coupa_id, {"custom-fields": {name: values[source]
                                                                    for source, name in fields.items()}})
            message = f"Posted in D365 {event.legal_entity}: invoice {event.invoice_number}, voucher {event.reference}"
            s.notifier.success(DOC, coupa_id, message, code="D365-POSTED",
                               document_status="voided" if row.state == VOID_BLOCKED else "approved",
                               mark_exported=False, may_exist=True)
            self.events.mark_pushed([event.id], run)
            actions.append("posted")
        settlement_events = [e for e in waiting if e.kind != POSTED]
        if settlement_events:
            action = self._reconcile_payments(row, events)
            if action:
                actions.append(action)
            self.events.mark_pushed([e.id for e in settlement_events], run)
        natural = row.natural_key
        return Outcome(STATUS_DOC, coupa_id, "updated" if actions else "already_present",
                       natural.document_number if natural else (events[0].invoice_number if events else ""),
                       row.legal_entity, "; ".join(actions))

    def _record_posting(self, row: LedgerRow, event: StatusEvent) -> LedgerRow:
        """Record the D365 posting on the claimed row: decide on *its* state, not an earlier read."""
        s, run = self.s, self.s.run_id
        key = dict(row.d365_key or {})
        moves = row.state in MOVES_TO_POSTED
        if not moves and key.get("LedgerVoucher") == event.reference:
            return row
        new_key = {**key, "dataAreaId": event.legal_entity, "InvoiceId": event.invoice_number,
                   "LedgerVoucher": event.reference}
        fields: dict[str, Any] = {"d365_key": new_key}
        if moves:
            fields["state"] = POSTED_STATE
            if row.state == MISSING_IN_D365:
                fields["reason"] = None   # it was not missing: AP posted it
        updated = s.ledger.update(row, run, **fields)
        s.ledger.audit(run_id=run, doc_type=DOC, coupa_id=row.coupa_id, action="posted_in_d365", entity=JOURNAL_SET,
                       d365_key={"dataAreaId": event.legal_entity, "LedgerVoucher": event.reference},
                       error=None if moves else f"state {row.state} kept; voucher recorded")
        return updated

    def _reconcile_payments(self, row: LedgerRow, events: list[StatusEvent]) -> str:
        s, run = self.s, self.s.run_id
        coupa_id = row.coupa_id
        natural = row.natural_key
        if natural is None:
            raise StatusConflict(f"ledger row invoice/{coupa_id} has no natural key; re-drive it with "
                                   "replay_invoices_job before its payments can be written")
        voucher = (row.d365_key or {}).get("LedgerVoucher") or self.d365.posted_voucher(natural)
        state = self.d365.current(natural, voucher) if voucher else None
        if state is None:
            return ""   # not posted (any more): nothing is settled
        invoice = s.coupa.get("invoices", coupa_id)
        coupa = [CoupaPayment.parse(p) for p in invoice.get("payments") or []]
        legacy = [e for e in events if e.kind == LEGACY_PAYMENT and e.pushed]
        plan = plan_payments(state, coupa, legacy)
        if plan.problems:
            raise StatusConflict("; ".join(plan.problems))
        paid = state.fully_settled
        notes = describe(state, plan)
        dates = [st.date for st in state.settlements if st.date and st.date != EMPTY_DATE]
        payment_date = max(dates, key=lambda d: _instant(d) or datetime.min) if dates else None
        header_changed = (bool(invoice.get("paid")) != paid or _text(invoice.get("payment-notes")) != notes
                          or _instant(invoice.get("payment-date")) != _instant(payment_date))
        action = ""
        if plan.to_send or header_changed:
            body: dict[str, Any] = {"paid": paid, "payment-date": payment_date, "payment-notes": notes}
            if plan.to_send:
                body["payments"] = plan.to_send
            # Not retried when the answer is lost (AmbiguousWriteError propagates, the events stay waiting):
            # the PUT may have landed, and the next run reads the invoice's payments and adds only what is missing.
            s.coupa.update_invoice(coupa_id, body)
            s.ledger.audit(run_id=run, doc_type=DOC, coupa_id=coupa_id, action="coupa_payments", http_status=200,
                           error=None)
            reversals = sum(1 for p in plan.to_send if "reversed]" in p["notes"])
            action = (f"{len(plan.to_send) - reversals} payments" + (f", {reversals} reversals" if reversals else "")
                      + (", paid" if paid else ", not paid"))
        if plan.reversed:
            self._alert_reversals(coupa_id, natural, plan, "voided" if row.state == VOID_BLOCKED else "approved")
        return action

    def _alert_reversals(self, coupa_id: int, natural: NaturalKey, plan: PaymentPlan, document_status: str) -> None:
        """One alert per reversed settlement (read Coupa first: a re-run or a lost answer adds none)."""
        s = self.s
        existing = [r.get("response-message") or "" for record in s.coupa.iter_records(
            "integration_history_records", {"document-type": "InvoiceHeader", "document-id": coupa_id})
            for r in record.get("responses") or []]
        for settlement_id, (amount, reference) in sorted(plan.reversed.items()):
            marker = settlement_id.marker(reversal=True)
            if any(marker in message for message in existing):
                continue
            s.notifier.alert(DOC, coupa_id, (
                f"D365 {natural.legal_entity} reversed the settlement of payment {reference or '?'} "
                f"({_money(amount)}) on invoice {natural.document_number}: Coupa got an offsetting payment with "
                f"the same settlement id, and paid follows D365 again. Check with AP whether the payment will be "
                f"re-issued, and tell the supplier if they were told it is paid. {marker}"),
                code=REVERSAL_ALERT_CODE, document_status=document_status)
