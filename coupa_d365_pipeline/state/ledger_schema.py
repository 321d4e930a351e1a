"""The sync ledger's vocabulary and tables: document states (:class:`DocState`), problems, the
``sync_ledger`` / ``sync_audit`` tables, the row (:class:`LedgerRow`) and the natural key a document
is booked under. :mod:`.ledger` holds the operations on them (claims, updates, audit, queries).

Invariants: states are ``StrEnum`` members whose values are what the database holds (never renamed);
the natural key is structured (legal entity, vendor account, document number), never a joined
string; no Dagster import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from .store import metadata


class DocState(StrEnum):
    NEW = "new"
    WRITING = "writing"  # intent recorded; the write may or may not have landed
    WRITTEN = "written"  # pending in D365 (invoice) / open (PO) / present (vendor)
    POSTED = "posted"  # invoice posted by AP in D365
    QUARANTINED = "quarantined"  # never booked: cannot be mapped (reason says what to fix)
    FAILED = "failed"  # never booked: D365 or Coupa refused or failed
    VOIDED = "voided"
    VOID_BLOCKED = "void_blocked_posted"  # voided in Coupa after D365 posted it
    CHANGED_AFTER_POST = "changed_after_post"
    MISSING_IN_D365 = "missing_in_d365"  # booked, then gone from D365 without being posted
    CLOSED = "closed"  # purchase orders
    CANCELLED = "cancelled"
    CHANGE_BLOCKED = "change_blocked"


class Severity(StrEnum):
    """How urgent an unfinished row is (:meth:`.ledger.Ledger.unfinished`)."""

    ERROR = "error"  # needs a person, or D365's state is unknown
    WARN = "warn"  # heals on the next run


class Problem(StrEnum):
    """What went wrong with the latest Coupa version of a document that is already booked."""

    QUARANTINED = "quarantined"
    FAILED = "failed"


NEW, WRITING, WRITTEN, POSTED = DocState.NEW, DocState.WRITING, DocState.WRITTEN, DocState.POSTED
QUARANTINED, FAILED = DocState.QUARANTINED, DocState.FAILED
VOIDED, VOID_BLOCKED, CHANGED_AFTER_POST = DocState.VOIDED, DocState.VOID_BLOCKED, DocState.CHANGED_AFTER_POST
MISSING_IN_D365 = DocState.MISSING_IN_D365
CLOSED, CANCELLED, CHANGE_BLOCKED = DocState.CLOSED, DocState.CANCELLED, DocState.CHANGE_BLOCKED
# never booked, retried by later runs
UNBOOKED_OPEN_STATES = (NEW, QUARANTINED, FAILED)
OPEN_STATES = (NEW, WRITING, QUARANTINED, FAILED)
# in D365 (or was): the D365 key and these states are never overwritten by a later version's trouble
BOOKED_STATES = (WRITTEN, POSTED, VOID_BLOCKED, CHANGED_AFTER_POST, MISSING_IN_D365, CLOSED, CANCELLED, CHANGE_BLOCKED)
PROBLEM_STATES = (QUARANTINED, FAILED, VOID_BLOCKED, CHANGED_AFTER_POST, CHANGE_BLOCKED, MISSING_IN_D365)
# states in which Coupa is told (export flag + Success record); ``coupa_notified`` false there means
# D365 holds the document but Coupa does not know yet. Vendors are never notified.
NOTIFIED_STATES: dict[str, tuple[DocState, ...]] = {
    "invoice": (WRITTEN, POSTED),
    "purchase_order": (WRITTEN, CLOSED, CANCELLED),
}
STATE_REASONS = {
    WRITING.value: "a write to D365 was started and not finished; it may or may not have landed — the next run "
    "looks it up in D365 and settles it",
    VOID_BLOCKED.value: "voided in Coupa after D365 posted it",
    CHANGED_AFTER_POST.value: "changed in Coupa after D365 posted it",
    MISSING_IN_D365.value: "booked, then gone from D365 without being posted",
    CHANGE_BLOCKED.value: "changed in Coupa in a way D365 no longer allows",
}

sync_ledger = sa.Table(
    "sync_ledger",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("doc_type", sa.String(32), nullable=False),
    sa.Column("coupa_id", sa.BigInteger, nullable=False),
    sa.Column("scope", sa.String(16), nullable=False, server_default=""),
    sa.Column("state", sa.String(32), nullable=False, server_default=NEW.value),
    sa.Column("problem", sa.String(32)),  # trouble with the latest version of a booked document
    sa.Column("legal_entity", sa.String(8)),
    # the structured natural key the document is booked under (never a joined string)
    sa.Column("vendor_account", sa.Text),
    sa.Column("document_number", sa.Text),
    sa.Column("d365_key", sa.Text),  # JSON of the D365 key written (or about to be)
    sa.Column("coupa_hash", sa.String(64)),  # hash of the Coupa document last processed
    sa.Column("payload_hash", sa.String(64)),  # hash of the D365 payload last written
    sa.Column("coupa_updated_at", sa.String(40)),
    sa.Column("reason", sa.Text),
    sa.Column("alerted_reason", sa.Text),  # last reason sent to Coupa as an alert
    sa.Column("coupa_notified", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_run_id", sa.String(64)),
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claim_token", sa.String(32)),
    sa.Column("claimed_at", sa.DateTime(timezone=True)),
    sa.Column("claim_host", sa.String(255)),
    sa.Column("claim_pid", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("doc_type", "coupa_id", "scope", name="uq_sync_ledger_document"),
)
sa.Index("ix_sync_ledger_state", sync_ledger.c.doc_type, sync_ledger.c.state)

sync_audit = sa.Table(
    "sync_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("doc_type", sa.String(32), nullable=False),
    sa.Column("coupa_id", sa.BigInteger, nullable=False),
    sa.Column("scope", sa.String(16), nullable=False, server_default=""),
    sa.Column("action", sa.String(48), nullable=False),
    sa.Column("entity", sa.String(64)),
    sa.Column("d365_key", sa.Text),
    sa.Column("http_status", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("payload_sha256", sa.String(64)),
)
sa.Index("ix_sync_audit_document", sync_audit.c.doc_type, sync_audit.c.coupa_id)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class NaturalKey:
    """How a document is identified in D365 apart from our own key: legal entity, vendor account,
    document number (invoice number / PO number). Compared the way F&O's collation does (casefolded)."""

    legal_entity: str
    vendor_account: str
    document_number: str

    def folded(self) -> tuple[str, str, str]:
        return self.legal_entity.casefold(), self.vendor_account.casefold(), self.document_number.casefold()


