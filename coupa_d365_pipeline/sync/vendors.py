"""Coupa suppliers -> D365 VendorsV2, per legal entity: create when missing, update changed fields,
never create a second vendor for the same supplier (ledger + key lookup before every create)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..common.http import HTTPClientError, SystemUnavailableError, is_system_failure
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
class _Create:
    """A vendor D365 does not hold yet, claimed and mapped, waiting to go out in a ``$batch``."""

    row: LedgerRow
    supplier: dict[str, Any]
    legal_entity: str
    key: dict[str, Any]
    desired: dict[str, Any]
    coupa_hash: str


class VendorSync:
    def __init__(self, services: SyncServices, claim_wait_s: float = 15.0) -> None:
        self.s = services
        self.claim_wait_s = claim_wait_s
        self._existing: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._done: dict[tuple[int, str], Outcome] = {}
        self.errors: dict[tuple[int, str], HTTPClientError] = {}  # why a vendor failed (last ensure)
        self._expected: set[str] = set()  # legal entities to prefetch together on the first lookup

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
        memo = self._done.get((supplier_id, legal_entity))
        if memo is not None:
            return memo
        outcome = self._ensure(supplier, legal_entity)
        assert isinstance(outcome, Outcome)
        return self._memo(supplier, legal_entity, outcome)

    def ensure_many(self, wanted: Iterable[tuple[dict[str, Any], str]], batch_size: int = 20) -> list[Outcome]:
        """:meth:`ensure` for many (supplier, legal entity) pairs, with the vendors D365 does not hold
        created ``batch_size`` per ``$batch`` request (one changeset each) instead of one POST each.
        A vendor whose part was refused, or whose batch answer was lost, is settled by :meth:`ensure`
        after a fresh lookup by key (a vendor's key is its account: a create never lands twice)."""
        outcomes: list[Outcome] = []
        creates: list[_Create] = []
        seen: set[tuple[int, str]] = set()
        for supplier, legal_entity in wanted:
            pair = (int(supplier["id"]), legal_entity)
            if pair in seen:
                continue
            seen.add(pair)
            if pair in self._done:
                outcomes.append(self._done[pair])
                continue
            result = self._ensure(supplier, legal_entity, defer_create=True)
            if isinstance(result, _Create):
                creates.append(result)
            else:
                outcomes.append(self._memo(supplier, legal_entity, result))
        size = max(1, batch_size)
        try:
            for start in range(0, len(creates), size):
                outcomes += self._create_batch(creates[start : start + size])
        except BaseException:
            for c in creates:  # a no-op for the rows already settled (their claim is gone)
                self.s.ledger.release(c.row, self.s.run_id)
            raise
        return outcomes

    def _create_batch(self, chunk: list[_Create]) -> list[Outcome]:
        s = self.s
        try:
            results = s.d365.batch([Changeset([BatchOperation("POST", "VendorsV2", c.desired)]) for c in chunk])
        except SystemUnavailableError:
            raise
        except HTTPClientError as exc:  # an AmbiguousWriteError too: the lookup by key settles it
            s.logger.warning(
                "vendors: a $batch of %d creates failed as a whole (%s); each is looked up and settled alone",
                len(chunk),
                error_text(exc),
            )
            return [self._settle_alone(c) for c in chunk]
        outcomes: list[Outcome] = []
        for c, result in zip(chunk, results, strict=True):
            if not result.ok:
                outcomes.append(self._settle_alone(c))
                continue
            created = result.parts[0].body if result.parts and isinstance(result.parts[0].body, dict) else c.desired
            account = str(c.key["VendorAccountNumber"])
            self._existing[(c.legal_entity, account.lower())] = created
            outcome = self._written(
                c.row, c.supplier, c.legal_entity, c.key, Action.CREATED, 201, c.desired, c.coupa_hash, c.desired
            )
            outcomes.append(self._memo(c.supplier, c.legal_entity, outcome))
        return outcomes

    def _settle_alone(self, c: _Create) -> Outcome:
        """A batched create that was refused or whose answer was lost: read the vendor by key (it may
        have landed), then let :meth:`ensure` create, update or record the failure as for any vendor."""
        account = str(c.key["VendorAccountNumber"]).lower()
        self.s.ledger.release(c.row, self.s.run_id)
        self._existing[(c.legal_entity, account)] = self.s.d365.get("VendorsV2", c.key)
        return self.ensure(c.supplier, c.legal_entity)

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

    def _ensure(self, supplier: dict[str, Any], legal_entity: str, defer_create: bool = False) -> Outcome | _Create:
        """``defer_create``: a vendor D365 does not hold is returned as a claimed :class:`_Create` for
        :meth:`ensure_many` to send in a ``$batch``, instead of being created here."""
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
            if current is None and defer_create:
                return _Create(row, supplier, legal_entity, key, desired, coupa_hash)
            if current is None:
                created = s.d365.create("VendorsV2", desired, verify=lambda: s.d365.get("VendorsV2", key))
                self._existing[(legal_entity, account.lower())] = created
                action, status, sent = Action.CREATED, 201, desired
            else:
                changes = vendor_changes(current, desired)
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
