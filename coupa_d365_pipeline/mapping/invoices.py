"""Pure functions mapping Coupa suppliers/invoices (raw JSON dicts) to D365 F&O entity bodies.

A record that cannot be booked becomes a :class:`Quarantine` listing *every* problem found, each
phrased as what to fix and where. Money and quantities are :class:`~decimal.Decimal` throughout
(never float); the caller serializes them.

Choices documented here:

* ``AddressCountryRegionId`` gets the Coupa country code (ISO 3166 alpha-2) translated through the
  mapping's ``country_regions`` (standard D365 data uses alpha-3 ids: ``US`` -> ``USA``); unmapped
  codes are sent as is.
* ``MainAccountDisplayValue`` is the main-account segment alone, delimiter-escaped like any segment.
* Non-item lines get ``ProcurementCategoryName`` (+ ``ProcurementCategoryHierarchyName`` when D365
  reports one) only when the category exists in D365; otherwise neither is sent.
* A line whose account belongs to a different Coupa chart of accounts than the invoice is
  quarantined (it would be booked in the wrong legal entity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from .config import MappingConfig
from .dimensions import display_value, escape_segment
from .limits import check_body
from .master import D365MasterData

__all__ = [
    "Quarantine",
    "MappedInvoice",
    "VENDOR_SYNC_FIELDS",
    "legal_entity_for",
    "vendor_account_for",
    "map_vendor",
    "vendor_changes",
    "map_invoice",
]

TOLERANCE = Decimal("0.01")
# Sanity rules (issue 9): what no AP clerk would book is quarantined with the rule in the reason.
# Amounts: |price|, |line total| or |gross total| of 10^12 or more in any currency is a typo or a
# corrupted value (and beyond the precision JSON clients keep); quantities of 10^9 or more likewise.
MAX_ABS_AMOUNT = Decimal(10) ** 12
MAX_ABS_QUANTITY = Decimal(10) ** 9
# Coupa line types whose quantity means something (amount lines carry a nominal quantity)
AMOUNT_LINE_TYPES = frozenset({"InvoiceAmountLine", "OrderAmountLine"})
INVOICE_SOURCES = {"InvoiceNumber": "invoice-number", "InvoiceAccount": "the supplier number",
                   "Currency": "the currency", "LineDescription": "the line description",
                   "ItemNumber": "the item number", "PurchaseOrder": "the PO number",
                   "MainAccountDisplayValue": "the line account", "DimensionDisplayValue": "the line account"}
VENDOR_SOURCES = {"VendorAccountNumber": "the supplier number", "VendorOrganizationName": "the supplier name",
                  "VendorSearchName": "the supplier name", "AddressStreet": "the supplier's street",
                  "AddressCity": "the supplier's city", "AddressZipCode": "the supplier's postal code",
                  "AddressCountryRegionId": "the supplier's country"}
NAME_MAX = 100
SEARCH_NAME_MAX = 20

VENDOR_SYNC_FIELDS: tuple[str, ...] = (
    "VendorOrganizationName",
    "AddressStreet",
    "AddressCity",
    "AddressZipCode",
    "AddressCountryRegionId",
    "DefaultPaymentTermsName",
    "CurrencyCode",
    "OnHoldStatus",
)


@dataclass(frozen=True)
class Quarantine:
    """Why a record cannot be booked. ``codes`` are short machine-readable causes (deduplicated)."""

    reasons: tuple[str, ...]
    codes: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "; ".join(self.reasons)


@dataclass
class MappedInvoice:
    legal_entity: str
    vendor_account: str
    invoice_number: str
    header: dict
    lines: list[dict]
    po_lines: dict[int, tuple[str, str]] = field(default_factory=dict)


class _Problems:
    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.codes: list[str] = []

    def add(self, code: str, reason: str) -> None:
        self.reasons.append(reason)
        if code not in self.codes:
            self.codes.append(code)

    def __bool__(self) -> bool:
        return bool(self.reasons)

    def quarantine(self) -> Quarantine:
        return Quarantine(tuple(self.reasons), tuple(self.codes))


# ---------------------------------------------------------------------------- helpers
def _s(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _dec(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        d = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def _name(obj: Any, key: str = "name") -> str:
    return _s(obj.get(key)) if isinstance(obj, dict) else ""


def _invoice_date(value: Any) -> str | None:
    text = _s(value)[:10]
    try:
        return f"{date.fromisoformat(text).isoformat()}T12:00:00Z"
    except ValueError:
        return None


# ---------------------------------------------------------------------------- vendors
def legal_entity_for(invoice: dict, mapping: MappingConfig) -> str | None:
    """dataAreaId for the invoice's Coupa chart of accounts (header account-type, else first line's)."""
    return mapping.legal_entity(_account_type_name(invoice))


def _account_type_name(invoice: dict) -> str:
    name = _name(invoice.get("account-type"))
    if not name:
        lines = invoice.get("invoice-lines") or []
        if lines and isinstance(lines[0], dict):
            name = _name((lines[0].get("account") or {}).get("account-type"))
    return name


def vendor_account_for(supplier: dict, mapping: MappingConfig) -> str | None:
    """D365 VendorAccountNumber for a Coupa supplier (or supplier reference), or None."""
    va = mapping.vendor_account
    if va.source == "prefix_id":
        sid = _s(supplier.get("id"))
        return f"{va.prefix}{sid}" if sid else None
    return _s(supplier.get("number")) or None


def map_vendor(supplier: dict, legal_entity: str, mapping: MappingConfig,
               master: D365MasterData) -> dict | Quarantine:
    """VendorsV2 body for a Coupa supplier in one legal entity, or a Quarantine."""
    le = _s(legal_entity).lower()
    p = _Problems()
    sid = supplier.get("id")
    who = f"supplier {sid}" + (f" ({_s(supplier.get('name'))})" if _s(supplier.get("name")) else "")
    account = vendor_account_for(supplier, mapping)
    if not account:
        if mapping.vendor_account.source == "supplier_number":
            p.add("no_vendor_account", f"{who} has no supplier number, so it has no D365 vendor account; "
                  "enter the supplier number in Coupa or use vendor_account: {source: prefix_id, prefix: …}")
        else:
            p.add("no_vendor_account", f"{who} has no id; cannot derive a vendor account")
    if not master.has_legal_entity(le):
        p.add("legal_entity_not_in_d365", f"legal entity {le!r} does not exist in D365 (LegalEntities); "
              "fix legal_entities in the mapping")
    defaults = dict(mapping.vendor_defaults.get(le, {}))
    group = _s(defaults.get("VendorGroupId"))
    if not group:
        p.add("vendor_group_missing", f"no VendorGroupId for legal entity {le!r}; "
              f"add vendor_defaults.{le}.VendorGroupId to the mapping")
    elif master.has_legal_entity(le) and not master.has_vendor_group(le, group):
        p.add("vendor_group_missing", f"vendor group {group!r} does not exist in legal entity {le} "
              "(D365 VendorGroups); create it in D365 or fix vendor_defaults."
              f"{le}.VendorGroupId in the mapping")
    name = _s(supplier.get("name")) or _s(supplier.get("display-name"))
    if not name:
        p.add("supplier_name_missing", f"{who} has no name; enter it in Coupa")
    if p:
        return p.quarantine()

    body: dict[str, Any] = {"dataAreaId": le, "VendorAccountNumber": account}
    body.update(defaults)
    body["VendorOrganizationName"] = name[:NAME_MAX]
    body["VendorSearchName"] = name[:SEARCH_NAME_MAX]
    addr = supplier.get("primary-address") or {}
    if isinstance(addr, dict) and addr:
        street = "\n".join(s for s in (_s(addr.get(f"street{i}")) for i in range(1, 5)) if s)
        if street:
            body["AddressStreet"] = street
        if _s(addr.get("city")):
            body["AddressCity"] = _s(addr.get("city"))
        if _s(addr.get("postal-code")):
            body["AddressZipCode"] = _s(addr.get("postal-code"))
        country = _name(addr.get("country"), "code")
        if country:
            body["AddressCountryRegionId"] = mapping.country_region(country)
    pt_code = _name(supplier.get("payment-term"), "code")
    if pt_code:
        pt = mapping.payment_terms_name(pt_code)
        if master.has_payment_terms(le, pt):
            body["DefaultPaymentTermsName"] = pt
    on_hold = _s(supplier.get("status")).lower() == "inactive" or supplier.get("on-hold") is True
    body["OnHoldStatus"] = "All" if on_hold else "No"
    check_body(p, "VendorsV2", body, VENDOR_SOURCES, tag=who)
    if p:
        return p.quarantine()
    return body


def _cmp(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    return value


def vendor_changes(current: dict, desired: dict) -> dict:
    """The VENDOR_SYNC_FIELDS of ``desired`` that differ from ``current`` (case/whitespace-insensitive)."""
    return {f: desired[f] for f in VENDOR_SYNC_FIELDS
            if f in desired and _cmp(desired[f]) != _cmp(current.get(f))}


# ---------------------------------------------------------------------------- invoices


def document_currency(document: dict, noun: str, master: D365MasterData, p: "_Problems") -> str:
    """The document's Coupa currency code, checked against D365 Currencies (invoices and POs).

    Coupa sends ``{"code": "USD", ...}``; a bare code (``"USD"``) is read as that code — it says
    the same thing and is checked against D365 like any other. Any other shape is quarantined."""
    raw = document.get("currency")
    currency = (_s(raw) if isinstance(raw, str) else _name(raw, "code")).upper()
    if not currency and raw not in (None, "", {}):
        p.add("currency_unknown", f"{noun} currency {str(raw)[:40]!r} is not a Coupa currency (an object with a "
              "code such as USD); fix the currency in Coupa")
    elif not currency:
        p.add("currency_unknown", f"{noun} has no currency; set it in Coupa")
    elif not master.has_currency(currency):
        p.add("currency_unknown", f"currency {currency} does not exist in D365 (Currencies); "
              f"add it in D365 or fix the {noun} currency in Coupa")
    return currency

def is_credit_note(invoice: dict) -> bool:
    """Coupa marks a credit note with ``is-credit-note`` and document type "Credit Note"."""
    return invoice.get("is-credit-note") is True or _s(invoice.get("document-type")).casefold() == "credit note"


def line_sane(p: "_Problems", tag: str, qty: Decimal, price: Decimal, total: Decimal, *, quantity_line: bool,
              credit: bool | None) -> None:
    """The sanity rules for one line's numbers (``credit`` None: a purchase order)."""
    for name, value in (("price", price), ("total", total)):
        if abs(value) >= MAX_ABS_AMOUNT:
            p.add("absurd_amount", f"{tag}: {name} {value} is beyond any plausible amount (rule: |amount| < "
                  f"{MAX_ABS_AMOUNT}); fix the line in Coupa")
    if abs(qty) >= MAX_ABS_QUANTITY:
        p.add("absurd_quantity", f"{tag}: quantity {qty} is beyond any plausible quantity (rule: |quantity| < "
              f"{MAX_ABS_QUANTITY}); fix the line in Coupa")
    if qty < 0 and credit is False:
        p.add("negative_quantity", f"{tag}: quantity {qty} on an invoice that is not a credit note; correct the "
              "quantity in Coupa or issue a credit note")
    elif qty < 0 and credit is None:
        p.add("negative_quantity", f"{tag}: quantity {qty} on a purchase order; order a positive quantity in Coupa")
    if qty == 0 and quantity_line:
        p.add("zero_quantity", f"{tag}: quantity 0 on a quantity line books nothing (rule: a quantity line "
              "needs a quantity); correct the quantity in Coupa or remove the line")


