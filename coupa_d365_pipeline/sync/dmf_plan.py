"""What the DMF route decides before and reads after an import, and the records it passes along
(plain Python; no Dagster): which route a run takes, which documents a package may carry, which
packaged documents landed and what DMF said about the others."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..d365.dmf import DmfExecutionStatus, DmfRowError, ImportCheck
from ..d365.dmf_package import DMF_ENTITIES, DmfPackage, staging_field
from ..d365.odata import fold
from ..state.ledger import NEW, QUARANTINED, LedgerRow
from ..state.store import coupa_id_of

PACKAGED_STATES = (NEW, QUARANTINED)  # never booked, no D365 key: a first write


class Route(StrEnum):
    ODATA = "odata"
    DMF = "dmf"


@dataclass(frozen=True)
class RouteDecision:
    route: Route
    reason: str
    to_write: int


@dataclass
class DocumentSpec:
    header_set: str
    line_set: str
    key_field: str
    wanted_status: str
    vendor_field: str  # the header's vendor account


SPECS = {
    "invoice": DocumentSpec(
        "VendorInvoiceHeaders", "VendorInvoiceLines", "HeaderReference", "approved", "InvoiceAccount"
    ),
    "purchase_order": DocumentSpec(
        "PurchaseOrderHeadersV2", "PurchaseOrderLinesV2", "PurchaseOrderNumber", "issued", "OrderVendorAccountNumber"
    ),
}


def is_candidate(document: Any, row: LedgerRow | None, wanted_status: str) -> bool:
    if not isinstance(document, dict) or coupa_id_of(document.get("id")) is None:
        return False
    return is_first_write(document.get("status"), row, wanted_status)


def is_first_write(status: Any, row: LedgerRow | None, wanted_status: str) -> bool:
    """A document in ``status`` with this ledger row is a first write (a package may carry it)."""
    if status != wanted_status:
        return False
    return row is None or (row.state in PACKAGED_STATES and not row.d365_key and row.problem is None)


def split_candidates(
    services: Any, doc_type: str, documents: Iterable[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(first writes a package may carry, everything else), from the ledger alone; duplicates dropped."""
    unique: dict[int, dict[str, Any]] = {}
    others: list[dict[str, Any]] = []
    for document in documents:
        coupa_id = coupa_id_of(document.get("id")) if isinstance(document, dict) else None
        if coupa_id is None:
            others.append(document)
        elif coupa_id not in unique:
            unique[coupa_id] = document
    rows = {r.coupa_id: r for r in services.ledger.rows(doc_type, coupa_ids=list(unique))} if unique else {}
    candidates = []
    for coupa_id, document in unique.items():
        row = rows.get(coupa_id)
        (candidates if is_candidate(document, row, SPECS[doc_type].wanted_status) else others).append(document)
    return candidates, others


def window_chunks(coupa_ids: Sequence[int], size: int) -> list[list[int]]:
    """The window's ids in chunks of ``size`` (a run reads and syncs one chunk of documents at a time);
    an empty window is one empty chunk, so the run still settles its retries."""
    return [list(coupa_ids[start : start + size]) for start in range(0, len(coupa_ids), size)] or [[]]


def route_for_refs(
    services: Any, doc_type: str, refs: Sequence[tuple[int | None, Any]], threshold: int, *, chunk: int
) -> RouteDecision:
    """DMF when more documents are to be written than ``threshold`` (0: always DMF), else OData; decided
    from (Coupa id, status) pairs, without reading the documents: the ledger is read ``chunk`` ids at a
    time (one bound parameter per id)."""
    wanted = SPECS[doc_type].wanted_status
    statuses = {coupa_id: status for coupa_id, status in refs if coupa_id is not None}
    ids = sorted(statuses)
    to_write = 0
    for part in window_chunks(ids, chunk):
        rows = {r.coupa_id: r for r in services.ledger.rows(doc_type, coupa_ids=part)} if part else {}
        to_write += sum(1 for coupa_id in part if is_first_write(statuses[coupa_id], rows.get(coupa_id), wanted))
    return route_for(to_write, threshold)


