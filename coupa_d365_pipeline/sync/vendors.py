"""Coupa suppliers -> D365 VendorsV2, per legal entity: create when missing, update changed fields,
never create a second vendor for the same supplier (ledger + key lookup before every create).

Many at once (:meth:`VendorSync.ensure_many`, the bulk routes of a documents run): creates and updates
go 20 per ``$batch`` (one changeset each) — or, for the DMF route, the creates travel in the
documents' own package ("Vendors V2", imported ahead of the headers; :meth:`VendorSync.package_rows`,
:meth:`VendorSync.settle_packaged`) and cost no request of their own."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..common.http import HTTPClientError, SystemUnavailableError, is_system_failure
from ..d365 import odata
from ..d365.batch import BatchOperation, Changeset
from ..mapping.vendors import Quarantine, map_vendor, vendor_changes
from ..state.ledger import WRITTEN, ClaimLostError, LedgerRow, Problem
from ..state.store import payload_hash
from .context import SyncServices, error_text, http_status
from .report import Action, Outcome

DOC = "vendor"
SELECT = [
    "dataAreaId",
    "VendorAccountNumber",
    "VendorOrganizationName",
    "AddressStreet",
    "AddressCity",
    "AddressZipCode",
    "AddressCountryRegionId",
    "DefaultPaymentTermsName",
    "CurrencyCode",
    "OnHoldStatus",
    "VendorGroupId",
]


@dataclass
class _Deferred:
    """A vendor write decided but not sent: claimed and mapped, waiting to go out in a ``$batch`` (or,
    a create of the DMF route, in a package). ``changes`` None: a create of ``desired``; else the
    fields of an existing vendor to update (PATCH: idempotent)."""

    row: LedgerRow
    supplier: dict[str, Any]
    legal_entity: str
    key: dict[str, Any]
    desired: dict[str, Any]
    coupa_hash: str
    changes: dict[str, Any] | None = None
    packaged: bool = False  # taken into a package (package_rows)

    @property
    def pair(self) -> tuple[int, str]:
        return int(self.supplier["id"]), self.legal_entity

    @property
    def operation(self) -> BatchOperation:
        if self.changes is None:
            return BatchOperation("POST", "VendorsV2", self.desired)
        return BatchOperation("PATCH", f"VendorsV2{odata.key_predicate(self.key)}?cross-company=true", self.changes)


class VendorSync:
    def __init__(self, services: SyncServices, claim_wait_s: float = 15.0) -> None:
        self.s = services
        self.claim_wait_s = claim_wait_s
        self._existing: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._done: dict[tuple[int, str], Outcome] = {}
        self.errors: dict[tuple[int, str], HTTPClientError] = {}  # why a vendor failed (last ensure)
        self._expected: set[str] = set()  # legal entities to prefetch together on the first lookup
        self._packaged: dict[tuple[int, str], _Deferred] = {}  # creates left to a DMF package (unclaimed)

    def expect(self, legal_entities: Iterable[str]) -> None:
        """The legal entities a bulk run will ensure vendors in: the first vendor that needs a D365
        lookup prefetches all of them in one cross-company query (none at all when the ledger already
        knows every vendor), instead of one GET per vendor."""
        self._expected |= set(legal_entities)

    def prefetch_many(self, legal_entities: Iterable[str]) -> int:
        """:meth:`prefetch` for several legal entities in one cross-company query (paged)."""
        wanted = {le.lower(): le for le in legal_entities}
        if not wanted:
            return 0
        rows = list(self.s.d365.query("VendorsV2", legal_entity=sorted(wanted), select=SELECT))
        for row in rows:
            le = wanted.get(str(row.get("dataAreaId") or "").lower())
            if le is not None:
                self._existing[(le, str(row["VendorAccountNumber"]).lower())] = row
        for le in wanted.values():
            self._existing[(le, "*prefetched*")] = {}
        return len(rows)

    def prefetch(self, legal_entity: str) -> int:
        """Read every vendor of a legal entity once (cross-company, paged) instead of one GET each."""
        rows = list(self.s.d365.query("VendorsV2", legal_entity=legal_entity, select=SELECT))
        for row in rows:
            self._existing[(legal_entity, str(row["VendorAccountNumber"]).lower())] = row
        self._existing[(legal_entity, "*prefetched*")] = {}
        return len(rows)

    def _current(self, legal_entity: str, account: str) -> dict[str, Any] | None:
        cache_key = (legal_entity, account.lower())
        if cache_key in self._existing:
            return self._existing[cache_key]
        if (legal_entity, "*prefetched*") in self._existing:
            return None
        if legal_entity in self._expected:
            self.prefetch_many(
                le for le in self._expected | {legal_entity} if (le, "*prefetched*") not in self._existing
            )
            return self._existing.get(cache_key)
        return self.s.d365.get("VendorsV2", {"dataAreaId": legal_entity, "VendorAccountNumber": account})

    def ensure(self, supplier: dict[str, Any], legal_entity: str) -> Outcome:
        supplier_id = int(supplier["id"])
        packaged = self._packaged.get((supplier_id, legal_entity))
        if packaged is not None:  # created by the package that carries the documents, ahead of them
            name = str(supplier.get("name") or supplier_id)
            return Outcome(DOC, supplier_id, Action.CREATED, name, legal_entity, "in this run's DMF package")
        memo = self._done.get((supplier_id, legal_entity))
        if memo is not None:
            return memo
        outcome = self._ensure(supplier, legal_entity)
        assert isinstance(outcome, Outcome)
        return self._memo(supplier, legal_entity, outcome)

    def ensure_many(
        self, wanted: Iterable[tuple[dict[str, Any], str]], batch_size: int = 20, *, package_creates: bool = False
    ) -> list[Outcome]:
        """:meth:`ensure` for many (supplier, legal entity) pairs, with the vendors D365 does not hold
        created, and those that differ updated, ``batch_size`` per ``$batch`` request (one changeset
        each) instead of one request each. A vendor whose part was refused, or whose batch answer was
        lost, is settled by :meth:`ensure` after a fresh lookup by key (a vendor's key is its account:
        a create never lands twice).

        ``package_creates`` (the DMF route): the creates are not sent but kept for the package of their
        legal entity (:meth:`package_rows`), their claims released — a vendor's key is deterministic and
        DMF upserts by key, so nothing can duplicate it meanwhile; :meth:`settle_packaged` records
        those that landed, and any other is created the usual way by the next :meth:`ensure`."""
        outcomes: list[Outcome] = []
        deferred: list[_Deferred] = []
        seen: set[tuple[int, str]] = set()
        for supplier, legal_entity in wanted:
            pair = (int(supplier["id"]), legal_entity)
            if pair in seen:
                continue
            seen.add(pair)
            if pair in self._done or pair in self._packaged:
                outcomes.append(self.ensure(supplier, legal_entity))
                continue
            result = self._ensure(supplier, legal_entity, defer=True)
            if isinstance(result, _Deferred):
                deferred.append(result)
            else:
                outcomes.append(self._memo(supplier, legal_entity, result))
        if package_creates:
            for d in [d for d in deferred if d.changes is None]:
                self.s.ledger.release(d.row, self.s.run_id)
                self._packaged[d.pair] = d
                outcomes.append(self.ensure(d.supplier, d.legal_entity))
            deferred = [d for d in deferred if d.changes is not None]
        size = max(1, batch_size)
        try:
            for start in range(0, len(deferred), size):
                outcomes += self._write_batch(deferred[start : start + size])
        except BaseException:
            for d in deferred:  # a no-op for the rows already settled (their claim is gone)
                self.s.ledger.release(d.row, self.s.run_id)
            raise
        return outcomes

    def package_rows(self, legal_entity: str, execution_id: str) -> list[dict[str, Any]]:
        """The VendorsV2 records of ``legal_entity`` left to a package by :meth:`ensure_many` and not
        taken by an earlier package; each is taken once, and audited with the package's execution id."""
        rows = []
        for d in self._packaged.values():
            if d.legal_entity == legal_entity and not d.packaged:
                d.packaged = True
                rows.append(d.desired)
                self.s.ledger.audit(
                    run_id=self.s.run_id,
                    doc_type=DOC,
                    coupa_id=d.pair[0],
                    scope=d.legal_entity,
                    action="dmf_packaged",
                    entity="VendorsV2",
                    d365_key=dict(d.key, executionId=execution_id),
                    payload_sha256=payload_hash(d.desired),
                )
        return rows

    def settle_packaged(self, landed: set[tuple[str, str]]) -> int:
        """After the packages were read back: ``landed`` holds the folded (legal entity, account) D365
        now has. Those vendors are recorded as created (audit + ledger, as :meth:`_write_batch` does);
        the others are forgotten here, so the next :meth:`ensure` (the OData re-drive of their
        documents) looks them up and creates them. Returns how many were recorded."""
        recorded = 0
        for pair, d in list(self._packaged.items()):
            del self._packaged[pair]
            account = str(d.key["VendorAccountNumber"])
            if not d.packaged or (odata.fold(d.legal_entity), odata.fold(account)) not in landed:
                continue
            self._existing[(d.legal_entity, account.lower())] = d.desired
            row = self._claim(*pair)
            if row is None:  # another run holds it now: it will find the vendor in D365
                continue
            if row.state == WRITTEN and row.coupa_hash == d.coupa_hash and not row.problem:
                self.s.ledger.release(row, self.s.run_id)
                continue
            outcome = self._written(
                row, d.supplier, d.legal_entity, d.key, Action.CREATED, None, d.desired, d.coupa_hash, d.desired
            )
            self._memo(d.supplier, d.legal_entity, outcome)
            recorded += 1
        return recorded

    def _write_batch(self, chunk: list[_Deferred]) -> list[Outcome]:
        s = self.s
        try:
            results = s.d365.batch([Changeset([d.operation]) for d in chunk])
        except SystemUnavailableError:
            raise
        except HTTPClientError as exc:  # an AmbiguousWriteError too: the lookup by key settles it
            s.logger.warning(
                "vendors: a $batch of %d writes failed as a whole (%s); each is looked up and settled alone",
                len(chunk),
                error_text(exc),
            )
            return [self._settle_alone(d) for d in chunk]
        outcomes: list[Outcome] = []
        for d, result in zip(chunk, results, strict=True):
            if not result.ok:
                outcomes.append(self._settle_alone(d))
                continue
            account = str(d.key["VendorAccountNumber"]).lower()
            if d.changes is None:
                created = result.parts[0].body if result.parts and isinstance(result.parts[0].body, dict) else d.desired
                self._existing[(d.legal_entity, account)] = created
                action, status, sent = Action.CREATED, 201, d.desired
            else:
                current = self._existing.get((d.legal_entity, account)) or {}
                self._existing[(d.legal_entity, account)] = {**current, **d.changes}
                action, status, sent = Action.UPDATED, 204, d.changes
            outcome = self._written(
                d.row, d.supplier, d.legal_entity, d.key, action, status, sent, d.coupa_hash, d.desired
            )
            outcomes.append(self._memo(d.supplier, d.legal_entity, outcome))
        return outcomes

    def _settle_alone(self, d: _Deferred) -> Outcome:
        """A batched write that was refused or whose answer was lost: read the vendor by key (it may
        have landed), then let :meth:`ensure` create, update or record the failure as for any vendor."""
        account = str(d.key["VendorAccountNumber"]).lower()
        self.s.ledger.release(d.row, self.s.run_id)
        self._existing[(d.legal_entity, account)] = self.s.d365.get("VendorsV2", d.key)
        return self.ensure(d.supplier, d.legal_entity)

    def _memo(self, supplier: dict[str, Any], legal_entity: str, outcome: Outcome) -> Outcome:
        supplier_id = int(supplier["id"])
        error = self.errors.get((supplier_id, legal_entity)) if outcome.action == Action.FAILED else None
        if outcome.action != Action.BUSY and not (error is not None and is_system_failure(error)):
            # a vendor D365 failed to answer for is tried again by the next document that needs it
            self._done[(supplier_id, legal_entity)] = outcome
        return outcome

    def _claim(self, supplier_id: int, legal_entity: str):
        deadline = time.monotonic() + self.claim_wait_s
        while True:
            row = self.s.ledger.claim(DOC, supplier_id, self.s.run_id, scope=legal_entity)
            if row is not None or time.monotonic() > deadline:
                return row
            time.sleep(0.2)

    def _ensure(self, supplier: dict[str, Any], legal_entity: str, defer: bool = False) -> Outcome | _Deferred:
        """``defer``: a vendor D365 does not hold, or holds with other values, is returned as a claimed
        :class:`_Deferred` for :meth:`ensure_many` to write in a ``$batch``, instead of being written here."""
        s, run = self.s, self.s.run_id
        supplier_id = int(supplier["id"])
        name = str(supplier.get("name") or supplier_id)
        row = self._claim(supplier_id, legal_entity)
        if row is None:
            return Outcome(DOC, supplier_id, Action.BUSY, name, legal_entity, "another run is syncing this vendor")
        coupa_hash = payload_hash(
            {k: v for k, v in supplier.items() if k not in ("updated-at", "updated-by", "exported")}
        )
        try:
            if row.state == WRITTEN and row.coupa_hash == coupa_hash and not row.problem:
                s.ledger.release(row, run)
                return Outcome(DOC, supplier_id, Action.ALREADY_PRESENT, name, legal_entity)
            desired = map_vendor(supplier, legal_entity, s.mapping, s.master)
            if isinstance(desired, Quarantine):
                reason = "; ".join(desired.reasons)
                s.ledger.record_problem(
                    row, run, Problem.QUARANTINED, reason, legal_entity=legal_entity, coupa_hash=coupa_hash
                )
                s.ledger.audit(
                    run_id=run,
                    doc_type=DOC,
                    coupa_id=supplier_id,
                    scope=legal_entity,
                    action="quarantine",
                    error=reason,
                )
                return Outcome(DOC, supplier_id, Action.QUARANTINED, name, legal_entity, reason)
            account = str(desired["VendorAccountNumber"])
            key = {"dataAreaId": legal_entity, "VendorAccountNumber": account}
            s.ledger.update(row, run, legal_entity=legal_entity, vendor_account=account, d365_key=key)
            current = self._current(legal_entity, account)
            if current is None and defer:
                return _Deferred(row, supplier, legal_entity, key, desired, coupa_hash)
            if current is None:
                created = s.d365.create("VendorsV2", desired, verify=lambda: s.d365.get("VendorsV2", key))
                self._existing[(legal_entity, account.lower())] = created
                action, status, sent = Action.CREATED, 201, desired
            else:
                changes = vendor_changes(current, desired)
                if changes and defer:
                    return _Deferred(row, supplier, legal_entity, key, desired, coupa_hash, changes)
                if changes:
                    s.d365.update("VendorsV2", key, changes)
                    self._existing[(legal_entity, account.lower())] = {**current, **changes}
                    action, status, sent = Action.UPDATED, 204, changes
                else:
                    action, status, sent = Action.ALREADY_PRESENT, None, None
            return self._written(row, supplier, legal_entity, key, action, status, sent, coupa_hash, desired)
        except SystemUnavailableError:
            s.ledger.release(row, run)
            raise
        except HTTPClientError as exc:
            self.errors[(supplier_id, legal_entity)] = exc
            reason = error_text(exc)
            s.ledger.audit(
                run_id=run,
                doc_type=DOC,
                coupa_id=supplier_id,
                scope=legal_entity,
                action="error",
                entity="VendorsV2",
                http_status=http_status(exc),
                error=reason,
            )
            try:
                s.ledger.record_problem(
                    s.ledger.get(DOC, supplier_id, legal_entity) or row, run, Problem.FAILED, reason
                )
            except ClaimLostError as lost:
                return Outcome(DOC, supplier_id, Action.BUSY, name, legal_entity, str(lost))
            return Outcome(DOC, supplier_id, Action.FAILED, name, legal_entity, reason)
        except ClaimLostError as exc:
            return Outcome(DOC, supplier_id, Action.BUSY, name, legal_entity, str(exc))
        except BaseException:
            s.ledger.release(row, run)
            raise

    def _written(
        self,
        row: LedgerRow,
        supplier: dict[str, Any],
        legal_entity: str,
        key: dict[str, Any],
        action: Action,
        status: int | None,
        sent: dict[str, Any] | None,
        coupa_hash: str,
        desired: dict[str, Any],
    ) -> Outcome:
        """The vendor is in D365 as Coupa has it (``desired``): audit what was sent (``sent``: the create's
        body, the update's changes, None), mark the row written, release it."""
        s, run = self.s, self.s.run_id
        supplier_id = int(supplier["id"])
        if sent is not None:
            s.ledger.audit(
                run_id=run,
                doc_type=DOC,
                coupa_id=supplier_id,
                scope=legal_entity,
                action="create" if action == Action.CREATED else "update",
                entity="VendorsV2",
                d365_key=key,
                http_status=status,
                payload_sha256=payload_hash(sent),
            )
        s.ledger.update(
            row,
            run,
            release=True,
            state=WRITTEN,
            coupa_hash=coupa_hash,
            payload_hash=payload_hash(desired),
            reason=None,
            problem=None,
            attempts=row.attempts + 1,
        )
        return Outcome(
            DOC,
            supplier_id,
            action,
            str(supplier.get("name") or supplier_id),
            legal_entity,
            f"changed: {', '.join(sorted(sent))}" if action == Action.UPDATED and sent else "",
        )