def line_accounting(account: dict, tag: str, le: str | None, le_ok: bool, mapping: MappingConfig,
                    master: D365MasterData, p: "_Problems") -> tuple[str, list[str]]:
    """Main account and dimension values of one Coupa line account, checked against D365 master
    data (shared by invoices and purchase orders). Returns (main account, dimension values)."""
    dims = mapping.dimensions
    main = _s(account.get(dims.main_account_segment))
    if not main:
        p.add("main_account_missing", f"{tag}: the account has no main account ({dims.main_account_segment} "
              "is empty); set the account on the line in Coupa")
    elif le_ok and not master.main_account_in(le, main):
        if master.main_account_exists(main):
            p.add("main_account_not_in_legal_entity", f"{tag}: main account {main} does not exist in legal entity "
                  f"{le} (D365 MainAccountLegalEntities); fix the Coupa account or activate it in D365")
        else:
            p.add("main_account_not_in_d365", f"{tag}: main account {main} does not exist in D365 "
                  "(MainAccounts); fix the Coupa account or create the main account in D365")
    seg_values: list[str] = []
    for dim in dims.order:
        seg = dims.segments.get(dim)
        value = _s(account.get(seg)) if seg else ""
        if value and le_ok and not master.dimension_value_exists(dim, value, le):
            p.add("dimension_value_missing", f"{tag}: {dim} value {value!r} ({seg}) does not exist in D365 "
                  f"(FinancialDimensionValues, shared or {le}); create it in D365 or fix the Coupa account")
        seg_values.append(value)
    return main, seg_values