@dataclass(frozen=True)
class Unfinished:
    """One row a ``*_not_stuck`` check reports: what kind of unfinished, why, since when."""

    row: LedgerRow
    kind: str  # state, "<state> (latest version <problem>)", "writing" or "not_notified"
    reason: str
    age: timedelta
    severity: Severity


@dataclass
class LedgerRow:
    doc_type: str
    coupa_id: int
    scope: str
    state: DocState
    problem: Problem | None
    legal_entity: str | None
    vendor_account: str | None
    document_number: str | None
    d365_key: dict[str, Any] | None
    coupa_hash: str | None
    payload_hash: str | None
    coupa_updated_at: str | None
    reason: str | None
    alerted_reason: str | None
    coupa_notified: bool
    attempts: int
    last_run_id: str | None
    claimed_by: str | None
    claim_token: str | None
    claimed_at: datetime | None
    claim_host: str | None
    claim_pid: int | None
    updated_at: datetime | None

    @property
    def is_booked(self) -> bool:
        return self.state in BOOKED_STATES

    @property
    def natural_key(self) -> NaturalKey | None:
        if self.legal_entity and self.vendor_account and self.document_number is not None:
            return NaturalKey(self.legal_entity, self.vendor_account, self.document_number)
        return None

    @classmethod
    def from_mapping(cls, m: Any) -> LedgerRow:
        return cls(
            doc_type=m["doc_type"],
            coupa_id=int(m["coupa_id"]),
            scope=m["scope"],
            state=DocState(m["state"]),
            problem=Problem(m["problem"]) if m["problem"] else None,
            legal_entity=m["legal_entity"],
            vendor_account=m["vendor_account"],
            document_number=m["document_number"],
            d365_key=json.loads(m["d365_key"]) if m["d365_key"] else None,
            coupa_hash=m["coupa_hash"],
            payload_hash=m["payload_hash"],
            coupa_updated_at=m["coupa_updated_at"],
            reason=m["reason"],
            alerted_reason=m["alerted_reason"],
            coupa_notified=bool(m["coupa_notified"]),
            attempts=int(m["attempts"] or 0),
            last_run_id=m["last_run_id"],
            claimed_by=m["claimed_by"],
            claim_token=m["claim_token"],
            claimed_at=_aware(m["claimed_at"]),
            claim_host=m["claim_host"],
            claim_pid=m["claim_pid"],
            updated_at=_aware(m["updated_at"]),
        )
