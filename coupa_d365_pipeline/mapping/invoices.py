"""Pure functions mapping Coupa invoices (raw JSON dicts) to D365 F&O ``VendorInvoiceHeaders`` /
``VendorInvoiceLines`` bodies.

An invoice that cannot be booked becomes a :class:`~.fields.Quarantine` listing *every* problem
found, each phrased as what to fix and where. Money and quantities are :class:`~decimal.Decimal`
throughout (never float); the caller serializes them.

Choices documented here:

* ``MainAccountDisplayValue`` is the main-account segment alone, delimiter-escaped like any segment.
* Non-item lines get ``ProcurementCategoryName`` (+ ``ProcurementCategoryHierarchyName`` when D365
  reports one) only when the category exists in D365; otherwise neither is sent.
* A line whose account belongs to a different Coupa chart of accounts than the invoice is
  quarantined (it would be booked in the wrong legal entity).
* ``InvoiceDate`` is the Coupa invoice-date at noon UTC (:func:`~.fields.noon_utc_date`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .config import MappingConfig
from .dimensions import display_value, escape_segment
from .fields import (
    AMOUNT_LINE_TYPES,
    MAX_ABS_AMOUNT,
    TOLERANCE,
    Problems,
    Quarantine,
    decimal_of,
    document_currency,
    line_accounting,
    line_sane,
    name_of,
    noon_utc_date,
    text_of,
)
from .limits import check_body
from .master import D365MasterData
from .vendors import vendor_account_for

__all__ = [
    "Quarantine",  # re-exported from .fields
    "MappedInvoice",
    "legal_entity_for",
    "is_credit_note",
    "map_invoice",
]

INVOICE_SOURCES = {
    "InvoiceNumber": "invoice-number",
    "InvoiceAccount": "the supplier number",
    "Currency": "the currency",
    "LineDescription": "the line description",
    "ItemNumber": "the item number",
    "PurchaseOrder": "the PO number",
    "MainAccountDisplayValue": "the line account",
    "DimensionDisplayValue": "the line account",
}


@dataclass
class MappedInvoice:
    legal_entity: str
    vendor_account: str
    invoice_number: str
    header: dict
    lines: list[dict]
    po_lines: dict[int, tuple[str, str]] = field(default_factory=dict)


def legal_entity_for(invoice: dict, mapping: MappingConfig) -> str | None:
    """dataAreaId for the invoice's Coupa chart of accounts (header account-type, else first line's)."""
    return mapping.legal_entity(_account_type_name(invoice))


def _account_type_name(invoice: dict) -> str:
    name = name_of(invoice.get("account-type"))
    if not name:
        lines = invoice.get("invoice-lines") or []
        if lines and isinstance(lines[0], dict):
            name = name_of((lines[0].get("account") or {}).get("account-type"))
    return name


def is_credit_note(invoice: dict) -> bool:
    """Coupa marks a credit note with ``is-credit-note`` and document type "Credit Note"."""
    return invoice.get("is-credit-note") is True or text_of(invoice.get("document-type")).casefold() == "credit note"


def map_invoice(
    invoice: dict, mapping: MappingConfig, master: D365MasterData, *, supplier: dict | None = None
) -> MappedInvoice | Quarantine:
    """VendorInvoiceHeaders/VendorInvoiceLines bodies (without HeaderReference) or a Quarantine."""
    p = Problems()
    dims = mapping.dimensions
    delim = dims.delimiter

    # ---- legal entity
    chart = _account_type_name(invoice)
    le = mapping.legal_entity(chart)
    if le is None:
        if chart:
            p.add(
                "account_type_unmapped",
                f"Coupa chart of accounts {chart!r} is not mapped to a D365 legal "
                "entity; add it under legal_entities in the mapping",
            )
        else:
            p.add("account_type_unmapped", "invoice has no chart of accounts (account-type); set it in Coupa")
    elif not master.has_legal_entity(le):
        p.add(
            "legal_entity_not_in_d365",
            f"legal entity {le!r} (mapped from {chart!r}) does not exist in D365 "
            "(LegalEntities); fix legal_entities in the mapping",
        )
    le_ok = le is not None and master.has_legal_entity(le)

    # ---- vendor
    sup = supplier if supplier is not None else (invoice.get("supplier") or {})
    vendor = vendor_account_for(sup, mapping)
    if not vendor:
        p.add(
            "supplier_number_null",
            f"supplier {sup.get('id')} ({text_of(sup.get('name'))}) has no supplier number, "
            "so there is no D365 vendor account; enter the supplier number in Coupa",
        )

    # ---- header fields
    number = text_of(invoice.get("invoice-number"))
    if not number:
        p.add("invoice_number_missing", "invoice has no invoice-number; enter it in Coupa")
    inv_date = noon_utc_date(invoice.get("invoice-date"))
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

        qty, price, total = decimal_of(ln.get("quantity")), decimal_of(ln.get("price")), decimal_of(ln.get("total"))
        bad = [f"{k} {ln.get(k)!r}" for k, v in (("quantity", qty), ("price", price), ("total", total)) if v is None]
        if bad:
            p.add("invalid_amounts", f"{tag}: {', '.join(bad)} is not a number; fix the line in Coupa")
            sum_ok = False
        else:
            assert qty is not None and price is not None and total is not None
            if abs(qty * price - total) > TOLERANCE:
                p.add(
                    "invalid_amounts",
                    f"{tag}: quantity {qty} × price {price} = {qty * price} but the line total "
                    f"is {total} (differs by more than {TOLERANCE}); fix the line amounts in Coupa",
                )
            line_sane(p, tag, qty, price, total, quantity_line=ln.get("type") not in AMOUNT_LINE_TYPES, credit=credit)
            line_sum += total

        account: dict = ln["account"] if isinstance(ln.get("account"), dict) else {}
        line_chart = name_of(account.get("account-type"))
        if line_chart and chart and le is not None and mapping.legal_entity(line_chart) != le:
            p.add(
                "account_type_mismatch",
                f"{tag}: account {text_of(account.get('code'))!r} belongs to chart of "
                f"accounts {line_chart!r} but the invoice is on {chart!r}; use an account of the invoice's chart",
            )
        main, seg_values = line_accounting(account, tag, le, le_ok, mapping, master, p)

        body: dict[str, Any] = {
            "dataAreaId": le,
            "InvoiceLineNumber": line_no,
            "LineDescription": text_of(ln.get("description")),
            "ReceiveNow": qty,
            "UnitPrice": price,
            "Amount": total,
            "Currency": currency,
            "MainAccountDisplayValue": escape_segment(main, delim),
            "DimensionDisplayValue": display_value(seg_values, delim),
        }
        item = ln.get("item") if isinstance(ln.get("item"), dict) else None
        coupa_item = text_of(item.get("item-number")) if item else ""
        if coupa_item:
            d365_item = mapping.item_number(coupa_item)
            if le_ok and le is not None and not master.item_released(le, d365_item):
                p.add(
                    "item_not_released",
                    f"{tag}: item {d365_item} is not released in legal entity {le} "
                    "(D365 ReleasedProductsV2); release the product in D365 or map it under items",
                )
            body["ItemNumber"] = d365_item
        else:
            commodity = name_of(ln.get("commodity"))
            cat = master.procurement_category(mapping.category_name(commodity)) if commodity else None
            if cat is not None:
                body["ProcurementCategoryName"] = cat[0]
                if cat[1]:
                    body["ProcurementCategoryHierarchyName"] = cat[1]
        po_number = text_of(ln.get("po-number")) or text_of(ln.get("order-header-num"))
        po_line = text_of(ln.get("order-line-num"))
        if po_number and po_line:
            po_lines[idx] = (po_number, po_line)
        check_body(p, "VendorInvoiceLines", body, INVOICE_SOURCES, tag=tag)
        lines.append(body)

    gross = decimal_of(invoice.get("gross-total"))
    if gross is None:
        p.add("invalid_amounts", f"gross-total {invoice.get('gross-total')!r} is not a number; fix it in Coupa")
    elif raw_lines and sum_ok and abs(gross - line_sum) > TOLERANCE:
        p.add(
            "invalid_amounts",
            f"gross-total {gross} differs from the sum of line totals {line_sum} by more than "
            f"{TOLERANCE}; fix the invoice amounts in Coupa",
        )
    elif abs(gross) >= MAX_ABS_AMOUNT:
        p.add(
            "absurd_amount",
            f"gross-total {gross} is beyond any plausible invoice (rule: |amount| < "
            f"{MAX_ABS_AMOUNT}); fix the invoice amounts in Coupa",
        )
    check_body(
        p,
        "VendorInvoiceHeaders",
        {"InvoiceNumber": number, "InvoiceAccount": vendor or "", "Currency": currency},
        INVOICE_SOURCES,
    )

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
    return MappedInvoice(
        legal_entity=le, vendor_account=vendor, invoice_number=number, header=header, lines=lines, po_lines=po_lines
    )