def route_for(to_write: int, threshold: int) -> RouteDecision:
    if threshold == 0:
        return RouteDecision(Route.DMF, f"D365_DMF_THRESHOLD=0 (always DMF); {to_write} documents to write", to_write)
    if to_write > threshold:
        return RouteDecision(Route.DMF, f"{to_write} documents to write > D365_DMF_THRESHOLD={threshold}", to_write)
    return RouteDecision(Route.ODATA, f"{to_write} documents to write <= D365_DMF_THRESHOLD={threshold}", to_write)


def landed_documents(check: ImportCheck, header_set: str, line_set: str) -> set[str]:
    """Folded document keys (the first key field) whose header and every line are in D365."""
    header = check.entity(header_set)
    lines = check.entity(line_set)
    landed = {fold(key[0]) for key in (header.found if header else {})}
    if lines is not None:
        landed -= {fold(key[0]) for key in lines.missing}
    return landed


def landed_vendors(submitted: Sequence[Submitted], checks: Sequence[ImportCheck]) -> set[tuple[str, str]]:
    """Folded (legal entity, vendor account) of the packaged vendors D365 holds after the imports."""
    landed: set[tuple[str, str]] = set()
    for done, check in zip(submitted, checks, strict=True):
        vendors = check.entity("VendorsV2")
        if vendors is not None:
            landed |= {(fold(done.package.legal_entity), fold(key[0])) for key in vendors.found}
    return landed


def vendors_shown_by_headers(done: Submitted, landed: set[str], vendor_field: str, key_field: str) -> set[str]:
    """Folded accounts of the package's vendors that a landed header names (``landed``: folded document
    keys). D365 refuses a header whose vendor it lacks, so such a vendor is in D365 without a read."""
    packaged = done.package.entity("VendorsV2")
    if packaged is None:
        return set()
    accounts = {fold(item.header.get(vendor_field)) for item in done.items if fold(item.key[key_field]) in landed}
    return {fold(key[0]) for key in packaged.keys} & accounts


def vendors_unshown(done: Submitted, shown: set[str]) -> bool:
    """Does the package carry a vendor no landed header vouches for (its row must be read back)?"""
    packaged = done.package.entity("VendorsV2")
    return packaged is not None and any(fold(key[0]) not in shown for key in packaged.keys)


def failure_reasons(errors: Sequence[DmfRowError], package: DmfPackage, key_field: str) -> dict[str, str]:
    """Folded document key -> what DMF said about its failed rows (header or lines), matched by the
    error's staging keys or else by its row number in the entity's data file."""
    reasons: dict[str, list[str]] = {}
    key_column = staging_field(key_field)
    labels = {DMF_ENTITIES[e.entity_set].label: e for e in package.entities}
    for error in errors:
        ref = error.keys.get(key_column)
        entity = labels.get(error.entity_name)
        if ref is None and entity is not None and error.row_number and 0 < error.row_number <= entity.row_count:
            ref = str(entity.keys[error.row_number - 1][0])
        if ref is not None:
            where = f"{error.entity_name} row {error.row_number}" if error.row_number else error.entity_name
            reasons.setdefault(fold(ref), []).append(f"{where}: {error.message}")
    return {ref: "; ".join(dict.fromkeys(messages)) for ref, messages in reasons.items()}


@dataclass
class Packaged:
    """A document whose intent is recorded: claimed row, bodies and key."""

    document: dict[str, Any]
    row: LedgerRow
    key: dict[str, Any]
    header: dict[str, Any]
    lines: list[dict[str, Any]]
    coupa_hash: str
    label: str


@dataclass
class MappedDocument:
    document: dict[str, Any]
    supplier: dict[str, Any]
    mapped: Any  # MappedInvoice | MappedPurchaseOrder


@dataclass
class Submitted:
    """A package D365 took and finished importing, to be read back and settled."""

    execution_id: str
    package: DmfPackage
    items: list[Packaged]
    status: DmfExecutionStatus


@dataclass
class DmfRunSummary:
    """What the route did, for the materialization metadata."""

    executions: list[str] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)
    packaged: int = 0
    redriven: int = 0
    resumed: list[str] = field(default_factory=list)


def environment_scope(d365: Any) -> str:
    """The lock scope of a D365 environment (the ledger's scope column holds 16 characters)."""
    return hashlib.sha256(str(getattr(d365, "base_url", "")).lower().encode()).hexdigest()[:16]
