"""Purchase-order lifecycle of the D365 sandbox: defaults, product receipts, derived status, write rules.

Purchase-order lifecycle
------------------------
Facts from the reference (§4, [META]): ``PurchaseOrderStatus`` / ``PurchaseOrderLineStatus`` are the
``PurchStatus`` enum ``None|Backorder|Received|Invoiced|Canceled``; ``DocumentApprovalStatus`` is
``VersioningDocumentState``; PO lines have **no** received-quantity field, receipts live in
``ProductReceiptHeaders`` (key ``dataAreaId, RecordId``) and ``ProductReceiptLinesV2``/``ProductReceiptLines``
(key ``dataAreaId, RecordId``; ``PurchaseOrderNumber``, ``PurchaseOrderLineNumber``,
``ReceivedPurchaseQuantity``, ``RemainingPurchaseQuantity``, ``OrderedPurchaseQuantity``, …).
Nothing else below comes from a source in the reference: it is standard F&O (AX) behaviour as we
understand it, so all of it is **UNCONFIRMED** against a live system; the points we are least sure of are
flagged **UNCONFIRMED** explicitly.

1. Defaults on create (POST, and also rows bulk-loaded with :meth:`D365State.load` / the raw
   ``/_sandbox/d365/<set>`` route — a loaded PO is an existing open order): a header gets
   ``PurchaseOrderStatus`` ``Backorder`` and ``DocumentApprovalStatus`` ``Approved`` unless given
   (**UNCONFIRMED**: with change management on, real F&O starts at ``Draft`` and needs the approval
   workflow; the sandbox assumes change management is off, where a new PO counts as approved). A line gets
   ``PurchaseOrderLineStatus`` ``Backorder`` unless given and ``LineAmount`` = ``OrderedPurchaseQuantity *
   PurchasePrice`` rounded half-up to 2 decimals unless given. The real formula also divides by the price
   unit (``PurchasePriceQuantity``) and subtracts discounts, and rounds per the currency's rounding rule;
   the sandbox ignores those (**simplification**). A PATCH/PUT that changes quantity or price of a line
   without sending ``LineAmount`` recomputes it the same way (F&O's ``modifiedField`` recalculation;
   exact entity behaviour **UNCONFIRMED**). A status given on create is stored as given (not validated).
2. Receiving is a test hook (a warehouse user posting a product receipt; no OData action for it is
   known): :meth:`D365State.receive_po_line` / ``POST /_sandbox/d365/receive`` (the line is looked up in
   ``PurchaseOrderLinesV2`` first, then ``PurchaseOrderLines``). It writes one
   ``ProductReceiptHeaders`` row and one ``ProductReceiptLinesV2`` row (mirrored with the same
   ``RecordId`` into ``ProductReceiptLines`` — both sets are views of VendPackingSlipTrans, **UNCONFIRMED**
   that they share RecordIds). ``ProductReceiptNumber`` comes from a per-company sequence
   ``PR-000001``…; ``RecordId`` values come from the sandbox's RecId counter. ``ReceivedInventoryQuantity``
   /``RemainingInventoryQuantity`` equal the purchase quantities (no unit conversion). The received
   quantity of a PO line is the sum of ``ReceivedPurchaseQuantity`` over its receipt lines (``dataAreaId``,
   ``PurchaseOrderNumber``, ``PurchaseOrderLineNumber``). A line becomes ``Received`` when fully received,
   otherwise stays ``Backorder``. Over-receipt is refused (real F&O allows over-delivery up to the item's
   over-delivery percentage, **UNCONFIRMED** that it is 0 by default; the sandbox assumes 0).
   Receiving a ``Canceled`` or ``Invoiced`` line, a quantity <= 0, or a PO whose ``DocumentApprovalStatus`` is not
   ``Approved``/``Confirmed``/``Finalized`` is refused too (the last is an assumption: F&O does not let
   unapproved POs be confirmed or received).
3. Header status is derived from the lines (PurchTable behaviour as we understand it, **UNCONFIRMED**:
   the lowest status of the lines, ``Backorder`` < ``Received`` < ``Invoiced``, ignoring canceled lines;
   ``Canceled`` when every line is canceled). It is recomputed whenever a line is created, updated, deleted, received or
   canceled; a header without lines keeps its status. ``None`` on a line counts as ``Backorder``.
4. Write rules, answered like F&O answers a failed validateWrite/validateDelete: HTTP 500
   ``AxODataWriteException``, ``Write failed for table row of type '<AOT entity>'. Infolog: Warning: …``.
   The exact Infolog wording of real F&O is **UNCONFIRMED**; the texts say what is wrong. A "change"
   means a value different from the stored one (strings compared case-insensitively like X++), so a PATCH
   that re-sends unchanged values passes. Rules:

   - A line with a product receipt, or with status ``Received``/``Invoiced``: changing
     ``OrderedPurchaseQuantity`` (up or down), ``PurchasePrice``, ``ItemNumber``, ``PurchaseUnitSymbol``,
     ``LineAmount`` or ``ProcurementProductCategoryName`` is refused ("Purchase order line <PO> line <n>
     has been received; quantity, price, item and unit cannot be changed."; ``has been invoiced`` for an
     invoiced line), plus a ``validateField failed`` entry per field and, when the new quantity is below
     the received quantity, "The ordered quantity <q> is less than the quantity already received (<r>).".
     Other fields (``LineDescription``, ``RequestedDeliveryDate``, dimensions, …) may change. (We believe
     real F&O allows raising the quantity of a partly received line, **UNCONFIRMED**; the sandbox is
     stricter, as specified by the project.)
   - DELETE of such a line: "Purchase order line <PO> line <n> has been received and cannot be deleted.".
   - ``PurchaseOrderLineStatus``: the only accepted change is to ``Canceled``, on a line with nothing
     received in status ``Backorder``/``None`` (**UNCONFIRMED** / assumption: real F&O cancels via
     *Deliver remainder* = 0 or *Cancel*; whether the entity field is writable is unknown). On a received
     or invoiced line: "… has been received and cannot be canceled.". Any other change: "The status of
     purchase order line <PO> line <n> is set by D365 itself (product receipt, invoicing, cancellation) and
     cannot be changed to '<value>'.".
   - A canceled line accepts only ``LineDescription`` and the delivery/shipping dates
     (``RequestedDeliveryDate``, ``ConfirmedDeliveryDate``, ``RequestedShippingDate``,
     ``ConfirmedShippingDate``): "Purchase order line <PO> line <n> is canceled; only the description and
     the delivery dates can be changed.". Deleting a canceled, unreceived line is allowed.
   - Header: changing ``PurchaseOrderStatus`` is refused: "The status of purchase order <PO> is set by
     D365 itself from its lines and cannot be changed to '<value>'.". DELETE of a header any of whose
     lines has a receipt (or status Received/Invoiced), or which has a ``ProductReceiptHeaders`` row:
     "Purchase order <PO> has been received and cannot be deleted.".
   - A PUT keeps the stored status field when the body omits it (so a full replace is not read as a
     status change).

   All rules live in :meth:`D365State.update` / :meth:`D365State.delete`, which plain requests and
   ``$batch`` changeset parts share, so a rule failing inside a changeset rolls the whole changeset back.
   Product-receipt entity sets themselves stay generically writable over OData (not restricted here).

Invariants: a header's ``PurchaseOrderStatus`` is always derived from its lines (re-derived on every line
create/update/delete/receipt); every rule failure is an ``AxODataWriteException`` raised before anything is
written, so a changeset that hits one rolls back whole.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from .entities import FIRST_RECID, PO_HEADER_TO_LINE, PO_LINE_TO_HEADER
from .odata import _format_key_value, _norm, _same, to_jsonable
from .schema import EMPTY_DATE, EntitySchema, normalize_datetime
from .store import EntityStore

RECEIPT_LINE_SETS = ("ProductReceiptLinesV2", "ProductReceiptLines")
RECEIPT_NUMBER_FORMAT = "PR-{n:06d}"
# fields frozen once a PO line has been received (or invoiced)
PO_LINE_LOCKED_WHEN_RECEIVED = (
    "OrderedPurchaseQuantity",
    "PurchasePrice",
    "ItemNumber",
    "PurchaseUnitSymbol",
    "LineAmount",
    "ProcurementProductCategoryName",
)
# the only fields a canceled PO line still accepts
PO_LINE_EDITABLE_WHEN_CANCELED = (
    "LineDescription",
    "RequestedDeliveryDate",
    "ConfirmedDeliveryDate",
    "RequestedShippingDate",
    "ConfirmedShippingDate",
)
PURCH_STATUS_ORDER = ("Backorder", "Received", "Invoiced")  # header status = lowest non-canceled line status
APPROVED_STATES = ("Approved", "Confirmed", "Finalized")


class PurchaseOrderRules(EntityStore):
    """The entity store plus F&O's purchase-order behaviour (see the module docstring)."""

    @staticmethod
    def _amount(value: Decimal) -> Decimal:
        return Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)

    def _apply_po_defaults(self, entity_set: str, rec: dict[str, Any], given: set[str]) -> None:
        """Defaults F&O fills on a new PO header/line (see the module docstring, item 1)."""
        if entity_set in PO_HEADER_TO_LINE:
            if "PurchaseOrderStatus" not in given:
                rec["PurchaseOrderStatus"] = "Backorder"
            if "DocumentApprovalStatus" not in given:
                rec["DocumentApprovalStatus"] = "Approved"
        elif entity_set in PO_LINE_TO_HEADER:
            if "PurchaseOrderLineStatus" not in given:
                rec["PurchaseOrderLineStatus"] = "Backorder"
            if "LineAmount" not in given:
                rec["LineAmount"] = self._amount(
                    Decimal(rec.get("OrderedPurchaseQuantity") or 0) * Decimal(rec.get("PurchasePrice") or 0)
                )

    def _receipt_lines(self, company: str, po: str, line_number: int | None = None) -> list[dict[str, Any]]:
        """Product receipt lines of a PO (or of one PO line), ``ProductReceiptLines`` rows not mirrored in V2
        included once."""
        found: dict[tuple, dict[str, Any]] = {}
        for es in reversed(RECEIPT_LINE_SETS):  # V2 last: it wins for a shared RecordId
            for key, r in self._tables[es].items():
                if (
                    _same(r.get("dataAreaId"), company)
                    and _same(r.get("PurchaseOrderNumber"), po)
                    and (line_number is None or r.get("PurchaseOrderLineNumber") == line_number)
                ):
                    found[key] = r
        return list(found.values())

    def received_quantity(self, data_area_id: str, purchase_order_number: str, line_number: int) -> Decimal:
        """Sum of ``ReceivedPurchaseQuantity`` over the product receipt lines of one PO line."""
        with self.lock:
            return sum(
                (
                    Decimal(r.get("ReceivedPurchaseQuantity") or 0)
                    for r in self._receipt_lines(data_area_id, purchase_order_number, int(line_number))
                ),
                Decimal(0),
            )

    @staticmethod
    def _line_status(line: dict[str, Any]) -> str:
        status = line.get("PurchaseOrderLineStatus") or "None"
        return "Backorder" if status == "None" else status

    def _line_is_received(self, line: dict[str, Any]) -> tuple[bool, Decimal]:
        received = self.received_quantity(line["dataAreaId"], line["PurchaseOrderNumber"], line["LineNumber"])
        return received > 0 or self._line_status(line) in ("Received", "Invoiced"), received

    @staticmethod
    def _line_label(line: dict[str, Any]) -> str:
        return f"Purchase order line {line['PurchaseOrderNumber']} line {line['LineNumber']}"

    def _po_lines(self, line_set: str, company: str, po: str) -> list[dict[str, Any]]:
        # by the stored key (dataAreaId, PurchaseOrderNumber, LineNumber), normalized once: comparing
        # every line's fields with _same made a DMF import of thousands of PO lines quadratic in CPU
        c, n = _norm(company), _norm(po)
        return [r for k, r in self._tables[line_set].items() if k[0] == c and k[1] == n]

    def _refresh_po_status(self, line_set: str, company: str, po: str) -> None:
        """Derive the header's PurchaseOrderStatus from its lines (module docstring, item 3)."""
        header_set = PO_LINE_TO_HEADER[line_set]
        hsch = self._schema(header_set)
        key = (_norm(company), _norm(po))
        header = self._tables[header_set].get(key)
        lines = self._po_lines(line_set, company, po)
        if header is None or not lines:
            return
        live = [self._line_status(r) for r in lines if self._line_status(r) != "Canceled"]
        if not live:
            status = "Canceled"
        else:
            status = min(live, key=lambda s: PURCH_STATUS_ORDER.index(s) if s in PURCH_STATUS_ORDER else 0)
        if header.get("PurchaseOrderStatus") != status:
            updated = dict(header)
            updated["PurchaseOrderStatus"] = status
            self._put(header_set, self._key(hsch, updated), updated)

    def _guard_po_update(
        self, sch: EntitySchema, current: dict[str, Any], rec: dict[str, Any], data: dict[str, Any], replace: bool
    ) -> None:
        """Rules F&O enforces on PO header/line updates (module docstring, item 4); may adjust ``rec``."""
        status_field = "PurchaseOrderLineStatus" if sch.name in PO_LINE_TO_HEADER else "PurchaseOrderStatus"
        if replace and status_field not in data:
            rec[status_field] = current[status_field]
        changed = {k for k in sch.properties if k not in sch.keys and not _same(rec.get(k), current.get(k))}
        aot, _ = self._aot(sch)
        if sch.name in PO_HEADER_TO_LINE:
            if status_field in changed:
                raise self._write_failed(
                    sch,
                    [
                        f"Warning: The status of purchase order {current['PurchaseOrderNumber']} is set by D365 itself "
                        f"from its lines and cannot be changed to '{rec[status_field]}'."
                    ],
                )
            return
        label = self._line_label(current)
        status = self._line_status(current)
        received, received_qty = self._line_is_received(current)
        verb = "invoiced" if status == "Invoiced" else "received"
        if status_field in changed:
            target = rec[status_field]
            if target != "Canceled":
                raise self._write_failed(
                    sch,
                    [
                        f"Warning: The status of {label[0].lower() + label[1:]} is set by "
                        f"D365 itself (product receipt, "
                        f"invoicing, cancellation) and cannot be changed to '{target}'."
                    ],
                )
            if received:
                raise self._write_failed(sch, [f"Warning: {label} has been {verb} and cannot be canceled."])
            if status != "Backorder":
                raise self._write_failed(sch, [f"Warning: {label} has status '{status}' and cannot be canceled."])
        if status == "Canceled":
            blocked = sorted(changed - set(PO_LINE_EDITABLE_WHEN_CANCELED))
            if blocked:
                raise self._write_failed(
                    sch,
                    [f"Warning: {label} is canceled; only the description and the delivery dates can be changed."]
                    + [f"Warning: validateField failed on field '{aot}.{f}'." for f in blocked],
                )
        if received:
            blocked = [f for f in PO_LINE_LOCKED_WHEN_RECEIVED if f in changed]
            if blocked:
                infolog = [f"Warning: {label} has been {verb}; quantity, price, item and unit cannot be changed."]
                new_qty = rec.get("OrderedPurchaseQuantity")
                if "OrderedPurchaseQuantity" in changed and new_qty is not None and new_qty < received_qty:
                    infolog.append(
                        f"Warning: The ordered quantity {_format_key_value(Decimal(new_qty))} is less "
                        f"than the quantity already received ({_format_key_value(received_qty)})."
                    )
                infolog += [f"Warning: validateField failed on field '{aot}.{f}'." for f in blocked]
                raise self._write_failed(sch, infolog)
        if "LineAmount" not in data and (replace or changed & {"OrderedPurchaseQuantity", "PurchasePrice"}):
            rec["LineAmount"] = self._amount(
                Decimal(rec.get("OrderedPurchaseQuantity") or 0) * Decimal(rec.get("PurchasePrice") or 0)
            )

    def _guard_po_delete(self, sch: EntitySchema, rec: dict[str, Any]) -> None:
        if sch.name in PO_LINE_TO_HEADER:
            received, _ = self._line_is_received(rec)
            if received:
                verb = "invoiced" if self._line_status(rec) == "Invoiced" else "received"
                raise self._write_failed(
                    sch, [f"Warning: {self._line_label(rec)} has been {verb} and cannot be deleted."]
                )
            return
        company, po = rec["dataAreaId"], rec["PurchaseOrderNumber"]
        lines = self._po_lines(PO_HEADER_TO_LINE[sch.name], company, po)
        if (
            self._receipt_lines(company, po)
            or any(self._line_is_received(r)[0] for r in lines)
            or any(
                _same(h.get("dataAreaId"), company) and _same(h.get("PurchaseOrderNumber"), po)
                for h in self._tables["ProductReceiptHeaders"].values()
            )
        ):
            raise self._write_failed(sch, [f"Warning: Purchase order {po} has been received and cannot be deleted."])

    def receive_po_line(
        self,
        data_area_id: str,
        purchase_order_number: str,
        line_number: int,
        quantity: Decimal | float | int | str,
        date: str = "2026-11-20T12:00:00Z",
    ) -> dict:
        """Post a product receipt for one PO line, as a warehouse user would (module docstring, item 2).

        Writes a ``ProductReceiptHeaders`` row and a ``ProductReceiptLinesV2`` row (mirrored into
        ``ProductReceiptLines``), sets the line to ``Received`` once fully received and re-derives the header
        status. Raises ``KeyError`` when the PO line does not exist and ``ValueError`` for a quantity <= 0,
        an over-receipt, a canceled/invoiced line or an unapproved PO. Returns the rows written/updated.
        """
        company = data_area_id.lower()
        try:
            qty = Decimal(str(quantity))
        except (InvalidOperation, ValueError):
            raise ValueError(f"quantity {quantity!r} is not a number") from None
        if not qty.is_finite() or qty <= 0:
            raise ValueError(f"quantity must be positive, got {quantity}")
        when = normalize_datetime(date)
        try:
            line_no = int(line_number)
        except (TypeError, ValueError):
            raise KeyError(
                f"purchase order line {purchase_order_number}/{line_number} not found in {company}"
            ) from None
        with self.lock:
            line_set = line = None
            for es in PO_LINE_TO_HEADER:
                line = self._tables[es].get((_norm(company), _norm(purchase_order_number), line_no))
                if line is not None:
                    line_set = es
                    break
            if line is None or line_set is None:
                raise KeyError(f"purchase order line {purchase_order_number}/{line_number} not found in {company}")
            header_set = PO_LINE_TO_HEADER[line_set]
            header = self._tables[header_set].get((_norm(company), _norm(purchase_order_number)))
            if header is None:
                raise KeyError(f"purchase order {purchase_order_number} not found in {company}")
            label = self._line_label(line)
            status = self._line_status(line)
            if status in ("Canceled", "Invoiced"):
                raise ValueError(f"{label} is {status.lower()} and cannot be received")
            if header.get("DocumentApprovalStatus") not in APPROVED_STATES:
                raise ValueError(
                    f"purchase order {line['PurchaseOrderNumber']} is not approved "
                    f"(DocumentApprovalStatus {header.get('DocumentApprovalStatus')})"
                )
            ordered = Decimal(line.get("OrderedPurchaseQuantity") or 0)
            before = self.received_quantity(company, line["PurchaseOrderNumber"], line_no)
            if before + qty > ordered:
                raise ValueError(
                    f"receiving {qty} on {label} exceeds the ordered quantity {ordered} "
                    f"(already received {before}, remaining {ordered - before})"
                )
            remaining = ordered - before - qty
            number = RECEIPT_NUMBER_FORMAT.format(n=self._next(f"seq:ProductReceipt:{company}"))
            header_recid = self._next("recid", FIRST_RECID)
            receipt_header = self._insert_raw(
                "ProductReceiptHeaders",
                {
                    "dataAreaId": company,
                    "RecordId": header_recid,
                    "PurchaseOrderNumber": line["PurchaseOrderNumber"],
                    "ProductReceiptNumber": number,
                    "ProductReceiptDate": when,
                    "OrderVendorAccountNumber": header.get("OrderVendorAccountNumber", ""),
                },
            )
            line_data = {
                "dataAreaId": company,
                "RecordId": self._next("recid", FIRST_RECID),
                "ProductReceiptHeaderRecordId": header_recid,
                "ProductReceiptNumber": number,
                "ProductReceiptDate": when,
                "LineNumber": 1,
                "PurchaseOrderNumber": line["PurchaseOrderNumber"],
                "PurchaseOrderLineNumber": line_no,
                "ItemNumber": line.get("ItemNumber", ""),
                "LineDescription": line.get("LineDescription", ""),
                "ProcurementProductCategoryName": line.get("ProcurementProductCategoryName", ""),
                "PurchaseUnitSymbol": line.get("PurchaseUnitSymbol", ""),
                "OrderedPurchaseQuantity": ordered,
                "ReceivedPurchaseQuantity": qty,
                "RemainingPurchaseQuantity": remaining,
                "ReceivedInventoryQuantity": qty,
                "RemainingInventoryQuantity": remaining,
                "ExpectedDeliveryDate": line.get("RequestedDeliveryDate") or EMPTY_DATE,
                "ReceivingSiteId": line.get("ReceivingSiteId", ""),
                "ReceivingWarehouseId": line.get("ReceivingWarehouseId", ""),
            }
            receipt_line = self._insert_raw("ProductReceiptLinesV2", line_data)
            self._insert_raw("ProductReceiptLines", line_data)
            updated_line = dict(line)
            updated_line["PurchaseOrderLineStatus"] = "Received" if remaining == 0 else "Backorder"
            self._put(line_set, self._key(self._schema(line_set), updated_line), updated_line)
            self._refresh_po_status(line_set, company, line["PurchaseOrderNumber"])
            header_after = self._tables[header_set][(_norm(company), _norm(purchase_order_number))]
            result = {
                "ProductReceiptHeader": dict(receipt_header),
                "ProductReceiptLine": dict(receipt_line),
                "PurchaseOrderLine": dict(updated_line),
                "PurchaseOrderHeader": dict(header_after),
                "ReceivedQuantity": before + qty,
                "RemainingQuantity": remaining,
            }
            self.posting_log.append({"action": "receive_po_line", **to_jsonable(result)})
            return result