def map_invoice(invoice: dict, mapping: MappingConfig, master: D365MasterData, *,
                supplier: dict | None = None) -> MappedInvoice | Quarantine:
    """VendorInvoiceHeaders/VendorInvoiceLines bodies (without HeaderReference) or a Quarantine."""
    p = _Problems()
    dims = mapping.dimensions
    delim = dims.delimiter

    # ---- legal entity
    chart = _account_type_name(invoice)
    le = mapping.legal_entity(chart)
    if le is None:
        if chart:
            p.add("account_type_unmapped", f"Coupa chart of accounts {chart!r} is not mapped to a D365 legal "
                  "entity; add it under legal_entities in the mapping")
        else:
            p.add("account_type_unmapped", "invoice has no chart of accounts (account-type); set it in Coupa")
    elif not master.has_legal_entity(le):
        p.add("legal_entity_not_in_d365", f"legal entity {le!r} (mapped from {chart!r}) does not exist in D365 "
              "(LegalEntities); fix legal_entities in the mapping")
    le_ok = le is not None and master.has_legal_entity(le)

    # ---- vendor
    sup = supplier if supplier is not None else (invoice.get("supplier") or {})
    vendor = vendor_account_for(sup, mapping)
    if not vendor:
        p.add("supplier_number_null", f"supplier {sup.get('id')} ({_s(sup.get('name'))}) has no supplier number, "
              "so there is no D365 vendor account; enter the supplier number in Coupa")

    # ---- header fields
    number = _s(invoice.get("invoice-number"))
    if not number:
        p.add("invoice_number_missing", "invoice has no invoice-number; enter it in Coupa")
    inv_date = _invoice_date(invoice.get("invoice-date"))
    if inv_date is None:
        p.add("invalid_date", f"invoice-date {invoice.get('invoice-date')!r} is not a date; fix it in Coupa")
    currency = document_currency(invoice, "invoice", master, p)
    credit = is_credit_note(invoice)

    # ---- lines
    raw_lines = invoice.get("invoice-lines") or []
    if not raw_lines:
        p.add("no_lines", "invoice has no lines; add lines in Coupa")
    lines: list[dict] = []
    po_lines: dict[int, tuple[str, str]] = {}
    line_sum = Decimal(0)
    sum_ok = True
    seen_numbers: set[int] = set()
    for idx, ln in enumerate(raw_lines):
        ln = ln if isinstance(ln, dict) else {}
        num_raw = ln.get("line-num")
        try:
            line_no = int(num_raw) if num_raw is not None else idx + 1
        except (TypeError, ValueError):
            line_no = idx + 1
        tag = f"line {line_no}"
        if line_no in seen_numbers:
            p.add("duplicate_line_number", f"{tag}: line-num {line_no} is used twice; renumber the lines in Coupa")
        seen_numbers.add(line_no)

        qty, price, total = _dec(ln.get("quantity")), _dec(ln.get("price")), _dec(ln.get("total"))
        bad = [f"{k} {ln.get(k)!r}" for k, v in (("quantity", qty), ("price", price), ("total", total)) if v is None]
        if bad:
            p.add("invalid_amounts", f"{tag}: {', '.join(bad)} is not a number; fix the line in Coupa")
            sum_ok = False
        else:
            assert qty is not None and price is not None and total is not None
            if abs(qty * price - total) > TOLERANCE:
                p.add("invalid_amounts", f"{tag}: quantity {qty} × price {price} = {qty * price} but the line total "
                      f"is {total} (differs by more than {TOLERANCE}); fix the line amounts in Coupa")
            line_sane(p, tag, qty, price, total, quantity_line=ln.get("type") not in AMOUNT_LINE_TYPES,
                      credit=credit)
            line_sum += total

        account = ln.get("account") if isinstance(ln.get("account"), dict) else {}
        line_chart = _name(account.get("account-type"))
        if line_chart and chart and le is not None and mapping.legal_entity(line_chart) != le:
            p.add("account_type_mismatch", f"{tag}: account {_s(account.get('code'))!r} belongs to chart of "
                  f"accounts {line_chart!r} but the invoice is on {chart!r}; use an account of the invoice's chart")
        main, seg_values = line_accounting(account, tag, le, le_ok, mapping, master, p)

        body: dict[str, Any] = {
            "dataAreaId": le,
            "InvoiceLineNumber": line_no,
            "LineDescription": _s(ln.get("description")),
            "ReceiveNow": qty,
            "UnitPrice": price,
            "Amount": total,
            "Currency": currency,
            "MainAccountDisplayValue": escape_segment(main, delim),
            "DimensionDisplayValue": display_value(seg_values, delim),
        }
        item = ln.get("item") if isinstance(ln.get("item"), dict) else None
        coupa_item = _s(item.get("item-number")) if item else ""
        if coupa_item:
            d365_item = mapping.item_number(coupa_item)
            if le_ok and not master.item_released(le, d365_item):
                p.add("item_not_released", f"{tag}: item {d365_item} is not released in legal entity {le} "
                      "(D365 ReleasedProductsV2); release the product in D365 or map it under items")
            body["ItemNumber"] = d365_item
        else:
            commodity = _name(ln.get("commodity"))
            cat = master.procurement_category(mapping.category_name(commodity)) if commodity else None
            if cat is not None:
                body["ProcurementCategoryName"] = cat[0]
                if cat[1]:
                    body["ProcurementCategoryHierarchyName"] = cat[1]
        po_number = _s(ln.get("po-number")) or _s(ln.get("order-header-num"))
        po_line = _s(ln.get("order-line-num"))
        if po_number and po_line:
            po_lines[idx] = (po_number, po_line)
        check_body(p, "VendorInvoiceLines", body, INVOICE_SOURCES, tag=tag)
        lines.append(body)

    gross = _dec(invoice.get("gross-total"))
    if gross is None:
        p.add("invalid_amounts", f"gross-total {invoice.get('gross-total')!r} is not a number; fix it in Coupa")
    elif raw_lines and sum_ok and abs(gross - line_sum) > TOLERANCE:
        p.add("invalid_amounts", f"gross-total {gross} differs from the sum of line totals {line_sum} by more than "
              f"{TOLERANCE}; fix the invoice amounts in Coupa")
    elif abs(gross) >= MAX_ABS_AMOUNT:
        p.add("absurd_amount", f"gross-total {gross} is beyond any plausible invoice (rule: |amount| < "
              f"{MAX_ABS_AMOUNT}); fix the invoice amounts in Coupa")
    check_body(p, "VendorInvoiceHeaders", {"InvoiceNumber": number, "InvoiceAccount": vendor or "",
                                           "Currency": currency}, INVOICE_SOURCES)

    if p:
        return p.quarantine()
    assert le is not None and vendor is not None and gross is not None and inv_date is not None
    header = {
        "dataAreaId": le,
        "InvoiceNumber": number,
        "InvoiceAccount": vendor,
        "InvoiceDate": inv_date,
        "Currency": currency,
        "ImportedAmount": gross,
        "InvoiceDescription": f"Coupa invoice {invoice.get('id')}",
    }
    return MappedInvoice(legal_entity=le, vendor_account=vendor, invoice_number=number,
                         header=header, lines=lines, po_lines=po_lines)
