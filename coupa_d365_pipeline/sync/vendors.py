"""Coupa suppliers -> D365 VendorsV2, per legal entity: create when missing, update changed fields,
never create a second vendor for the same supplier (ledger + key lookup before every create)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ..common.http import HTTPClientError, SystemUnavailableError, is_system_failure
from ..mapping.vendors import Quarantine, map_vendor, vendor_changes
from ..state.ledger import WRITTEN, ClaimLostError, Problem
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

    def _ensure(self, supplier: dict[str, Any], legal_entity: str) -> Outcome:
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
            digest = payload_hash(desired)
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
                payload_hash=digest,
                reason=None,
                problem=None,
                attempts=row.attempts + 1,
            )
            return Outcome(
                DOC,
                supplier_id,
                action,
                name,
                legal_entity,
                f"changed: {', '.join(sorted(sent))}" if action == Action.UPDATED and sent else "",
            )
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
