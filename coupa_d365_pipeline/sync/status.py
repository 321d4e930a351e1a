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

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ..common.http import SystemUnavailableError
from ..d365 import odata
from ..settings import minutes_setting
from ..state.ledger import MISSING_IN_D365, VOID_BLOCKED, WRITING, WRITTEN, ClaimLostError, LedgerRow, NaturalKey
from ..state.ledger import POSTED as POSTED_STATE
from ..state.status import LEGACY_PAYMENT, POSTED, SETTLEMENT, TRANS_CHANGED, StatusEvent, StatusEvents
from .context import SyncServices, error_text
from .report import Action, Outcome, SyncReport
from .settlements import (
    JOURNAL_SET,
    SETTLEMENT_SET,
    TRANS_SET,
    CoupaPayment,
    D365SettlementReader,
    PaymentPlan,
    decimal_of,
    describe,
    instant_of,
    money_text,
    plan_payments,
    text_of,
)

READ_OVERLAP_ENV = "STATUS_READ_OVERLAP_MINUTES"
# Long enough for a large AP batch posting (thousands of invoices) to commit; re-reading costs a
# few extra rows per run, and the unique event keys keep it from doing anything twice.
DEFAULT_READ_OVERLAP = timedelta(hours=4)
EMPTY_DATE = "1900-01-01T12:00:00Z"
DOC = "invoice"
STATUS_DOC = "invoice_status"
REVERSAL_ALERT_CODE = "D365-PAYMENT-REVERSED"
# ledger states that a D365 posting moves to ``posted``; every other state is kept
MOVES_TO_POSTED = (WRITTEN, MISSING_IN_D365, WRITING)


