"""Pure functions mapping Coupa purchase orders (raw OrderHeader JSON) to D365 F&O PO entity bodies.

Targets are ``PurchaseOrderHeadersV2`` and ``PurchaseOrderLinesV2``. The rules are those of the
invoice mapping in :mod:`.invoices` (same helpers from :mod:`.fields`, same quarantine codes where the
cause is the same): a PO that cannot be booked becomes a :class:`~.fields.Quarantine` listing *every*
problem, each saying what to fix; money and quantities are :class:`~decimal.Decimal`.

Choices documented here:

* Number policy: the D365 ``PurchaseOrderNumber`` *is* the Coupa ``po-number`` (also sent as
  ``VendorOrderReference``), so a re-read PO is found in D365 by key.
* The legal entity comes from the order lines' ``account.account-type`` (lines without one are
  ignored; the header ``account-type`` is used only when no line has one). Lines whose charts map
  to different legal entities are quarantined (``account_type_mismatch``); a PO is booked in one.
* ``line-num`` must be a whole number (it is the D365 ``LineNumber`` key, so it is never
  derived from the line's position); a missing or non-numeric one is quarantined.
* ``RequestedDeliveryDate`` is sent as ``YYYY-MM-DDT12:00:00Z`` (noon UTC, like invoice dates, so
  no time zone shifts the day). The header gets the earliest line ``need-by-date``; a line without
  one gets the header date; a need-by-date that is not a date is quarantined (``invalid_date``).
* Item lines get ``ItemNumber`` only (D365 derives the category from the product); lines without
  an item get ``ProcurementProductCategoryName`` (the mapped commodity, as spelled in D365), which
  must exist, unlike invoices where it is optional.
* ``PurchaseUnitSymbol`` is the Coupa ``uom`` code as spelled in D365 ``UnitsOfMeasure``.
* ``MainAccountIdDisplayValue`` is the main-account segment, delimiter-escaped like invoices'
  ``MainAccountDisplayValue``; ``DefaultLedgerDimensionDisplayValue`` is the dimension display
  string. The header gets it only when every line has the same one.
* The PO header ``total`` is not checked against the lines (it may include charges D365 does not
  get); each line's quantity × price must equal its total within 0.01.
* Coupa ``status`` (issued/closed/cancelled) does not change the mapping; the caller decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import MappingConfig
from .dimensions import display_value, escape_segment
from .fields import (
    AMOUNT_LINE_TYPES,
    TOLERANCE,
    Problems,
    Quarantine,
    changed_fields,
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
    "MappedPurchaseOrder",
    "PO_LINE_UPDATE_FIELDS",
    "PO_LINE_RECEIPT_LOCKED_FIELDS",
    "legal_entity_for_po",
    "map_purchase_order",
    "po_line_changes",
]

PO_NAME_MAX = 60

PO_LINE_UPDATE_FIELDS: tuple[str, ...] = (
    "OrderedPurchaseQuantity",
    "PurchasePrice",
    "LineAmount",
    "RequestedDeliveryDate",
    "LineDescription",
    "ItemNumber",
    "PurchaseUnitSymbol",
    "ProcurementProductCategoryName",
    "MainAccountIdDisplayValue",
    "DefaultLedgerDimensionDisplayValue",
)

# D365 refuses to change these on a line that has (partly) been received.
PO_LINE_RECEIPT_LOCKED_FIELDS: tuple[str, ...] = (
    "OrderedPurchaseQuantity",
    "PurchasePrice",
    "LineAmount",
    "ItemNumber",
    "PurchaseUnitSymbol",
    "ProcurementProductCategoryName",
)


@dataclass
class MappedPurchaseOrder:
    legal_entity: str
    vendor_account: str
    purchase_order_number: str
    header: dict
    lines: list[dict]


# ---------------------------------------------------------------------------- legal entity
def _line_charts(po: dict) -> list[tuple[str, str]]:
    """(line label, chart name) for every order line whose account names a chart of accounts."""
    out = []
    for idx, ln in enumerate(po.get("order-lines") or []):
        if not isinstance(ln, dict):
            continue
        account: dict = ln["account"] if isinstance(ln.get("account"), dict) else {}
        chart = name_of(account.get("account-type"))
        if chart:
            out.append((text_of(ln.get("line-num")) or f"#{idx + 1}", chart))
    return out


def _resolve_legal_entity(po: dict, mapping: MappingConfig) -> tuple[str | None, list[tuple[str, str]], str]:
    """(legal entity or None, [(line, chart)] considered, header chart used as fallback or "")."""
    charts = _line_charts(po)
    header_chart = ""
    if not charts:
        header_chart = name_of(po.get("account-type"))
        return mapping.legal_entity(header_chart), [], header_chart
    les = {mapping.legal_entity(c) for _, c in charts}
    if len(les) != 1 or None in les:
        return None, charts, ""
    return les.pop(), charts, ""


def legal_entity_for_po(po: dict, mapping: MappingConfig) -> str | None:
    """dataAreaId for the PO: the lines' charts of accounts must all map to the same legal entity.

    None when a chart is unmapped or the lines disagree. The header ``account-type`` is used only
    when no line names a chart.
    """
    return _resolve_legal_entity(po, mapping)[0]


def _lines_text(labels: list[str]) -> str:
    return ("line " if len(labels) == 1 else "lines ") + ", ".join(labels)


def _legal_entity_problems(p: Problems, po: dict, mapping: MappingConfig, master: D365MasterData) -> str | None:
    le, charts, header_chart = _resolve_legal_entity(po, mapping)
    if le is None:
        if not charts:
            if header_chart:
                p.add(
                    "account_type_unmapped",
                    f"Coupa chart of accounts {header_chart!r} is not mapped to a D365 "
                    "legal entity; add it under legal_entities in the mapping",
                )
            else:
                p.add(
                    "account_type_unmapped",
                    "purchase order has no chart of accounts (no account-type on its "
                    "lines' accounts); set the accounts on the lines in Coupa",
                )
            return None
        by_chart: dict[str, list[str]] = {}
        for label, chart in charts:
            by_chart.setdefault(chart, []).append(label)
        unmapped = [c for c in by_chart if mapping.legal_entity(c) is None]
        for chart in unmapped:
            p.add(
                "account_type_unmapped",
                f"{_lines_text(by_chart[chart])}: Coupa chart of accounts {chart!r} is "
                "not mapped to a D365 legal entity; add it under legal_entities in the mapping",
            )
        mapped = {c: mapping.legal_entity(c) for c in by_chart if c not in unmapped}
        if len(set(mapped.values())) > 1:
            parts = "; ".join(f"{_lines_text(by_chart[c])} on {c!r} ({le_})" for c, le_ in mapped.items())
            p.add(
                "account_type_mismatch",
                f"the lines' accounts belong to different legal entities ({parts}); "
                "a purchase order is booked in one legal entity, so use accounts of one chart of accounts "
                "on all lines in Coupa",
            )
        return None
    if not master.has_legal_entity(le):
        source = header_chart or ", ".join(sorted({c for _, c in charts}))
        p.add(
            "legal_entity_not_in_d365",
            f"legal entity {le!r} (mapped from {source!r}) does not exist in D365 "
            "(LegalEntities); fix legal_entities in the mapping",
        )
    return le


# ---------------------------------------------------------------------------- purchase orders
def _line_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    text = text_of(value)
    if not (text.isascii() and text.isdigit()):
        return None
    n = int(text)
    return n if n > 0 else None


PO_SOURCES = {
    "PurchaseOrderNumber": "po-number",
    "OrderVendorAccountNumber": "the supplier number",
    "CurrencyCode": "the currency",
    "LineDescription": "the line description",
    "ItemNumber": "the item number",
    "MainAccountIdDisplayValue": "the line account",
    "DefaultLedgerDimensionDisplayValue": "the line account",
}


def map_purchase_order(
    po: dict, mapping: MappingConfig, master: D365MasterData, *, supplier: dict | None = None
) -> MappedPurchaseOrder | Quarantine:
    """PurchaseOrderHeadersV2/PurchaseOrderLinesV2 bodies for a Coupa PO, or a Quarantine."""
    p = Problems()
    dims = mapping.dimensions
    delim = dims.delimiter

    # ---- legal entity
    le = _legal_entity_problems(p, po, mapping, master)
    le_ok = le is not None and master.has_legal_entity(le)

    # ---- vendor
    sup = supplier if supplier is not None else (po.get("supplier") or {})
    sup = sup if isinstance(sup, dict) else {}
    vendor = vendor_account_for(sup, mapping)
    who = f"supplier {sup.get('id')} ({text_of(sup.get('name'))})"
    if not vendor:
        if mapping.vendor_account.source == "supplier_number":
            p.add(
                "supplier_number_null",
                f"{who} has no supplier number, so there is no D365 vendor account; enter the supplier number in Coupa",
            )
        else:
            p.add("no_vendor_account", f"{who} has no id; cannot derive a vendor account")

    # ---- header fields
    number = text_of(po.get("po-number"))
    if not number:
        p.add(
            "po_number_missing",
            "purchase order has no po-number; it is the D365 PurchaseOrderNumber, "
            "so the order cannot be booked without it",
        )
    currency = document_currency(po, "purchase order", master, p)

    # ---- lines
    raw_lines = po.get("order-lines") or []
    if not raw_lines:
        p.add("no_lines", "purchase order has no lines; add lines in Coupa")
    lines: list[dict] = []
    line_dates: list[str | None] = []
    seen_numbers: set[int] = set()
    for idx, ln in enumerate(raw_lines):
        ln = ln if isinstance(ln, dict) else {}
        num_raw = ln.get("line-num")
        line_no = _line_number(num_raw)
        tag = f"line {line_no}" if line_no is not None else f"line #{idx + 1}"
        if line_no is None:
            p.add(
                "invalid_line_number",
                f"{tag}: line-num {num_raw!r} is not a whole number ≥ 1 (it is the D365 "
                "LineNumber); fix the line in Coupa",
            )
        elif line_no in seen_numbers:
            p.add("duplicate_line_number", f"{tag}: line-num {line_no} is used twice; renumber the lines in Coupa")
        else:
            seen_numbers.add(line_no)

        qty, price, total = decimal_of(ln.get("quantity")), decimal_of(ln.get("price")), decimal_of(ln.get("total"))
        bad = [f"{k} {ln.get(k)!r}" for k, v in (("quantity", qty), ("price", price), ("total", total)) if v is None]
        if bad:
            p.add("invalid_amounts", f"{tag}: {', '.join(bad)} is not a number; fix the line in Coupa")
        else:
            assert qty is not None and price is not None and total is not None
            if abs(qty * price - total) > TOLERANCE:
                p.add(
                    "invalid_amounts",
                    f"{tag}: quantity {qty} × price {price} = {qty * price} but the line total "
                    f"is {total} (differs by more than {TOLERANCE}); fix the line amounts in Coupa",
                )
            line_sane(p, tag, qty, price, total, quantity_line=ln.get("type") not in AMOUNT_LINE_TYPES, credit=None)

        need_by_raw = ln.get("need-by-date")
        need_by = noon_utc_date(need_by_raw) if text_of(need_by_raw) else None
        if text_of(need_by_raw) and need_by is None:
            p.add("invalid_date", f"{tag}: need-by-date {need_by_raw!r} is not a date; fix it in Coupa")
        line_dates.append(need_by)

        uom = name_of(ln.get("uom"), "code")
        unit = master.unit_symbol(uom) if uom else None
        if not uom:
            p.add("unit_unknown", f"{tag}: the line has no unit of measure (uom); set it in Coupa")
        elif unit is None:
            p.add(
                "unit_unknown",
                f"{tag}: unit {uom!r} does not exist in D365 (UnitsOfMeasure); create the unit "
                "in D365 or fix the line's unit of measure in Coupa",
            )

        account: dict = ln["account"] if isinstance(ln.get("account"), dict) else {}
        main, seg_values = line_accounting(account, tag, le, le_ok, mapping, master, p)

        body: dict[str, Any] = {
            "dataAreaId": le,
            "PurchaseOrderNumber": number,
            "LineNumber": line_no,
            "LineDescription": text_of(ln.get("description")),
            "OrderedPurchaseQuantity": qty,
            "PurchaseUnitSymbol": unit,
            "PurchasePrice": price,
            "LineAmount": total,
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
            if not commodity:
                p.add(
                    "category_unknown",
                    f"{tag}: the line has neither an item nor a commodity; set the commodity "
                    "in Coupa (it becomes the D365 procurement category)",
                )
            else:
                wanted = mapping.category_name(commodity)
                cat = master.procurement_category(wanted)
                if cat is None:
                    mapped_from = f" (mapped from commodity {commodity!r})" if wanted != commodity else ""
                    p.add(
                        "category_unknown",
                        f"{tag}: procurement category {wanted!r}{mapped_from} does not exist "
                        "in D365 (ProcurementProductCategories); create it in D365 or map the commodity under "
                        "procurement_category",
                    )
                else:
                    body["ProcurementProductCategoryName"] = cat[0]
        body["MainAccountIdDisplayValue"] = escape_segment(main, delim)
        body["DefaultLedgerDimensionDisplayValue"] = display_value(seg_values, delim)
        check_body(
            p,
            "PurchaseOrderLinesV2",
            {k: v for k, v in body.items() if k != "PurchaseOrderNumber"},
            PO_SOURCES,
            tag=tag,
        )
        lines.append(body)
    check_body(
        p,
        "PurchaseOrderHeadersV2",
        {"PurchaseOrderNumber": number, "OrderVendorAccountNumber": vendor or "", "CurrencyCode": currency},
        PO_SOURCES,
    )

    if p:
        return p.quarantine()
    assert le is not None and vendor is not None

    dated = [d for d in line_dates if d]
    header_date = min(dated) if dated else None  # same format throughout, so string order is date order
    for body, d in zip(lines, line_dates, strict=True):
        if d or header_date:
            body["RequestedDeliveryDate"] = d or header_date

    header: dict[str, Any] = {
        "dataAreaId": le,
        "PurchaseOrderNumber": number,
        "OrderVendorAccountNumber": vendor,
        "InvoiceVendorAccountNumber": vendor,
        "CurrencyCode": currency,
    }
    pt_code = name_of(po.get("payment-term"), "code")
    if pt_code:
        pt = mapping.payment_terms_name(pt_code)
        if master.has_payment_terms(le, pt):
            header["PaymentTermsName"] = pt
    header["VendorOrderReference"] = number
    name = text_of(sup.get("name")) or text_of(sup.get("display-name"))
    if name:
        header["PurchaseOrderName"] = name[:PO_NAME_MAX]
    if header_date:
        header["RequestedDeliveryDate"] = header_date
    dim_strings = {ln["DefaultLedgerDimensionDisplayValue"] for ln in lines}
    if len(dim_strings) == 1:
        header["DefaultLedgerDimensionDisplayValue"] = dim_strings.pop()
    return MappedPurchaseOrder(
        legal_entity=le, vendor_account=vendor, purchase_order_number=number, header=header, lines=lines
    )


# ---------------------------------------------------------------------------- updates
def po_line_changes(current: dict, desired: dict) -> dict:
    """The PO_LINE_UPDATE_FIELDS of ``desired`` that really differ from ``current`` (the D365 line).

    Compared by :func:`~.fields.same_value`, folded: numbers as Decimals ("5.00" == 5), dates by
    their YYYY-MM-DD part, text case/whitespace-insensitively (None == ""). Fields absent from
    ``desired`` are not compared (D365 fills e.g. the category of item lines itself).
    """
    return changed_fields(current, desired, PO_LINE_UPDATE_FIELDS, fold=True)
