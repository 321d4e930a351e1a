"""Bulk D365 reads for the DMF route: which of a legal entity's documents D365 already holds in any
form, many documents per request. Reads only; no Dagster import.

A document found here is *not* packaged: it goes through the OData path, whose per-document
lookups and adoption rules (``sync/adoption.py``, ``PurchaseOrderSync._ours``) decide whether it is
ours (adopt, bring in line) or a duplicate (quarantine). So these queries only have to find a
superset: F&O compares strings case-insensitively and reads ``*`` as a wildcard, and both can only
add rows here, never hide one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..d365 import odata
from ..d365.client import D365Client

CHUNK = 15  # documents per $filter (three clauses each for invoices: keeps the URL well under 8 KB)


def _chunks(items: Sequence[Any], size: int = CHUNK) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def invoices_in_d365(
    d365: D365Client, legal_entity: str, wanted: Sequence[tuple[str, str, str]]
) -> set[tuple[str, str]]:
    """``wanted``: (HeaderReference, InvoiceAccount, InvoiceNumber) of invoices about to be packaged.
    Answers the folded (InvoiceAccount, InvoiceNumber) of those D365 holds pending (by natural key or by
    our HeaderReference) or posted (``VendInvoiceJourBiEntities``)."""
    found: set[tuple[str, str]] = set()
    by_ref = {odata.fold(ref): (odata.fold(account), odata.fold(number)) for ref, account, number in wanted}
    natural = {(odata.fold(account), odata.fold(number)) for _, account, number in wanted}
    for chunk in _chunks(list(wanted)):
        clauses = [odata.all_eq({"InvoiceNumber": number, "InvoiceAccount": account}) for _, account, number in chunk]
        clauses += [odata.eq("HeaderReference", ref) for ref, _, _ in chunk]
        for row in d365.query(
            "VendorInvoiceHeaders",
            legal_entity=legal_entity,
            filter=odata.or_(*clauses),
            select=["HeaderReference", "InvoiceNumber", "InvoiceAccount"],
        ):
            pair = (odata.fold(row.get("InvoiceAccount")), odata.fold(row.get("InvoiceNumber")))
            if pair in natural:
                found.add(pair)
            ref = odata.fold(row.get("HeaderReference"))
            if ref in by_ref:
                found.add(by_ref[ref])
        posted = [odata.all_eq({"InvoiceId": number, "InvoiceAccount": account}) for _, account, number in chunk]
        for row in d365.query(
            "VendInvoiceJourBiEntities",
            legal_entity=legal_entity,
            filter=odata.or_(*posted),
            select=["InvoiceId", "InvoiceAccount"],
        ):
            pair = (odata.fold(row.get("InvoiceAccount")), odata.fold(row.get("InvoiceId")))
            if pair in natural:
                found.add(pair)
    return found


def purchase_orders_in_d365(d365: D365Client, legal_entity: str, numbers: Sequence[str]) -> set[str]:
    """The folded PurchaseOrderNumbers among ``numbers`` that D365 already holds in ``legal_entity``."""
    wanted = {odata.fold(n) for n in numbers}
    found: set[str] = set()
    for chunk in _chunks(list(numbers)):
        for row in d365.query(
            "PurchaseOrderHeadersV2",
            legal_entity=legal_entity,
            filter=odata.or_(*(odata.eq("PurchaseOrderNumber", n) for n in chunk)),
            select=["PurchaseOrderNumber"],
        ):
            number = odata.fold(row.get("PurchaseOrderNumber"))
            if number in wanted:
                found.add(number)
    return found
