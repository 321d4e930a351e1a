"""Posted-invoice and payment status: D365 -> events -> Coupa. Never any general-ledger data.

Reading (``StatusReader``), per legal entity and incremental on ``CreatedOn`` (watermark in the
sync database, re-read with overlap; the unique event key makes the overlap harmless):
- ``VendInvoiceJourBiEntities`` -> a *posted* event for every invoice our ledger booked
  (natural key legal entity | vendor | invoice number); the ledger row turns ``posted``;
- ``VendSettlementBiEntities`` -> a *payment* event per settlement of such an invoice (partial
  payments are separate events); the invoice's ``VendTransBiEntities`` row links the settlement to
  the invoice, the payment's ``VendTransBiEntities`` row gives the payment reference.

Writing (``StatusWriter``), per Coupa invoice with events not yet in Coupa:
- posted: one Success integration history record with the D365 invoice number and voucher;
- paid: ``PUT /api/invoices/{id}`` with ``paid`` (true only when the settlements cover the invoice),
  ``payment-date``, ``payment-notes`` and only the payments Coupa does not have yet — the invoice's
  current payments are read first, so no payment is ever added twice, even after a lost answer.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from ..common.http import HTTPClientError
from ..d365 import odata
from ..state.ledger import POSTED as POSTED_STATE
from ..state.ledger import WRITTEN, NaturalKey
from ..state.status import PAYMENT, POSTED, StatusEvents
from .context import SyncServices, error_text
from .report import Outcome, SyncReport

OVERLAP = timedelta(minutes=10)  # re-read this much before the watermark: late commits are not missed
EMPTY_DATE = "1900-01-01T12:00:00Z"


def _iso(value: Any) -> str:
    return str(value or "")


class StatusReader:
    def __init__(self, services: SyncServices, events: StatusEvents) -> None:
        self.s = services
        self.events = events
        self._trans: dict[tuple[str, int], dict[str, Any] | None] = {}

    def _booked(self) -> dict[tuple[str, str, str], int]:
        """Folded natural key (legal entity, vendor, invoice number) -> Coupa invoice id, for every
        invoice we booked — whatever happened to its later Coupa versions."""
        return {key: row.coupa_id for key, row in self.s.ledger.booked_by_natural_key("invoice").items()}

    def _since(self, name: str) -> datetime | None:
        value = self.s.store.get_watermark(name)
        if not value:
            return None
        return datetime.fromisoformat(value.replace("Z", "+00:00")) - OVERLAP

    def _rows_since(self, watermark: str, entity_set: str, le: str, counts: dict[str, int],
                    select: list[str]) -> list[dict[str, Any]]:
        """Rows of ``entity_set`` created since the watermark (minus the overlap), with ``CreatedOn``."""
        since = self._since(watermark)
        rows = list(self.s.d365.query(entity_set, legal_entity=le,
                                      filter=odata.compare("CreatedOn", "ge", since) if since else None,
                                      select=[*select, "CreatedOn"]))
        counts["rows_read"] += len(rows)
        return rows

    def read(self) -> dict[str, int]:
        booked = self._booked()
        counts = {"posted_new": 0, "payments_new": 0, "rows_read": 0}
        for le in self.s.mapping.mapped_legal_entities:
            self._read_posted(le, booked, counts)
            self._read_settlements(le, booked, counts)
        return counts

    def _read_posted(self, le: str, booked: dict[str, int], counts: dict[str, int]) -> None:
        name = f"d365.posted.{le}"
        rows = self._rows_since(name, "VendInvoiceJourBiEntities", le, counts,
                                ["InvoiceId", "InvoiceAccount", "LedgerVoucher", "InvoiceAmount", "InvoiceDate"])
        for row in rows:
            coupa_id = booked.get(NaturalKey(le, str(row["InvoiceAccount"]), str(row["InvoiceId"])).folded())
            if coupa_id is None:
                continue
            if self.events.record(coupa_id=coupa_id, kind=POSTED, event_key=row["LedgerVoucher"], legal_entity=le,
                                  invoice_number=row["InvoiceId"], amount=abs(Decimal(str(row["InvoiceAmount"]))),
                                  event_date=_iso(row.get("InvoiceDate")), reference=row["LedgerVoucher"],
                                  run_id=self.s.run_id):
                counts["posted_new"] += 1
            self._mark_ledger_posted(coupa_id, le, row)
        self._advance(name, rows)

    def _mark_ledger_posted(self, coupa_id: int, le: str, row: dict[str, Any]) -> None:
        ledger, run = self.s.ledger, self.s.run_id
        current = ledger.get("invoice", coupa_id)
        if current is None or current.state != WRITTEN:
            return
        claimed = ledger.claim("invoice", coupa_id, run)
        if claimed is None:
            return  # a sync run holds it; the next status run marks it
        ledger.update(claimed, run, release=True, state=POSTED_STATE,
                      d365_key={"dataAreaId": le, "InvoiceId": row["InvoiceId"], "LedgerVoucher": row["LedgerVoucher"],
                                "HeaderReference": (current.d365_key or {}).get("HeaderReference")})
        ledger.audit(run_id=run, doc_type="invoice", coupa_id=coupa_id, action="posted_in_d365",
                     entity="VendInvoiceJourBiEntities", d365_key={"dataAreaId": le, "LedgerVoucher": row["LedgerVoucher"]})

    def _invoice_trans(self, le: str, source_key: int) -> dict[str, Any] | None:
        cache_key = (le, int(source_key))
        if cache_key not in self._trans:
            self._trans[cache_key] = self.s.d365.get("VendTransBiEntities", {"dataAreaId": le, "SourceKey": int(source_key)})
        return self._trans[cache_key]

    def _read_settlements(self, le: str, booked: dict[str, int], counts: dict[str, int]) -> None:
        name = f"d365.settlements.{le}"
        rows = self._rows_since(name, "VendSettlementBiEntities", le, counts,
                                ["SourceKey", "TransRecId", "SettleAmountCur", "TransDate", "OffsetTransVoucher"])
        for row in rows:
            invoice = self._invoice_trans(le, row["TransRecId"])
            if invoice is None or not invoice.get("Invoice"):
                continue
            coupa_id = booked.get(NaturalKey(le, str(invoice["AccountNum"]), str(invoice["Invoice"])).folded())
            if coupa_id is None:
                continue
            payments = list(self.s.d365.query("VendTransBiEntities", legal_entity=le,
                                              filter=odata.eq("Voucher", row["OffsetTransVoucher"]),
                                              select=["Voucher", "PaymReference", "TransDate"], top=1))
            reference = (payments[0].get("PaymReference") if payments else None) or row["OffsetTransVoucher"]
            if self.events.record(coupa_id=coupa_id, kind=PAYMENT, event_key=str(row["SourceKey"]), legal_entity=le,
                                  invoice_number=invoice["Invoice"], amount=abs(Decimal(str(row["SettleAmountCur"]))),
                                  event_date=_iso(row.get("TransDate")), reference=reference, run_id=self.s.run_id):
                counts["payments_new"] += 1
        self._advance(name, rows)

    def _advance(self, name: str, rows: list[dict[str, Any]]) -> None:
        stamps = [str(r["CreatedOn"]) for r in rows if r.get("CreatedOn") and str(r["CreatedOn"]) != EMPTY_DATE]
        if stamps:
            current = self.s.store.get_watermark(name)
            newest = max(stamps)
            if current is None or newest > current:
                self.s.store.set_watermark(name, newest)


class StatusWriter:
    def __init__(self, services: SyncServices, events: StatusEvents) -> None:
        self.s = services
        self.events = events

    def write(self) -> SyncReport:
        report = SyncReport()
        for coupa_id in self.events.unpushed_invoice_ids():
            try:
                report.add(self._write_invoice(coupa_id))
            except HTTPClientError as exc:
                reason = error_text(exc)
                self.s.ledger.audit(run_id=self.s.run_id, doc_type="invoice", coupa_id=coupa_id,
                                    action="status_write_failed", error=reason)
                report.add(Outcome("invoice_status", coupa_id, "failed", "", None, reason))
        return report

    def _write_invoice(self, coupa_id: int) -> Outcome:
        s, run = self.s, self.s.run_id
        events = self.events.for_invoice(coupa_id)
        waiting = [e for e in events if not e.pushed]
        posted = [e for e in events if e.kind == POSTED]
        payments = [e for e in events if e.kind == PAYMENT]
        actions: list[str] = []
        for event in (e for e in waiting if e.kind == POSTED):
            fields = s.mapping.coupa_custom_fields
            if fields:  # idempotent PUT (no payments): safe to repeat after a lost answer
                values = {"d365_voucher": event.reference, "d365_invoice_number": event.invoice_number}
                s.coupa.update_invoice(coupa_id, {"custom-fields": {name: values[source]
                                                                    for source, name in fields.items()}})
            message = f"Posted in D365 {event.legal_entity}: invoice {event.invoice_number}, voucher {event.reference}"
            s.notifier.success("invoice", coupa_id, message, code="D365-POSTED", document_status="approved",
                               mark_exported=False, may_exist=True)
            self.events.mark_pushed([event.id], run)
            actions.append("posted")
        waiting_payments = [e for e in waiting if e.kind == PAYMENT]
        if waiting_payments:
            invoice = s.coupa.get("invoices", coupa_id)
            present = {self._payment_key(p.get("amount-paid"), p.get("payment-date"), p.get("notes") or p.get("check-number"))
                       for p in invoice.get("payments") or []}
            new = [e for e in waiting_payments if self._payment_key(e.amount, e.event_date, e.reference) not in present]
            paid_total = sum((Decimal(e.amount) for e in payments), Decimal(0))
            invoice_total = Decimal(posted[0].amount) if posted else None
            fully_paid = invoice_total is not None and paid_total >= invoice_total
            if new or bool(invoice.get("paid")) != fully_paid:
                latest = max((e.event_date or "" for e in payments), default="")
                body = {"paid": fully_paid, "payment-date": latest,
                        "payment-notes": f"D365 {payments[0].legal_entity}: {len(payments)} payment(s), "
                                         f"{paid_total} settled" + (" - fully paid" if fully_paid else ""),
                        "payments": [{"amount-paid": str(Decimal(e.amount).quantize(Decimal('0.01'))),
                                      "notes": e.reference, "payment-date": e.event_date} for e in new]}
                # Not retried when the answer is lost (AmbiguousWriteError propagates, the events stay unpushed):
                # the PUT may have landed, and the next run reads the invoice's payments and adds only what is missing.
                s.coupa.update_invoice(coupa_id, body)
                s.ledger.audit(run_id=run, doc_type="invoice", coupa_id=coupa_id, action="coupa_payments",
                               error=None, http_status=200)
                actions.append(f"{len(new)} payments" + (", paid" if fully_paid else ""))
            self.events.mark_pushed([e.id for e in waiting_payments], run)
        return Outcome("invoice_status", coupa_id, "updated" if actions else "already_present",
                       events[0].invoice_number if events else "", events[0].legal_entity if events else None,
                       "; ".join(actions))

    @staticmethod
    def _payment_key(amount: Any, date: Any, reference: Any) -> tuple[str, str, str]:
        try:
            amount_text = str(Decimal(str(amount)).quantize(Decimal("0.01")))
        except Exception:  # noqa: BLE001 - keep unparsable values comparable as text
            amount_text = str(amount)
        return amount_text, str(date or "")[:10], str(reference or "").strip()
