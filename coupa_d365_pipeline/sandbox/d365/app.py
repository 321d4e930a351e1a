"""A faithful, in-memory Dynamics 365 Finance & Operations sandbox (Entra token endpoint + OData /data).

What it emulates (see /work/shared/reference/d365-fo-api.md):

- Entra ID client-credentials tokens (v2 ``/{tenant}/oauth2/v2.0/token`` with ``scope`` and v1
  ``/{tenant}/oauth2/token`` with ``resource``), JWT-looking tokens with ``aud``/``tid``/``exp``,
  F&O answering 401 for unknown, revoked, expired or foreign-audience tokens.
- A generic OData engine over every entity set of ``d365/entities.json``: ``$filter`` (see
  :mod:`.odata_filter`), ``$select``, ``$top``, ``$skip``, ``$count``, ``$orderby``, server-driven
  paging with ``@odata.nextLink``, ``cross-company=true`` (reads of company-scoped sets see only
  ``default_company`` without it; by-key access to another company needs it too, else 404),
  by-key addressing, POST/PATCH/PUT/DELETE with F&O's status codes and error bodies
  (unknown property → 400 ODataException, duplicate key / foreign-key failure → 500
  AxODataWriteException with the Infolog text), number sequences for a few keys, cascade deletes.
- ``$batch`` with atomic changesets (rolled back on the first failing request; the outer response
  is always 200; the failed changeset is answered by a single ``application/http`` part carrying the
  failing request's Content-ID, as ASP.NET OData does).
- Service protection: with ``request_budget`` set, more than N ``/data`` operations per sliding
  window → 429 with ``Retry-After``. A ``$batch`` counts as one operation per inner request and is
  throttled as a whole (outer 429) when the budget cannot take all of them.
- Test hooks that stand in for an AP user: posting a pending invoice (→ ``VendInvoiceJourBiEntities``
  + ``VendTransBiEntities``; ``created_on`` back-dates ``CreatedOn`` like a long batch posting that
  commits late), settling a payment (→ ``VendSettlementBiEntities`` + payment VendTrans), settling a
  credit note against an invoice (one VendSettlement row per side, no payment), and reversing a
  settlement as *Closed transaction editing > Reverse* does (the VendSettlement rows are deleted, no
  row is added; the VendTrans get SettleAmountCur, ``Closed`` and LastSettle* back). Every VendTrans
  insert or update stamps ``SysModifiedDateTime`` and bumps ``SysRecVersion``, so a reader can notice
  a reversal that leaves no row behind. Signs are F&O's vendor signs (invoice AmountCur < 0, credit
  note and payment > 0; a settlement row has the sign of the VendTrans it settles). Routes:
  ``POST /_sandbox/d365/{post_invoice,settle,settle_credit_note,reverse_settlement}``.
- Purchase-order lifecycle (``PurchaseOrderHeadersV2``/``PurchaseOrderLinesV2``; the V1 sets
  ``PurchaseOrderHeaders``/``PurchaseOrderLines`` follow the same rules, each paired with its own header
  set), described below.

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
   over-delivery percentage, **UNCONFIRMED** that it is 0 by default; the sandbox assumes 0). Receiving a ``Canceled`` or
   ``Invoiced`` line, a quantity <= 0, or a PO whose ``DocumentApprovalStatus`` is not
   ``Approved``/``Confirmed``/``Finalized`` is refused too (the last is an assumption: F&O does not let
   unapproved POs be confirmed or received).
3. Header status is derived from the lines (PurchTable behaviour as we understand it, **UNCONFIRMED**:
   the lowest status of the lines, ``Backorder`` < ``Received`` < ``Invoiced``, ignoring canceled lines; ``Canceled`` when every
   line is canceled). It is recomputed whenever a line is created, updated, deleted, received or
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

Thread safety: one ``RLock`` (``D365State.lock``) guards all state; changesets run under it.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..control import control_routes
from ..faults import FaultConfig, FaultInjector, FaultMiddleware, RequestLog
from .odata_filter import ODataFilterError, parse_filter
from .schema import (
    EMPTY_DATE,
    D365Schema,
    EntitySchema,
    ValueConversionError,
    check_text,
    load_schema,
    normalize_datetime,
)

ODATA_EXCEPTION = "Microsoft.OData.ODataException"
WRITE_EXCEPTION = "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException"
THROTTLE_MESSAGE = ("This request could not be processed at this time due to system experiencing high resource "
                    "utilization.")
GRAPH_RESOURCE = "https://graph.microsoft.com"
JSON_CT = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"

# AOT entity name and "<Table label> (<TABLE>)" for the sets the project writes.
ENTITY_INFO: dict[str, tuple[str, str]] = {
    "VendorsV2": ("VendVendorV2Entity", "Vendors (VendTable)"),
    "VendorsV3": ("VendVendorV3Entity", "Vendors (VendTable)"),
    "Vendors": ("VendVendorEntity", "Vendors (VendTable)"),
    "VendorInvoiceHeaders": ("VendorInvoiceHeaderEntity", "Pending vendor invoices (VendInvoiceInfoTable)"),
    "VendorInvoiceLines": ("VendorInvoiceLineEntity", "Pending vendor invoice lines (VendInvoiceInfoLine)"),
    "PurchaseOrderHeadersV2": ("PurchPurchaseOrderHeaderV2Entity", "Purchase orders (PurchTable)"),
    "PurchaseOrderHeaders": ("PurchPurchaseOrderHeaderEntity", "Purchase orders (PurchTable)"),
    "PurchaseOrderLinesV2": ("PurchPurchaseOrderLineV2Entity", "Purchase order lines (PurchLine)"),
    "PurchaseOrderLines": ("PurchPurchaseOrderLineEntity", "Purchase order lines (PurchLine)"),
}
FIELD_LABELS: dict[str, str] = {
    "HeaderReference": "Header reference", "VendorAccountNumber": "Vendor account",
    "PurchaseOrderNumber": "Purchase order", "InvoiceLineNumber": "Line number", "LineNumber": "Line number",
    "VendorGroupId": "Group", "DefaultPaymentTermsName": "Terms of payment", "CurrencyCode": "Currency",
    "Currency": "Currency", "InvoiceAccount": "Invoice account", "VendorAccount": "Vendor account",
    "InvoiceNumber": "Invoice", "ItemNumber": "Item number", "MainAccountDisplayValue": "Main account",
    "PurchaseOrder": "Purchase order", "PurchLineNumber": "Line number",
    "OrderVendorAccountNumber": "Vendor account", "InvoiceVendorAccountNumber": "Invoice account",
    "PurchaseUnitSymbol": "Unit", "ProcurementProductCategoryName": "Procurement category",
    "dataAreaId": "Company",
}
DEFAULT_NUMBER_SEQUENCES: dict[str, tuple[str, str]] = {
    "VendorInvoiceHeaders": ("HeaderReference", "APINV-{n:06d}"),
    "PurchaseOrderHeadersV2": ("PurchaseOrderNumber", "PO-{n:06d}"),
    "PurchaseOrderHeaders": ("PurchaseOrderNumber", "PO-{n:06d}"),
    "VendorsV2": ("VendorAccountNumber", "V-{n:06d}"),
    "VendorsV3": ("VendorAccountNumber", "V-{n:06d}"),
    "Vendors": ("VendorAccountNumber", "V-{n:06d}"),
}
# header set -> (line set, columns linking line to header)
CASCADES: dict[str, list[tuple[str, list[tuple[str, str]]]]] = {
    "VendorInvoiceHeaders": [("VendorInvoiceLines", [("dataAreaId", "dataAreaId"), ("HeaderReference", "HeaderReference")])],
    "PurchaseOrderHeadersV2": [("PurchaseOrderLinesV2", [("dataAreaId", "dataAreaId"),
                                                         ("PurchaseOrderNumber", "PurchaseOrderNumber")])],
    "PurchaseOrderHeaders": [("PurchaseOrderLines", [("dataAreaId", "dataAreaId"),
                                                     ("PurchaseOrderNumber", "PurchaseOrderNumber")])],
}
VENDOR_SETS = ("VendorsV2", "VendorsV3", "Vendors")
PO_HEADER_SETS = ("PurchaseOrderHeadersV2", "PurchaseOrderHeaders")
PO_LINE_SETS = ("PurchaseOrderLinesV2", "PurchaseOrderLines")
FIRST_RECID = 5637144576
# PO line set -> its header set (each version pairs with its own headers)
PO_LINE_TO_HEADER = {"PurchaseOrderLinesV2": "PurchaseOrderHeadersV2", "PurchaseOrderLines": "PurchaseOrderHeaders"}
PO_HEADER_TO_LINE = {v: k for k, v in PO_LINE_TO_HEADER.items()}
RECEIPT_LINE_SETS = ("ProductReceiptLinesV2", "ProductReceiptLines")
RECEIPT_NUMBER_FORMAT = "PR-{n:06d}"
# fields frozen once a PO line has been received (or invoiced)
PO_LINE_LOCKED_WHEN_RECEIVED = ("OrderedPurchaseQuantity", "PurchasePrice", "ItemNumber", "PurchaseUnitSymbol",
                                "LineAmount", "ProcurementProductCategoryName")
# the only fields a canceled PO line still accepts
PO_LINE_EDITABLE_WHEN_CANCELED = ("LineDescription", "RequestedDeliveryDate", "ConfirmedDeliveryDate",
                                  "RequestedShippingDate", "ConfirmedShippingDate")
PURCH_STATUS_ORDER = ("Backorder", "Received", "Invoiced")  # header status = lowest non-canceled line status
APPROVED_STATES = ("Approved", "Confirmed", "Finalized")


@dataclass
class D365SandboxConfig:
    environment_url: str  # e.g. "http://127.0.0.1:8123" — the token audience; the app is served at this URL
    tenant_id: str = "contoso-tenant"
    clients: dict[str, str] = field(default_factory=lambda: {"sandbox-app": "sandbox-app-secret"})
    token_lifetime_s: int = 3599
    default_company: str = "dat"  # company a read sees without cross-company=true
    page_size: int = 10000  # server-driven paging; tests set small
    request_budget: int | None = None  # max /data operations per budget_window_s before 429
    budget_window_s: float = 300.0
    budget_retry_after_s: int = 2
    fault: FaultConfig = field(default_factory=FaultConfig)
    # active "Default dimension format" for DimensionDisplayValue (order of the segments)
    dimension_format: list[str] = field(default_factory=lambda: ["BusinessUnit", "CostCenter", "Department"])
    dimension_delimiter: str = "-"
    # entity set -> (key property, format with {n}) for keys F&O assigns from a number sequence
    number_sequences: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(DEFAULT_NUMBER_SEQUENCES))

    @property
    def audience(self) -> str:
        return self.environment_url.rstrip("/").lower()


class ODataError(Exception):
    """An F&O OData error: HTTP status + ``innererror.message`` + ``innererror.type``."""

    def __init__(self, status: int, message: str, type_: str = "", outer_message: str = "An error has occurred.",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.outer_message = outer_message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": "", "message": self.outer_message,
                          "innererror": {"message": self.message, "type": self.type, "stacktrace": ""}}}


def _bad_request(message: str) -> ODataError:
    return ODataError(400, message, ODATA_EXCEPTION)


def _query_error(message: str) -> ODataError:
    return ODataError(400, message, ODATA_EXCEPTION,
                      outer_message=f"The query specified in the URI is not valid. {message}")


def _not_found_segment(segment: str) -> ODataError:
    return ODataError(404, f"Resource not found for the segment '{segment}'.")


def _norm(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _same(a: Any, b: Any) -> bool:
    return _norm(a) == _norm(b)


def split_display_value(text: str, delimiter: str = "-") -> list[str]:
    """Split a dimension display string; ``\\`` escapes the delimiter (``CC\\-10`` is the value ``CC-10``)."""
    segments: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and text.startswith(delimiter, i + 1):
            cur.append(delimiter)
            i += 1 + len(delimiter)
        elif text[i] == "\\" and i + 1 < len(text) and text[i + 1] == "\\":
            cur.append("\\")
            i += 2
        elif text.startswith(delimiter, i):
            segments.append("".join(cur))
            cur = []
            i += len(delimiter)
        else:
            cur.append(text[i])
            i += 1
    segments.append("".join(cur))
    return segments


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        if obj == obj.to_integral_value() and abs(obj) < 2**53:
            return int(obj)
        return float(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)!r}")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, default=_json_default, ensure_ascii=False).encode("utf-8")


def to_jsonable(obj: Any) -> Any:
    return json.loads(dumps(obj))


def _etag(version: int) -> str:
    return 'W/"' + base64.b64encode(f"'1,{version}'".encode()).decode() + '"'


def _format_key_value(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value != 0 else "0"
    return str(value)


# =============================================================================================
# State
# =============================================================================================


class D365State:
    """All F&O data of the sandbox. Thread-safe (one RLock); usable directly from tests.

    Records are stored with coerced Python values (``Decimal`` for Edm.Decimal, ISO strings for
    dates, member names for enums) and every property filled with its F&O default.
    """

    def __init__(self, schema: D365Schema | None = None, master_data: dict[str, list[dict]] | None = None, *,
                 default_company: str = "dat", dimension_format: list[str] | None = None,
                 dimension_delimiter: str = "-", number_sequences: dict[str, tuple[str, str]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.schema = schema or load_schema()
        self.clock = clock
        self.lock = threading.RLock()
        self.default_company = default_company.lower()
        self.dimension_format = list(dimension_format or ["BusinessUnit", "CostCenter", "Department"])
        self.dimension_delimiter = dimension_delimiter
        self.number_sequences = dict(DEFAULT_NUMBER_SEQUENCES if number_sequences is None else number_sequences)
        self._tables: dict[str, dict[tuple, dict[str, Any]]] = {name: {} for name in self.schema.entity_sets}
        self._versions: dict[tuple[str, tuple], int] = {}
        self._counters: dict[str, int] = {}
        self._version_seq = 68719476736
        self._journal: list[Callable[[], None]] | None = None
        self.posted_header_refs: set[tuple[str, str]] = set()
        self.posting_log: list[dict[str, Any]] = []
        for entity_set, records in (master_data or {}).items():
            self.load(entity_set, records)

    # ---- low-level, journal-aware primitives --------------------------------------------------
    def _schema(self, entity_set: str) -> EntitySchema:
        sch = self.schema.get(entity_set)
        if sch is None:
            raise KeyError(f"unknown entity set {entity_set!r}")
        return sch

    def _key(self, sch: EntitySchema, rec: dict[str, Any]) -> tuple:
        return tuple(_norm(rec.get(k)) for k in sch.keys)

    def _put(self, entity_set: str, key: tuple, rec: dict[str, Any]) -> int:
        table = self._tables[entity_set]
        old = table.get(key)
        old_version = self._versions.get((entity_set, key))
        table[key] = rec
        self._version_seq += 1
        self._versions[(entity_set, key)] = self._version_seq
        if self._journal is not None:
            def undo() -> None:
                if old is None:
                    table.pop(key, None)
                    self._versions.pop((entity_set, key), None)
                else:
                    table[key] = old
                    self._versions[(entity_set, key)] = old_version  # type: ignore[assignment]
            self._journal.append(undo)
        return self._version_seq

    def _remove(self, entity_set: str, key: tuple) -> None:
        table = self._tables[entity_set]
        old = table.pop(key)
        old_version = self._versions.pop((entity_set, key), None)
        if self._journal is not None:
            def undo() -> None:
                table[key] = old
                if old_version is not None:
                    self._versions[(entity_set, key)] = old_version
            self._journal.append(undo)

    def _next(self, counter: str, start: int = 1) -> int:
        old = self._counters.get(counter)
        value = (old if old is not None else start - 1) + 1
        self._counters[counter] = value
        if self._journal is not None:
            def undo() -> None:
                if old is None:
                    self._counters.pop(counter, None)
                else:
                    self._counters[counter] = old
            self._journal.append(undo)
        return value

    def _mark_posted(self, item: tuple[str, str]) -> None:
        self.posted_header_refs.add(item)
        if self._journal is not None:
            self._journal.append(lambda: self.posted_header_refs.discard(item))

    # ---- transactions (changesets) ------------------------------------------------------------
    def begin(self) -> None:
        """Start an atomic unit; caller must hold ``lock`` until commit()/rollback()."""
        self.lock.acquire()
        self._journal = []

    def commit(self) -> None:
        self._journal = None
        self.lock.release()

    def rollback(self) -> None:
        journal, self._journal = self._journal or [], None
        for undo in reversed(journal):
            undo()
        self.lock.release()

    # ---- public helpers -----------------------------------------------------------------------
    def load(self, entity_set: str, records: list[dict]) -> None:
        """Bulk-load master data (upsert by key), validated and coerced against the schema."""
        sch = self._schema(entity_set)
        with self.lock:
            for raw in records:
                data = {k: v for k, v in raw.items() if not k.startswith("@")}
                if sch.company_scoped:
                    data["dataAreaId"] = str(data.get("dataAreaId") or self.default_company).lower()
                rec = sch.full_record(data)
                self._apply_po_defaults(entity_set, rec, set(data))
                self._put(entity_set, self._key(sch, rec), rec)

    def records(self, entity_set: str) -> list[dict]:
        """All records of all companies (copies, raw Python values)."""
        self._schema(entity_set)
        with self.lock:
            return [dict(r) for r in self._tables[entity_set].values()]

    def etag_of(self, entity_set: str, rec: dict[str, Any]) -> str:
        sch = self._schema(entity_set)
        return _etag(self._versions.get((entity_set, self._key(sch, rec)), 0))

    def companies(self) -> set[str]:
        return {str(r.get("LegalEntityId", "")).casefold() for r in self._tables.get("LegalEntities", {}).values()} | {
            self.default_company}

    def find(self, entity_set: str, **conds: Any) -> list[dict[str, Any]]:
        """Records whose properties equal ``conds`` (case-insensitive for strings)."""
        with self.lock:
            return [dict(r) for r in self._tables.get(entity_set, {}).values()
                    if all(_same(r.get(k), v) for k, v in conds.items())]

    def _exists(self, entity_sets: Iterable[str], **conds: Any) -> bool:
        for es in entity_sets:
            sch = self.schema.get(es)
            if sch is None:
                continue
            if set(conds) == set(sch.keys):
                if tuple(_norm(conds[k]) for k in sch.keys) in self._tables[es]:
                    return True
                continue
            if any(all(_same(r.get(k), v) for k, v in conds.items()) for r in self._tables[es].values()):
                return True
        return False

    # ---- reads --------------------------------------------------------------------------------
    def scoped_rows(self, entity_set: str, cross_company: bool) -> list[dict[str, Any]]:
        sch = self._schema(entity_set)
        with self.lock:
            rows = list(self._tables[entity_set].values())
        if sch.company_scoped and not cross_company:
            rows = [r for r in rows if _same(r.get("dataAreaId"), self.default_company)]
        return rows

    def get(self, entity_set: str, key_values: dict[str, Any], cross_company: bool = True) -> dict[str, Any] | None:
        sch = self._schema(entity_set)
        if sch.company_scoped and not cross_company and not _same(key_values.get("dataAreaId"), self.default_company):
            return None
        with self.lock:
            rec = self._tables[entity_set].get(tuple(_norm(key_values.get(k)) for k in sch.keys))
            return dict(rec) if rec is not None else None

    # ---- writes -------------------------------------------------------------------------------
    def _aot(self, sch: EntitySchema) -> tuple[str, str]:
        return ENTITY_INFO.get(sch.name, (f"{sch.type_name}Entity", f"{sch.name} ({sch.type_name})"))

    def _write_failed(self, sch: EntitySchema, infolog: list[str]) -> ODataError:
        aot, _ = self._aot(sch)
        return ODataError(500, f"Write failed for table row of type '{aot}'. Infolog: " + "; ".join(infolog),
                          WRITE_EXCEPTION)

    def coerce_body(self, sch: EntitySchema, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _bad_request("The request body must be a JSON object describing a single entity.")
        out: dict[str, Any] = {}
        for k, v in body.items():
            if k.startswith("@") or k.startswith("odata."):
                continue  # @odata.type, @odata.etag, @odata.context are allowed annotations
            if "@" in k:
                raise _bad_request(f"The property annotation '{k}' is not supported by the sandbox "
                                   "(no @odata.bind / deep insert).")
            if k not in sch.properties:
                raise _bad_request(sch.unknown_property_message(k))
            try:
                out[k] = sch.coerce(k, v)
                if isinstance(out[k], str):
                    check_text(sch.name, k, out[k])
            except ValueConversionError as exc:
                raise _bad_request(str(exc)) from None
        return out

    def _fk(self, sch: EntitySchema, prop: str, value: Any, related: str) -> list[str]:
        aot, _ = self._aot(sch)
        return [f"Warning: The value '{value}' in field '{FIELD_LABELS.get(prop, prop)}' is not found in the related "
                f"table '{related}'.", f"Warning: validateField failed on field '{aot}.{prop}'."]

    def _must_fill(self, prop: str) -> str:
        return f"Warning: Field '{FIELD_LABELS.get(prop, prop)}' must be filled in."

    def _check_dimensions(self, sch: EntitySchema, prop: str, text: str, company: str,
                          names: list[str]) -> list[str]:
        infolog: list[str] = []
        segments = split_display_value(text, self.dimension_delimiter)
        for name, seg in zip(names, segments):  # extra segments are dropped, like F&O
            if seg == "":
                continue
            ok = any(_same(r.get("FinancialDimension"), name) and _same(r.get("DimensionValue"), seg)
                     and (_same(r.get("LegalEntityId"), company) or r.get("LegalEntityId") in ("", None))
                     for r in self._tables["FinancialDimensionValues"].values())
            if not ok:
                aot, _ = self._aot(sch)
                infolog += [f"Warning: The value '{seg}' in field '{name}' is not found in the related table "
                            f"'Financial dimension values'.",
                            f"Warning: validateField failed on field '{aot}.{prop}'."]
        return infolog

    def _check_main_account(self, sch: EntitySchema, prop: str, text: str, company: str) -> list[str]:
        segments = split_display_value(text, self.dimension_delimiter)
        account = segments[0]
        if account == "":
            return [self._must_fill(prop)]
        if self._tables["MainAccountLegalEntities"]:
            ok = self._exists(["MainAccountLegalEntities"], MainAccountId=account, LegalEntityId=company)
        else:
            ok = self._exists(["MainAccounts"], MainAccountId=account)
        infolog = [] if ok else self._fk(sch, prop, account, "Main accounts")
        if len(segments) > 1:  # ledger format: main account first, then the dimensions
            infolog += self._check_dimensions(sch, prop, self.dimension_delimiter.join(
                s.replace(self.dimension_delimiter, "\\" + self.dimension_delimiter) for s in segments[1:]),
                company, self.dimension_format)
        return infolog

    def _validate(self, sch: EntitySchema, rec: dict[str, Any], fields: set[str] | None) -> list[str]:
        """Business validation (validateField/validateWrite); returns Infolog warnings."""
        name = sch.name
        company = str(rec.get("dataAreaId", ""))
        infolog: list[str] = []

        def check(prop: str) -> bool:
            return fields is None or prop in fields

        def vendor(prop: str, required: bool = False) -> None:
            if not check(prop):
                return
            value = rec.get(prop)
            if not value:
                if required:
                    infolog.append(self._must_fill(prop))
                return
            if not self._exists(VENDOR_SETS, dataAreaId=company, VendorAccountNumber=value):
                infolog.extend(self._fk(sch, prop, value, "Vendors"))

        def currency(prop: str) -> None:
            value = rec.get(prop)
            if check(prop) and value and not self._exists(["Currencies"], CurrencyCode=value):
                infolog.extend(self._fk(sch, prop, value, "Currency"))

        def item(prop: str) -> None:
            value = rec.get(prop)
            if check(prop) and value and not self._exists(["ReleasedProductsV2"], dataAreaId=company, ItemNumber=value):
                infolog.extend(self._fk(sch, prop, value, "Released products"))

        def dims(prop: str) -> None:
            value = rec.get(prop)
            if check(prop) and value:
                infolog.extend(self._check_dimensions(sch, prop, value, company, self.dimension_format))

        if name in VENDOR_SETS:
            if check("VendorGroupId"):
                group = rec.get("VendorGroupId")
                if not group:
                    infolog.append(self._must_fill("VendorGroupId"))
                elif not self._exists(["VendorGroups"], dataAreaId=company, VendorGroupId=group):
                    infolog.extend(self._fk(sch, "VendorGroupId", group, "Vendor groups"))
            terms = rec.get("DefaultPaymentTermsName")
            if check("DefaultPaymentTermsName") and terms and not self._exists(
                    ["PaymentTerms"], dataAreaId=company, Name=terms):
                infolog.extend(self._fk(sch, "DefaultPaymentTermsName", terms, "Terms of payment"))
            currency("CurrencyCode")
        elif name == "VendorInvoiceHeaders":
            if check("InvoiceNumber") and not rec.get("InvoiceNumber"):
                infolog.append(self._must_fill("InvoiceNumber"))
            vendor("InvoiceAccount")
            vendor("VendorAccount")
            currency("Currency")
            dims("DimensionDisplayValue")
        elif name == "VendorInvoiceLines":
            if fields is None and not self._exists(["VendorInvoiceHeaders"], dataAreaId=company,
                                                   HeaderReference=rec.get("HeaderReference")):
                infolog.extend(self._fk(sch, "HeaderReference", rec.get("HeaderReference"), "Pending vendor invoices"))
            item("ItemNumber")
            currency("Currency")
            if check("MainAccountDisplayValue") and rec.get("MainAccountDisplayValue"):
                infolog.extend(self._check_main_account(sch, "MainAccountDisplayValue",
                                                        rec["MainAccountDisplayValue"], company))
            dims("DimensionDisplayValue")
            po, po_line = rec.get("PurchaseOrder"), rec.get("PurchLineNumber")
            if (check("PurchaseOrder") or check("PurchLineNumber")) and po:
                if po_line:
                    if not self._exists(PO_LINE_SETS, dataAreaId=company, PurchaseOrderNumber=po, LineNumber=po_line):
                        infolog.extend(self._fk(sch, "PurchLineNumber", po_line, "Purchase order lines"))
                elif not self._exists(PO_HEADER_SETS, dataAreaId=company, PurchaseOrderNumber=po):
                    infolog.extend(self._fk(sch, "PurchaseOrder", po, "Purchase orders"))
        elif name in PO_HEADER_SETS:
            vendor("OrderVendorAccountNumber", required=True)
            vendor("InvoiceVendorAccountNumber")
            currency("CurrencyCode")
        elif name in PO_LINE_SETS:
            if fields is None and not self._exists(PO_HEADER_SETS, dataAreaId=company,
                                                   PurchaseOrderNumber=rec.get("PurchaseOrderNumber")):
                infolog.extend(self._fk(sch, "PurchaseOrderNumber", rec.get("PurchaseOrderNumber"), "Purchase orders"))
            item("ItemNumber")
            unit = rec.get("PurchaseUnitSymbol")
            if check("PurchaseUnitSymbol") and unit and self._tables["UnitsOfMeasure"] and not self._exists(
                    ["UnitsOfMeasure"], UnitSymbol=unit):
                infolog.extend(self._fk(sch, "PurchaseUnitSymbol", unit, "Units"))
            category = rec.get("ProcurementProductCategoryName")
            if check("ProcurementProductCategoryName") and category and not self._exists(
                    ["ProcurementProductCategories"], CategoryName=category):
                infolog.extend(self._fk(sch, "ProcurementProductCategoryName", category, "Category"))
        return infolog

    def create(self, entity_set: str, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """OData POST semantics; raises :class:`ODataError`. Returns (record, etag).

        A failed insert leaves no trace (not even a consumed number-sequence value).
        """
        with self.lock:
            if self._journal is not None:
                return self._create(entity_set, body)
            self.begin()
            try:
                result = self._create(entity_set, body)
            except BaseException:
                self.rollback()
                raise
            self.commit()
            return result

    def _create(self, entity_set: str, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        sch = self._schema(entity_set)
        with self.lock:
            data = self.coerce_body(sch, body)
            if sch.company_scoped:
                company = str(data.get("dataAreaId") or self.default_company)
                if company.casefold() not in self.companies():
                    raise self._write_failed(sch, [f"Error: Company '{company}' does not exist."])
                data["dataAreaId"] = company.lower()
            auto = self.number_sequences.get(entity_set)
            missing = [k for k in sch.keys if k != "dataAreaId" and (k not in data or data[k] == "")
                       and not (auto and auto[0] == k)]
            if missing:
                raise self._write_failed(sch, [self._must_fill(k) for k in missing])
            rec = sch.defaults()
            rec.update(data)
            self._apply_po_defaults(entity_set, rec, set(data))
            if auto and not rec.get(auto[0]):
                while True:
                    n = self._next(f"seq:{entity_set}:{rec.get('dataAreaId', '')}")
                    rec[auto[0]] = auto[1].format(n=n)
                    if self._key(sch, rec) not in self._tables[entity_set]:
                        break
            infolog = self._validate(sch, rec, None)
            if infolog:
                raise self._write_failed(sch, infolog)
            key = self._key(sch, rec)
            if key in self._tables[entity_set]:
                _, table_label = self._aot(sch)
                non_area = [k for k in sch.keys if k != "dataAreaId"] or sch.keys
                values = ", ".join(_format_key_value(rec[k]).strip("'") for k in non_area)
                raise self._write_failed(sch, [
                    f"Info: Cannot create a record in {table_label}. {FIELD_LABELS.get(non_area[0], non_area[0])}: "
                    f"{values}.\nThe record already exists.."])
            version = self._put(entity_set, key, rec)
            if entity_set in PO_LINE_TO_HEADER:
                self._refresh_po_status(entity_set, rec["dataAreaId"], rec["PurchaseOrderNumber"])
            return dict(rec), _etag(version)

    def _locate(self, sch: EntitySchema, key_values: dict[str, Any], cross_company: bool) -> tuple[tuple, dict]:
        rec = self.get(sch.name, key_values, cross_company)
        if rec is None:
            raise _not_found_segment(sch.name + "(" + ",".join(
                f"{k}={_format_key_value(key_values[k])}" for k in sch.keys) + ")")
        return self._key(sch, rec), rec

    def _check_if_match(self, sch: EntitySchema, key: tuple, if_match: str | None) -> None:
        if if_match and if_match.strip() != "*":
            current = _etag(self._versions.get((sch.name, key), 0))
            if if_match.strip() != current:
                raise ODataError(412, "The etag value in the request header does not match with the current etag "
                                      "value of the object.", ODATA_EXCEPTION)

    def update(self, entity_set: str, key_values: dict[str, Any], body: dict[str, Any], *,
               cross_company: bool = True, replace: bool = False, if_match: str | None = None) -> str:
        """OData PATCH (merge) / PUT (replace); key fields cannot change. Returns the new etag."""
        sch = self._schema(entity_set)
        with self.lock:
            key, current = self._locate(sch, key_values, cross_company)
            self._check_if_match(sch, key, if_match)
            data = self.coerce_body(sch, body)
            for k in sch.keys:
                if k in data and not _same(data[k], current[k]):
                    raise _bad_request(f"The key property '{k}' cannot be modified. Key properties are read-only "
                                       f"once the entity '{sch.full_type_name}' is created.")
            rec = sch.defaults() if replace else dict(current)
            for k in sch.keys:
                rec[k] = current[k]
            rec.update({k: v for k, v in data.items() if k not in sch.keys})
            if entity_set in PO_LINE_TO_HEADER or entity_set in PO_HEADER_TO_LINE:
                self._guard_po_update(sch, current, rec, data, replace)
            infolog = self._validate(sch, rec, None if replace else set(data) - set(sch.keys))
            if infolog:
                raise self._write_failed(sch, infolog)
            etag = _etag(self._put(entity_set, key, rec))
            if entity_set in PO_LINE_TO_HEADER:
                self._refresh_po_status(entity_set, rec["dataAreaId"], rec["PurchaseOrderNumber"])
            return etag

    def delete(self, entity_set: str, key_values: dict[str, Any], *, cross_company: bool = True,
               if_match: str | None = None) -> None:
        sch = self._schema(entity_set)
        with self.lock:
            key, rec = self._locate(sch, key_values, cross_company)
            self._check_if_match(sch, key, if_match)
            if entity_set in PO_LINE_TO_HEADER or entity_set in PO_HEADER_TO_LINE:
                self._guard_po_delete(sch, rec)
            self._delete_cascade(entity_set, rec)
            self._remove(entity_set, key)
            if entity_set in PO_LINE_TO_HEADER:
                self._refresh_po_status(entity_set, rec["dataAreaId"], rec["PurchaseOrderNumber"])

    def _delete_cascade(self, entity_set: str, header: dict[str, Any]) -> None:
        for child_set, links in CASCADES.get(entity_set, []):
            child_sch = self._schema(child_set)
            for child in [r for r in self._tables[child_set].values()
                          if all(_same(r.get(c), header.get(p)) for p, c in links)]:
                self._remove(child_set, self._key(child_sch, child))

    def _insert_raw(self, entity_set: str, data: dict[str, Any]) -> dict[str, Any]:
        sch = self._schema(entity_set)
        rec = sch.full_record(data)
        self._put(entity_set, self._key(sch, rec), rec)
        return rec

    # ---- purchase-order lifecycle ---------------------------------------------------------------
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
                rec["LineAmount"] = self._amount(Decimal(rec.get("OrderedPurchaseQuantity") or 0)
                                                 * Decimal(rec.get("PurchasePrice") or 0))

    def _receipt_lines(self, company: str, po: str, line_number: int | None = None) -> list[dict[str, Any]]:
        """Product receipt lines of a PO (or of one PO line), ``ProductReceiptLines`` rows not mirrored in V2
        included once."""
        found: dict[tuple, dict[str, Any]] = {}
        for es in reversed(RECEIPT_LINE_SETS):  # V2 last: it wins for a shared RecordId
            for key, r in self._tables[es].items():
                if (_same(r.get("dataAreaId"), company) and _same(r.get("PurchaseOrderNumber"), po)
                        and (line_number is None or r.get("PurchaseOrderLineNumber") == line_number)):
                    found[key] = r
        return list(found.values())

    def received_quantity(self, data_area_id: str, purchase_order_number: str, line_number: int) -> Decimal:
        """Sum of ``ReceivedPurchaseQuantity`` over the product receipt lines of one PO line."""
        with self.lock:
            return sum((Decimal(r.get("ReceivedPurchaseQuantity") or 0)
                        for r in self._receipt_lines(data_area_id, purchase_order_number, int(line_number))),
                       Decimal(0))

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
        return [r for r in self._tables[line_set].values()
                if _same(r.get("dataAreaId"), company) and _same(r.get("PurchaseOrderNumber"), po)]

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

    def _guard_po_update(self, sch: EntitySchema, current: dict[str, Any], rec: dict[str, Any],
                         data: dict[str, Any], replace: bool) -> None:
        """Rules F&O enforces on PO header/line updates (module docstring, item 4); may adjust ``rec``."""
        status_field = "PurchaseOrderLineStatus" if sch.name in PO_LINE_TO_HEADER else "PurchaseOrderStatus"
        if replace and status_field not in data:
            rec[status_field] = current[status_field]
        changed = {k for k in sch.properties if k not in sch.keys and not _same(rec.get(k), current.get(k))}
        aot, _ = self._aot(sch)
        if sch.name in PO_HEADER_TO_LINE:
            if status_field in changed:
                raise self._write_failed(sch, [
                    f"Warning: The status of purchase order {current['PurchaseOrderNumber']} is set by D365 itself "
                    f"from its lines and cannot be changed to '{rec[status_field]}'."])
            return
        label = self._line_label(current)
        status = self._line_status(current)
        received, received_qty = self._line_is_received(current)
        verb = "invoiced" if status == "Invoiced" else "received"
        if status_field in changed:
            target = rec[status_field]
            if target != "Canceled":
                raise self._write_failed(sch, [
                    f"Warning: The status of {label[0].lower() + label[1:]} is set by D365 itself (product receipt, "
                    f"invoicing, cancellation) and cannot be changed to '{target}'."])
            if received:
                raise self._write_failed(sch, [f"Warning: {label} has been {verb} and cannot be canceled."])
            if status != "Backorder":
                raise self._write_failed(sch, [f"Warning: {label} has status '{status}' and cannot be canceled."])
        if status == "Canceled":
            blocked = sorted(changed - set(PO_LINE_EDITABLE_WHEN_CANCELED))
            if blocked:
                raise self._write_failed(sch, [
                    f"Warning: {label} is canceled; only the description and the delivery dates can be changed."]
                    + [f"Warning: validateField failed on field '{aot}.{f}'." for f in blocked])
        if received:
            blocked = [f for f in PO_LINE_LOCKED_WHEN_RECEIVED if f in changed]
            if blocked:
                infolog = [f"Warning: {label} has been {verb}; quantity, price, item and unit cannot be changed."]
                new_qty = rec.get("OrderedPurchaseQuantity")
                if "OrderedPurchaseQuantity" in changed and new_qty is not None and new_qty < received_qty:
                    infolog.append(f"Warning: The ordered quantity {_format_key_value(Decimal(new_qty))} is less "
                                   f"than the quantity already received ({_format_key_value(received_qty)}).")
                infolog += [f"Warning: validateField failed on field '{aot}.{f}'." for f in blocked]
                raise self._write_failed(sch, infolog)
        if "LineAmount" not in data and (replace or changed & {"OrderedPurchaseQuantity", "PurchasePrice"}):
            rec["LineAmount"] = self._amount(Decimal(rec.get("OrderedPurchaseQuantity") or 0)
                                             * Decimal(rec.get("PurchasePrice") or 0))

    def _guard_po_delete(self, sch: EntitySchema, rec: dict[str, Any]) -> None:
        if sch.name in PO_LINE_TO_HEADER:
            received, _ = self._line_is_received(rec)
            if received:
                verb = "invoiced" if self._line_status(rec) == "Invoiced" else "received"
                raise self._write_failed(sch, [f"Warning: {self._line_label(rec)} has been {verb} and cannot be "
                                               "deleted."])
            return
        company, po = rec["dataAreaId"], rec["PurchaseOrderNumber"]
        lines = self._po_lines(PO_HEADER_TO_LINE[sch.name], company, po)
        if self._receipt_lines(company, po) or any(self._line_is_received(r)[0] for r in lines) or any(
                _same(h.get("dataAreaId"), company) and _same(h.get("PurchaseOrderNumber"), po)
                for h in self._tables["ProductReceiptHeaders"].values()):
            raise self._write_failed(sch, [f"Warning: Purchase order {po} has been received and cannot be deleted."])

    def receive_po_line(self, data_area_id: str, purchase_order_number: str, line_number: int,
                        quantity: Decimal | float | int | str, date: str = "2026-11-20T12:00:00Z") -> dict:
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
            raise KeyError(f"purchase order line {purchase_order_number}/{line_number} not found in "
                           f"{company}") from None
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
                raise ValueError(f"purchase order {line['PurchaseOrderNumber']} is not approved "
                                 f"(DocumentApprovalStatus {header.get('DocumentApprovalStatus')})")
            ordered = Decimal(line.get("OrderedPurchaseQuantity") or 0)
            before = self.received_quantity(company, line["PurchaseOrderNumber"], line_no)
            if before + qty > ordered:
                raise ValueError(f"receiving {qty} on {label} exceeds the ordered quantity {ordered} "
                                 f"(already received {before}, remaining {ordered - before})")
            remaining = ordered - before - qty
            number = RECEIPT_NUMBER_FORMAT.format(n=self._next(f"seq:ProductReceipt:{company}"))
            header_recid = self._next("recid", FIRST_RECID)
            receipt_header = self._insert_raw("ProductReceiptHeaders", {
                "dataAreaId": company, "RecordId": header_recid, "PurchaseOrderNumber": line["PurchaseOrderNumber"],
                "ProductReceiptNumber": number, "ProductReceiptDate": when,
                "OrderVendorAccountNumber": header.get("OrderVendorAccountNumber", ""),
            })
            line_data = {
                "dataAreaId": company, "RecordId": self._next("recid", FIRST_RECID),
                "ProductReceiptHeaderRecordId": header_recid, "ProductReceiptNumber": number,
                "ProductReceiptDate": when, "LineNumber": 1, "PurchaseOrderNumber": line["PurchaseOrderNumber"],
                "PurchaseOrderLineNumber": line_no, "ItemNumber": line.get("ItemNumber", ""),
                "LineDescription": line.get("LineDescription", ""),
                "ProcurementProductCategoryName": line.get("ProcurementProductCategoryName", ""),
                "PurchaseUnitSymbol": line.get("PurchaseUnitSymbol", ""), "OrderedPurchaseQuantity": ordered,
                "ReceivedPurchaseQuantity": qty, "RemainingPurchaseQuantity": remaining,
                "ReceivedInventoryQuantity": qty, "RemainingInventoryQuantity": remaining,
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
            result = {"ProductReceiptHeader": dict(receipt_header), "ProductReceiptLine": dict(receipt_line),
                      "PurchaseOrderLine": dict(updated_line), "PurchaseOrderHeader": dict(header_after),
                      "ReceivedQuantity": before + qty, "RemainingQuantity": remaining}
            self.posting_log.append({"action": "receive_po_line", **to_jsonable(result)})
            return result

    # ---- test hooks: posting and payment ------------------------------------------------------
    def now(self) -> datetime:
        """The sandbox's current instant (its injected clock, not necessarily the calendar)."""
        return datetime.fromtimestamp(self.clock(), tz=timezone.utc)

    @staticmethod
    def _line_amount(line: dict[str, Any]) -> Decimal:
        for prop in ("Amount", "NetAmount"):
            if line.get(prop):
                return Decimal(line[prop])
        return Decimal(line.get("ReceiveNow") or 0) * Decimal(line.get("UnitPrice") or 0)

    def post_invoice(self, data_area_id: str, header_reference: str, *,
                     created_on: str | datetime | None = None) -> dict:
        """Post a pending invoice as an AP user would: the pending header and lines disappear and a
        ``VendInvoiceJourBiEntities`` + ``VendTransBiEntities`` (TransType Purch; AmountCur negative for an
        invoice, positive for a credit note) appear.

        ``created_on`` stands for a long posting transaction: F&O stamps ``CreatedOn`` (and
        ``SysModifiedDateTime``) when the row is inserted, but other sessions see the row only when the
        batch commits — possibly long after that instant. Default: the sandbox's now.

        Raises ``KeyError`` when the pending invoice does not exist.
        """
        company = data_area_id.lower()
        with self.lock:
            header = self.get("VendorInvoiceHeaders", {"dataAreaId": company, "HeaderReference": header_reference})
            if header is None:
                raise KeyError(f"pending vendor invoice {data_area_id}/{header_reference} not found")
            lines = [r for r in self._tables["VendorInvoiceLines"].values()
                     if _same(r["dataAreaId"], company) and _same(r["HeaderReference"], header["HeaderReference"])]
            amount = sum((self._line_amount(line) for line in lines), Decimal(0)) if lines else Decimal(
                header.get("ImportedAmount") or 0)
            invoice_account = header.get("InvoiceAccount") or header.get("VendorAccount") or ""
            order_account = header.get("VendorAccount") or invoice_account
            voucher = f"APVOU-{self._next(f'voucher:inv:{company}'):06d}"
            now = normalize_datetime(created_on if created_on is not None else self.now())
            invoice_date = header.get("InvoiceDate") or EMPTY_DATE
            trans_date = invoice_date if invoice_date != EMPTY_DATE else normalize_datetime(self.now().date())
            currency = header.get("Currency") or ""
            journal = self._insert_raw("VendInvoiceJourBiEntities", {
                "dataAreaId": company, "SourceKey": self._next("recid", FIRST_RECID),
                "InvoiceId": header.get("InvoiceNumber", ""), "InvoiceAccount": invoice_account,
                "OrderAccount": order_account, "InvoiceDate": invoice_date, "DocumentDate": header.get("Date") or EMPTY_DATE,
                "DueDate": header.get("DueDate") or EMPTY_DATE, "InvoiceAmount": amount, "InvoiceAmountMST": amount,
                "CurrencyCode": currency, "LedgerVoucher": voucher, "InternalInvoiceId": voucher,
                "PurchId": header.get("PurchaseOrderNumber", ""), "Description": header.get("InvoiceDescription", ""),
                "CreatedOn": now, "SysModifiedDateTime": now, "SysRecVersion": 1, "SysDataAreaId": company,
            })
            trans = self._insert_raw("VendTransBiEntities", {
                "dataAreaId": company, "SourceKey": self._next("recid", FIRST_RECID), "AccountNum": invoice_account,
                "Invoice": header.get("InvoiceNumber", ""), "Voucher": voucher, "TransType": "Purch",
                "AmountCur": -amount, "AmountMST": -amount, "SettleAmountCur": Decimal(0), "SettleAmountMST": Decimal(0),
                "Closed": EMPTY_DATE, "TransDate": trans_date, "DocumentDate": header.get("Date") or EMPTY_DATE,
                "DueDate": header.get("DueDate") or EMPTY_DATE, "CurrencyCode": currency, "Approved": "Yes",
                "Txt": header.get("InvoiceDescription", ""), "CreatedOn": now, "SysModifiedDateTime": now,
                "SysRecVersion": 1, "SysDataAreaId": company,
            })
            self._delete_cascade("VendorInvoiceHeaders", header)
            self._remove("VendorInvoiceHeaders", self._key(self._schema("VendorInvoiceHeaders"), header))
            self._mark_posted((company, header["HeaderReference"].casefold()))
            result = {"HeaderReference": header["HeaderReference"], "dataAreaId": company,
                      "VendInvoiceJourBiEntity": dict(journal), "VendTransBiEntity": dict(trans)}
            self.posting_log.append({"action": "post_invoice", **to_jsonable(result)})
            return result

    def is_posted(self, data_area_id: str, header_reference: str) -> bool:
        with self.lock:
            return (data_area_id.lower(), header_reference.casefold()) in self.posted_header_refs

    # ---- settlements (VendSettlement) ---------------------------------------------------------
    # Signs follow F&O's vendor side: an invoice VendTrans has a negative AmountCur (credit), a credit
    # note or a payment a positive one; settling moves each VendTrans' SettleAmountCur towards its
    # AmountCur (same sign), and the VendSettlement row of a VendTrans carries that movement with the
    # sign of the VendTrans it settles (TransRecId). Never abs(): the sign says which side is which.

    def _posted_trans(self, company: str, vendor_account: str, invoice_id: str) -> dict[str, Any]:
        """The VendTrans of a posted invoice or credit note (not a payment); KeyError when none."""
        matches = [r for r in self._tables["VendTransBiEntities"].values()
                   if _same(r["dataAreaId"], company) and _same(r["AccountNum"], vendor_account)
                   and _same(r["Invoice"], invoice_id) and r["TransType"] != "Payment"]
        if not matches:
            raise KeyError(f"no posted invoice {invoice_id} for vendor {vendor_account} in {company}")
        return matches[-1]

    @staticmethod
    def _open_amount(trans: dict[str, Any]) -> Decimal:
        """What is still open on a VendTrans, with the VendTrans' own sign (0 when closed)."""
        return Decimal(trans["AmountCur"]) - Decimal(trans["SettleAmountCur"])

    def _touch(self, entity_set: str, rec: dict[str, Any], modified: str) -> None:
        """Store an updated row as F&O does: SysModifiedDateTime now, a new SysRecVersion."""
        rec["SysModifiedDateTime"] = modified
        rec["SysRecVersion"] = int(rec.get("SysRecVersion") or 0) + 1
        self._put(entity_set, self._key(self._schema(entity_set), rec), rec)

    def _apply_settlement(self, trans: dict[str, Any], movement: Decimal, when: str, offset: dict[str, Any],
                          settlement_voucher: str, modified: str) -> dict[str, Any]:
        """Move ``trans``' SettleAmountCur by ``movement`` (its own sign) and record the last settlement."""
        updated = dict(trans)
        updated["SettleAmountCur"] = Decimal(trans["SettleAmountCur"]) + movement
        updated["SettleAmountMST"] = Decimal(trans["SettleAmountMST"]) + movement
        updated["LastSettleDate"] = when
        updated["LastSettleVoucher"] = settlement_voucher
        updated["LastSettleAccountNum"] = offset["AccountNum"]
        updated["LastSettleCompany"] = offset["dataAreaId"]
        updated["Closed"] = when if updated["SettleAmountCur"] == Decimal(updated["AmountCur"]) else EMPTY_DATE
        self._touch("VendTransBiEntities", updated, modified)
        return updated

    def _settlement_row(self, trans: dict[str, Any], offset: dict[str, Any], movement: Decimal, when: str,
                        settlement_voucher: str, group: int, created: str) -> dict[str, Any]:
        return self._insert_raw("VendSettlementBiEntities", {
            "dataAreaId": trans["dataAreaId"], "SourceKey": self._next("recid", FIRST_RECID),
            "TransRecId": trans["SourceKey"], "OffsetRecid": offset["SourceKey"], "SettleAmountCur": movement,
            "SettleAmountMST": movement, "TransDate": when, "SettlementVoucher": settlement_voucher,
            "OffsetTransVoucher": offset["Voucher"], "AccountNum": trans["AccountNum"],
            "OffsetAccountNum": offset["AccountNum"], "TransCompany": trans["dataAreaId"],
            "OffsetCompany": offset["dataAreaId"], "DueDate": trans["DueDate"], "TransType": trans["TransType"],
            "CanBeReversed": "Yes", "SettlementGroup": group, "SysDataAreaId": trans["dataAreaId"],
            "CreatedOn": created,
        })

    def settle_invoice(self, data_area_id: str, invoice_id: str, vendor_account: str, amount: Decimal | float,
                       date: str, payment_reference: str, *, created_on: str | datetime | None = None) -> dict:
        """Pay (part of) a posted invoice — or refund (part of) a posted credit note: adds a payment
        VendTrans (TransType Payment, AmountCur of the opposite sign, settled at once) and one
        VendSettlement row on the invoice side (simplification: the payment side's row is not
        written), and moves the invoice VendTrans' SettleAmountCur/Closed/LastSettle*.

        ``amount`` is positive: how much of the open balance the payment covers. Raises ``KeyError``
        when no posted invoice matches and ``ValueError`` on over-settlement.
        """
        company = data_area_id.lower()
        pay = Decimal(str(amount))
        if pay <= 0:
            raise ValueError("amount must be positive")
        when = normalize_datetime(date)
        created = normalize_datetime(created_on if created_on is not None else self.now())
        with self.lock:
            inv = self._posted_trans(company, vendor_account, invoice_id)
            direction = Decimal(-1) if Decimal(inv["AmountCur"]) < 0 else Decimal(1)
            movement = direction * pay                      # on the invoice, with the invoice's sign
            open_amount = self._open_amount(inv)
            if direction * open_amount < pay:
                raise ValueError(f"settlement {pay} exceeds the open amount {direction * open_amount}")
            pay_voucher = f"APPAY-{self._next(f'voucher:pay:{company}'):06d}"
            payment = self._insert_raw("VendTransBiEntities", {
                "dataAreaId": company, "SourceKey": self._next("recid", FIRST_RECID), "AccountNum": inv["AccountNum"],
                "Voucher": pay_voucher, "TransType": "Payment", "AmountCur": -movement, "AmountMST": -movement,
                "SettleAmountCur": -movement, "SettleAmountMST": -movement, "PaymReference": payment_reference,
                "TransDate": when, "Closed": when, "CurrencyCode": inv["CurrencyCode"], "LastSettleVoucher": inv["Voucher"],
                "LastSettleDate": when, "LastSettleAccountNum": inv["AccountNum"], "LastSettleCompany": company,
                "Approved": "Yes", "SysDataAreaId": company, "CreatedOn": created, "SysModifiedDateTime": created,
                "SysRecVersion": 1,
            })
            group = self._next("settlement_group")
            settlement = self._settlement_row(inv, payment, movement, when, pay_voucher, group, created)
            updated = self._apply_settlement(inv, movement, when, payment, pay_voucher, created)
            result = {"VendSettlementBiEntity": dict(settlement), "PaymentVendTrans": dict(payment),
                      "InvoiceVendTrans": dict(updated)}
            self.posting_log.append({"action": "settle_invoice", **to_jsonable(result)})
            return result

    def settle_credit_note(self, data_area_id: str, invoice_id: str, credit_note_id: str, vendor_account: str,
                           amount: Decimal | float, date: str) -> dict:
        """Settle a posted credit note against a posted invoice of the same vendor (no cash moves): one
        VendSettlement row per side (invoice side negative, credit-note side positive, same
        SettlementGroup), both VendTrans move towards closed.

        ``amount`` is positive. Raises ``KeyError`` when either is not posted, ``ValueError`` when the
        amount exceeds what is open on either side or the documents are not an invoice and a credit note.
        """
        company = data_area_id.lower()
        applied = Decimal(str(amount))
        if applied <= 0:
            raise ValueError("amount must be positive")
        when = normalize_datetime(date)
        modified = normalize_datetime(self.now())
        with self.lock:
            inv = self._posted_trans(company, vendor_account, invoice_id)
            credit = self._posted_trans(company, vendor_account, credit_note_id)
            if not Decimal(inv["AmountCur"]) < 0 < Decimal(credit["AmountCur"]):
                raise ValueError(f"{invoice_id} must be an invoice (AmountCur < 0) and {credit_note_id} a credit "
                                 "note (AmountCur > 0)")
            open_invoice, open_credit = -self._open_amount(inv), self._open_amount(credit)
            if applied > open_invoice or applied > open_credit:
                raise ValueError(f"settlement {applied} exceeds the open amount (invoice {open_invoice}, "
                                 f"credit note {open_credit})")
            group = self._next("settlement_group")
            voucher = credit["Voucher"]  # which voucher F&O shows as SettlementVoucher here is UNCONFIRMED
            invoice_side = self._settlement_row(inv, credit, -applied, when, voucher, group, modified)
            credit_side = self._settlement_row(credit, inv, applied, when, voucher, group, modified)
            updated_invoice = self._apply_settlement(inv, -applied, when, credit, voucher, modified)
            updated_credit = self._apply_settlement(credit, applied, when, inv, voucher, modified)
            result = {"InvoiceSettlement": dict(invoice_side), "CreditNoteSettlement": dict(credit_side),
                      "InvoiceVendTrans": dict(updated_invoice), "CreditNoteVendTrans": dict(updated_credit)}
            self.posting_log.append({"action": "settle_credit_note", **to_jsonable(result)})
            return result

    def reverse_settlement(self, data_area_id: str, settlement_source_key: int) -> dict:
        """Reverse (un-settle) a settlement as F&O's *Closed transaction editing > Reverse* does: the
        VendSettlement rows of that settlement (both sides when there are two) are deleted — no new
        row is written — and every VendTrans involved gets its SettleAmountCur back, ``Closed`` reset
        to the empty date, LastSettle* taken from its latest remaining settlement (empty when none),
        and a new SysModifiedDateTime/SysRecVersion. The payment itself stays posted, open again.

        Raises ``KeyError`` when the settlement does not exist and ``ValueError`` when it cannot be
        reversed (``CanBeReversed`` No).
        """
        company = data_area_id.lower()
        modified = normalize_datetime(self.now())
        with self.lock:
            settlements = self._tables["VendSettlementBiEntities"]
            row = settlements.get((_norm(company), _norm(int(settlement_source_key))))
            if row is None:
                raise KeyError(f"no settlement {settlement_source_key} in {company}")
            if row.get("CanBeReversed") == "No":
                raise ValueError(f"settlement {settlement_source_key} in {company} cannot be reversed")
            group = [r for r in settlements.values()
                     if r["SettlementGroup"] == row["SettlementGroup"] and r["SettlementGroup"]] or [row]
            trans_table = self._tables["VendTransBiEntities"]
            movements: dict[tuple, Decimal] = {}
            for part in group:   # the rows say how far each VendTrans moved (their own sign)
                key = (_norm(part["TransCompany"] or part["dataAreaId"]), _norm(part["TransRecId"]))
                movements[key] = movements.get(key, Decimal(0)) + Decimal(part["SettleAmountCur"])
            offset_key = (_norm(row["OffsetCompany"] or company), _norm(row["OffsetRecid"]))
            if offset_key not in movements:  # a payment: its own side has no row here, it moved by the opposite
                movements[offset_key] = -Decimal(row["SettleAmountCur"])
            for part in group:
                self._remove("VendSettlementBiEntities", self._key(self._schema("VendSettlementBiEntities"), part))
            restored = []
            for key, movement in movements.items():
                trans = trans_table.get(key)
                if trans is None:
                    continue
                updated = dict(trans)
                updated["SettleAmountCur"] = Decimal(trans["SettleAmountCur"]) - movement
                updated["SettleAmountMST"] = Decimal(trans["SettleAmountMST"]) - movement
                settled = updated["SettleAmountCur"] == Decimal(updated["AmountCur"]) != 0
                updated["Closed"] = trans["Closed"] if settled else EMPTY_DATE
                remaining = sorted((r for r in settlements.values() if r["TransRecId"] == trans["SourceKey"]
                                    and _same(r["dataAreaId"], trans["dataAreaId"])),
                                   key=lambda r: (r["TransDate"], r["SourceKey"]))
                last = remaining[-1] if remaining else None
                updated["LastSettleDate"] = last["TransDate"] if last else EMPTY_DATE
                updated["LastSettleVoucher"] = last["SettlementVoucher"] if last else ""
                updated["LastSettleAccountNum"] = last["OffsetAccountNum"] if last else ""
                updated["LastSettleCompany"] = last["OffsetCompany"] if last else ""
                self._touch("VendTransBiEntities", updated, modified)
                restored.append(dict(updated))
            result = {"ReversedSettlements": [dict(r) for r in group], "VendTrans": restored}
            self.posting_log.append({"action": "reverse_settlement", **to_jsonable(result)})
            return result


