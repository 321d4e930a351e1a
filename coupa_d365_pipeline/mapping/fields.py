"""Field helpers shared by the pure mappings (:mod:`.vendors`, :mod:`.invoices`,
:mod:`.purchase_orders`): text and number parsing, dates, currency, line accounting and sanity
rules, problem collection (:class:`Problems` -> :class:`Quarantine`) and the one value-equality
rule (:func:`same_value`) every change detection uses.

Invariants: pure functions of their arguments (no I/O, no Dagster); money and quantities are
:class:`~decimal.Decimal` (never float); every problem is phrased as what to fix and where.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from .config import MappingConfig
from .master import D365MasterData

__all__ = [
    "AMOUNT_LINE_TYPES",
    "MAX_ABS_AMOUNT",
    "MAX_ABS_QUANTITY",
    "TOLERANCE",
    "Problems",
    "Quarantine",
    "changed_fields",
    "decimal_of",
    "document_currency",
    "line_accounting",
    "line_sane",
    "name_of",
    "noon_utc_date",
    "same_value",
    "text_of",
]

TOLERANCE = Decimal("0.01")
# Sanity rules (issue 9): what no AP clerk would book is quarantined with the rule in the reason.
# Amounts: |price|, |line total| or |gross total| of 10^12 or more in any currency is a typo or a
# corrupted value (and beyond the precision JSON clients keep); quantities of 10^9 or more likewise.
MAX_ABS_AMOUNT = Decimal(10) ** 12
MAX_ABS_QUANTITY = Decimal(10) ** 9
# Coupa line types whose quantity means something (amount lines carry a nominal quantity)
AMOUNT_LINE_TYPES = frozenset({"InvoiceAmountLine", "OrderAmountLine"})


@dataclass(frozen=True)
class Quarantine:
    """Why a record cannot be booked. ``codes`` are short machine-readable causes (deduplicated)."""

    reasons: tuple[str, ...]
    codes: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "; ".join(self.reasons)


class Problems:
    """Collects every problem of one record (a mapping never stops at the first one)."""

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


# ---------------------------------------------------------------------------- values
def text_of(value: Any) -> str:
    """The value as stripped text; None is ""."""
    return "" if value is None else str(value).strip()


def decimal_of(value: Any) -> Decimal | None:
    """The value as a finite Decimal, or None (booleans, text that is no number, NaN, infinities)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        d = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def name_of(obj: Any, key: str = "name") -> str:
    """``obj[key]`` as stripped text when ``obj`` is a Coupa object (dict), else ""."""
    return text_of(obj.get(key)) if isinstance(obj, dict) else ""


def noon_utc_date(value: Any) -> str | None:
    """A Coupa date (or date-time) as the D365 ``Edm.DateTimeOffset`` we send: the day at noon UTC
    (``YYYY-MM-DDT12:00:00Z``), so no time zone shifts the day; None when it is not a date."""
    text = text_of(value)[:10]
    try:
        return f"{date.fromisoformat(text).isoformat()}T12:00:00Z"
    except ValueError:
        return None


# ---------------------------------------------------------------------------- equality
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def same_value(a: Any, b: Any, *, fold: bool = False) -> bool:
    """Whether two field values (what we send, what D365 holds) mean the same thing. The one rule of
    every change detection (invoice and PO headers and lines, vendors):

    1. Empty is empty: None, "" and blank text are equal to each other and to nothing else
       (``0`` is a value).
    2. Numbers compare as Decimal when either side is a number (int, float, Decimal — not bool) and
       the other parses as one: ``Decimal("5.00") == 5 == "5.0"``. Two texts are never compared as
       numbers, so ``"0100"`` (an account, an item) differs from ``"100"``.
    3. Dates compare by day when both sides are ISO dates or date-times: D365 answers an
       ``Edm.DateTimeOffset`` with its own time of day (``…T00:00:00Z``) for the noon-UTC date we
       send (``…T12:00:00Z``, see :func:`noon_utc_date`).
    4. Text compares stripped. ``fold=True`` also collapses runs of whitespace and ignores case —
       for fields D365 keeps in its own spelling (codes, units, dimension values, names and
       addresses under F&O's case-insensitive collation: vendors, PO lines). Without it case and
       inner whitespace count (invoice and PO headers and invoice lines: a corrected invoice number
       or description reaches D365, and a PO's own number is compared case-exactly).
    """
    if _empty(a) or _empty(b):
        return _empty(a) and _empty(b)
    if _is_number(a) or _is_number(b):
        x, y = decimal_of(a), decimal_of(b)
        if x is not None and y is not None:
            return x == y
    ta, tb = str(a).strip(), str(b).strip()
    if _ISO_DATE.fullmatch(ta) and _ISO_DATE.fullmatch(tb):
        return ta[:10] == tb[:10]
    if fold:
        return " ".join(ta.split()).casefold() == " ".join(tb.split()).casefold()
    return ta == tb


