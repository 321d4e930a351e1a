"""What a D365 F&O text field can hold, checked before anything is sent.

The reference schema (``d365/entities.json``, from a real ``$metadata`` via a generated client)
carries no ``MaxLength``, so the lengths below are the string sizes of the standard F&O extended
data types behind each entity field. Sources: the F&O application's EDTs as documented by
Microsoft (Num, VendAccount, PurchId, ItemId: 20; CurrencyCode: 3; DirPartyName: 100;
LogisticsAddressStreet: 250; LogisticsAddressCityName: 60; LogisticsAddressZipCodeId: 10).
Entries marked UNCONFIRMED are the usual sizes of those EDTs but were not checked against a
``$metadata`` with ``MaxLength``; an environment with extended EDTs allows more, never less.

Characters: C0 control characters (U+0000–U+001F) and DEL are refused in every field — NUL can
be neither stored by PostgreSQL text nor shown by D365 — except tab and line breaks in the free
text fields listed in ``MULTILINE``.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

FIELD_MAX_LENGTH: dict[str, dict[str, int]] = {
    "VendorInvoiceHeaders": {
        "InvoiceNumber": 20,  # VendInvoiceInfoTable.Num (EDT Num)
        "InvoiceAccount": 20,  # EDT VendAccount
        "Currency": 3,  # EDT CurrencyCode
        "InvoiceDescription": 60,  # EDT Description — UNCONFIRMED
        "HeaderReference": 30,  # UNCONFIRMED; ours is COUPA-<id>
    },
    "VendorInvoiceLines": {
        "LineDescription": 1000,  # EDT ItemFreeTxt (memo-sized) — UNCONFIRMED
        "ItemNumber": 20,  # EDT ItemId
        "Currency": 3,
        "PurchaseOrder": 20,  # EDT PurchId
        "MainAccountDisplayValue": 500,  # EDT DimensionDisplayValue — UNCONFIRMED
        "DimensionDisplayValue": 500,  # UNCONFIRMED
    },
    "VendorsV2": {
        "VendorAccountNumber": 20,  # EDT VendAccount
        "VendorOrganizationName": 100,  # EDT DirPartyName
        "VendorSearchName": 20,  # EDT SearchName — UNCONFIRMED
        "AddressStreet": 250,  # EDT LogisticsAddressStreet
        "AddressCity": 60,  # EDT LogisticsAddressCityName
        "AddressZipCode": 10,  # EDT LogisticsAddressZipCodeId
        "AddressCountryRegionId": 10,  # EDT LogisticsAddressCountryRegionId
        "CurrencyCode": 3,
    },
    "PurchaseOrderHeadersV2": {
        "PurchaseOrderNumber": 20,  # EDT PurchId
        "OrderVendorAccountNumber": 20,
        "InvoiceVendorAccountNumber": 20,
        "CurrencyCode": 3,
        "VendorOrderReference": 20,  # EDT VendRef — UNCONFIRMED
        "PurchaseOrderName": 100,  # UNCONFIRMED
        "DefaultLedgerDimensionDisplayValue": 500,  # UNCONFIRMED
    },
    "PurchaseOrderLinesV2": {
        "PurchaseOrderNumber": 20,
        "LineDescription": 1000,  # EDT ItemFreeTxt — UNCONFIRMED
        "ItemNumber": 20,
        "MainAccountIdDisplayValue": 500,  # UNCONFIRMED
        "DefaultLedgerDimensionDisplayValue": 500,  # UNCONFIRMED
    },
}

# free text where tab and line breaks are legitimate (a street on two lines, a long description)
MULTILINE = frozenset({"LineDescription", "InvoiceDescription", "AddressStreet"})

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class Problems(Protocol):
    def add(self, code: str, reason: str) -> None: ...


def control_characters(value: str, multiline: bool = False) -> list[str]:
    """The distinct control characters in ``value``, as ``U+0000`` text (empty when clean)."""
    pattern = _CONTROL_BUT_LINES if multiline else _CONTROL
    return sorted({f"U+{ord(c):04X}" for c in pattern.findall(value)})


def shown(value: str, limit: int = 40) -> str:
    """A value quoted for a reason: control characters escaped, long values shortened."""
    text = value if len(value) <= limit else value[:limit] + "…"
    return repr(text)


def check_body(p: Problems, entity_set: str, body: dict[str, Any], sources: dict[str, str], tag: str = "") -> None:
    """Add a problem for each text value in ``body`` that D365 cannot hold. ``sources`` names the
    Coupa field each D365 field comes from, so the reason says what to fix in Coupa."""
    limits = FIELD_MAX_LENGTH.get(entity_set, {})
    prefix = f"{tag}: " if tag else ""
    for field, value in body.items():
        if not isinstance(value, str):
            continue
        source = sources.get(field)
        origin = f"{source} " if source else ""
        fix = f"correct {source} in Coupa" if source else "correct the value in Coupa or in the mapping"
        bad = control_characters(value, multiline=field in MULTILINE)
        if bad:
            p.add(
                "control_character",
                f"{prefix}{origin}{shown(value)} contains the control character"
                f"{'s' if len(bad) > 1 else ''} {', '.join(bad)}, which D365 {entity_set}.{field} cannot "
                f"hold; {fix}",
            )
        limit = limits.get(field)
        if limit is not None and len(value) > limit:
            p.add(
                "field_too_long",
                f"{prefix}{origin}{shown(value)} is {len(value)} characters; D365 "
                f"{entity_set}.{field} holds at most {limit}; {fix}",
            )
