"""The sync ledger: one row per (document type, Coupa id, scope), claimed atomically per run.

Exactly-once without an idempotency key rests on three things:
1. a unique row per document, holding the D365 key we intend to write *before* we write it;
2. an atomic claim (compare-and-swap UPDATE) so two runs never work on one document at once;
3. a natural-key lookup in D365 before any create (see ``sync/invoices.py``).

A claim is stale — and may be taken over — when its lease expired, when the claiming process on
this host is gone (e.g. SIGKILL), or when ``is_run_finished(run_id)`` says the claiming run ended.
Every attempt is also written to ``sync_audit`` (time, run, action, D365 entity and key, HTTP
status, error, hash of the payload sent) so a record's history can be read and replayed.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .store import ensure_schema, metadata

# Document states. "open" states are retried by later runs.
NEW, WRITING, WRITTEN, POSTED = "new", "writing", "written", "posted"
QUARANTINED, FAILED = "quarantined", "failed"
VOIDED, VOID_BLOCKED, CHANGED_AFTER_POST = "voided", "void_blocked_posted", "changed_after_post"
CLOSED, CANCELLED, CHANGE_BLOCKED = "closed", "cancelled", "change_blocked"   # purchase orders
OPEN_STATES = (NEW, WRITING, QUARANTINED, FAILED)
PROBLEM_STATES = (QUARANTINED, FAILED, VOID_BLOCKED, CHANGED_AFTER_POST, CHANGE_BLOCKED)

sync_ledger = sa.Table(
    "sync_ledger", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("doc_type", sa.String(32), nullable=False),
    sa.Column("coupa_id", sa.BigInteger, nullable=False),
    sa.Column("scope", sa.String(16), nullable=False, server_default=""),
    sa.Column("state", sa.String(32), nullable=False, server_default=NEW),
    sa.Column("legal_entity", sa.String(8)),
    sa.Column("natural_key", sa.String(255)),
    sa.Column("d365_key", sa.Text),                  # JSON of the D365 key written (or about to be)
    sa.Column("coupa_hash", sa.String(64)),          # hash of the Coupa document last processed
    sa.Column("payload_hash", sa.String(64)),        # hash of the D365 payload last written
    sa.Column("coupa_updated_at", sa.String(40)),
    sa.Column("reason", sa.Text),
    sa.Column("alerted_reason", sa.Text),            # last reason sent to Coupa as an alert
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
    "sync_audit", metadata,
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


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@dataclass
class LedgerRow:
    doc_type: str
    coupa_id: int
    scope: str
    state: str
    legal_entity: str | None
    natural_key: str | None
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

    @classmethod
    def from_mapping(cls, m: Any) -> "LedgerRow":
        return cls(doc_type=m["doc_type"], coupa_id=int(m["coupa_id"]), scope=m["scope"], state=m["state"],
                   legal_entity=m["legal_entity"], natural_key=m["natural_key"],
                   d365_key=json.loads(m["d365_key"]) if m["d365_key"] else None, coupa_hash=m["coupa_hash"],
                   payload_hash=m["payload_hash"], coupa_updated_at=m["coupa_updated_at"], reason=m["reason"],
                   alerted_reason=m["alerted_reason"], coupa_notified=bool(m["coupa_notified"]),
                   attempts=int(m["attempts"] or 0), last_run_id=m["last_run_id"], claimed_by=m["claimed_by"],
                   claim_token=m["claim_token"], claimed_at=_aware(m["claimed_at"]), claim_host=m["claim_host"], claim_pid=m["claim_pid"],
                   updated_at=_aware(m["updated_at"]))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ledger:
    def __init__(self, engine: Engine, *, lease: timedelta = timedelta(minutes=30),
                 is_run_finished: Callable[[str], bool] | None = None) -> None:
        self.engine = engine
        ensure_schema(engine)
        self.lease = lease
        self.is_run_finished = is_run_finished
        self.host = socket.gethostname()
        self.pid = os.getpid()

    # -- rows --------------------------------------------------------------------------------
    def _key(self, doc_type: str, coupa_id: int, scope: str) -> Any:
        c = sync_ledger.c
        return (c.doc_type == doc_type) & (c.coupa_id == int(coupa_id)) & (c.scope == scope)

    def get(self, doc_type: str, coupa_id: int, scope: str = "") -> LedgerRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(sync_ledger).where(self._key(doc_type, coupa_id, scope))).mappings().first()
        return LedgerRow.from_mapping(row) if row else None

    def ensure(self, doc_type: str, coupa_id: int, scope: str = "") -> None:
        if self.get(doc_type, coupa_id, scope) is not None:
            return
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(sync_ledger.insert().values(doc_type=doc_type, coupa_id=int(coupa_id), scope=scope,
                                                         state=NEW, created_at=now, updated_at=now))
        except sa.exc.IntegrityError:
            pass  # another run inserted it first: fine, the unique constraint did its job

    def rows(self, doc_type: str, states: Iterable[str] | None = None, *, since: datetime | None = None,
             coupa_ids: Iterable[int] | None = None, limit: int | None = None) -> list[LedgerRow]:
        query = sa.select(sync_ledger).where(sync_ledger.c.doc_type == doc_type)
        if states is not None:
            query = query.where(sync_ledger.c.state.in_(list(states)))
        if since is not None:
            query = query.where(sync_ledger.c.updated_at >= since)
        if coupa_ids is not None:
            query = query.where(sync_ledger.c.coupa_id.in_([int(i) for i in coupa_ids]))
        query = query.order_by(sync_ledger.c.coupa_id, sync_ledger.c.scope)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [LedgerRow.from_mapping(r) for r in conn.execute(query).mappings()]

    def counts(self, doc_type: str) -> dict[str, int]:
        query = (sa.select(sync_ledger.c.state, sa.func.count()).where(sync_ledger.c.doc_type == doc_type)
                 .group_by(sync_ledger.c.state))
        with self.engine.connect() as conn:
            return {state: int(n) for state, n in conn.execute(query)}

    # -- claims ------------------------------------------------------------------------------
    def _stale(self, row: LedgerRow) -> bool:
        if row.claimed_by is None:
            return True
        if row.claimed_at is None or utcnow() - row.claimed_at > self.lease:
            return True
        if row.claim_host == self.host and row.claim_pid and row.claim_pid != self.pid and not _pid_alive(row.claim_pid):
            return True
        if self.is_run_finished is not None and self.is_run_finished(row.claimed_by):
            return True
        return False

    def claim(self, doc_type: str, coupa_id: int, run_id: str, scope: str = "") -> LedgerRow | None:
        """Atomically take the document for ``run_id``; None when another live run holds it."""
        self.ensure(doc_type, coupa_id, scope)
        for _ in range(3):
            row = self.get(doc_type, coupa_id, scope)
            assert row is not None
            if row.claimed_by == run_id and row.claim_pid == self.pid:
                return row
            if not self._stale(row):
                return None
            c = sync_ledger.c
            condition = self._key(doc_type, coupa_id, scope)
            previous = row.claim_token  # read in the same SELECT as the staleness facts
            if previous is None:
                condition &= c.claim_token.is_(None)
            else:  # compare-and-swap on the previous claim
                condition &= c.claim_token == previous
            with self.engine.begin() as conn:
                taken = conn.execute(sync_ledger.update().where(condition).values(
                    claimed_by=run_id, claim_token=uuid.uuid4().hex, claimed_at=utcnow(), claim_host=self.host,
                    claim_pid=self.pid)).rowcount
            if taken == 1:
                return self.get(doc_type, coupa_id, scope)
        return None

    def update(self, row: LedgerRow, run_id: str, *, release: bool = False, **fields: Any) -> LedgerRow:
        """Change fields of a claimed row (optionally releasing the claim) — only while we hold it."""
        values: dict[str, Any] = {k: v for k, v in fields.items()}
        if "d365_key" in values and values["d365_key"] is not None and not isinstance(values["d365_key"], str):
            values["d365_key"] = json.dumps(values["d365_key"], sort_keys=True)
        values["updated_at"] = utcnow()
        values["last_run_id"] = run_id
        if release:
            values.update(claimed_by=None, claim_token=None, claimed_at=None, claim_host=None, claim_pid=None)
        c = sync_ledger.c
        with self.engine.begin() as conn:
            changed = conn.execute(sync_ledger.update().where(
                self._key(row.doc_type, row.coupa_id, row.scope) & (c.claimed_by == run_id)).values(**values)).rowcount
        if changed != 1:
            raise RuntimeError(f"ledger row {row.doc_type}/{row.coupa_id} is no longer claimed by run {run_id}")
        updated = self.get(row.doc_type, row.coupa_id, row.scope)
        assert updated is not None
        return updated

    def release(self, row: LedgerRow, run_id: str) -> None:
        c = sync_ledger.c
        with self.engine.begin() as conn:
            conn.execute(sync_ledger.update().where(
                self._key(row.doc_type, row.coupa_id, row.scope) & (c.claimed_by == run_id)).values(
                claimed_by=None, claim_token=None, claimed_at=None, claim_host=None, claim_pid=None))

    # -- audit -------------------------------------------------------------------------------
    def audit(self, *, run_id: str, doc_type: str, coupa_id: int, action: str, scope: str = "",
              entity: str | None = None, d365_key: Any = None, http_status: int | None = None,
              error: str | None = None, payload_sha256: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(sync_audit.insert().values(
                at=utcnow(), run_id=run_id, doc_type=doc_type, coupa_id=int(coupa_id), scope=scope, action=action,
                entity=entity, d365_key=json.dumps(d365_key, sort_keys=True) if d365_key is not None else None,
                http_status=http_status, error=(error or None) and error[:4000], payload_sha256=payload_sha256))

    def history(self, doc_type: str, coupa_id: int) -> list[dict[str, Any]]:
        query = (sa.select(sync_audit).where((sync_audit.c.doc_type == doc_type) & (sync_audit.c.coupa_id == int(coupa_id)))
                 .order_by(sync_audit.c.id))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def audit_count(self, **equals: Any) -> int:
        query = sa.select(sa.func.count()).select_from(sync_audit)
        for name, value in equals.items():
            query = query.where(getattr(sync_audit.c, name) == value)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
