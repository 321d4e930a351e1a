"""The sync ledger: one row per (document type, Coupa id, scope), claimed atomically per run.

Exactly-once without an idempotency key rests on three things:
1. a unique row per document, holding the D365 key we intend to write *before* we write it, and
   the structured natural key it was booked under (legal entity, vendor account, document number);
2. an atomic claim (compare-and-swap UPDATE) so two runs never work on one document at once;
3. a natural-key lookup in D365 before any create (see ``sync/invoices.py``).

A booked document keeps its booked state and D365 key whatever happens to a later Coupa version:
an unmappable or rejected later version is recorded in ``problem`` (+ ``reason``) next to the
booked state, never instead of it.

A claim is stale — and may be taken over — when its lease expired, when the claiming process on
this host (same hostname, PID namespace and boot) is gone (e.g. SIGKILL), or when
``is_run_finished(run_id)`` says the claiming run ended. While a process holds claims, a heartbeat
thread renews their leases, so a request waiting minutes on ``Retry-After`` never loses its claim.
Every attempt is also written to ``sync_audit`` (time, run, action, D365 entity and key, HTTP
status, error, hash of the payload sent) so a record's history can be read and replayed.

The states, tables, row and natural key live in :mod:`.ledger_schema` (re-exported here), the
process identity and the lease heartbeat in :mod:`.claims`; this
module holds the operations. No Dagster import.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from ..common.clock import SYSTEM_CLOCK, Clock
from .claims import ClaimLostError, Heartbeat, pid_alive, process_identity  # noqa: F401 - re-exported
from .claims import Key as _Key
from .ledger_schema import (  # noqa: F401 - re-exported: the ledger's vocabulary is imported from here
    BOOKED_STATES,
    CANCELLED,
    CHANGE_BLOCKED,
    CHANGED_AFTER_POST,
    CLOSED,
    FAILED,
    MISSING_IN_D365,
    NEW,
    NOTIFIED_STATES,
    OPEN_STATES,
    POSTED,
    PROBLEM_STATES,
    QUARANTINED,
    STATE_REASONS,
    UNBOOKED_OPEN_STATES,
    VOID_BLOCKED,
    VOIDED,
    WRITING,
    WRITTEN,
    DocState,
    LedgerRow,
    NaturalKey,
    Problem,
    Severity,
    Unfinished,
    sync_audit,
    sync_ledger,
)
from .store import db_text, ensure_schema, staged_documents


class Ledger:
    def __init__(
        self,
        engine: Engine,
        *,
        lease: timedelta = timedelta(minutes=30),
        is_run_finished: Callable[[str], bool] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        heartbeat_s: float | None = None,
        identity: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.engine = engine
        ensure_schema(engine)
        self.lease = lease
        self.is_run_finished = is_run_finished
        self.clock = clock
        self.host = identity or process_identity()
        self.pid = pid if pid is not None else os.getpid()
        self._held: dict[_Key, str] = {}  # (doc_type, coupa_id, scope) -> claim token
        self._held_lock = threading.Lock()
        interval = heartbeat_s if heartbeat_s is not None else max(1.0, lease.total_seconds() / 6)
        self._heartbeat = Heartbeat(self, interval)

    def now(self) -> datetime:
        return self.clock.now()

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
        now = self.now()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sync_ledger.insert().values(
                        doc_type=doc_type,
                        coupa_id=int(coupa_id),
                        scope=scope,
                        state=NEW.value,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            pass  # another run inserted it first: fine, the unique constraint did its job

    def rows(
        self,
        doc_type: str,
        states: Iterable[str] | None = None,
        *,
        since: datetime | None = None,
        coupa_ids: Iterable[int] | None = None,
        limit: int | None = None,
        with_problem: bool = False,
    ) -> list[LedgerRow]:
        """Rows of ``doc_type`` in ``states`` (``with_problem``: or with a problem on their latest version)."""
        c = sync_ledger.c
        query = sa.select(sync_ledger).where(c.doc_type == doc_type)
        if states is not None:
            condition = c.state.in_([str(s) for s in states])
            query = query.where(condition | c.problem.is_not(None) if with_problem else condition)
        if since is not None:
            query = query.where(c.updated_at >= since)
        if coupa_ids is not None:
            query = query.where(c.coupa_id.in_([int(i) for i in coupa_ids]))
        query = query.order_by(c.coupa_id, c.scope)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [LedgerRow.from_mapping(r) for r in conn.execute(query).mappings()]

    def _not_notified(self, doc_type: str) -> Any:
        """WHERE clause: booked in a state Coupa is told about, but Coupa was not told (yet)."""
        c = sync_ledger.c
        states = [s.value for s in NOTIFIED_STATES.get(doc_type, ())]
        return (c.state.in_(states) & c.coupa_notified.is_(False)) if states else sa.false()

    def unfinished(self, doc_type: str) -> list[Unfinished]:
        """What the stuck checks list, each with reason and age: problem states, booked documents whose
        latest version failed, interrupted writes, and bookings Coupa was never told about. A row a
        live run holds (claim not stale: the heartbeat renews it, the lease is the grace period) is
        in progress, not stuck."""
        c = sync_ledger.c
        condition = (
            c.state.in_([s.value for s in (*PROBLEM_STATES, WRITING)])
            | c.problem.is_not(None)
            | self._not_notified(doc_type)
        )
        query = sa.select(sync_ledger).where((c.doc_type == doc_type) & condition).order_by(c.coupa_id, c.scope)
        with self.engine.connect() as conn:
            rows = [LedgerRow.from_mapping(r) for r in conn.execute(query).mappings()]
        now, found = self.now(), []
        notified_states = NOTIFIED_STATES.get(doc_type, ())
        for row in rows:
            if row.claimed_by is not None and not self._stale(row):
                continue
            age = now - row.updated_at if row.updated_at else timedelta(0)
            if row.problem:
                kind, reason, severity = f"{row.state} (latest version {row.problem})", row.reason or "", Severity.ERROR
            elif row.state in (*PROBLEM_STATES, WRITING):
                kind, severity = row.state, Severity.ERROR
                reason = row.reason or STATE_REASONS.get(row.state, "")
            elif row.state in notified_states and not row.coupa_notified:
                kind, severity = "not_notified", Severity.WARN
                reason = (
                    f"{row.state} in D365, but Coupa was not told yet (export flag / integration history); "
                    "the next run of any partition tells it"
                )
            else:
                continue
            found.append(Unfinished(row, kind, reason, age, severity))
        return found

    def needing_attention(self, doc_type: str) -> list[LedgerRow]:
        """The rows of :meth:`unfinished`."""
        return [item.row for item in self.unfinished(doc_type)]

    def replay_candidates(self, doc_type: str, *, since: datetime) -> list[LedgerRow]:
        """Everything unfinished touched since ``since`` (the replay job's ``failed_since``): problem
        states, failed latest versions, interrupted writes and bookings Coupa was never told about."""
        c = sync_ledger.c
        condition = (
            c.state.in_([s.value for s in (*PROBLEM_STATES, WRITING)])
            | c.problem.is_not(None)
            | self._not_notified(doc_type)
        )
        query = (
            sa.select(sync_ledger)
            .where((c.doc_type == doc_type) & condition & (c.updated_at >= since))
            .order_by(c.coupa_id, c.scope)
        )
        with self.engine.connect() as conn:
            return [LedgerRow.from_mapping(r) for r in conn.execute(query).mappings()]

    def retry_candidates(self, doc_type: str, *, exclude: Iterable[int] = (), limit: int = 500) -> list[LedgerRow]:
        """Documents a run should try again besides its own window: never-booked failures and
        quarantines, interrupted writes, booked documents whose latest version failed, and bookings
        Coupa was never told about (an export-flag PUT that failed in an older partition). Least
        recently tried first, so a fixed-size batch rotates through all of them."""
        excluded = {int(i) for i in exclude}
        c = sync_ledger.c
        retryable = (
            c.state.in_([QUARANTINED.value, FAILED.value, WRITING.value])
            | c.problem.is_not(None)
            | self._not_notified(doc_type)
        )
        query = (
            sa.select(sync_ledger)
            .where((c.doc_type == doc_type) & retryable)
            .order_by(c.updated_at, c.coupa_id)
            .limit(limit + len(excluded))
        )
        with self.engine.connect() as conn:
            rows = [LedgerRow.from_mapping(r) for r in conn.execute(query).mappings()]
        return [r for r in rows if r.coupa_id not in excluded][:limit]

    def never_tried(self, doc_type: str, *, exclude: Iterable[int] = (), limit: int = 500) -> list[int]:
        """Coupa ids staged but never synced (no ledger row, or one still ``new``): what a run stopped by
        an outage (or a step that never ran) left behind. The next run of *any* partition picks them
        up, so nobody has to re-run the failed partition; claims keep a concurrent run from doubling."""
        excluded = {int(i) for i in exclude}
        c, staged = sync_ledger.c, staged_documents.c
        joined = staged_documents.outerjoin(
            sync_ledger, (c.doc_type == staged.doc_type) & (c.coupa_id == staged.coupa_id) & (c.scope == "")
        )
        query = (
            sa.select(staged.coupa_id)
            .select_from(joined)
            .where((staged.doc_type == doc_type) & (c.coupa_id.is_(None) | (c.state == NEW.value)))
            .order_by(staged.coupa_id)
            .limit(limit + len(excluded))
        )
        with self.engine.connect() as conn:
            ids = [int(i) for i in conn.execute(query).scalars()]
        return [i for i in ids if i not in excluded][:limit]

    def booked_by_natural_key(
        self, doc_type: str, *, include_in_flight: bool = True
    ) -> dict[tuple[str, str, str], LedgerRow]:
        """Booked documents (any booked state, with or without a problem) by their folded natural key;
        ``include_in_flight`` adds interrupted writes (WRITING), which may have landed."""
        found: dict[tuple[str, str, str], LedgerRow] = {}
        states = (*BOOKED_STATES, WRITING) if include_in_flight else BOOKED_STATES
        for row in self.rows(doc_type, states):
            key = row.natural_key
            if key is not None:
                found[key.folded()] = row
        return found

    def counts(self, doc_type: str) -> dict[str, int]:
        query = (
            sa.select(sync_ledger.c.state, sa.func.count())
            .where(sync_ledger.c.doc_type == doc_type)
            .group_by(sync_ledger.c.state)
        )
        with self.engine.connect() as conn:
            return {state: int(n) for state, n in conn.execute(query)}

    # -- claims ------------------------------------------------------------------------------
    def _stale(self, row: LedgerRow) -> bool:
        if row.claimed_by is None:
            return True
        if row.claimed_at is None or self.now() - row.claimed_at > self.lease:
            return True
        if (
            row.claim_host == self.host
            and "|pid:[" in self.host
            and row.claim_pid
            and row.claim_pid != self.pid
            and not pid_alive(row.claim_pid)
        ):
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
            if row.claimed_by == run_id and row.claim_pid == self.pid and row.claim_host == self.host:
                self._hold(row)
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
            token = uuid.uuid4().hex
            with self.engine.begin() as conn:
                taken = conn.execute(
                    sync_ledger.update()
                    .where(condition)
                    .values(
                        claimed_by=run_id,
                        claim_token=token,
                        claimed_at=self.now(),
                        claim_host=self.host,
                        claim_pid=self.pid,
                    )
                ).rowcount
            if taken == 1:
                claimed = self.get(doc_type, coupa_id, scope)
                assert claimed is not None
                self._hold(claimed)
                return claimed
        return None

    def _hold(self, row: LedgerRow) -> None:
        key = (row.doc_type, row.coupa_id, row.scope)
        with self._held_lock:
            if row.claim_token:
                self._held[key] = row.claim_token
        self._heartbeat.ensure_running()

    def _unhold(self, doc_type: str, coupa_id: int, scope: str) -> None:
        with self._held_lock:
            self._held.pop((doc_type, int(coupa_id), scope), None)

    def held_claims(self) -> dict[_Key, str]:
        with self._held_lock:
            return dict(self._held)

    def renew_claims(self) -> int:
        """Push the lease of every claim this process holds forward; returns how many were renewed.
        A claim another run has taken over is dropped (the next ``update`` raises ClaimLostError)."""
        renewed = 0
        c = sync_ledger.c
        for (doc_type, coupa_id, scope), token in self.held_claims().items():
            with self.engine.begin() as conn:
                changed = conn.execute(
                    sync_ledger.update()
                    .where(self._key(doc_type, coupa_id, scope) & (c.claim_token == token))
                    .values(claimed_at=self.now())
                ).rowcount
            if changed == 1:
                renewed += 1
            else:
                self._unhold(doc_type, coupa_id, scope)
        return renewed

    def _holds(self, row: LedgerRow, run_id: str) -> Any:
        """WHERE clause: the row is still claimed by this run, with the token we took."""
        c = sync_ledger.c
        condition = self._key(row.doc_type, row.coupa_id, row.scope) & (c.claimed_by == run_id)
        with self._held_lock:
            token = self._held.get((row.doc_type, row.coupa_id, row.scope))
        return condition & (c.claim_token == token) if token else condition

    def update(self, row: LedgerRow, run_id: str, *, release: bool = False, **fields: Any) -> LedgerRow:
        """Change fields of a claimed row (optionally releasing the claim) — only while we hold it."""
        values: dict[str, Any] = {
            k: (v.value if isinstance(v, StrEnum) else db_text(v) if isinstance(v, str) else v)
            for k, v in fields.items()
        }
        if "d365_key" in values and values["d365_key"] is not None and not isinstance(values["d365_key"], str):
            values["d365_key"] = json.dumps(values["d365_key"], sort_keys=True)
        if "natural_key" in values:
            key = values.pop("natural_key")
            values.update(
                legal_entity=key.legal_entity, vendor_account=key.vendor_account, document_number=key.document_number
            )
        values["updated_at"] = self.now()
        values["last_run_id"] = run_id
        if release:
            values.update(claimed_by=None, claim_token=None, claimed_at=None, claim_host=None, claim_pid=None)
        with self.engine.begin() as conn:
            changed = conn.execute(sync_ledger.update().where(self._holds(row, run_id)).values(**values)).rowcount
        if changed != 1:
            self._unhold(row.doc_type, row.coupa_id, row.scope)
            raise ClaimLostError(
                f"ledger row {row.doc_type}/{row.coupa_id} is no longer claimed by run {run_id}; "
                "another run took it over and continues with it"
            )
        if release:
            self._unhold(row.doc_type, row.coupa_id, row.scope)
        updated = self.get(row.doc_type, row.coupa_id, row.scope)
        assert updated is not None
        return updated

    def record_problem(
        self,
        row: LedgerRow,
        run_id: str,
        problem: Problem,
        reason: str,
        *,
        coupa_hash: str | None = None,
        legal_entity: str | None = None,
        **fields: Any,
    ) -> LedgerRow:
        """Record why this version of a document cannot be booked, and release the claim. A
        never-booked document becomes quarantined/failed (with the hash and legal entity of this
        version); a booked or half-written one keeps its state, D365 key and the hash of the version
        that is booked — so the change is retried, a void still removes it and its status still
        reaches Coupa — and only gets the ``problem``."""
        if row.state in UNBOOKED_OPEN_STATES:
            values: dict[str, Any] = {"state": DocState(problem.value), "problem": None}
            if coupa_hash is not None:
                values["coupa_hash"] = coupa_hash
            if legal_entity is not None:
                values["legal_entity"] = legal_entity
        else:
            values = {"problem": problem}
        return self.update(row, run_id, release=True, reason=reason, attempts=row.attempts + 1, **values, **fields)

    def release(self, row: LedgerRow, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sync_ledger.update()
                .where(self._holds(row, run_id))
                .values(claimed_by=None, claim_token=None, claimed_at=None, claim_host=None, claim_pid=None)
            )
        self._unhold(row.doc_type, row.coupa_id, row.scope)

    # -- audit -------------------------------------------------------------------------------
    def audit(
        self,
        *,
        run_id: str,
        doc_type: str,
        coupa_id: int,
        action: str,
        scope: str = "",
        entity: str | None = None,
        d365_key: Any = None,
        http_status: int | None = None,
        error: str | None = None,
        payload_sha256: str | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sync_audit.insert().values(
                    at=self.now(),
                    run_id=run_id,
                    doc_type=doc_type,
                    coupa_id=int(coupa_id),
                    scope=scope,
                    action=action,
                    entity=entity,
                    d365_key=json.dumps(d365_key, sort_keys=True) if d365_key is not None else None,
                    http_status=http_status,
                    error=(error or None) and db_text(error, 4000),
                    payload_sha256=payload_sha256,
                )
            )

    def history(self, doc_type: str, coupa_id: int) -> list[dict[str, Any]]:
        query = (
            sa.select(sync_audit)
            .where((sync_audit.c.doc_type == doc_type) & (sync_audit.c.coupa_id == int(coupa_id)))
            .order_by(sync_audit.c.id)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def audit_count(self, **equals: Any) -> int:
        query = sa.select(sa.func.count()).select_from(sync_audit)
        for name, value in equals.items():
            query = query.where(getattr(sync_audit.c, name) == value)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