def changed_fields(
    current: dict[str, Any], desired: dict[str, Any], fields: Iterable[str], *, fold: bool = False
) -> dict[str, Any]:
    """The ``fields`` of ``desired`` whose value differs (:func:`same_value`) from ``current``.
    Fields absent from ``desired`` are not compared (D365 fills some itself)."""
    return {f: desired[f] for f in fields if f in desired and not same_value(desired[f], current.get(f), fold=fold)}


# ---------------------------------------------------------------------------- documents
def document_currency(document: dict, noun: str, master: D365MasterData, p: Problems) -> str:
    """The document's Coupa currency code, checked against D365 Currencies (invoices and POs).

    Coupa sends ``{"code": "USD", ...}``; a bare code (``"USD"``) is read as that code — it says
    the same thing and is checked against D365 like any other. Any other shape is quarantined."""
    raw = document.get("currency")
    currency = (text_of(raw) if isinstance(raw, str) else name_of(raw, "code")).upper()
    if not currency and raw not in (None, "", {}):
        p.add(
            "currency_unknown",
            f"{noun} currency {str(raw)[:40]!r} is not a Coupa currency (an object with a "
            "code such as USD); fix the currency in Coupa",
        )
    elif not currency:
        p.add("currency_unknown", f"{noun} has no currency; set it in Coupa")
    elif not master.has_currency(currency):
        p.add(
            "currency_unknown",
            f"currency {currency} does not exist in D365 (Currencies); "
            f"add it in D365 or fix the {noun} currency in Coupa",
        )
    return currency


def line_sane(
    p: Problems, tag: str, qty: Decimal, price: Decimal, total: Decimal, *, quantity_line: bool, credit: bool | None
) -> None:
    """The sanity rules for one line's numbers (``credit`` None: a purchase order)."""
    for name, value in (("price", price), ("total", total)):
        if abs(value) >= MAX_ABS_AMOUNT:
            p.add(
                "absurd_amount",
                f"{tag}: {name} {value} is beyond any plausible amount (rule: |amount| < "
                f"{MAX_ABS_AMOUNT}); fix the line in Coupa",
            )
    if abs(qty) >= MAX_ABS_QUANTITY:
        p.add(
            "absurd_quantity",
            f"{tag}: quantity {qty} is beyond any plausible quantity (rule: |quantity| < "
            f"{MAX_ABS_QUANTITY}); fix the line in Coupa",
        )
    if qty < 0 and credit is False:
        p.add(
            "negative_quantity",
            f"{tag}: quantity {qty} on an invoice that is not a credit note; correct the "
            "quantity in Coupa or issue a credit note",
        )
    elif qty < 0 and credit is None:
        p.add("negative_quantity", f"{tag}: quantity {qty} on a purchase order; order a positive quantity in Coupa")
    if qty == 0 and quantity_line:
        p.add(
            "zero_quantity",
            f"{tag}: quantity 0 on a quantity line books nothing (rule: a quantity line "
            "needs a quantity); correct the quantity in Coupa or remove the line",
        )


def line_accounting(
    account: dict, tag: str, le: str | None, le_ok: bool, mapping: MappingConfig, master: D365MasterData, p: Problems
) -> tuple[str, list[str]]:
    """Main account and dimension values of one Coupa line account, checked against D365 master
    data (shared by invoices and purchase orders). Returns (main account, dimension values)."""
    dims = mapping.dimensions
    main = text_of(account.get(dims.main_account_segment))
    if not main:
        p.add(
            "main_account_missing",
            f"{tag}: the account has no main account ({dims.main_account_segment} "
            "is empty); set the account on the line in Coupa",
        )
    elif le_ok and le is not None and not master.main_account_in(le, main):
        if master.main_account_exists(main):
            p.add(
                "main_account_not_in_legal_entity",
                f"{tag}: main account {main} does not exist in legal entity "
                f"{le} (D365 MainAccountLegalEntities); fix the Coupa account or activate it in D365",
            )
        else:
            p.add(
                "main_account_not_in_d365",
                f"{tag}: main account {main} does not exist in D365 "
                "(MainAccounts); fix the Coupa account or create the main account in D365",
            )
    seg_values: list[str] = []
    for dim in dims.order:
        seg = dims.segments.get(dim)
        value = text_of(account.get(seg)) if seg else ""
        if value and le_ok and le is not None and not master.dimension_value_exists(dim, value, le):
            p.add(
                "dimension_value_missing",
                f"{tag}: {dim} value {value!r} ({seg}) does not exist in D365 "
                f"(FinancialDimensionValues, shared or {le}); create it in D365 or fix the Coupa account",
            )
        seg_values.append(value)
    return main, seg_values
