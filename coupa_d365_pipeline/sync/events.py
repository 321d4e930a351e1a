"""Event-driven sync: the documents a batch of webhook events points at, synced through the same
sync core, ledger and checks as the partitioned assets — suppliers first, then purchase orders, then
invoices.

Webhook content is never trusted: an event only names a document. Each document is read again from
Coupa and staged like a poll would stage it; what is written to D365 is what Coupa says *now*. A
stale or repeated event therefore re-reads a version the ledger already booked and changes nothing.
Plain Python: no Dagster.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..common.http import HTTPClientError
from ..common.markdown import cell, table
from ..webhooks.staging import StagedEvent
from .base import DocumentSync
from .context import SyncServices
from .invoices import InvoiceSync
from .purchase_orders import PurchaseOrderSync
from .report import Outcome, SyncReport
from .vendors import VendorSync

RESOURCE = {"supplier": "suppliers", "purchase_order": "purchase_orders", "invoice": "invoices"}
# the Coupa statuses the connector syncs, for the partitioned staging assets' read filter and the
# webhook path alike; anything else is not (yet) the connector's business
SYNCED_STATUSES: dict[str, tuple[str, ...]] = {
    "invoice": ("approved", "voided"),
    "purchase_order": ("issued", "closed", "cancelled"),
}
ORDER = ("supplier", "purchase_order", "invoice")


class EventResult(StrEnum):
    """What an event led to, besides the sync core's own :class:`~.report.Action` words."""

    NOT_IN_COUPA = "not_in_coupa"  # Coupa answers 404: nothing to write
    STATUS_NOT_SYNCED = "status_not_synced"  # e.g. an invoice.updated for an invoice still in approval
    NO_VENDOR_YET = "no_vendor_yet"  # supplier not used by a booked document: created when one needs it


@dataclass(frozen=True)
class EventOutcome:
    event: StagedEvent
    result: str  # an Action or an EventResult word
    document: str = ""
    legal_entity: str | None = None
    detail: str = ""


@dataclass
class EventReport:
    outcomes: list[EventOutcome] = field(default_factory=list)
    sync: SyncReport = field(default_factory=SyncReport)
    documents_read: int = 0

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for outcome in self.outcomes:
            found[outcome.result] = found.get(outcome.result, 0) + 1
        return dict(sorted(found.items()))

    def markdown(self, limit: int = 200) -> str:
        return table(
            ["event", "Coupa id", "document", "legal entity", "outcome", "detail"],
            (
                [
                    o.event.event_type.value,
                    o.event.coupa_id,
                    cell(o.document, max_chars=60),
                    o.legal_entity or "",
                    o.result,
                    cell(o.detail, max_chars=200),
                ]
                for o in self.outcomes
            ),
            limit=limit,
            empty="No events.",
        )


class EventSync:
    """Sync exactly the documents named by ``events``."""

    def __init__(self, services: SyncServices) -> None:
        self.s = services
        self.vendors = VendorSync(services)

    def run(self, events: Iterable[StagedEvent]) -> EventReport:
        report = EventReport()
        by_document: dict[tuple[str, int], list[StagedEvent]] = {}
        for event in events:
            by_document.setdefault((event.doc_type, event.coupa_id), []).append(event)
        for doc_type in ORDER:
            ids = sorted(coupa_id for (kind, coupa_id) in by_document if kind == doc_type)
            if not ids:
                continue
            documents = self._read(doc_type, ids, by_document, report)
            if doc_type == "supplier":
                for supplier in documents:
                    self._sync_supplier(supplier, by_document[(doc_type, int(supplier["id"]))], report)
            else:
                self._sync_documents(doc_type, documents, by_document, report)
        return report

    # ------------------------------------------------------------------ steps
    def _read(
        self,
        doc_type: str,
        ids: list[int],
        by_document: dict[tuple[str, int], list[StagedEvent]],
        report: EventReport,
    ) -> list[dict[str, Any]]:
        """Read each document again from Coupa (the event is only a pointer) and stage what is synced."""
        wanted = SYNCED_STATUSES.get(doc_type)
        documents = []
        for coupa_id in ids:
            events = by_document[(doc_type, coupa_id)]
            try:
                document = self.s.coupa.get(RESOURCE[doc_type], coupa_id)
            except HTTPClientError as exc:
                if getattr(exc, "status", None) != 404:
                    raise
                self._each(report, events, EventResult.NOT_IN_COUPA, detail=f"Coupa has no {doc_type} {coupa_id}")
                continue
            report.documents_read += 1
            status = str(document.get("status"))
            if wanted is not None and status not in wanted:
                detail = f"Coupa status {status} (synced: {', '.join(sorted(wanted))})"
                self._each(report, events, EventResult.STATUS_NOT_SYNCED, detail=detail)
                continue
            documents.append(document)
        staged = self.s.store.stage(doc_type, documents, run_id=self.s.run_id)
        rejected = {r.coupa_id for r in staged.rejected}
        return [d for d in documents if d.get("id") not in rejected]

    def _sync_supplier(self, supplier: dict[str, Any], events: list[StagedEvent], report: EventReport) -> None:
        """Bring the supplier's vendors up to date where the connector created or adopted them; a
        supplier no document uses yet gets its vendor when the first document needs it."""
        legal_entities = sorted({row.scope for row in self.s.ledger.rows("vendor", coupa_ids=[int(supplier["id"])])})
        if not legal_entities:
            detail = "no booked document uses this supplier yet; its vendor is created with the first one"
            self._each(
                report, events, EventResult.NO_VENDOR_YET, document=str(supplier.get("name") or ""), detail=detail
            )
            return
        for legal_entity in legal_entities:
            outcome = self.vendors.ensure(supplier, legal_entity)
            report.sync.add(outcome)
            self._each_outcome(report, events, outcome)

    def _sync_documents(
        self,
        doc_type: str,
        documents: list[dict[str, Any]],
        by_document: dict[tuple[str, int], list[StagedEvent]],
        report: EventReport,
    ) -> None:
        syncer: DocumentSync = PurchaseOrderSync(self.s) if doc_type == "purchase_order" else InvoiceSync(self.s)
        partial = SyncReport()
        syncer.sync_many(documents, partial)  # a SystemUnavailableError stops the batch: the run fails, retried
        for outcome in partial.outcomes:
            report.sync.add(outcome)
            self._each_outcome(report, by_document.get((doc_type, outcome.coupa_id), []), outcome)

    # ------------------------------------------------------------------ outcomes
    @staticmethod
    def _each(
        report: EventReport, events: list[StagedEvent], result: str, document: str = "", detail: str = ""
    ) -> None:
        for event in events:
            report.outcomes.append(EventOutcome(event, result, document=document, detail=detail))

    @staticmethod
    def _each_outcome(report: EventReport, events: list[StagedEvent], outcome: Outcome) -> None:
        for event in events:
            report.outcomes.append(
                EventOutcome(
                    event,
                    outcome.action.value,
                    document=outcome.document,
                    legal_entity=outcome.legal_entity,
                    detail=outcome.detail,
                )
            )
