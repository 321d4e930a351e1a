"""What every document sync shares: claim the ledger row, run the document's flow, turn client
errors into a recorded failure, quarantine with reasons, alert Coupa once per reason, and tell
Coupa when the document is booked (export flag + one Success history record)."""

from __future__ import annotations

from typing import Any, Iterable

from ..common.http import HTTPClientError, SystemUnavailableError, is_system_failure
from ..state.ledger import ClaimLostError, DocState, LedgerRow, Problem
from ..state.store import coupa_id_of, id_problem, payload_hash
from .context import SyncServices, error_text, http_status
from .report import Outcome, SyncReport
from .vendors import VendorSync

# Fields that change without changing what is booked (our own export flag, payment status written
# back, bookkeeping timestamps, Coupa-side receiving): excluded from change detection.
VOLATILE_FIELDS = frozenset({"exported", "last-exported-at", "updated-at", "updated-by",
                             "current-integration-history-records", "paid", "payment-date", "payment-notes",
                             "payments", "received", "invoiced", "total-invoiced", "transmission-status",
                             "acknowledged-flag", "acknowledged-at"})


def content_hash(document: Any, ignore_custom_fields: Iterable[str] = ()) -> str:
    """Hash of what Coupa says about the business document. Fields the connector writes back itself
    (export flag, payments, integration history, ``custom-fields`` named in the mapping) are left
    out, so our own writes never look like a change made in Coupa."""
    ignored = set(ignore_custom_fields)

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE_FIELDS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    stripped = strip(document)
    if ignored and isinstance(stripped, dict) and isinstance(stripped.get("custom-fields"), dict):
        custom = {k: v for k, v in stripped["custom-fields"].items() if k not in ignored}
        if custom:
            stripped["custom-fields"] = custom
        else:
            stripped.pop("custom-fields")
    return payload_hash(stripped)


