"""Bulk D365 reads for the DMF route: which of a run's documents D365 already holds in any form, and
which D365 PO lines its invoices reference — one query per entity set for every legal entity of
the run (cross-company, paged), not one per document. Reads only; no Dagster import.

Each query is narrowed by a cheap server-side condition on the key field, a prefix cover
(:func:`~coupa_d365_pipeline.d365.odata.prefix_cover`: the values themselves while they fit in the
URL, else their shared prefixes as F&O wildcards, e.g. ``HeaderReference eq 'COUPA-10*'``), and
selects only the key fields; rows are matched here by exact (folded) value.

A document found here is *not* packaged: it goes through the OData path, whose per-document
lookups and adoption rules (``sync/adoption.py``, ``PurchaseOrderSync._ours``) decide whether it is
ours (adopt, bring in line) or a duplicate (quarantine). So these queries only have to find a
superset: F&O compares strings case-insensitively and reads ``*`` as a wildcard, the prefix cover
matches more than the values it was cut from — all of which only add rows here, never hide one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..d365 import odata
from ..d365.client import D365Client


def _either(*covers: str | None) -> str | None:
    """OR of prefix covers; ``None`` (no condition) when any of them could not be narrowed."""
    if any(cover is None for cover in covers):
        return None
    return odata.or_(*(c for c in covers if c))


def _companies(legal_entities: Iterable[str]) -> list[str]:
    return sorted({odata.fold(le) for le in legal_entities})


def invoices_in_d365(d365: D365Client, wanted: Sequence[tuple[str, str, str, str]]) -> set[tuple[str, str, str]]:
    """``wanted``: (legal entity, HeaderReference, InvoiceAccount, InvoiceNumber) of invoices about to be
    packaged. Answers the folded (legal entity, InvoiceAccount, InvoiceNumber) of those D365 holds pending
    (by natural key or by our HeaderReference) or posted (``VendInvoiceJourBiEntities``): two queries."""
    if not wanted:
        return set()
    companies = _companies(le for le, _, _, _ in wanted)
    by_ref = {
        (odata.fold(le), odata.fold(ref)): (odata.fold(le), odata.fold(a), odata.fold(n)) for le, ref, a, n in wanted
    }
    natural = set(by_ref.values())
    found: set[tuple[str, str, str]] = set()
    pending = _either(
        odata.prefix_cover("HeaderReference", (ref for _, ref, _, _ in wanted)),
        odata.prefix_cover("InvoiceNumber", (n for _, _, _, n in wanted)),
    )
    for row in d365.query(
        "VendorInvoiceHeaders",
        legal_entity=companies,
        filter=pending,
        select=["dataAreaId", "HeaderReference", "InvoiceNumber", "InvoiceAccount"],
    ):
        le = odata.fold(row.get("dataAreaId"))
        key = (le, odata.fold(row.get("InvoiceAccount")), odata.fold(row.get("InvoiceNumber")))
        if key in natural:
            found.add(key)
        ref = (le, odata.fold(row.get("HeaderReference")))
        if ref in by_ref:
            found.add(by_ref[ref])
    for row in d365.query(
        "VendInvoiceJourBiEntities",
        legal_entity=companies,
        filter=odata.prefix_cover("InvoiceId", (n for _, _, _, n in wanted)),
        select=["dataAreaId", "InvoiceId", "InvoiceAccount"],
    ):
        key = (
            odata.fold(row.get("dataAreaId")),
            odata.fold(row.get("InvoiceAccount")),
            odata.fold(row.get("InvoiceId")),
        )
        if key in natural:
            found.add(key)
    return found


def purchase_orders_in_d365(d365: D365Client, wanted: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """``wanted``: (legal entity, PurchaseOrderNumber). The folded pairs D365 already holds: one query."""
    if not wanted:
        return set()
    keys = {(odata.fold(le), odata.fold(number)) for le, number in wanted}
    found: set[tuple[str, str]] = set()
    for row in d365.query(
        "PurchaseOrderHeadersV2",
        legal_entity=_companies(le for le, _ in wanted),
        filter=odata.prefix_cover("PurchaseOrderNumber", (n for _, n in wanted)),
        select=["dataAreaId", "PurchaseOrderNumber"],
    ):
        key = (odata.fold(row.get("dataAreaId")), odata.fold(row.get("PurchaseOrderNumber")))
        if key in keys:
            found.add(key)
    return found


def purchase_order_lines_in_d365(d365: D365Client, wanted: Iterable[tuple[str, str, int]]) -> set[tuple[str, str, int]]:
    """``wanted``: (legal entity, PurchaseOrderNumber, LineNumber) that invoice lines reference. The
    (folded legal entity, folded PO number, line number) of those D365 holds: one query, the same
    answer as one ``GET PurchaseOrderLinesV2(...)`` per line."""
    wanted = list(wanted)
    keys = {(odata.fold(le), odata.fold(po), int(line)) for le, po, line in wanted}
    if not keys:
        return set()
    found: set[tuple[str, str, int]] = set()
    for row in d365.query(
        "PurchaseOrderLinesV2",
        legal_entity=_companies(le for le, _, _ in wanted),
        filter=odata.prefix_cover("PurchaseOrderNumber", {po for _, po, _ in wanted}),
        select=["dataAreaId", "PurchaseOrderNumber", "LineNumber"],
    ):
        try:
            line = int(row.get("LineNumber"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        key = (odata.fold(row.get("dataAreaId")), odata.fold(row.get("PurchaseOrderNumber")), line)
        if key in keys:
            found.add(key)
    return found
