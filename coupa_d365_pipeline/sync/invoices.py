"""Approved Coupa invoices -> D365 pending vendor invoices, exactly once.

Per invoice (``InvoiceSync.sync``):
1. claim the ledger row atomically (another run holding it -> "busy", it will be picked up later);
2. unchanged since we last booked it -> nothing to do, no D365 call;
3. map it (pure function); unmappable -> quarantined with the reasons, Coupa alerted once per reason;
4. make sure the vendor exists in the invoice's legal entity;
5. look the natural key up in D365 — pending ``VendorInvoiceHeaders`` (InvoiceNumber +
   InvoiceAccount) and posted ``VendInvoiceJourBiEntities`` (InvoiceId + InvoiceAccount): found and
   ours (``sync/adoption.py``) -> adopt it (completing missing lines of a half-written invoice)
   instead of creating a second one; found and not ours -> quarantined as a duplicate invoice number;
6. record the HeaderReference we are about to use, then write header + lines in one changeset;
   an ambiguous failure (timeout, dropped connection) is settled by the same lookup;
7. tell Coupa (export flag + Success history record with the HeaderReference).

Posted invoices are never PATCHed or DELETEd: a Coupa change or void after posting is recorded as
``changed_after_post`` / ``void_blocked_posted`` and reported.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ..mapping.fields import changed_fields
from ..mapping.invoices import MappedInvoice, Quarantine, legal_entity_for, map_invoice
from ..state.ledger import (
    CHANGED_AFTER_POST,
    MISSING_IN_D365,
    POSTED,
    VOID_BLOCKED,
    VOIDED,
    WRITING,
    WRITTEN,
    LedgerRow,
    NaturalKey,
)
from ..state.store import payload_hash
from .adoption import Verdict
from .base import Created, DocumentSync
from .context import SyncServices
from .invoice_lookups import (  # noqa: F401 - re-exported: tests and callers read them here
    DOC,
    HEADER_SET,
    HEADER_UPDATE_FIELDS,
    LINE_COMPARE_FIELDS,
    LINE_SET,
    POSTED_SET,
    InvoiceLookups,
    header_reference,
)
from .report import Action, Outcome
from .vendors import VendorSync
from .writer import DocumentWriter, ODataBatchWriter


class InvoiceSync(DocumentSync):
    DOC = DOC
    NUMBER_FIELD = "invoice-number"
    HEADER_SET = HEADER_SET

    def __init__(
        self,
        services: SyncServices,
        vendors: VendorSync | None = None,
        writer: DocumentWriter | None = None,
        *,
        rebook_missing: bool = False,
    ) -> None:
        super().__init__(services, vendors, writer)
        self.rebook_missing = rebook_missing  # operator's explicit "book it again" for missing_in_d365
        self.lookups = InvoiceLookups(services)

    def _default_writer(self) -> DocumentWriter:
        return ODataBatchWriter(self.s.d365, HEADER_SET, LINE_SET)

    # -- the flow ----------------------------------------------------------------------------
    def _sync_claimed(self, row: LedgerRow, document: dict[str, Any]) -> Outcome:
        invoice = document
        s, run = self.s, self.s.run_id
        coupa_id = int(invoice["id"])
        number = str(invoice.get("invoice-number") or "")
        coupa_hash = self.content_hash(invoice)
        status = invoice.get("status")
        if status == "voided":
            return self._void(row, invoice, coupa_hash)
        if status != "approved":
            s.ledger.release(row, run)
            return Outcome(DOC, coupa_id, Action.SKIPPED, number, row.legal_entity, f"Coupa status {status}")
        if row.state in (WRITTEN, POSTED) and row.coupa_hash == coupa_hash and not row.problem:
            if not row.coupa_notified:
                self._notify_booked(row, invoice)
            else:
                s.ledger.release(row, run)
            return Outcome(DOC, coupa_id, Action.ALREADY_PRESENT, number, row.legal_entity)
        if row.state in (POSTED, CHANGED_AFTER_POST, VOID_BLOCKED):
            return self._changed_after_post(row, invoice, coupa_hash)
        if row.state == MISSING_IN_D365 and not self.rebook_missing:
            return self._missing(row, invoice, coupa_hash)

        supplier = self._supplier(invoice)
        mapped = map_invoice(invoice, s.mapping, s.master, supplier=supplier)
        if isinstance(mapped, Quarantine):
            return self._quarantine(row, invoice, "; ".join(mapped.reasons), coupa_hash)
        assert supplier is not None  # map_invoice quarantines invoices without a usable supplier
        stopped = self._ensure_vendor(row, invoice, supplier, mapped.legal_entity, mapped.vendor_account, coupa_hash)
        if stopped is not None:
            return stopped
        self.lookups.link_purchase_orders(mapped)

        if row.d365_key and row.state in (WRITING, WRITTEN, MISSING_IN_D365):
            return self._reconcile_booked(row, invoice, mapped, coupa_hash)
        return self._create(row, invoice, mapped, coupa_hash)

    def _reconcile_booked(
        self, row: LedgerRow, invoice: dict[str, Any], mapped: MappedInvoice, coupa_hash: str
    ) -> Outcome:
        """A document the ledger says we booked (or started to): the ledger's D365 key and stored
        natural key are the authority — never a fresh natural-key lookup alone, because the Coupa
        invoice number, supplier number or chart mapping may have changed since."""
        s, run = self.s, self.s.run_id
        key = dict(row.d365_key or {})
        le, ref = key.get("dataAreaId"), key.get("HeaderReference")
        current = s.d365.get(HEADER_SET, {"dataAreaId": le, "HeaderReference": ref}) if le and ref else None
        if current is not None:
            return self._update_pending(row, invoice, mapped, coupa_hash, current)
        posted = self.lookups.posted_for_row(row, mapped)
        if posted is not None:
            row = s.ledger.update(
                row,
                run,
                state=POSTED,
                problem=None,
                natural_key=posted[0],
                d365_key=self._posted_key(posted[0], posted[1], ref),
            )
            self._audit(int(invoice["id"]), "found_posted", POSTED_SET, row.d365_key)
            if row.coupa_hash == coupa_hash:  # the interrupted write landed and AP posted it since
                self._notify_booked(row, invoice)
                return Outcome(
                    DOC,
                    int(invoice["id"]),
                    Action.ALREADY_PRESENT,
                    mapped.invoice_number,
                    row.legal_entity,
                    "already posted in D365",
                )
            return self._changed_after_post(row, invoice, coupa_hash)
        if row.state == WRITING or self.rebook_missing:
            # the write never landed (or the operator asked to book it again): create, after lookups
            return self._create(row, invoice, mapped, coupa_hash)
        return self._missing(row, invoice, coupa_hash)

    def _missing(self, row: LedgerRow, invoice: dict[str, Any], coupa_hash: str) -> Outcome:
        coupa_id = int(invoice["id"])
        key = row.d365_key or {}
        natural = row.natural_key
        reason = (
            f"the pending invoice {key.get('HeaderReference')} we booked in D365 {key.get('dataAreaId')} is gone "
            f"and no posted invoice {natural.document_number if natural else '?'} of vendor "
            f"{natural.vendor_account if natural else '?'} exists; if an AP user deleted it on purpose nothing "
            "is needed, otherwise re-drive it with replay_invoices_job (coupa_ids: ["
            + str(coupa_id)
            + "], rebook_missing: true)"
        )
        if row.state != MISSING_IN_D365:
            self._audit(coupa_id, "missing_in_d365", HEADER_SET, key, error=reason)
        return self._settle_with_alert(row, invoice, MISSING_IN_D365, reason, row.legal_entity)

    @staticmethod
    def _posted_key(natural: NaturalKey, posted: dict[str, Any], ref: str | None) -> dict[str, Any]:
        key = {
            "dataAreaId": natural.legal_entity,
            "InvoiceId": natural.document_number,
            "LedgerVoucher": posted.get("LedgerVoucher"),
        }
        if ref:
            key["HeaderReference"] = ref
        return key

    def _create(self, row: LedgerRow, invoice: dict[str, Any], mapped: MappedInvoice, coupa_hash: str) -> Outcome:
        s, run = self.s, self.s.run_id
        coupa_id = int(invoice["id"])
        le, number = mapped.legal_entity, mapped.invoice_number
        natural = NaturalKey(le, mapped.vendor_account, number)
        row = s.ledger.update(row, run, natural_key=natural)

        posted = self.lookups.posted(natural)
        if posted is not None:
            verdict = self.lookups.judge(row, mapped, coupa_id, posted, posted=True)
            if not verdict.adoptable:
                return self._duplicate(row, invoice, verdict, coupa_hash, le)
            self._audit(coupa_id, "found_posted", POSTED_SET, {"dataAreaId": le, "InvoiceId": number})
            row = s.ledger.update(
                row,
                run,
                state=POSTED,
                coupa_hash=coupa_hash,
                reason=None,
                problem=None,
                d365_key=self._posted_key(natural, posted, None),
            )
            self._notify_booked(row, invoice)
            return Outcome(DOC, coupa_id, Action.ALREADY_PRESENT, number, le, "already posted in D365")

        # Our own HeaderReference needs no lookup here: an earlier write of ours that landed is either
        # known to the ledger (reconciled above) or makes the create below answer "already exists".
        ref = header_reference(coupa_id)
        pending, verdict = self.lookups.pending(row, mapped, coupa_id)
        if verdict is not None and not verdict.adoptable:
            return self._duplicate(row, invoice, verdict, coupa_hash, le)
        if pending is not None:  # an earlier write of ours, or keyed by hand exactly as we would send it
            adopted = str(pending["HeaderReference"])
            row = s.ledger.update(row, run, state=WRITTEN, d365_key={"dataAreaId": le, "HeaderReference": adopted})
            self._audit(coupa_id, "adopt", HEADER_SET, row.d365_key)
            return self._update_pending(row, invoice, mapped, coupa_hash, pending, adopted=True)

        key = {"dataAreaId": le, "HeaderReference": ref}
        header, lines = self._bodies(mapped, ref)
        row = s.ledger.update(row, run, state=WRITING, d365_key=key)  # intent first: a crash now is recoverable
        attempt = self._create_document(coupa_id, key, header, lines)
        if attempt.result == Created.REJECTED:
            error = attempt.error
            return self._fail(
                row, invoice, le, f"D365 rejected the invoice: {error.detail if error else 'unknown error'}"
            )
        if attempt.result == Created.EXISTS:
            # our HeaderReference is already taken: an earlier or concurrent write of ours landed
            # (perhaps header only) — adopt it and bring it in line, never a second invoice
            assert attempt.existing is not None
            return self._update_pending(row, invoice, mapped, coupa_hash, attempt.existing, adopted=True)
        if attempt.result == Created.LANDED:  # the changeset is all-or-nothing: the lines landed with it
            self._audit(coupa_id, "create", HEADER_SET, key, 201, payload_sha256=attempt.digest)
        row = s.ledger.update(
            row,
            run,
            state=WRITTEN,
            coupa_hash=coupa_hash,
            payload_hash=attempt.digest,
            reason=None,
            problem=None,
            attempts=row.attempts + 1,
        )
        self._notify_booked(row, invoice)
        return Outcome(DOC, coupa_id, Action.CREATED, number, le, ref)

    def _bodies(self, mapped: MappedInvoice, ref: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        header = dict(mapped.header, HeaderReference=ref)
        lines = [dict(line, HeaderReference=ref) for line in mapped.lines]
        return header, lines

    def _duplicate(
        self, row: LedgerRow, invoice: dict[str, Any], verdict: Verdict, coupa_hash: str, le: str
    ) -> Outcome:
        self._audit(int(invoice["id"]), "duplicate_invoice_number", HEADER_SET, error=verdict.reason)
        return self._quarantine(row, invoice, verdict.reason, coupa_hash, legal_entity=le)

    # -- changes, voids, failures ------------------------------------------------------------
    def _update_pending(
        self,
        row: LedgerRow,
        invoice: dict[str, Any],
        mapped: MappedInvoice,
        coupa_hash: str,
        current: dict[str, Any],
        *,
        adopted: bool = False,
    ) -> Outcome:
        """Bring the pending D365 invoice in line with the Coupa version: changed header fields
        PATCHed, lines added/changed/removed. The ledger's natural key follows the PATCH."""
        s, run = self.s, self.s.run_id
        coupa_id = int(invoice["id"])
        key = dict(row.d365_key or {})
        le, ref = key["dataAreaId"], key["HeaderReference"]
        header, lines = self._bodies(mapped, ref)
        header_key = {"dataAreaId": le, "HeaderReference": ref}
        header_changes = changed_fields(current, header, HEADER_UPDATE_FIELDS)
        if le.casefold() != mapped.legal_entity.casefold():
            reason = (
                f"Coupa moved the invoice to legal entity {mapped.legal_entity}, but it is booked as pending "
                f"invoice {ref} in {le}; a pending invoice cannot change legal entity — delete it in D365 "
                f"and replay, or correct the chart of accounts in Coupa"
            )
            return self._fail(row, invoice, le, reason)
        if header_changes:
            s.d365.update(HEADER_SET, header_key, header_changes)
            self._audit(coupa_id, "update", HEADER_SET, header_key, 204, header_changes)
            if "InvoiceNumber" in header_changes or "InvoiceAccount" in header_changes:
                row = s.ledger.update(
                    row, run, natural_key=NaturalKey(le, mapped.vendor_account, mapped.invoice_number)
                )
        existing = {Decimal(str(ln["InvoiceLineNumber"])): ln for ln in self.lookups.current_lines(le, ref)}
        wanted = {Decimal(str(ln["InvoiceLineNumber"])): ln for ln in lines}
        changed = 0
        for number, line in wanted.items():
            line_key = {"dataAreaId": le, "HeaderReference": ref, "InvoiceLineNumber": line["InvoiceLineNumber"]}
            if number not in existing:
                s.d365.create(LINE_SET, line, verify=lambda k=line_key: s.d365.get(LINE_SET, k))
                action, status, body = ("complete_line" if adopted else "create_line"), 201, line
            else:
                diff = changed_fields(existing[number], line, LINE_COMPARE_FIELDS)
                if not diff:
                    continue
                s.d365.update(LINE_SET, line_key, diff)
                action, status, body = "update_line", 204, diff
            changed += 1
            self._audit(coupa_id, action, LINE_SET, line_key, status, body)
        for number, line in existing.items():
            if number not in wanted:
                line_key = {"dataAreaId": le, "HeaderReference": ref, "InvoiceLineNumber": line["InvoiceLineNumber"]}
                s.d365.delete(LINE_SET, line_key)
                changed += 1
                self._audit(coupa_id, "delete_line", LINE_SET, line_key, 204)
        row = s.ledger.update(
            row,
            run,
            state=WRITTEN,
            coupa_hash=coupa_hash,
            payload_hash=payload_hash([header, lines]),
            reason=None,
            problem=None,
            coupa_notified=False,
            natural_key=NaturalKey(le, mapped.vendor_account, mapped.invoice_number),
        )
        self._notify_booked(row, invoice)
        if adopted:
            return Outcome(
                DOC,
                coupa_id,
                Action.REPAIRED if header_changes or changed else Action.ALREADY_PRESENT,
                mapped.invoice_number,
                le,
                f"adopted existing {ref}"
                + (
                    f", {len(header_changes)} header fields and {changed} lines brought in line"
                    if header_changes or changed
                    else ""
                ),
            )
        outcome = Action.UPDATED if header_changes or changed else Action.ALREADY_PRESENT
        return Outcome(
            DOC,
            coupa_id,
            outcome,
            mapped.invoice_number,
            le,
            f"{len(header_changes)} header fields, {changed} lines changed" if outcome == Action.UPDATED else "",
        )

    def _changed_after_post(self, row: LedgerRow, invoice: dict[str, Any], coupa_hash: str) -> Outcome:
        coupa_id = int(invoice["id"])
        reason = (
            "Coupa changed the invoice after D365 posted it; posted invoices are never modified. "
            "Correct it in D365 (credit note) if needed."
        )
        self._audit(coupa_id, "changed_after_post", error=reason)
        return self._settle_with_alert(
            row, invoice, CHANGED_AFTER_POST, reason, row.legal_entity, coupa_hash=coupa_hash
        )

    def _void(self, row: LedgerRow, invoice: dict[str, Any], coupa_hash: str) -> Outcome:
        s, run = self.s, self.s.run_id
        coupa_id = int(invoice["id"])
        number = str(invoice.get("invoice-number") or "")
        if row.state in (VOIDED, VOID_BLOCKED) and row.coupa_hash == coupa_hash:
            s.ledger.release(row, run)
            return Outcome(DOC, coupa_id, Action.ALREADY_PRESENT, number, row.legal_entity, row.state)
        key = dict(row.d365_key or {})
        le, ref = key.get("dataAreaId"), key.get("HeaderReference")
        # Posted first (a read, by the key the ledger booked it under): a posted invoice must never
        # receive a DELETE, not even one that would 404.
        posted = row.state in (POSTED, CHANGED_AFTER_POST, VOID_BLOCKED) or (
            row.state in (WRITTEN, WRITING, MISSING_IN_D365) and self.lookups.posted_for_row(row, None) is not None
        )
        if posted:
            return self._void_blocked(row, invoice, coupa_hash)
        if row.state in (WRITTEN, WRITING) and le and ref:
            if s.d365.delete(HEADER_SET, {"dataAreaId": le, "HeaderReference": ref}):
                self._audit(coupa_id, "delete", HEADER_SET, key, 204)
                s.ledger.update(
                    row,
                    run,
                    release=True,
                    state=VOIDED,
                    problem=None,
                    coupa_hash=coupa_hash,
                    reason="voided in Coupa; pending D365 invoice removed",
                )
                s.notifier.success(
                    DOC,
                    coupa_id,
                    f"Voided in Coupa: pending D365 invoice {ref} ({le}) removed",
                    code="D365-VOIDED",
                    document_status="voided",
                )
                return Outcome(DOC, coupa_id, Action.VOIDED, number, le, f"removed pending {ref}")
            # 404: gone since our lookup — AP may have posted it in between; look again
            if self.lookups.posted_for_row(row, None) is not None:
                return self._void_blocked(row, invoice, coupa_hash)
        gone = row.state in (WRITTEN, MISSING_IN_D365)
        reason = (
            "voided in Coupa; the pending D365 invoice was already gone"
            if gone
            else "voided in Coupa before it was booked"
        )
        s.ledger.update(row, run, release=True, state=VOIDED, problem=None, coupa_hash=coupa_hash, reason=reason)
        s.notifier.success(
            DOC,
            coupa_id,
            (
                "Voided in Coupa; the pending D365 invoice was already gone"
                if gone
                else "Voided in Coupa before it was booked in D365; nothing to remove"
            ),
            code="D365-VOIDED",
            document_status="voided",
        )
        return Outcome(
            DOC, coupa_id, Action.VOIDED, number, row.legal_entity, "already gone" if gone else "never booked"
        )

    def _void_blocked(self, row: LedgerRow, invoice: dict[str, Any], coupa_hash: str) -> Outcome:
        reason = (
            "voided in Coupa after D365 posted it; posted invoices are never modified — reverse it in "
            "D365 with a credit note"
        )
        return self._settle_with_alert(
            row,
            invoice,
            VOID_BLOCKED,
            reason,
            (row.d365_key or {}).get("dataAreaId") or row.legal_entity,
            coupa_hash=coupa_hash,
        )

    def _quarantine(
        self, row: LedgerRow, document: dict[str, Any], reason: str, coupa_hash: str, legal_entity: str | None = None
    ) -> Outcome:
        return super()._quarantine(
            row, document, reason, coupa_hash, legal_entity or legal_entity_for(document, self.s.mapping)
        )

    def _notify_booked(self, row: LedgerRow, invoice: dict[str, Any]) -> None:
        self._notify(row, invoice, self.booked_message(row))

    def booked_message(self, row: LedgerRow) -> str:
        key = row.d365_key or {}
        target = key.get("HeaderReference") or key.get("InvoiceId")
        if row.state != POSTED:
            return f"Booked in D365 {key.get('dataAreaId')} as pending vendor invoice {target}"
        return (
            f"Already posted in D365 {key.get('dataAreaId')} as invoice {target} (voucher {key.get('LedgerVoucher')})"
        )