class UnbookableDocument(Exception):
    """The document cannot be booked as Coupa sent it; ``reason`` says what to fix in Coupa."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DocumentSync:
    DOC = "document"
    NUMBER_FIELD = "id"

    def __init__(self, services: SyncServices, vendors: VendorSync | None = None) -> None:
        self.s = services
        self.vendors = vendors or VendorSync(services)

    # -- entry points ------------------------------------------------------------------------
    def sync_many(self, documents: Iterable[dict[str, Any]], report: SyncReport | None = None) -> SyncReport:
        """Sync each document; stops at a :class:`SystemUnavailableError` (which carries the partial
        report as ``report``): the documents not reached keep their state for the next run."""
        report = report or SyncReport()
        seen: set[int] = set()
        for document in documents:
            coupa_id = coupa_id_of(document.get("id")) if isinstance(document, dict) else None
            if coupa_id is not None and coupa_id in seen:
                continue
            if coupa_id is not None:
                seen.add(coupa_id)
            try:
                report.add(self.sync(document))
            except SystemUnavailableError as exc:
                exc.report = report  # type: ignore[attr-defined]
                raise
        return report

    def sync(self, document: dict[str, Any]) -> Outcome:
        """One document, isolated: whatever goes wrong with it is recorded on its ledger row (a
        booked document keeps its booked state) and never stops the documents after it."""
        s, run = self.s, self.s.run_id
        raw_id = document.get("id") if isinstance(document, dict) else None
        coupa_id = coupa_id_of(raw_id)
        if coupa_id is None:   # no ledger row can hold it: reported as failed, never stops the others
            label = str(document.get(self.NUMBER_FIELD) or "") if isinstance(document, dict) else ""
            reason = f"{id_problem(raw_id)}; it cannot be tracked or booked — look at the Coupa {self.DOC} itself"
            s.logger.error("%s %s: %s", self.DOC, label or "?", reason)
            return Outcome(self.DOC, 0, "failed", label, None, reason)
        label = self.label(document)
        row = s.ledger.claim(self.DOC, coupa_id, run)
        if row is None:
            return Outcome(self.DOC, coupa_id, "busy", label, None, "another run holds this document; it will be retried")
        try:
            return self._sync_claimed(row, document)
        except UnbookableDocument as exc:
            return self._quarantine(row, document, exc.reason, self.content_hash(document))
        except ClaimLostError as exc:
            s.logger.warning("%s %s (%s): %s", self.DOC, coupa_id, label, exc)
            return Outcome(self.DOC, coupa_id, "busy", label, row.legal_entity, str(exc))
        except SystemUnavailableError as exc:
            # not this document's fault: it keeps its state (no failed mark, no Coupa alert) and the run stops
            s.ledger.release(row, run)
            s.ledger.audit(run_id=run, doc_type=self.DOC, coupa_id=coupa_id, action="stopped_system_unavailable",
                           error=error_text(exc))
            raise
        except Exception as exc:  # noqa: BLE001 - one document's trouble must not stop the others
            reason = error_text(exc)
            if not isinstance(exc, HTTPClientError):
                s.logger.exception("%s %s (%s) failed unexpectedly", self.DOC, coupa_id, label)
            else:
                s.logger.warning("%s %s (%s) failed: %s", self.DOC, coupa_id, label, reason)
            s.ledger.audit(run_id=run, doc_type=self.DOC, coupa_id=coupa_id, action="error",
                           http_status=http_status(exc), error=reason)
            try:
                s.ledger.record_problem(s.ledger.get(self.DOC, coupa_id) or row, run, Problem.FAILED, reason)
            except ClaimLostError as lost:
                return Outcome(self.DOC, coupa_id, "busy", label, row.legal_entity, str(lost))
            return Outcome(self.DOC, coupa_id, "failed", label, row.legal_entity, reason)
        except BaseException:
            s.ledger.release(row, run)
            raise

    def _raise_system_failure_of_vendor(self, supplier: dict[str, Any], legal_entity: str) -> None:
        """A vendor D365 failed to answer for is no reason to alert Coupa users about the document:
        the document fails like any request that failed for good (and is retried next run)."""
        error = self.vendors.errors.get((int(supplier["id"]), legal_entity))
        if error is not None and is_system_failure(error):
            raise error

    def _sync_claimed(self, row: LedgerRow, document: dict[str, Any]) -> Outcome:  # pragma: no cover - abstract
        raise NotImplementedError

    def label(self, document: dict[str, Any]) -> str:
        return str(document.get(self.NUMBER_FIELD) or document.get("id"))

    def _supplier(self, document: dict[str, Any]) -> dict[str, Any] | None:
        supplier_ref = document.get("supplier") or {}
        if not isinstance(supplier_ref, dict) or supplier_ref.get("id") is None:
            return None
        supplier_id = coupa_id_of(supplier_ref["id"])
        if supplier_id is None:
            raise UnbookableDocument(f"supplier id {str(supplier_ref['id'])[:40]!r} is not a Coupa supplier id (a "
                                     f"whole number); select the supplier again on the {self.DOC} in Coupa")
        return self.s.supplier(supplier_id)

    def content_hash(self, document: dict[str, Any]) -> str:
        """What counts as a business change: the document without the fields the connector itself
        writes to Coupa (export flag, payments, history, the custom fields named in the mapping)."""
        return content_hash(document, ignore_custom_fields=self.s.mapping.coupa_custom_fields.values())

    # -- shared outcomes ---------------------------------------------------------------------
    def _quarantine(self, row: LedgerRow, document: dict[str, Any], reason: str, coupa_hash: str,
                    legal_entity: str | None = None) -> Outcome:
        s, run = self.s, self.s.run_id
        coupa_id = int(document["id"])
        s.ledger.audit(run_id=run, doc_type=self.DOC, coupa_id=coupa_id, action="quarantine", error=reason)
        self._alert_once(row, reason, document)
        current = s.ledger.get(self.DOC, coupa_id) or row
        s.ledger.record_problem(current, run, Problem.QUARANTINED, reason, coupa_hash=coupa_hash,
                                legal_entity=legal_entity, alerted_reason=reason)
        booked = " (the version booked in D365 stays as it is)" if current.is_booked else ""
        return Outcome(self.DOC, coupa_id, "quarantined", self.label(document), legal_entity or current.legal_entity,
                       reason + booked)

    def _fail(self, row: LedgerRow, document: dict[str, Any], le: str | None, reason: str) -> Outcome:
        s, run = self.s, self.s.run_id
        coupa_id = int(document["id"])
        self._alert_once(row, reason, document)
        s.ledger.record_problem(s.ledger.get(self.DOC, coupa_id) or row, run, Problem.FAILED, reason,
                                alerted_reason=reason)
        return Outcome(self.DOC, coupa_id, "failed", self.label(document), le, reason)

    def _settle_with_alert(self, row: LedgerRow, document: dict[str, Any], state: DocState, reason: str,
                           legal_entity: str | None, **fields: Any) -> Outcome:
        """A state that needs people, not retries (changed or voided after posting, gone from D365,
        change blocked): record it with its reason, tell Coupa once per reason, release the claim."""
        self._alert_once(row, reason, document)
        self.s.ledger.update(row, self.s.run_id, release=True, state=state, problem=None, reason=reason,
                             alerted_reason=reason, **fields)
        return Outcome(self.DOC, int(document["id"]), state.value, self.label(document), legal_entity, reason)

    def _alert_once(self, row: LedgerRow, reason: str, document: dict[str, Any]) -> None:
        if row.alerted_reason != reason:
            self.s.notifier.alert(self.DOC, int(document["id"]), reason, document_status=document.get("status"))

    def _notify(self, row: LedgerRow, document: dict[str, Any], message: str, **ledger_fields: Any) -> LedgerRow:
        """Export flag + one Success record (read Coupa first only if an earlier attempt may have
        created it), then release the claim with ``coupa_notified`` set."""
        s, run = self.s, self.s.run_id
        coupa_id = int(document["id"])
        key = row.d365_key or {}
        tried_before = s.ledger.audit_count(doc_type=self.DOC, coupa_id=coupa_id, action="coupa_notify_started") > 0
        s.ledger.audit(run_id=run, doc_type=self.DOC, coupa_id=coupa_id, action="coupa_notify_started", d365_key=key)
        s.notifier.success(self.DOC, coupa_id, message, document_status=document.get("status"), may_exist=tried_before)
        s.ledger.audit(run_id=run, doc_type=self.DOC, coupa_id=coupa_id, action="coupa_notified", d365_key=key)
        return s.ledger.update(row, run, release=True, coupa_notified=True, **ledger_fields)
