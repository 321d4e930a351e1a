"""What the bulk routes of a documents run share before they write (plain Python; no Dagster): the
first writes of a run (an approved invoice / issued PO the ledger has never seen booked) mapped with
the OData path's own mapping, looked up in D365 in bulk, claimed, their vendors made sure of and
their intent recorded — exactly the per-document path's rules, in bulk.

1. map each candidate; a mapping problem -> the per-document path quarantines it, as always;
2. look D365 up per legal entity, many documents per request (``sync/dmf_lookups.py``): whatever D365
   already holds (pending or posted invoice with that natural key or our HeaderReference, a PO with
   that number) is not written in bulk and goes through the per-document path, which adopts it or
   quarantines the duplicate — dedupe holds across routes;
3. claim the ledger row, make sure the vendor exists (the DMF route: or is in the package, ahead of
   the documents), record the intent — state ``writing`` with the
   D365 key (HeaderReference ``COUPA-<id>`` / PO number) and the natural key — before anything is
   written, exactly as the per-document path does before its create.

The routes built on it: :class:`~.dmf_route.DmfRoute` (DMF packages) and
:class:`~.odata_route.ODataBulkRoute` (many changesets per ``$batch``).
"""

from __future__ import annotations

from typing import Any

from ..common.http import HTTPClientError, SystemUnavailableError
from ..d365.odata import fold
from ..mapping.fields import Quarantine
from ..mapping.invoices import map_invoice
from ..mapping.purchase_orders import map_purchase_order
from ..state.ledger import WRITING, WRITTEN, ClaimLostError, LedgerRow, NaturalKey, Problem
from .base import DocumentSync, UnbookableDocument
from .context import error_text
from .dmf_lookups import invoices_in_d365, purchase_orders_in_d365
from .dmf_plan import SPECS, MappedDocument, Packaged, is_candidate
from .invoice_lookups import header_reference
from .notices import NoticeQueue
from .report import Action, Outcome, SyncReport