# =============================================================================================
# HTTP layer
# =============================================================================================


@dataclass
class Resp:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> "Resp":
        merged = {"Content-Type": JSON_CT, "OData-Version": "4.0"}
        merged.update(headers or {})
        return cls(status, dumps(obj), merged)

    @classmethod
    def error(cls, err: ODataError) -> "Resp":
        return cls.json(err.status, err.body(), err.headers)


_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 412: "Precondition Failed", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}
_SYSTEM_QUERY_OPTIONS = {"$filter", "$select", "$top", "$skip", "$count", "$orderby", "$format"}


def parse_key_predicate(text: str, sch: EntitySchema) -> dict[str, Any]:
    """Parse ``dataAreaId='usmf',Key='A',Num=1`` (the text between the parentheses)."""
    mismatch = _bad_request(
        "The number of keys specified in the URI does not match number of key properties for the resource "
        f"'{sch.full_type_name}'.")
    parts: list[tuple[str | None, str, bool]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        name = None
        j = i
        while j < n and (text[j].isalnum() or text[j] == "_"):
            j += 1
        k = j
        while k < n and text[k] == " ":
            k += 1
        if j > i and k < n and text[k] == "=":
            name = text[i:j]
            i = k + 1
            while i < n and text[i] == " ":
                i += 1
        if i < n and text[i] == "'":
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise _bad_request(f"Unterminated string literal in the key segment '({text})'.")
                if text[i] == "'":
                    if i + 1 < n and text[i + 1] == "'":
                        buf.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(text[i])
                i += 1
            parts.append((name, "".join(buf), True))
        else:
            j = i
            while j < n and text[j] != ",":
                j += 1
            raw = text[i:j].strip()
            if not raw:
                raise mismatch
            parts.append((name, raw, False))
            i = j
        while i < n and text[i] == " ":
            i += 1
        if i < n:
            if text[i] != ",":
                raise _bad_request(f"Bad Request - Error in query syntax: unexpected '{text[i]}' in the key segment "
                                   f"'({text})'.")
            i += 1
            if i >= n:
                raise mismatch
    if len(parts) != len(sch.keys):
        raise mismatch
    values: dict[str, Any] = {}
    for idx, (name, raw, quoted) in enumerate(parts):
        if name is None:
            if len(sch.keys) != 1:
                raise mismatch
            name = sch.keys[idx]
        if name not in sch.keys or name in values:
            raise mismatch
        prop = sch.properties[name]
        if prop.type == "Edm.String" or prop.is_enum:
            if not quoted:
                raise _bad_request(f"The key value '{raw}' for the property '{name}' must be a quoted string literal.")
            values[name] = raw
        else:
            if quoted:
                raise _bad_request(f"The key value '{raw}' for the property '{name}' of type '{prop.type}' must "
                                   "not be quoted.")
            try:
                values[name] = prop.coerce(Decimal(raw.rstrip("mMlL")))
            except Exception:
                raise _bad_request(f"The key value '{raw}' is not a valid '{prop.type}' literal.") from None
    return values


class D365Sandbox:
    """The sandbox: state + Entra token endpoint + OData service, wrapped in FaultMiddleware."""

    def __init__(self, config: D365SandboxConfig, master_data: dict[str, list[dict]] | None = None,
                 schema: D365Schema | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.schema = schema or load_schema()
        self.env_url = config.environment_url.rstrip("/")
        self.state = D365State(self.schema, master_data, default_company=config.default_company,
                               dimension_format=config.dimension_format,
                               dimension_delimiter=config.dimension_delimiter,
                               number_sequences=config.number_sequences, clock=clock)
        self.log = RequestLog()
        self.injector = FaultInjector(config.fault, clock=clock)
        self._tokens: dict[str, dict[str, Any]] = {}
        self._tokens_lock = threading.Lock()
        self._budget: deque[float] = deque()
        self._budget_lock = threading.Lock()
        self.throttled_count = 0
        self.app = FaultMiddleware(self._build_app(), self.injector, self.log)

    # ---- tokens --------------------------------------------------------------------------------
    def revoke_tokens(self) -> None:
        with self._tokens_lock:
            self._tokens.clear()

    def issue_token(self, client_id: str, audience: str) -> tuple[str, int]:
        now = self.clock()
        lifetime = int(self.config.token_lifetime_s)
        claims = {
            "aud": audience, "iss": f"https://sts.windows.net/{self.config.tenant_id}/", "iat": int(now),
            "nbf": int(now), "exp": int(now) + lifetime, "appid": client_id, "appidacr": "1",
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-sp:{client_id}")), "tid": self.config.tenant_id,
            "ver": "1.0", "idtyp": "app", "jti": uuid.uuid4().hex,
        }

        def b64(obj: Any) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode().rstrip("=")

        token = ".".join([b64({"typ": "JWT", "alg": "RS256", "kid": "sandbox"}), b64(claims),
                          base64.urlsafe_b64encode(secrets.token_bytes(64)).decode().rstrip("=")])
        with self._tokens_lock:
            self._tokens[token] = {**claims, "_exp": now + lifetime}
        return token, lifetime

    def _token_error(self, status: int, error: str, code: int, description: str) -> JSONResponse:
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = self.state.now().strftime("%Y-%m-%d %H:%M:%SZ")
        return JSONResponse({
            "error": error,
            "error_description": f"AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\n"
                                 f"Timestamp: {stamp}",
            "error_codes": [code], "timestamp": stamp, "trace_id": trace, "correlation_id": corr,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        }, status_code=status)

    async def _token_endpoint(self, request: Request, version: int) -> Response:
        tenant = request.path_params["tenant"]
        raw = (await request.body()).decode("utf-8", errors="replace")
        form = dict(parse_qsl(raw, keep_blank_values=True))
        if tenant.casefold() != self.config.tenant_id.casefold():
            return self._token_error(400, "invalid_request", 90002,
                                     f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                                     "and are signing into the correct cloud.")
        if form.get("grant_type") != "client_credentials":
            if not form.get("grant_type"):
                return self._token_error(400, "invalid_request", 900144,
                                         "The request body must contain the following parameter: 'grant_type'.")
            return self._token_error(400, "unsupported_grant_type", 70003,
                                     "The app requested an unsupported grant type "
                                     f"'{form.get('grant_type')}'. (The sandbox only supports client_credentials.)")
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, pwd = base64.b64decode(auth[6:].strip()).decode().partition(":")
                client_id, secret = unquote(user) or client_id, unquote(pwd)
            except Exception:
                return self._token_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        if version == 2:
            scope = form.get("scope", "").strip()
            if scope.casefold() == f"{self.env_url}/.default".casefold():
                audience = self.env_url.lower()
            elif scope.casefold() == f"{GRAPH_RESOURCE}/.default":
                audience = GRAPH_RESOURCE
            else:
                return self._token_error(400, "invalid_scope", 70011,
                                         f"The provided value for the input parameter 'scope' is not valid. The scope "
                                         f"{scope} is not valid.")
        else:
            resource = form.get("resource", "").strip()
            if not resource:
                return self._token_error(400, "invalid_request", 900144,
                                         "The request body must contain the following parameter: 'resource'.")
            if resource.casefold() == self.env_url.casefold():
                audience = self.env_url.lower()
            elif resource.casefold() == (self.env_url + "/").casefold():
                audience = resource.lower()  # trailing slash: token issued, F&O answers 401 (MS-SVC note)
            elif resource.casefold().rstrip("/") == GRAPH_RESOURCE:
                audience = GRAPH_RESOURCE
            else:
                return self._token_error(400, "invalid_resource", 500011,
                                         f"The resource principal named {resource} was not found in the tenant named "
                                         f"{self.config.tenant_id}.")
        if client_id not in self.config.clients:
            return self._token_error(401, "invalid_client", 700016,
                                     f"Application with identifier '{client_id}' was not found in the directory "
                                     f"'{self.config.tenant_id}'.")
        if not secret or not secrets.compare_digest(secret, self.config.clients[client_id]):
            return self._token_error(401, "invalid_client", 7000215,
                                     "Invalid client secret provided. Ensure the secret being sent in the request is "
                                     f"the client secret value, not the client secret ID, for a secret added to app "
                                     f"'{client_id}'.")
        token, lifetime = self.issue_token(client_id, audience)
        body: dict[str, Any] = {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                                "access_token": token}
        if version == 1:
            now = int(self.clock())
            body = {"token_type": "Bearer", "expires_in": str(lifetime), "ext_expires_in": str(lifetime),
                    "expires_on": str(now + lifetime), "not_before": str(now), "resource": audience,
                    "access_token": token}
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _authenticate(self, authorization: str | None) -> str | None:
        """None if the bearer token is acceptable, else the reason (for WWW-Authenticate)."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return ""
        token = authorization[7:].strip()
        with self._tokens_lock:
            claims = self._tokens.get(token)
        if claims is None:
            return "invalid_token"
        if self.clock() >= claims["_exp"]:
            return "token_expired"
        if claims["aud"] != self.config.audience or claims["tid"] != self.config.tenant_id or not claims.get("oid"):
            return "invalid_audience"
        return None

    # ---- throttling ----------------------------------------------------------------------------
    def _consume_budget(self, operations: int = 1) -> bool:
        budget = self.config.request_budget
        if budget is None:
            return True
        now = time.monotonic()
        with self._budget_lock:
            while self._budget and now - self._budget[0] >= self.config.budget_window_s:
                self._budget.popleft()
            if len(self._budget) + operations > budget:
                self.throttled_count += 1
                return False
            self._budget.extend([now] * operations)
            return True

    def reset_budget(self) -> None:
        with self._budget_lock:
            self._budget.clear()

    def _throttled(self) -> Resp:
        err = ODataError(429, THROTTLE_MESSAGE, outer_message=THROTTLE_MESSAGE,
                         headers={"Retry-After": str(self.config.budget_retry_after_s)})
        return Resp.error(err)

    # ---- OData dispatch (shared by plain requests and $batch parts) ----------------------------
    def handle(self, method: str, subpath: str, query: str, headers: dict[str, str], body: bytes) -> Resp:
        """Serve one OData request. ``subpath`` is the decoded path after ``/data/``."""
        try:
            return self._dispatch(method.upper(), subpath, query, {k.lower(): v for k, v in headers.items()}, body)
        except ODataError as err:
            return Resp.error(err)
        except ODataFilterError as err:
            return Resp.error(_query_error(str(err)))

    def _dispatch(self, method: str, subpath: str, query: str, headers: dict[str, str], body: bytes) -> Resp:
        subpath = subpath.strip("/")
        if subpath == "":
            if method != "GET":
                raise ODataError(405, "The requested resource does not support this HTTP method.")
            return Resp.json(200, {"@odata.context": f"{self.env_url}/data/$metadata", "value": [
                {"name": n, "kind": "EntitySet", "url": n} for n in self.schema.entity_sets]})
        if subpath == "$metadata":
            return Resp(200, self._metadata_xml().encode(), {"Content-Type": "application/xml", "OData-Version": "4.0"})
        name, key_text, rest = subpath, None, ""
        cut = min([i for i in (subpath.find("("), subpath.find("/")) if i >= 0], default=-1)
        if cut >= 0:
            name = subpath[:cut]
            tail = subpath[cut:]
            if tail.startswith("("):
                close = _matching_paren(tail)
                if close < 0:
                    raise _bad_request(f"Bad Request - Error in query syntax: unbalanced parentheses in '{subpath}'.")
                key_text, rest = tail[1:close], tail[close + 1:]
            else:
                rest = tail
        sch = self.schema.get(name)
        if sch is None:
            raise _not_found_segment(name)
        params = parse_qsl(query, keep_blank_values=True)
        options = dict(params)
        for opt in options:
            if opt.startswith("$") and opt not in _SYSTEM_QUERY_OPTIONS:
                if opt in ("$expand", "$apply", "$search", "$skiptoken", "$levels", "$compute"):
                    raise _query_error(f"The query option '{opt}' is not supported by the sandbox.")
                raise _query_error(f"The query parameter '{opt}' is not supported.")
        cross = options.get("cross-company", "").strip().lower() == "true"
        if rest and rest != "/$count":
            raise _not_found_segment(rest.strip("/").split("/")[0])
        if rest == "/$count":
            if key_text is not None or method != "GET":
                raise _not_found_segment("$count")
            rows = self._filtered(sch, options, cross)
            return Resp(200, str(len(rows)).encode(), {"Content-Type": "text/plain", "OData-Version": "4.0"})
        if key_text is None:
            if method == "GET":
                return self._get_collection(sch, params, options, cross)
            if method == "POST":
                return self._post(sch, headers, body)
            raise ODataError(405, f"The HTTP method '{method}' is not allowed on the entity set '{name}'; address a "
                                  "single entity by its full key.")
        key_values = parse_key_predicate(key_text, sch)
        if method == "GET":
            rec = self.state.get(name, key_values, cross)
            if rec is None:
                raise _not_found_segment(f"{name}({key_text})")
            select = self._parse_select(sch, options.get("$select"))
            ctx = f"{self.env_url}/data/$metadata#{name}/$entity"
            etag = self.state.etag_of(name, rec)
            return Resp.json(200, {"@odata.context": ctx, **self._shape(sch, rec, select, etag)}, {"ETag": etag})
        if method in ("PATCH", "PUT", "MERGE"):
            payload = self._json_body(body)
            try:
                etag = self.state.update(name, key_values, payload, cross_company=cross, replace=(method == "PUT"),
                                         if_match=headers.get("if-match"))
            except ODataError as err:
                if err.status == 404:
                    raise _not_found_segment(f"{name}({key_text})") from None
                raise
            return Resp(204, b"", {"OData-Version": "4.0", "ETag": etag})
        if method == "DELETE":
            try:
                self.state.delete(name, key_values, cross_company=cross, if_match=headers.get("if-match"))
            except ODataError as err:
                if err.status == 404:
                    raise _not_found_segment(f"{name}({key_text})") from None
                raise
            return Resp(204, b"", {"OData-Version": "4.0"})
        raise ODataError(405, f"The HTTP method '{method}' is not allowed on a single entity.")

    @staticmethod
    def _json_body(body: bytes) -> Any:
        try:
            return json.loads(body.decode("utf-8") or "null", parse_float=Decimal)
        except (UnicodeDecodeError, ValueError) as exc:
            raise _bad_request(f"The request body is not valid JSON: {exc}.") from None

    def _location(self, sch: EntitySchema, rec: dict[str, Any]) -> str:
        key = ",".join(f"{k}={_format_key_value(rec[k])}" for k in sch.keys)
        return f"{self.env_url}/data/{sch.name}(" + quote(key, safe="=',()-_.~!*:@$") + ")"

    def _post(self, sch: EntitySchema, headers: dict[str, str], body: bytes) -> Resp:
        payload = self._json_body(body)
        rec, etag = self.state.create(sch.name, payload)
        location = self._location(sch, rec)
        out_headers = {"Location": location, "ETag": etag, "OData-EntityId": location}
        if "return=minimal" in headers.get("prefer", ""):
            return Resp(204, b"", {"OData-Version": "4.0", "Preference-Applied": "return=minimal", **out_headers})
        return Resp.json(201, {"@odata.context": f"{self.env_url}/data/$metadata#{sch.name}/$entity",
                               **self._shape(sch, rec, None, etag)}, out_headers)

    # reading helpers
    def _parse_select(self, sch: EntitySchema, text: str | None) -> list[str] | None:
        if text is None or text.strip() in ("", "*"):
            return None
        names = [s.strip() for s in text.split(",") if s.strip()]
        for n in names:
            if n != "*" and n not in sch.properties:
                raise _query_error(f"Could not find a property named '{n}' on type '{sch.full_type_name}'.")
        return None if "*" in names else names

    def _shape(self, sch: EntitySchema, rec: dict[str, Any], select: list[str] | None, etag: str) -> dict[str, Any]:
        out: dict[str, Any] = {"@odata.etag": etag}
        for name in (select if select is not None else list(sch.properties)):
            out[name] = rec.get(name)
        return out

    def _filtered(self, sch: EntitySchema, options: dict[str, str], cross: bool) -> list[dict[str, Any]]:
        rows = self.state.scoped_rows(sch.name, cross)
        text = options.get("$filter")
        if text is not None:
            flt = parse_filter(text, {n: p.type for n, p in sch.properties.items()}, sch.type_name, sch.enums)
            rows = [r for r in rows if flt.matches(r)]
        return rows

    def _get_collection(self, sch: EntitySchema, params: list[tuple[str, str]], options: dict[str, str],
                        cross: bool) -> Resp:
        select = self._parse_select(sch, options.get("$select"))

        def non_negative(opt: str) -> int | None:
            raw = options.get(opt)
            if raw is None:
                return None
            if not raw.strip().isdigit():
                raise _query_error(f"Invalid value '{raw}' for {opt} query option found. The {opt} query option "
                                   "requires a non-negative integer value.")
            return int(raw)

        top, skip = non_negative("$top"), non_negative("$skip") or 0
        count_opt = options.get("$count", "false").strip().lower()
        if count_opt not in ("true", "false"):
            raise _query_error(f"'{options.get('$count')}' is not a valid count option.")
        order = self._parse_orderby(sch, options.get("$orderby"))
        rows = self._filtered(sch, options, cross)
        for prop, desc in reversed(order):
            rows.sort(key=lambda r, p=prop: _sort_key(r.get(p)), reverse=desc)
        total = len(rows)
        remaining = rows[skip:]
        if top is not None:
            remaining = remaining[:top]
        page = remaining[: self.config.page_size]
        with self.state.lock:
            value = [self._shape(sch, r, select, self.state.etag_of(sch.name, r)) for r in page]
        ctx = f"{self.env_url}/data/$metadata#{sch.name}" + (f"({','.join(select)})" if select else "")
        out: dict[str, Any] = {"@odata.context": ctx}
        if count_opt == "true":
            out["@odata.count"] = total
        out["value"] = value
        if len(remaining) > len(page):
            nxt = [(k, v) for k, v in params if k not in ("$skip", "$top")]
            nxt.append(("$skip", str(skip + len(page))))
            if top is not None:
                nxt.append(("$top", str(top - len(page))))
            out["@odata.nextLink"] = f"{self.env_url}/data/{sch.name}?" + urlencode(nxt, quote_via=quote, safe="$',*:")
        return Resp.json(200, out)

    def _parse_orderby(self, sch: EntitySchema, text: str | None) -> list[tuple[str, bool]]:
        if not text:
            return []
        order: list[tuple[str, bool]] = []
        for item in text.split(","):
            bits = item.split()
            if not bits or len(bits) > 2 or (len(bits) == 2 and bits[1].lower() not in ("asc", "desc")):
                raise _query_error(f"Syntax error in $orderby: '{item.strip()}'.")
            if bits[0] not in sch.properties:
                raise _query_error(f"Could not find a property named '{bits[0]}' on type '{sch.full_type_name}'.")
            order.append((bits[0], len(bits) == 2 and bits[1].lower() == "desc"))
        return order

    def _metadata_xml(self) -> str:
        parts = ['<?xml version="1.0" encoding="utf-8"?>',
                 '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx"><edmx:DataServices>',
                 '<Schema Namespace="Microsoft.Dynamics.DataEntities" xmlns="http://docs.oasis-open.org/odata/ns/edm">']
        for sch in self.schema.entity_sets.values():
            parts.append(f'<EntityType Name="{sch.type_name}"><Key>'
                         + "".join(f'<PropertyRef Name="{k}"/>' for k in sch.keys) + "</Key>")
            for p in sch.properties.values():
                parts.append(f'<Property Name="{p.name}" Type="{p.type}" Nullable="{str(p.nullable).lower()}"/>')
            parts.append("</EntityType>")
        parts.append('<EntityContainer Name="Resources">')
        for sch in self.schema.entity_sets.values():
            parts.append(f'<EntitySet Name="{sch.name}" EntityType="{sch.full_type_name}"/>')
        parts.append("</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>")
        return "".join(parts)

    # ---- $batch --------------------------------------------------------------------------------
    def handle_batch(self, content_type: str, body: bytes) -> Resp:
        boundary = _boundary(content_type)
        if not content_type.lower().startswith("multipart/mixed") or not boundary:
            return Resp.error(_bad_request("The content type of a $batch request must be multipart/mixed with a "
                                           "boundary parameter."))
        try:
            parts = _split_multipart(body.decode("utf-8"), boundary)
            items: list[tuple[str, Any]] = []
            for part_headers, part_body in parts:
                ctype = part_headers.get("content-type", "")
                if ctype.lower().startswith("multipart/mixed"):
                    inner_boundary = _boundary(ctype)
                    if not inner_boundary:
                        raise _bad_request("A changeset part lacks a boundary parameter.")
                    changeset = [(h, _parse_http_request(b)) for h, b in _split_multipart(part_body, inner_boundary)]
                    items.append(("changeset", changeset))
                else:
                    items.append(("single", (part_headers, _parse_http_request(part_body))))
        except ODataError as err:
            return Resp.error(err)
        except UnicodeDecodeError:
            return Resp.error(_bad_request("The $batch body is not valid UTF-8."))
        operations = sum(len(v) if kind == "changeset" else 1 for kind, v in items) or 1
        if not self._consume_budget(operations):
            return self._throttled()
        out_boundary = f"batchresponse_{uuid.uuid4()}"
        chunks: list[str] = []
        for kind, value in items:
            if kind == "single":
                part_headers, req = value
                resp = self._run_part(req)
                chunks.append(_http_part(part_headers.get("content-id"), resp))
                continue
            self.state.begin()
            responses: list[str] = []
            failed: str | None = None
            try:
                for part_headers, req in value:
                    resp = self._run_part(req)
                    if resp.status >= 400:
                        failed = _http_part(part_headers.get("content-id"), resp)
                        break
                    responses.append(_http_part(part_headers.get("content-id"), resp))
            except BaseException:
                self.state.rollback()
                raise
            if failed is not None:
                self.state.rollback()
                chunks.append(failed)
            else:
                self.state.commit()
                cs_boundary = f"changesetresponse_{uuid.uuid4()}"
                inner = "".join(f"--{cs_boundary}\r\n{r}" for r in responses) + f"--{cs_boundary}--\r\n"
                chunks.append(f"Content-Type: multipart/mixed; boundary={cs_boundary}\r\n\r\n{inner}")
        text = "".join(f"--{out_boundary}\r\n{c}" for c in chunks) + f"--{out_boundary}--\r\n"
        return Resp(200, text.encode("utf-8"), {"Content-Type": f"multipart/mixed; boundary={out_boundary}",
                                                 "OData-Version": "4.0"})

    def _run_part(self, req: tuple[str, str, dict[str, str], bytes]) -> Resp:
        method, url, headers, body = req
        split = urlsplit(url)
        path = unquote(split.path)
        if split.scheme or path.startswith("/"):
            if not path.startswith("/data/") and path != "/data":
                return Resp.error(_not_found_segment(path.strip("/").split("/")[0]))
            path = path[len("/data"):]
        if path.strip("/") == "$batch":
            return Resp.error(_bad_request("A $batch request cannot be nested in a $batch request."))
        return self.handle(method, path, split.query, headers, body)

    # ---- Starlette app -------------------------------------------------------------------------
    def _build_app(self) -> Starlette:
        async def data_endpoint(request: Request) -> Response:
            reason = self._authenticate(request.headers.get("authorization"))
            if reason is not None:
                www = "Bearer" if reason == "" else f'Bearer error="invalid_token", error_description="{reason}"'
                return Response(status_code=401, headers={"WWW-Authenticate": www})
            subpath = request.scope["path"][len("/data"):]
            body = await request.body()
            if subpath.strip("/") == "$batch":
                if request.method != "POST":
                    return _to_starlette(Resp.error(ODataError(405, "$batch requires POST.")))
                return _to_starlette(self.handle_batch(request.headers.get("content-type", ""), body))
            if not self._consume_budget(1):
                return _to_starlette(self._throttled())
            query = request.scope.get("query_string", b"").decode("utf-8", errors="replace")
            return _to_starlette(self.handle(request.method, subpath, query, dict(request.headers), body))

        async def token_v2(request: Request) -> Response:
            return await self._token_endpoint(request, 2)

        async def token_v1(request: Request) -> Response:
            return await self._token_endpoint(request, 1)

        async def revoke(request: Request) -> Response:
            self.revoke_tokens()
            return Response(status_code=204)

        async def post_invoice(request: Request) -> Response:
            body = await _hook_body(request)
            if isinstance(body, Response):
                return body
            return _hook_result(lambda: self.state.post_invoice(
                _pick(body, "dataAreaId", "data_area_id", default=self.config.default_company),
                _pick(body, "HeaderReference", "header_reference"),
                created_on=_pick(body, "CreatedOn", "created_on")))

        async def settle(request: Request) -> Response:
            body = await _hook_body(request)
            if isinstance(body, Response):
                return body
            return _hook_result(lambda: self.state.settle_invoice(
                _pick(body, "dataAreaId", "data_area_id", default=self.config.default_company),
                _pick(body, "InvoiceId", "invoice_id", "Invoice"),
                _pick(body, "VendorAccount", "vendor_account", "AccountNum"),
                Decimal(str(_pick(body, "Amount", "amount"))),
                _pick(body, "Date", "date", default=self.state.now().date().isoformat()),
                _pick(body, "PaymentReference", "payment_reference", default=""),
                created_on=_pick(body, "CreatedOn", "created_on")))

        async def settle_credit_note(request: Request) -> Response:
            body = await _hook_body(request)
            if isinstance(body, Response):
                return body
            invoice, credit = _pick(body, "InvoiceId", "invoice_id"), _pick(body, "CreditNoteId", "credit_note_id")
            vendor = _pick(body, "VendorAccount", "vendor_account", "AccountNum")
            amount = _pick(body, "Amount", "amount")
            if None in (invoice, credit, vendor, amount):
                return JSONResponse({"error": "InvoiceId, CreditNoteId, VendorAccount and Amount are required"},
                                    status_code=400)
            return _hook_result(lambda: self.state.settle_credit_note(
                _pick(body, "dataAreaId", "data_area_id", default=self.config.default_company), str(invoice),
                str(credit), str(vendor), Decimal(str(amount)),
                _pick(body, "Date", "date", default=self.state.now().date().isoformat())))

        async def reverse_settlement(request: Request) -> Response:
            body = await _hook_body(request)
            if isinstance(body, Response):
                return body
            if _pick(body, "SourceKey") is None:
                return JSONResponse({"error": "SourceKey (the VendSettlement row) is required"}, status_code=400)
            return _hook_result(lambda: self.state.reverse_settlement(
                str(_pick(body, "dataAreaId", default=self.config.default_company)), int(body["SourceKey"])))

        async def receive(request: Request) -> Response:
            body = await _hook_body(request)
            if isinstance(body, Response):
                return body
            po = _pick(body, "PurchaseOrderNumber", "purchase_order_number")
            line_number = _pick(body, "LineNumber", "line_number", "PurchaseOrderLineNumber")
            quantity = _pick(body, "Quantity", "quantity", "ReceivedPurchaseQuantity")
            if po is None or line_number is None or quantity is None:
                return JSONResponse({"error": "PurchaseOrderNumber, LineNumber and Quantity are required"},
                                    status_code=400)
            return _hook_result(lambda: self.state.receive_po_line(
                str(_pick(body, "dataAreaId", "data_area_id", default=self.config.default_company)), str(po),
                line_number, quantity, str(_pick(body, "Date", "date", "ProductReceiptDate",
                                                 default="2026-11-20T12:00:00Z"))))

        async def raw_set(request: Request) -> Response:
            name = request.path_params["entity_set"]
            if name not in self.schema:
                return JSONResponse({"error": f"unknown entity set {name}"}, status_code=404)
            if request.method == "POST":
                records = await request.json()
                try:
                    self.state.load(name, records if isinstance(records, list) else [records])
                except ValueConversionError as exc:
                    return JSONResponse({"error": str(exc)}, status_code=400)
                return Response(status_code=204)
            return Response(dumps(self.state.records(name)), media_type="application/json")

        methods = ["GET", "POST", "PATCH", "PUT", "DELETE", "MERGE"]
        routes = [
            Route("/data", data_endpoint, methods=methods),
            Route("/data/{rest:path}", data_endpoint, methods=methods),
            Route("/{tenant}/oauth2/v2.0/token", token_v2, methods=["POST"]),
            Route("/{tenant}/oauth2/token", token_v1, methods=["POST"]),
            *control_routes(self.log, self.injector),
            Route("/_sandbox/tokens/revoke", revoke, methods=["POST"]),
            Route("/_sandbox/d365/post_invoice", post_invoice, methods=["POST"]),
            Route("/_sandbox/d365/settle", settle, methods=["POST"]),
            Route("/_sandbox/d365/settle_credit_note", settle_credit_note, methods=["POST"]),
            Route("/_sandbox/d365/reverse_settlement", reverse_settlement, methods=["POST"]),
            Route("/_sandbox/d365/receive", receive, methods=["POST"]),
            Route("/_sandbox/d365/{entity_set}", raw_set, methods=["GET", "POST"]),
        ]
        return Starlette(routes=routes)


# ---- helpers for the HTTP layer ---------------------------------------------------------------


def _pick(body: dict[str, Any], *names: str, default: Any = None) -> Any:
    """The first of ``names`` the control body gives a value for (PascalCase or snake_case)."""
    for name in names:
        if body.get(name) not in (None, ""):
            return body[name]
    return default


async def _hook_body(request: Request) -> dict[str, Any] | Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
    return body


def _hook_result(call: Callable[[], Any]) -> Response:
    """Run a test hook: unknown record -> 404, refused by F&O rules -> 400, else the result as JSON."""
    try:
        result = call()
    except KeyError as exc:
        return JSONResponse({"error": str(exc.args[0])}, status_code=404)
    except (ValueError, ArithmeticError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return Response(dumps(result), media_type="application/json")


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (0, "")
    if isinstance(value, str):
        return (1, value.casefold())
    if isinstance(value, bool):
        return (1, int(value))
    return (1, value)


def _matching_paren(text: str) -> int:
    depth, in_str, i = 0, False, 0
    while i < len(text):
        ch = text[i]
        if in_str:
            if ch == "'":
                if i + 1 < len(text) and text[i + 1] == "'":
                    i += 2
                    continue
                in_str = False
        elif ch == "'":
            in_str = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _to_starlette(resp: Resp) -> Response:
    return Response(resp.body, status_code=resp.status, headers=resp.headers)


def _boundary(content_type: str) -> str | None:
    for piece in content_type.split(";")[1:]:
        k, _, v = piece.strip().partition("=")
        if k.strip().lower() == "boundary":
            return v.strip().strip('"')
    return None


def _parse_headers(block: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split("\n"):
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return headers


def _split_multipart(text: str, boundary: str) -> list[tuple[dict[str, str], str]]:
    """Split a multipart body into (headers, body) parts; tolerant of CRLF/LF and trailing spaces."""
    text = text.replace("\r\n", "\n")
    delim, end = f"--{boundary}", f"--{boundary}--"
    parts: list[list[str]] = []
    current: list[str] | None = None
    closed = False
    for line in text.split("\n"):
        stripped = line.rstrip()
        if stripped == end:
            if current is not None:
                parts.append(current)
            current = None
            closed = True
            break
        if stripped == delim:
            if current is not None:
                parts.append(current)
            current = []
            continue
        if current is not None:
            current.append(line)
    if not closed:
        raise _bad_request(f"The multipart body is missing its closing boundary '--{boundary}--'.")
    out = []
    for lines in parts:
        block = "\n".join(lines)
        head, sep, rest = block.partition("\n\n")
        if not sep:
            head, rest = block, ""
        out.append((_parse_headers(head), rest.rstrip("\n")))
    return out


def _parse_http_request(text: str) -> tuple[str, str, dict[str, str], bytes]:
    text = text.lstrip("\n")
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    request_line = lines[0].split()
    if len(request_line) < 2 or request_line[0].upper() not in ("GET", "POST", "PATCH", "PUT", "DELETE", "MERGE"):
        raise _bad_request(f"Invalid request line in $batch part: '{lines[0]}'.")
    return request_line[0].upper(), request_line[1], _parse_headers("\n".join(lines[1:])), body.strip().encode("utf-8")


def _http_part(content_id: str | None, resp: Resp) -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id:
        head += f"Content-ID: {content_id}\r\n"
    lines = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, '')}".rstrip()]
    lines += [f"{k}: {v}" for k, v in resp.headers.items()]
    body = resp.body.decode("utf-8")
    return head + "\r\n" + "\r\n".join(lines) + "\r\n\r\n" + (body + "\r\n" if body else "")


__all__ = [
    "D365Sandbox", "D365SandboxConfig", "D365State", "ODataError", "Resp", "parse_key_predicate",
    "split_display_value", "ENTITY_INFO", "THROTTLE_MESSAGE",
]
