"""What every document sync shares: claim the ledger row, run the document's flow, turn client
errors into a recorded failure, quarantine with reasons, alert Coupa once per reason, make sure
the vendor exists, create header + lines together (an ambiguous outcome settled by lookup), write
the audit trail, and tell Coupa when the document is booked (export flag + one Success history
record). Invoices (``sync/invoices.py``) and purchase orders (``sync/purchase_orders.py``) add
only what differs between them. No Dagster import."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..common.http import AmbiguousWriteError, HTTPClientError, SystemUnavailableError, is_system_failure
from ..d365.client import D365Error
from ..state.ledger import ClaimLostError, DocState, LedgerRow, Problem
from ..state.store import coupa_id_of, id_problem, payload_hash
from .context import SyncServices, error_text, http_status
from .report import Action, Outcome, SyncReport
from .vendors import VendorSync
from .writer import DocumentWriter

# Fields that change without changing what is booked (our own export flag, payment status written
# back, bookkeeping timestamps, Coupa-side receiving): excluded from change detection.
VOLATILE_FIELDS = frozenset(
    {
        "exported",
        "last-exported-at",
        "updated-at",
        "updated-by",
        "current-integration-history-records",
        "paid",
        "payment-date",
        "payment-notes",
        "payments",
        "received",
        "invoiced",
        "total-invoiced",
        "transmission-status",
        "acknowledged-flag",
        "acknowledged-at",
    }
)


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


class Created(StrEnum):
    """How a create of header + lines ended (:meth:`DocumentSync._create_document`)."""

    CREATED = "created"  # D365 answered: all of it was created
    LANDED = "landed"  # the answer was lost, but the header is there under our key
    EXISTS = "exists"  # D365 refused it as a duplicate: a record under our key exists
    REJECTED = "rejected"  # D365 refused it for another reason; nothing was created


@dataclass(frozen=True)
class CreateAttempt:
    result: Created
    digest: str  # payload_sha256 of [header, lines]
    existing: dict[str, Any] | None = None  # the D365 header found under our key (LANDED, EXISTS)
    error: D365Error | None = None  # why D365 refused (EXISTS, REJECTED)


class DocumentSync:
    DOC = "document"
    NUMBER_FIELD = "id"
    HEADER_SET = ""  # the D365 entity set of the document header (its key is chosen by us)

    def __init__(
        self, services: SyncServices, vendors: VendorSync | None = None, writer: DocumentWriter | None = None
    ) -> None:
        self.s = services
        self.vendors = vendors or VendorSync(services)
        self.writer = writer or self._default_writer()

    def _default_writer(self) -> DocumentWriter:  # pragma: no cover - abstract
        raise NotImplementedError

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
        if coupa_id is None:  # no ledger row can hold it: reported as failed, never stops the others
            label = str(document.get(self.NUMBER_FIELD) or "") if isinstance(document, dict) else ""
            reason = f"{id_problem(raw_id)}; it cannot be tracked or booked — look at the Coupa {self.DOC} itself"
            s.logger.error("%s %s: %s", self.DOC, label or "?", reason)
            return Outcome(self.DOC, 0, Action.FAILED, label, None, reason)
        label = self.label(document)
        row = s.ledger.claim(self.DOC, coupa_id, run)
        if row is None:
            return Outcome(
                self.DOC, coupa_id, Action.BUSY, label, None, "another run holds this document; it will be retried"
            )
        try:
            return self._sync_claimed(row, document)
        except UnbookableDocument as exc:
            return self._quarantine(row, document, exc.reason, self.content_hash(document))
        except ClaimLostError as exc:
            s.logger.warning("%s %s (%s): %s", self.DOC, coupa_id, label, exc)
            return Outcome(self.DOC, coupa_id, Action.BUSY, label, row.legal_entity, str(exc))
        except SystemUnavailableError as exc:
            # not this document's fault: it keeps its state (no failed mark, no Coupa alert) and the run stops
            s.ledger.release(row, run)
            self._audit(coupa_id, "stopped_system_unavailable", error=error_text(exc))
            raise
        except Exception as exc:  # noqa: BLE001 - one document's trouble must not stop the others
            reason = error_text(exc)
            if not isinstance(exc, HTTPClientError):
                s.logger.exception("%s %s (%s) failed unexpectedly", self.DOC, coupa_id, label)
            else:
                s.logger.warning("%s %s (%s) failed: %s", self.DOC, coupa_id, label, reason)
            self._audit(coupa_id, "error", status=http_status(exc), error=reason)
            try:
                s.ledger.record_problem(s.ledger.get(self.DOC, coupa_id) or row, run, Problem.FAILED, reason)
            except ClaimLostError as lost:
                return Outcome(self.DOC, coupa_id, Action.BUSY, label, row.legal_entity, str(lost))
            return Outcome(self.DOC, coupa_id, Action.FAILED, label, row.legal_entity, reason)
        except BaseException:
            s.ledger.release(row, run)
            raise

    def _ensure_vendor(
        self,
        row: LedgerRow,
        document: dict[str, Any],
        supplier: dict[str, Any],
        legal_entity: str,
        vendor_account: str,
        coupa_hash: str,
    ) -> Outcome | None:
        """Make sure the document's vendor exists in ``legal_entity``; None when it does. Otherwise the
        document's outcome: quarantined with the vendor's reason when the supplier cannot be mapped,
        failed (Coupa alerted) when D365 refused the vendor or another run holds it — and when D365
        failed to answer for the vendor, that error is raised: it is no reason to alert Coupa users
        about the document, which fails like any request that failed for good (retried next run)."""
        vendor = self.vendors.ensure(supplier, legal_entity)
        if not vendor.action.needs_vendor_attention:
            return None
        reason = f"vendor {vendor_account} in {legal_entity} is {vendor.action}: {vendor.detail}"
        if vendor.action == Action.QUARANTINED:
            return self._quarantine(row, document, reason, coupa_hash, legal_entity=legal_entity)
        error = self.vendors.errors.get((int(supplier["id"]), legal_entity))
        if error is not None and is_system_failure(error):
            raise error
        return self._fail(row, document, legal_entity, reason)

    def _create_document(
        self, coupa_id: int, key: dict[str, Any], header: dict[str, Any], lines: list[dict[str, Any]]
    ) -> CreateAttempt:
        """Create header + lines through the writer (all or nothing) and settle what happened, with
        the audit trail. An ambiguous outcome is looked up under ``key`` (our own key, recorded in the
        ledger before this call): absent -> the :class:`AmbiguousWriteError` is raised (the document
        fails and the next run tries again); present -> ``LANDED``. A duplicate-key refusal is looked
        up the same way (``EXISTS``: an earlier or concurrent write of ours — or not ours: the caller
        judges ``existing``)."""
        header_set = self.HEADER_SET
        digest = payload_hash([header, lines])
        try:
            result = self.writer.create(header, lines)
        except AmbiguousWriteError as exc:
            self._audit(coupa_id, "create_ambiguous", header_set, key, error=error_text(exc), payload_sha256=digest)
            landed = self.s.d365.get(header_set, key)
            if landed is None:
                raise
            return CreateAttempt(Created.LANDED, digest, existing=landed)
        error = result.error
        self._audit(
            coupa_id,
            "create",
            header_set,
            key,
            201 if result.ok else result.status,
            error=None if result.ok else (error.detail if error else "unknown error"),
            payload_sha256=digest,
        )
        if result.ok:
            return CreateAttempt(Created.CREATED, digest)
        existing = self.s.d365.get(header_set, key) if error is not None and error.is_duplicate else None
        if existing is not None:
            return CreateAttempt(Created.EXISTS, digest, existing=existing, error=error)
        return CreateAttempt(Created.REJECTED, digest, error=error)

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
            raise UnbookableDocument(
                f"supplier id {str(supplier_ref['id'])[:40]!r} is not a Coupa supplier id (a "
                f"whole number); select the supplier again on the {self.DOC} in Coupa"
            )
        return self.s.supplier(supplier_id)

    def content_hash(self, document: dict[str, Any]) -> str:
        """What counts as a business change: the document without the fields the connector itself
        writes to Coupa (export flag, payments, history, the custom fields named in the mapping)."""
        return content_hash(document, ignore_custom_fields=self.s.mapping.coupa_custom_fields.values())

    # -- shared outcomes ---------------------------------------------------------------------
    def _quarantine(
        self, row: LedgerRow, document: dict[str, Any], reason: str, coupa_hash: str, legal_entity: str | None = None
    ) -> Outcome:
        s, run = self.s, self.s.run_id
        coupa_id = int(document["id"])
        self._audit(coupa_id, "quarantine", error=reason)
        self._alert_once(row, reason, document)
        current = s.ledger.get(self.DOC, coupa_id) or row
        s.ledger.record_problem(
            current,
            run,
            Problem.QUARANTINED,
            reason,
            coupa_hash=coupa_hash,
            legal_entity=legal_entity,
            alerted_reason=reason,
        )
        booked = " (the version booked in D365 stays as it is)" if current.is_booked else ""
        return Outcome(
            self.DOC,
            coupa_id,
            Action.QUARANTINED,
            self.label(document),
            legal_entity or current.legal_entity,
            reason + booked,
        )

    def _fail(self, row: LedgerRow, document: dict[str, Any], le: str | None, reason: str) -> Outcome:
        s, run = self.s, self.s.run_id
        coupa_id = int(document["id"])
        self._alert_once(row, reason, document)
        s.ledger.record_problem(
            s.ledger.get(self.DOC, coupa_id) or row, run, Problem.FAILED, reason, alerted_reason=reason
        )
        return Outcome(self.DOC, coupa_id, Action.FAILED, self.label(document), le, reason)

    def _settle_with_alert(
        self,
        row: LedgerRow,
        document: dict[str, Any],
        state: DocState,
        reason: str,
        legal_entity: str | None,
        **fields: Any,
    ) -> Outcome:
        """A state that needs people, not retries (changed or voided after posting, gone from D365,
        change blocked): record it with its reason, tell Coupa once per reason, release the claim."""
        self._alert_once(row, reason, document)
        self.s.ledger.update(
            row, self.s.run_id, release=True, state=state, problem=None, reason=reason, alerted_reason=reason, **fields
        )
        return Outcome(self.DOC, int(document["id"]), Action(state.value), self.label(document), legal_entity, reason)

    def _alert_once(self, row: LedgerRow, reason: str, document: dict[str, Any]) -> None:
        if row.alerted_reason != reason:
            self.s.notifier.alert(self.DOC, int(document["id"]), reason, document_status=document.get("status"))

    def _notify(self, row: LedgerRow, document: dict[str, Any], message: str, **ledger_fields: Any) -> LedgerRow:
        """Export flag + one Success record (read Coupa first only if an earlier attempt may have
        created it), then release the claim with ``coupa_notified`` set."""
        may_exist = self._notice_started(row, document)
        self.s.notifier.success(
            self.DOC, int(document["id"]), message, document_status=document.get("status"), may_exist=may_exist
        )
        return self._notice_done(row, document, **ledger_fields)

    def _notice_started(self, row: LedgerRow, document: dict[str, Any]) -> bool:
        """Audit that Coupa is about to be told; True when an earlier attempt may have told it already
        (its Success record must then be looked for before adding one). Ledger only, no request."""
        coupa_id = int(document["id"])
        tried_before = (
            self.s.ledger.audit_count(doc_type=self.DOC, coupa_id=coupa_id, action="coupa_notify_started") > 0
        )
        self._audit(coupa_id, "coupa_notify_started", key=row.d365_key or {})
        return tried_before

    def _notice_done(self, row: LedgerRow, document: dict[str, Any], **ledger_fields: Any) -> LedgerRow:
        """Coupa was told: audit it and release the claim with ``coupa_notified`` set."""
        self._audit(int(document["id"]), "coupa_notified", key=row.d365_key or {})
        return self.s.ledger.update(row, self.s.run_id, release=True, coupa_notified=True, **ledger_fields)

    def booked_message(self, row: LedgerRow) -> str:  # pragma: no cover - abstract
        """The Success record's text for a document just created in D365 under ``row.d365_key``."""
        raise NotImplementedError

    def _audit(
        self,
        coupa_id: int,
        action: str,
        entity: str | None = None,
        key: dict[str, Any] | None = None,
        status: int | None = None,
        body: Any = None,
        *,
        error: str | None = None,
        payload_sha256: str | None = None,
    ) -> None:
        """One ``sync_audit`` row for this run and document type: what was done (``action``), to which
        D365 ``entity`` and ``key``, the HTTP ``status``, the ``error``, and the hash of what was sent
        (``body``, or ``payload_sha256`` when the caller has it already)."""
        if payload_sha256 is None and body is not None:
            payload_sha256 = payload_hash(body)
        self.s.ledger.audit(
            run_id=self.s.run_id,
            doc_type=self.DOC,
            coupa_id=coupa_id,
            action=action,
            entity=entity,
            d365_key=key,
            http_status=status,
            error=error,
            payload_sha256=payload_sha256,
        )