class BulkPlanner:
    """Plans the first writes of a run for a bulk route; everything else is left to ``syncer`` (the
    per-document OData path of the same document type)."""

    # the DMF route: vendors D365 lacks travel in the documents' package instead of a $batch of their own
    PACKAGE_VENDORS = False

    def __init__(self, syncer: DocumentSync) -> None:
        self.syncer = syncer
        self.s = syncer.s
        self.doc_type = syncer.DOC
        self.spec = SPECS[self.doc_type]

    def _plan(
        self, candidates: list[dict[str, Any]], report: SyncReport
    ) -> tuple[list[Packaged], list[dict[str, Any]]]:
        """(documents claimed with their intent recorded, documents for the per-document path). When a
        bulk lookup fails for good (before anything is claimed), every candidate goes through the
        per-document path, whose own errors and circuit breaker decide what happens next."""
        try:
            mapped, to_odata = self._map(candidates)
        except SystemUnavailableError:
            raise
        except HTTPClientError as exc:
            self.s.logger.warning(
                "%s: a bulk lookup failed (%s); the %d documents go through the per-document path",
                self.doc_type,
                error_text(exc),
                len(candidates),
            )
            return [], list(candidates)
        planned, more = self._prepare(mapped, report)
        return planned, to_odata + more

    def _map(self, candidates: list[dict[str, Any]]) -> tuple[list[MappedDocument], list[dict[str, Any]]]:
        """Map each candidate; those that do not map, or that D365 already holds, go to OData."""
        mapped: list[MappedDocument] = []
        to_odata: list[dict[str, Any]] = []
        for document in candidates:
            try:
                supplier = self.syncer._supplier(document)
            except SystemUnavailableError:
                raise
            except Exception:  # noqa: BLE001 - unbookable supplier or a Coupa error: the OData path records it
                to_odata.append(document)
                continue
            result = self._map_one(document, supplier)
            if supplier is None or isinstance(result, Quarantine):
                to_odata.append(document)  # the OData path quarantines it with the same reasons
                continue
            mapped.append(MappedDocument(document, supplier, result))
        found = self._in_d365(mapped)
        keep = [m for m in mapped if self._natural(m) not in found]
        to_odata += [m.document for m in mapped if self._natural(m) in found]
        # what _prepare reads per document, read in bulk: vendors (only if the ledger does not know
        # one of them), and the D365 PO lines the invoices reference
        self.syncer.vendors.expect({m.mapped.legal_entity for m in keep})
        # the vendors D365 lacks are created here, many per $batch (or left to the package: DMF route);
        # _prepare's per-document check then finds each one settled (a vendor that failed fails its
        # documents there, as on the OData path)
        self.syncer.vendors.ensure_many(
            ((m.supplier, m.mapped.legal_entity) for m in keep), package_creates=self.PACKAGE_VENDORS
        )
        if self.doc_type == "invoice":
            self.syncer.lookups.prefetch_po_lines([m.mapped for m in keep])  # type: ignore[attr-defined]
        return keep, to_odata

    def _map_one(self, document: dict[str, Any], supplier: dict[str, Any] | None) -> Any:
        if self.doc_type == "invoice":
            return map_invoice(document, self.s.mapping, self.s.master, supplier=supplier)
        return map_purchase_order(document, self.s.mapping, self.s.master, supplier=supplier)

    def _bodies(self, document: dict[str, Any], mapped: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Header and lines exactly as the OData path would send them."""
        if self.doc_type == "invoice":
            self.syncer.lookups.link_purchase_orders(mapped)  # type: ignore[attr-defined]
            return self.syncer._bodies(mapped, header_reference(int(document["id"])))  # type: ignore[attr-defined]
        return mapped.header, mapped.lines

    def _natural(self, m: MappedDocument) -> tuple[str, str, str]:
        number = m.mapped.invoice_number if self.doc_type == "invoice" else m.mapped.purchase_order_number
        return fold(m.mapped.legal_entity), fold(m.mapped.vendor_account), fold(number)

    def _in_d365(self, mapped: list[MappedDocument]) -> set[tuple[str, str, str]]:
        """The folded natural keys of the mapped candidates D365 already holds (two bulk queries for
        invoices, one for POs, whatever the number of legal entities: ``sync/dmf_lookups.py``)."""
        if self.doc_type == "invoice":
            wanted = [
                (
                    m.mapped.legal_entity,
                    header_reference(int(m.document["id"])),
                    m.mapped.vendor_account,
                    m.mapped.invoice_number,
                )
                for m in mapped
            ]
            return invoices_in_d365(self.s.d365, wanted)
        numbers = purchase_orders_in_d365(
            self.s.d365, [(m.mapped.legal_entity, m.mapped.purchase_order_number) for m in mapped]
        )
        return {
            self._natural(m)
            for m in mapped
            if (fold(m.mapped.legal_entity), fold(m.mapped.purchase_order_number)) in numbers
        }

    def _prepare(self, mapped: list[MappedDocument], report: SyncReport) -> tuple[list[Packaged], list[dict[str, Any]]]:
        """Claim, ensure the vendor and record the intent of each mapped candidate."""
        s, run = self.s, self.s.run_id
        packaged: list[Packaged] = []
        to_odata: list[dict[str, Any]] = []
        for m in mapped:
            document = m.document
            coupa_id, label = int(document["id"]), self.syncer.label(document)
            row = s.ledger.claim(self.doc_type, coupa_id, run)
            if row is None:
                report.add(
                    Outcome(self.doc_type, coupa_id, Action.BUSY, label, None, "another run holds this document")
                )
                continue
            if not is_candidate(document, row, self.spec.wanted_status):  # changed since the plan: OData decides
                s.ledger.release(row, run)
                to_odata.append(document)
                continue
            coupa_hash = self.syncer.content_hash(document)
            try:
                item = self._intent(row, m, coupa_hash, label)
            except UnbookableDocument as exc:
                report.add(self.syncer._quarantine(row, document, exc.reason, coupa_hash))
                continue
            except ClaimLostError as exc:
                report.add(Outcome(self.doc_type, coupa_id, Action.BUSY, label, row.legal_entity, str(exc)))
                continue
            except SystemUnavailableError:
                s.ledger.release(row, run)
                for done in packaged:  # intent recorded, nothing imported: the next run's lookups settle them
                    s.ledger.release(done.row, run)
                raise
            except Exception as exc:  # noqa: BLE001 - one document's trouble never stops the others
                reason = error_text(exc)
                s.logger.warning("%s %s (%s) failed before packaging: %s", self.doc_type, coupa_id, label, reason)
                current = s.ledger.get(self.doc_type, coupa_id) or row
                s.ledger.record_problem(current, run, Problem.FAILED, reason)
                report.add(Outcome(self.doc_type, coupa_id, Action.FAILED, label, row.legal_entity, reason))
                continue
            if isinstance(item, Outcome):
                report.add(item)
            else:
                packaged.append(item)
        return packaged, to_odata

    def _intent(self, row: LedgerRow, m: MappedDocument, coupa_hash: str, label: str) -> Packaged | Outcome:
        s, run, mapped = self.s, self.s.run_id, m.mapped
        stopped = self.syncer._ensure_vendor(
            row, m.document, m.supplier, mapped.legal_entity, mapped.vendor_account, coupa_hash
        )
        if stopped is not None:
            return stopped
        header, lines = self._bodies(m.document, mapped)
        if self.doc_type == "invoice":
            number = mapped.invoice_number
            key = {"dataAreaId": mapped.legal_entity, "HeaderReference": header["HeaderReference"]}
        else:
            number = mapped.purchase_order_number
            key = {"dataAreaId": mapped.legal_entity, "PurchaseOrderNumber": number}
        natural = NaturalKey(mapped.legal_entity, mapped.vendor_account, number)
        row = s.ledger.update(row, run, natural_key=natural, state=WRITING, d365_key=key)  # intent first
        return Packaged(m.document, row, key, header, lines, coupa_hash, label)

    def _mark_written(self, item: Packaged, digest: str | None, notices: NoticeQueue, note: str = "") -> None:
        """The document landed: the ledger fields the per-document path sets after its create, then
        Coupa is told alongside (``sync/notices.py``); the outcome is reported once it has been."""
        row = self.s.ledger.update(
            item.row,
            self.s.run_id,
            state=WRITTEN,
            coupa_hash=item.coupa_hash,
            payload_hash=digest,
            reason=None,
            problem=None,
            attempts=item.row.attempts + 1,
        )
        le = str(item.key["dataAreaId"])
        lines = f"{len(item.lines)} lines" if item.lines else ""
        detail = str(item.key["HeaderReference"]) if self.doc_type == "invoice" else lines
        outcome = Outcome(self.doc_type, item.row.coupa_id, Action.CREATED, item.label, le, detail + note)
        notices.submit(row, item.document, outcome)
