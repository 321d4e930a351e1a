"""Issued Coupa purchase orders -> D365 PurchaseOrderHeadersV2 + PurchaseOrderLinesV2, kept in step.

Number policy: the D365 ``PurchaseOrderNumber`` *is* the Coupa ``po-number`` (also sent as
``VendorOrderReference``). A re-read PO is therefore found by its D365 key, so it is never created
twice even without the ledger; the ledger adds claims, change detection and the audit trail.

Per PO:
- issued, not in D365 -> header + lines in one ``$batch`` changeset (``sync/writer.py``, shared with
  invoices); an ambiguous outcome is settled by looking the PO up under its number;
- issued, in D365, changed in Coupa -> changed fields PATCHed, new lines added, removed lines
  deleted — only on lines with nothing received or invoiced (D365 product receipts and line status
  are read first). A change D365 no longer allows is recorded (``change_blocked``) and reported to
  Coupa as an alert, never forced; the rest of the change is applied;
- cancelled -> every D365 line with nothing received is cancelled; received lines stay and are reported;
- closed -> recorded (and kept as it is in D365).
After success the Coupa PO is marked exported (its own request) and gets a Success history record.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from ..common.http import HTTPClientError, SystemUnavailableError
from ..d365.odata import fold
from ..mapping.fields import changed_fields
from ..mapping.purchase_orders import (
    PO_LINE_RECEIPT_LOCKED_FIELDS,
    MappedPurchaseOrder,
    Quarantine,
    legal_entity_for_po,
    map_purchase_order,
    po_line_changes,
)
from ..state.ledger import (
    CANCELLED,
    CHANGE_BLOCKED,
    CLOSED,
    FAILED,
    MISSING_IN_D365,
    NEW,
    QUARANTINED,
    WRITING,
    WRITTEN,
    DocState,
    LedgerRow,
    NaturalKey,
)
from ..state.store import coupa_id_of, payload_hash
from .base import Created, DocumentSync
from .dmf_lookups import purchase_orders_in_d365
from .report import Action, Outcome, SyncReport
from .writer import DocumentWriter, ODataBatchWriter

DOC = "purchase_order"
HEADER_SET, LINE_SET, RECEIPT_SET = "PurchaseOrderHeadersV2", "PurchaseOrderLinesV2", "ProductReceiptLinesV2"
HEADER_UPDATE_FIELDS = (
    "OrderVendorAccountNumber",
    "InvoiceVendorAccountNumber",
    "CurrencyCode",
    "PaymentTermsName",
    "VendorOrderReference",
    "PurchaseOrderName",
    "RequestedDeliveryDate",
    "DefaultLedgerDimensionDisplayValue",
)
LOCKED_STATUSES = ("Received", "Invoiced")
# the ledger says we booked it (or started to): its stored key is the authority ...
KEYED_STATES = (WRITTEN, CLOSED, CANCELLED, CHANGE_BLOCKED, WRITING, MISSING_IN_D365)
# ... and, except for an interrupted write, that the D365 purchase order under that key is ours
OWNED_STATES = (WRITTEN, CLOSED, CANCELLED, CHANGE_BLOCKED, MISSING_IN_D365)
CANCELLED_STATUS = "Canceled"


class PurchaseOrderSync(DocumentSync):
    DOC = DOC
    NUMBER_FIELD = "po-number"
    HEADER_SET = HEADER_SET

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._absent: set[tuple[str, str]] = set()  # (folded legal entity, folded PO number) D365 lacks

    def _default_writer(self) -> DocumentWriter:
        return ODataBatchWriter(self.s.d365, HEADER_SET, LINE_SET)

    def sync_many(self, documents: Iterable[dict[str, Any]], report: SyncReport | None = None) -> SyncReport:
        documents = list(documents)
        self._prefetch_absent(documents)
        return super().sync_many(documents, report)

    def _prefetch_absent(self, documents: list[dict[str, Any]]) -> None:
        """Closed or cancelled POs the ledger never booked are looked up in D365 in one query (whether a
        PO with their number exists), instead of one GET each; those D365 lacks are remembered as
        absent for their one visit in this run. A failed lookup only means the GETs happen as before."""
        absent: dict[tuple[str, str], tuple[str, str]] = {}
        unbooked = [d for d in documents if isinstance(d, dict) and d.get("status") in ("closed", "cancelled")]
        ids = [i for i in (coupa_id_of(d.get("id")) for d in unbooked) if i is not None]
        booked = {r.coupa_id for r in self.s.ledger.rows(self.DOC, coupa_ids=ids) if r.d365_key} if ids else set()
        for po in unbooked:
            if coupa_id_of(po.get("id")) in booked:
                continue
            try:
                mapped = map_purchase_order(po, self.s.mapping, self.s.master, supplier=self._supplier(po))
            except SystemUnavailableError:
                raise
            except Exception:  # noqa: BLE001 - the per-document path records whatever is wrong with it
                continue
            if isinstance(mapped, MappedPurchaseOrder):
                pair = (mapped.legal_entity, mapped.purchase_order_number)
                absent[(fold(pair[0]), fold(pair[1]))] = pair
        if not absent:
            return
        try:
            found = purchase_orders_in_d365(self.s.d365, list(absent.values()))
        except SystemUnavailableError:
            raise
        except HTTPClientError:
            return
        self._absent |= set(absent) - found

    def _current_header(self, key: dict[str, Any]) -> dict[str, Any] | None:
        folded = (fold(key["dataAreaId"]), fold(key["PurchaseOrderNumber"]))
        if folded in self._absent:
            self._absent.discard(folded)  # known for one visit only: any later look reads D365 again
            return None
        return self.s.d365.get(HEADER_SET, key)

    def _sync_claimed(self, row: LedgerRow, document: dict[str, Any]) -> Outcome:
        po = document
        s, run = self.s, self.s.run_id
        coupa_id, number = int(po["id"]), self.label(po)
        status = str(po.get("status") or "")
        coupa_hash = self.content_hash(po)
        if status not in ("issued", "closed", "cancelled"):
            s.ledger.release(row, run)
            return Outcome(DOC, coupa_id, Action.SKIPPED, number, row.legal_entity, f"Coupa status {status}")
        if row.coupa_hash == coupa_hash and row.state in (WRITTEN, CLOSED, CANCELLED) and not row.problem:
            if not row.coupa_notified:
                self._notify(row, po, self._message(row, status))
            else:
                s.ledger.release(row, run)
            return Outcome(DOC, coupa_id, Action.ALREADY_PRESENT, number, row.legal_entity)
        booked = dict(row.d365_key) if row.d365_key and row.state in KEYED_STATES else None
        owned = booked is not None and row.state in OWNED_STATES
        if status == "cancelled" and owned and booked is not None:
            # a cancellation needs nothing but the key we booked: apply it even when the new version
            # no longer maps (its lines, charts or supplier may have been edited on the way out)
            return self._cancel(row, po, booked, coupa_hash)

        supplier = self._supplier(po)
        mapped = map_purchase_order(po, s.mapping, s.master, supplier=supplier)
        if isinstance(mapped, Quarantine):
            if status != "issued" and booked is None and row.state in (NEW, QUARANTINED, FAILED):
                return self._record(
                    row,
                    po,
                    CANCELLED if status == "cancelled" else CLOSED,
                    coupa_hash,
                    f"{status} in Coupa before it was booked in D365",
                    notify=True,
                )
            if status == "closed" and booked is not None:
                return self._record(row, po, CLOSED, coupa_hash, "closed in Coupa; kept as it is in D365", notify=True)
            return self._quarantine(row, po, "; ".join(mapped.reasons), coupa_hash, legal_entity_for_po(po, s.mapping))
        key = {"dataAreaId": mapped.legal_entity, "PurchaseOrderNumber": mapped.purchase_order_number}
        if booked is not None and (
            str(booked["dataAreaId"]).casefold(),
            str(booked["PurchaseOrderNumber"]).casefold(),
        ) != (key["dataAreaId"].casefold(), key["PurchaseOrderNumber"].casefold()):
            reason = (
                f"Coupa now maps the purchase order to {key['dataAreaId']}/{key['PurchaseOrderNumber']}, but it is "
                f"booked in D365 as {booked['dataAreaId']}/{booked['PurchaseOrderNumber']}; a D365 purchase order "
                "cannot move legal entity or number — correct the PO in Coupa or cancel it in D365"
            )
            return self._fail(row, po, booked["dataAreaId"], reason)
        if booked is None:
            s.ledger.update(
                row,
                run,
                natural_key=NaturalKey(mapped.legal_entity, mapped.vendor_account, mapped.purchase_order_number),
            )
        current = self._current_header(key)
        if current is not None and not owned and not self._ours(current, mapped):
            return self._quarantine(row, po, self._not_ours_reason(current, mapped), coupa_hash, mapped.legal_entity)
        if current is None:
            if booked is not None and row.state != WRITING:
                return self._missing(row, po, key)
            if status != "issued":
                return self._record(
                    row,
                    po,
                    CANCELLED if status == "cancelled" else CLOSED,
                    coupa_hash,
                    f"{status} in Coupa before it was booked in D365",
                    notify=True,
                )
            assert supplier is not None
            stopped = self._ensure_vendor(row, po, supplier, mapped.legal_entity, mapped.vendor_account, coupa_hash)
            if stopped is not None:
                return stopped
            return self._create(row, po, mapped, key, coupa_hash)
        if status == "cancelled":
            return self._cancel(row, po, key, coupa_hash)
        return self._update(row, po, mapped, key, coupa_hash, closed=status == "closed")

    # -- ownership ---------------------------------------------------------------------------
    @staticmethod
    def _ours(current: dict[str, Any], mapped: MappedPurchaseOrder) -> bool:
        """A D365 PO with our number is ours only if it carries our marks: the Coupa PO number as
        VendorOrderReference and the same vendor. Anything else is a native D365 PO: never touched.
        F&O finds ``po-1`` under the key ``PO-1`` (case-insensitive collation), so the number, the
        reference and the key must match exactly — case included."""
        number = mapped.purchase_order_number.strip()
        return (
            str(current.get("VendorOrderReference") or "").strip() == number
            and str(current.get("PurchaseOrderNumber") or number).strip() == number
            and str(current.get("OrderVendorAccountNumber") or "").casefold() == mapped.vendor_account.casefold()
        )

    @staticmethod
    def _not_ours_reason(current: dict[str, Any], mapped: MappedPurchaseOrder) -> str:
        found = str(current.get("PurchaseOrderNumber") or "").strip()
        if found and found != mapped.purchase_order_number.strip():
            return (
                f"D365 {mapped.legal_entity} already has a purchase order {found} (vendor "
                f"{current.get('OrderVendorAccountNumber') or '-'}, vendor reference "
                f"{current.get('VendorOrderReference') or '-'}); its number differs from "
                f"{mapped.purchase_order_number} only in case, which D365 treats as the same number, so this PO "
                "cannot be booked under it and the D365 PO is left untouched. Give the Coupa PO a number that is "
                "free in D365 and re-issue it"
            )
        return (
            f"D365 {mapped.legal_entity} already has a purchase order {mapped.purchase_order_number} that this "
            f"connector did not create (vendor {current.get('OrderVendorAccountNumber') or '-'}, vendor reference "
            f"{current.get('VendorOrderReference') or '-'}); it is left untouched. Give the Coupa PO a number that "
            "is free in D365 (or a separate number sequence) and re-issue it"
        )

    def _missing(self, row: LedgerRow, po: dict[str, Any], key: dict[str, Any]) -> Outcome:
        reason = (
            f"the purchase order {key['PurchaseOrderNumber']} we booked in D365 {key['dataAreaId']} is gone; it "
            "is not created again automatically — if it was deleted on purpose nothing is needed, otherwise "
            "create it again in D365 under the same number (later Coupa changes then apply to it)"
        )
        return self._settle_with_alert(row, po, MISSING_IN_D365, reason, key["dataAreaId"])

    # -- create ------------------------------------------------------------------------------
    def _create(
        self, row: LedgerRow, po: dict[str, Any], mapped: MappedPurchaseOrder, key: dict[str, Any], coupa_hash: str
    ) -> Outcome:
        s, run = self.s, self.s.run_id
        coupa_id = int(po["id"])
        row = s.ledger.update(row, run, state=WRITING, d365_key=key)  # intent first
        attempt = self._create_document(coupa_id, key, mapped.header, mapped.lines)
        if attempt.result == Created.REJECTED:
            return self._fail(
                row,
                po,
                mapped.legal_entity,
                f"D365 rejected the purchase order: {attempt.error.detail if attempt.error else '?'}",
            )
        if attempt.result in (Created.LANDED, Created.EXISTS):
            # a PO under our number: ours (an earlier or concurrent write landed) is brought in line;
            # a native D365 PO is never touched
            assert attempt.existing is not None
            if not self._ours(attempt.existing, mapped):
                return self._quarantine(
                    row, po, self._not_ours_reason(attempt.existing, mapped), coupa_hash, mapped.legal_entity
                )
            return self._update(row, po, mapped, key, coupa_hash, closed=False, adopted=True)
        row = s.ledger.update(
            row,
            run,
            state=WRITTEN,
            coupa_hash=coupa_hash,
            payload_hash=attempt.digest,
            reason=None,
            attempts=row.attempts + 1,
        )
        self._notify(row, po, self._message(row, "issued"))
        return Outcome(
            DOC,
            coupa_id,
            Action.CREATED,
            mapped.purchase_order_number,
            mapped.legal_entity,
            f"{len(mapped.lines)} lines",
        )

    # -- read D365 state ---------------------------------------------------------------------
    def _lines(self, key: dict[str, Any]) -> dict[int, dict[str, Any]]:
        rows = self.s.d365.query(
            LINE_SET, legal_entity=key["dataAreaId"], exact={"PurchaseOrderNumber": key["PurchaseOrderNumber"]}
        )
        return {int(r["LineNumber"]): r for r in rows}

    def _received(self, key: dict[str, Any]) -> dict[int, Decimal]:
        received: dict[int, Decimal] = {}
        for r in self.s.d365.query(
            RECEIPT_SET,
            legal_entity=key["dataAreaId"],
            exact={"PurchaseOrderNumber": key["PurchaseOrderNumber"]},
            select=["PurchaseOrderLineNumber", "ReceivedPurchaseQuantity"],
        ):
            line = int(r["PurchaseOrderLineNumber"])
            received[line] = received.get(line, Decimal(0)) + Decimal(str(r["ReceivedPurchaseQuantity"] or 0))
        return received

    @staticmethod
    def _locked(line: dict[str, Any], received: Decimal) -> bool:
        return received > 0 or str(line.get("PurchaseOrderLineStatus")) in LOCKED_STATUSES

    # -- update ------------------------------------------------------------------------------
    def _update(
        self,
        row: LedgerRow,
        po: dict[str, Any],
        mapped: MappedPurchaseOrder,
        key: dict[str, Any],
        coupa_hash: str,
        *,
        closed: bool,
        adopted: bool = False,
    ) -> Outcome:
        s, run = self.s, self.s.run_id
        coupa_id = int(po["id"])
        current = s.d365.get(HEADER_SET, key) or {}
        header_changes = changed_fields(current, mapped.header, HEADER_UPDATE_FIELDS)
        if header_changes:
            s.d365.update(HEADER_SET, key, header_changes)
            self._audit(coupa_id, "update", HEADER_SET, key, 204, header_changes)
        existing, received = self._lines(key), self._received(key)
        wanted = {int(line["LineNumber"]): line for line in mapped.lines}
        applied, blocked = 0, []
        for number, line in wanted.items():
            line_key = dict(key, LineNumber=number)
            if number not in existing:
                s.d365.create(LINE_SET, line, verify=lambda k=line_key: s.d365.get(LINE_SET, k))
                self._audit(coupa_id, "create_line", LINE_SET, line_key, 201, line)
                applied += 1
                continue
            current_line = existing[number]
            changes = po_line_changes(current_line, line)
            if not changes:
                continue
            if str(current_line.get("PurchaseOrderLineStatus")) == CANCELLED_STATUS:
                blocked.append(f"line {number} is cancelled in D365; not changed")
                continue
            if self._locked(current_line, received.get(number, Decimal(0))):
                locked = sorted(set(changes) & set(PO_LINE_RECEIPT_LOCKED_FIELDS))
                if locked:
                    blocked.append(
                        f"line {number} has been received ({received.get(number, 0)}) in D365: "
                        f"{', '.join(locked)} not changed"
                    )
                changes = {f: v for f, v in changes.items() if f not in PO_LINE_RECEIPT_LOCKED_FIELDS}
                if not changes:
                    continue
            s.d365.update(LINE_SET, line_key, changes)
            self._audit(coupa_id, "update_line", LINE_SET, line_key, 204, changes)
            applied += 1
        for number, line in existing.items():
            if number in wanted or str(line.get("PurchaseOrderLineStatus")) == CANCELLED_STATUS:
                continue
            line_key = dict(key, LineNumber=number)
            if self._locked(line, received.get(number, Decimal(0))):
                blocked.append(f"line {number} was removed in Coupa but has been received in D365; kept")
                continue
            s.d365.delete(LINE_SET, line_key)
            self._audit(coupa_id, "delete_line", LINE_SET, line_key, 204, None)
            applied += 1
        changed = bool(header_changes) or applied > 0
        if blocked:
            reason = "change not applied where D365 no longer allows it: " + "; ".join(blocked)
            return self._settle_with_alert(
                s.ledger.get(DOC, coupa_id) or row,
                po,
                CHANGE_BLOCKED,
                reason,
                mapped.legal_entity,
                coupa_hash=coupa_hash,
                d365_key=key,
            )
        state = CLOSED if closed else WRITTEN
        row = s.ledger.update(
            row,
            run,
            state=state,
            coupa_hash=coupa_hash,
            d365_key=key,
            reason=None,
            problem=None,
            coupa_notified=False,
            payload_hash=payload_hash([mapped.header, mapped.lines]),
        )
        self._notify(row, po, self._message(row, "closed" if closed else "issued"))
        action = Action.UPDATED if changed else (Action.CLOSED if closed else Action.ALREADY_PRESENT)
        detail = (
            f"{len(header_changes)} header fields, {applied} line changes"
            if changed
            else ("adopted the PO already in D365" if adopted else "")
        )
        return Outcome(DOC, coupa_id, action, mapped.purchase_order_number, mapped.legal_entity, detail)

    # -- cancel / record ---------------------------------------------------------------------
    def _cancel(self, row: LedgerRow, po: dict[str, Any], key: dict[str, Any], coupa_hash: str) -> Outcome:
        s = self.s
        coupa_id = int(po["id"])
        existing, received = self._lines(key), self._received(key)
        cancelled, kept = 0, []
        for number, line in sorted(existing.items()):
            if str(line.get("PurchaseOrderLineStatus")) == CANCELLED_STATUS:
                continue
            line_key = dict(key, LineNumber=number)
            if self._locked(line, received.get(number, Decimal(0))):
                kept.append(f"line {number} (received {received.get(number, 0)})")
                continue
            s.d365.update(LINE_SET, line_key, {"PurchaseOrderLineStatus": CANCELLED_STATUS})
            self._audit(coupa_id, "cancel_line", LINE_SET, line_key, 204, {"PurchaseOrderLineStatus": CANCELLED_STATUS})
            cancelled += 1
        detail = f"{cancelled} unreceived lines cancelled in D365" + (
            f"; kept received {', '.join(kept)}" if kept else ""
        )
        row = s.ledger.update(row, self.s.run_id, d365_key=key, problem=None)
        self._record(row, po, CANCELLED, coupa_hash, detail, notify=True)
        return Outcome(DOC, coupa_id, Action.CANCELLED, str(key["PurchaseOrderNumber"]), str(key["dataAreaId"]), detail)

    def _record(
        self, row: LedgerRow, po: dict[str, Any], state: DocState, coupa_hash: str, reason: str, notify: bool
    ) -> Outcome:
        s, run = self.s, self.s.run_id
        row = s.ledger.update(
            row, run, state=state, problem=None, coupa_hash=coupa_hash, reason=reason, coupa_notified=False
        )
        self._audit(int(po["id"]), state.value, error=reason)
        if notify:
            self._notify(row, po, f"Purchase order {state.value} in Coupa: {reason}")
        else:
            s.ledger.release(row, run)
        return Outcome(DOC, int(po["id"]), Action(state.value), self.label(po), row.legal_entity, reason)

    def booked_message(self, row: LedgerRow) -> str:
        return self._message(row, "issued")

    def _message(self, row: LedgerRow, status: str) -> str:
        key = row.d365_key or {}
        if not key:
            return f"Purchase order {status} in Coupa; not booked in D365"
        return f"Booked in D365 {key.get('dataAreaId')} as purchase order {key.get('PurchaseOrderNumber')}" + (
            " (closed in Coupa)" if status == "closed" else ""
        )