def read_overlap(environ: Mapping[str, str] | None = None) -> timedelta:
    """How far before each watermark the readers start again (``STATUS_READ_OVERLAP_MINUTES``)."""
    return minutes_setting(
        READ_OVERLAP_ENV,
        DEFAULT_READ_OVERLAP,
        "set it to at least the duration of the longest D365 posting batch",
        environ,
    )


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

    def _rows_since(
        self,
        watermark: str,
        entity_set: str,
        le: str,
        counts: dict[str, int],
        select: list[str],
        stamp: str = "CreatedOn",
        since: datetime | None = None,
        condition: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of ``entity_set`` stamped (``stamp``) since the watermark minus the overlap."""
        since = self._since(watermark) if since is None else since
        rows = list(
            self.s.d365.query(
                entity_set,
                legal_entity=le,
                filter=odata.and_(odata.compare(stamp, "ge", since) if since else None, condition) or None,
                select=[*select, stamp],
            )
        )
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
        row = booked.get(NaturalKey(le, text_of(vendor), text_of(number)).folded())
        return row.coupa_id if row is not None else None

    def _read_posted(self, le: str, booked: dict[tuple[str, str, str], LedgerRow], counts: dict[str, int]) -> None:
        name = f"d365.posted.{le}"
        rows = self._rows_since(
            name,
            JOURNAL_SET,
            le,
            counts,
            ["InvoiceId", "InvoiceAccount", "LedgerVoucher", "InvoiceAmount", "InvoiceDate"],
        )
        for row in rows:
            coupa_id = self._coupa_id(booked, le, row["InvoiceAccount"], row["InvoiceId"])
            if coupa_id is None:
                continue
            if self.events.record(
                coupa_id=coupa_id,
                kind=POSTED,
                event_key=row["LedgerVoucher"],
                legal_entity=le,
                invoice_number=row["InvoiceId"],
                amount=decimal_of(row["InvoiceAmount"]),
                event_date=text_of(row.get("InvoiceDate")),
                reference=row["LedgerVoucher"],
                run_id=self.s.run_id,
            ):
                counts["posted_new"] += 1
        self._advance(name, rows, "CreatedOn")

    def _invoice_trans(self, le: str, source_key: int) -> dict[str, Any] | None:
        cache_key = (le, int(source_key))
        if cache_key not in self._trans:
            self._trans[cache_key] = self.s.d365.get(TRANS_SET, {"dataAreaId": le, "SourceKey": int(source_key)})
        return self._trans[cache_key]

    def _read_settlements(self, le: str, booked: dict[tuple[str, str, str], LedgerRow], counts: dict[str, int]) -> None:
        name = f"d365.settlements.{le}"
        rows = self._rows_since(
            name,
            SETTLEMENT_SET,
            le,
            counts,
            ["SourceKey", "TransRecId", "SettleAmountCur", "TransDate", "OffsetTransVoucher"],
        )
        for row in rows:
            invoice = self._invoice_trans(le, row["TransRecId"])
            if invoice is None or not invoice.get("Invoice"):
                continue  # the payment's side of a settlement, or a VendTrans that is no invoice
            coupa_id = self._coupa_id(booked, le, invoice["AccountNum"], invoice["Invoice"])
            if coupa_id is None:
                continue
            if self.events.record(
                coupa_id=coupa_id,
                kind=SETTLEMENT,
                event_key=str(row["SourceKey"]),
                legal_entity=le,
                invoice_number=invoice["Invoice"],
                amount=-decimal_of(row["SettleAmountCur"]),
                event_date=text_of(row.get("TransDate")),
                reference=text_of(row.get("OffsetTransVoucher")),
                run_id=self.s.run_id,
            ):
                counts["settlements_new"] += 1
        self._advance(name, rows, "CreatedOn")

    def _read_trans_changes(
        self, le: str, booked: dict[tuple[str, str, str], LedgerRow], counts: dict[str, int]
    ) -> None:
        """A changed VendTrans of a booked invoice: the only trace of a reversed settlement."""
        name = f"d365.vendtrans.{le}"
        since = self._since(name)
        if since is None:
            # First read of this source in a deployment whose other status readers already ran (an
            # upgrade): start where they are instead of reading every vendor transaction ever.
            started = [w for w in (self._since(f"d365.posted.{le}"), self._since(f"d365.settlements.{le}")) if w]
            since = min(started) if started else None
        rows = self._rows_since(
            name,
            TRANS_SET,
            le,
            counts,
            ["SourceKey", "AccountNum", "Invoice", "TransType", "SettleAmountCur", "SysRecVersion"],
            stamp="SysModifiedDateTime",
            since=since,
            condition=odata.compare("TransType", "ne", odata.Enum("LedgerTransType", "Payment")),
        )
        with_settlements: set[int] | None = None
        for row in rows:
            if not row.get("Invoice") or row.get("TransType") == "Payment":
                continue
            coupa_id = self._coupa_id(booked, le, row["AccountNum"], row["Invoice"])
            if coupa_id is None:
                continue
            if decimal_of(row.get("SettleAmountCur")) == 0:
                # Never settled as far as we know (e.g. just posted): nothing Coupa could hold to correct.
                if with_settlements is None:
                    with_settlements = self.events.invoices_with_settlements()
                if coupa_id not in with_settlements:
                    continue
            key = f"{row['SourceKey']}@{row['SysModifiedDateTime']}#{row.get('SysRecVersion')}"
            if self.events.record(
                coupa_id=coupa_id,
                kind=TRANS_CHANGED,
                event_key=key,
                legal_entity=le,
                invoice_number=row["Invoice"],
                amount=-decimal_of(row.get("SettleAmountCur")),
                event_date=text_of(row.get("SysModifiedDateTime")),
                reference=None,
                run_id=self.s.run_id,
            ):
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
            return Outcome(
                STATUS_DOC,
                coupa_id,
                Action.BUSY,
                number,
                le,
                "another run (document sync or status) holds this invoice; the next status run writes it",
            )
        try:
            return self._write_claimed(row, events)
        except ClaimLostError as exc:
            return Outcome(STATUS_DOC, coupa_id, Action.BUSY, number, le, f"{exc}; the next status run finishes it")
        except SystemUnavailableError:  # not this invoice's fault: its events wait for the next run
            raise
        except Exception as exc:  # noqa: BLE001 - one invoice's trouble must not stop the others; the
            # outcome, the audit row and the waiting events (invoice_status_delivered) make it visible
            reason = error_text(exc)
            s.ledger.audit(run_id=run, doc_type=DOC, coupa_id=coupa_id, action="status_write_failed", error=reason)
            return Outcome(STATUS_DOC, coupa_id, Action.FAILED, number, le, reason)
        finally:
            s.ledger.release(row, run)  # no-op when the claim was lost

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
                s.coupa.update_invoice(
                    coupa_id, {"custom-fields": {name: values[source] for source, name in fields.items()}}
                )
            message = f"Posted in D365 {event.legal_entity}: invoice {event.invoice_number}, voucher {event.reference}"
            s.notifier.success(
                DOC,
                coupa_id,
                message,
                code="D365-POSTED",
                document_status="voided" if row.state == VOID_BLOCKED else "approved",
                mark_exported=False,
                may_exist=True,
            )
            self.events.mark_pushed([event.id], run)
            actions.append("posted")
        settlement_events = [e for e in waiting if e.kind != POSTED]
        if settlement_events:
            action = self._reconcile_payments(row, events)
            if action:
                actions.append(action)
            self.events.mark_pushed([e.id for e in settlement_events], run)
        natural = row.natural_key
        return Outcome(
            STATUS_DOC,
            coupa_id,
            Action.UPDATED if actions else Action.ALREADY_PRESENT,
            natural.document_number if natural else (events[0].invoice_number if events else ""),
            row.legal_entity,
            "; ".join(actions),
        )

    def _record_posting(self, row: LedgerRow, event: StatusEvent) -> LedgerRow:
        """Record the D365 posting on the claimed row: decide on *its* state, not an earlier read."""
        s, run = self.s, self.s.run_id
        key = dict(row.d365_key or {})
        moves = row.state in MOVES_TO_POSTED
        if not moves and key.get("LedgerVoucher") == event.reference:
            return row
        new_key = {
            **key,
            "dataAreaId": event.legal_entity,
            "InvoiceId": event.invoice_number,
            "LedgerVoucher": event.reference,
        }
        fields: dict[str, Any] = {"d365_key": new_key}
        if moves:
            fields["state"] = POSTED_STATE
            if row.state == MISSING_IN_D365:
                fields["reason"] = None  # it was not missing: AP posted it
        updated = s.ledger.update(row, run, **fields)
        s.ledger.audit(
            run_id=run,
            doc_type=DOC,
            coupa_id=row.coupa_id,
            action="posted_in_d365",
            entity=JOURNAL_SET,
            d365_key={"dataAreaId": event.legal_entity, "LedgerVoucher": event.reference},
            error=None if moves else f"state {row.state} kept; voucher recorded",
        )
        return updated

    def _reconcile_payments(self, row: LedgerRow, events: list[StatusEvent]) -> str:
        s, run = self.s, self.s.run_id
        coupa_id = row.coupa_id
        natural = row.natural_key
        if natural is None:
            raise StatusConflict(
                f"ledger row invoice/{coupa_id} has no natural key; re-drive it with "
                "replay_invoices_job before its payments can be written"
            )
        voucher = (row.d365_key or {}).get("LedgerVoucher") or self.d365.posted_voucher(natural)
        state = self.d365.current(natural, voucher) if voucher else None
        if state is None:
            return ""  # not posted (any more): nothing is settled
        invoice = s.coupa.get("invoices", coupa_id)
        coupa = [CoupaPayment.parse(p) for p in invoice.get("payments") or []]
        legacy = [e for e in events if e.kind == LEGACY_PAYMENT and e.pushed]
        plan = plan_payments(state, coupa, legacy)
        if plan.problems:
            raise StatusConflict("; ".join(plan.problems))
        paid = state.fully_settled
        notes = describe(state, plan)
        dates = [st.date for st in state.settlements if st.date and st.date != EMPTY_DATE]
        payment_date = max(dates, key=lambda d: instant_of(d) or datetime.min) if dates else None
        header_changed = (
            bool(invoice.get("paid")) != paid
            or text_of(invoice.get("payment-notes")) != notes
            or instant_of(invoice.get("payment-date")) != instant_of(payment_date)
        )
        action = ""
        if plan.to_send or header_changed:
            body: dict[str, Any] = {"paid": paid, "payment-date": payment_date, "payment-notes": notes}
            if plan.to_send:
                body["payments"] = plan.to_send
            # Not retried when the answer is lost (AmbiguousWriteError propagates, the events stay waiting):
            # the PUT may have landed, and the next run reads the invoice's payments and adds only what is missing.
            s.coupa.update_invoice(coupa_id, body)
            s.ledger.audit(
                run_id=run, doc_type=DOC, coupa_id=coupa_id, action="coupa_payments", http_status=200, error=None
            )
            reversals = sum(1 for p in plan.to_send if "reversed]" in p["notes"])
            action = (
                f"{len(plan.to_send) - reversals} payments"
                + (f", {reversals} reversals" if reversals else "")
                + (", paid" if paid else ", not paid")
            )
        if plan.reversed:
            self._alert_reversals(coupa_id, natural, plan, "voided" if row.state == VOID_BLOCKED else "approved")
        return action

    def _alert_reversals(self, coupa_id: int, natural: NaturalKey, plan: PaymentPlan, document_status: str) -> None:
        """One alert per reversed settlement (read Coupa first: a re-run or a lost answer adds none)."""
        s = self.s
        existing = [
            r.get("response-message") or ""
            for record in s.coupa.iter_records(
                "integration_history_records", {"document-type": "InvoiceHeader", "document-id": coupa_id}
            )
            for r in record.get("responses") or []
        ]
        for settlement_id, (amount, reference) in sorted(plan.reversed.items()):
            marker = settlement_id.marker(reversal=True)
            if any(marker in message for message in existing):
                continue
            s.notifier.alert(
                DOC,
                coupa_id,
                (
                    f"D365 {natural.legal_entity} reversed the settlement of payment {reference or '?'} "
                    f"({money_text(amount)}) on invoice {natural.document_number}: Coupa got "
                    f"an offsetting payment with "
                    f"the same settlement id, and paid follows D365 again. Check with AP whether the payment will be "
                    f"re-issued, and tell the supplier if they were told it is paid. {marker}"
                ),
                code=REVERSAL_ALERT_CODE,
                document_status=document_status,
            )
