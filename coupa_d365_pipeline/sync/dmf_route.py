"""The bulk route: new invoices and purchase orders of a documents run imported into D365 through
the Data Management (DMF) package API, one package per legal entity. Plain Python; no Dagster.

Which route (:func:`route_for_refs`): a run with more documents to write than ``D365_DMF_THRESHOLD``
(0 = always) takes this route. "To write" is read from the ledger alone: an approved invoice / issued
PO with no ledger row, or one that is new or quarantined (never booked, no D365 key). Everything else
— updates of booked documents, voids, cancellations, interrupted writes, documents whose last attempt
failed — goes through the OData path as before, in the same run.

Per candidate (:meth:`DmfRoute.sync_many`), the same rules as the OData path, in bulk:
1.-3. planned as every bulk route plans (``sync/bulk_plan.py``): mapped, looked up in D365 in bulk
   (what D365 already holds goes through the per-document path: dedupe holds across routes), claimed,
   vendor made sure of, intent recorded (``writing`` + D365 key) before anything is imported;
4. one package per legal entity, with the run's vendors D365 lacks in that legal entity ("Vendors V2",
   imported before the headers; read back with the documents, then written in the ledger — a vendor
   that did not land is created by the OData re-drive of its documents); the execution id
   (``coupa-d365-<run id[:8]>-<le>-<n>``) and the package are recorded in ``dmf_executions``
   *before* ``ImportFromPackage``; upload, import, wait;
5. read the packaged rows back by their keys where in doubt (headers always; lines in full after a
   partial or failed import, a sample of them after a clean ``Succeeded``; vendors only when no
   landed header names them — see :meth:`DmfRoute._read_back`): a document whose header and lines landed is
   ``written`` (same ledger fields as the OData path) and Coupa is told (export flag + history record,
   the OData path's own notify code); every other document is marked ``failed`` with the reason DMF
   gave and re-driven at once through the OData path, which finds a half-landed header through its
   usual lookups and completes it (or records why D365 refuses it).

Crash safety: a run that dies after recording the execution resumes it on the next documents run
(:meth:`DmfRoute.resume`): status polled, rows read back, ledger settled — never imported twice. An
execution D365 never heard of is abandoned; its ``writing`` documents are settled by the OData path's
lookups. One package import at a time per D365 environment: the import holds a ledger claim on
(``dmf_import``, 0, <environment>) from submission to the final status (lease + heartbeat like any
claim; a run that dies releases it when Dagster marks the run finished or the process is gone).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ..common.http import AmbiguousWriteError, SystemUnavailableError
from ..d365.client import D365Error
from ..d365.dmf import DmfClient, DmfError, DmfExecutionStatus, ImportCheck
from ..d365.dmf_package import DmfPackage, build_package
from ..d365.odata import fold
from ..mapping.fields import Quarantine
from ..state.dmf_executions import DmfExecutions, ExecutionStage, RecordedExecution
from ..state.ledger import FAILED, WRITING, LedgerRow
from ..state.store import payload_hash
from .base import DocumentSync
from .bulk_plan import BulkPlanner
from .context import error_text
from .dmf_plan import (  # noqa: F401 - Route, RouteDecision, route_for_refs, window_chunks: the Dagster glue imports them from here
    SPECS,
    DmfRunSummary,
    MappedDocument,
    Packaged,
    Route,
    RouteDecision,
    Submitted,
    environment_scope,
    failure_reasons,
    is_candidate,
    landed_documents,
    landed_vendors,
    route_for_refs,
    split_candidates,
    vendors_shown_by_headers,
    vendors_unshown,
    window_chunks,
)
from .notices import NoticeQueue
from .report import SyncReport

LOCK_DOC = "dmf_import"  # ledger rows (doc_type, 0, <environment>) serializing package imports
MAX_DOCUMENTS_PER_PACKAGE = 5000


class DmfRoute(BulkPlanner):
    """Imports the first writes of a run through DMF; everything else is left to ``syncer`` (the
    OData path of the same document type)."""

    PACKAGE_VENDORS = True

    def __init__(
        self,
        syncer: DocumentSync,
        *,
        data_project: str,
        dmf: DmfClient | None = None,
        executions: DmfExecutions | None = None,
        wait_timeout_s: float = 3600.0,
        lock_wait_s: float = 3600.0,
        not_found_grace_s: float = 30.0,
        coupa_concurrency: int = 4,
    ) -> None:
        super().__init__(syncer)
        self.data_project = data_project
        self.dmf = dmf or DmfClient(self.s.d365, logger=None)
        self.executions = executions or DmfExecutions(self.s.ledger.engine, clock=self.s.ledger.clock)
        self.wait_timeout_s = wait_timeout_s
        self.lock_wait_s = lock_wait_s
        self.not_found_grace_s = not_found_grace_s
        self.coupa_concurrency = coupa_concurrency
        self.summary = DmfRunSummary()

    # -- entry points ------------------------------------------------------------------------
    def sync_many(self, documents: Iterable[dict[str, Any]], report: SyncReport | None = None) -> SyncReport:
        report = report or SyncReport()
        candidates, others = split_candidates(self.s, self.doc_type, documents)
        try:
            packaged, to_odata = self._plan(candidates, report)
            by_entity: dict[str, list[Packaged]] = {}
            for item in packaged:
                by_entity.setdefault(item.key["dataAreaId"], []).append(item)
            redrive: list[dict[str, Any]] = []
            submitted: list[Submitted] = []
            for legal_entity, items in sorted(by_entity.items()):
                for start in range(0, len(items), MAX_DOCUMENTS_PER_PACKAGE):
                    done = self._import(legal_entity, items[start : start + MAX_DOCUMENTS_PER_PACKAGE])
                    if isinstance(done, Submitted):
                        submitted.append(done)
                    else:
                        redrive += done
            checks = self._read_back(submitted)
            with NoticeQueue(self.syncer, report, self.coupa_concurrency) as notices:
                for done, check in zip(submitted, checks, strict=True):
                    redrive += self._settle(
                        done.execution_id,
                        done.package,
                        done.items,
                        report,
                        notices,
                        redrive_now=False,
                        check=check,
                        status=done.status,
                    )
        except SystemUnavailableError as exc:
            exc.report = report  # type: ignore[attr-defined]
            raise
        self.summary.redriven += len(redrive)
        return self.syncer.sync_many([*to_odata, *others, *redrive], report)

    def resume(self, report: SyncReport) -> set[int]:
        """Settle the executions earlier runs of this document type recorded and never settled. Returns
        the Coupa ids settled (their documents need nothing more in this run)."""
        settled: set[int] = set()
        for execution in self.executions.unfinished(self.doc_type):
            if execution.run_id == self.s.run_id:
                continue
            rows = self._claim_all(execution)
            if rows is None:
                self.s.logger.info("DMF execution %s: its documents are held by a live run; left to it", execution)
                continue
            self.summary.resumed.append(execution.execution_id)
            known = self._status_after_grace(execution.execution_id)
            if not known:
                self.executions.mark(
                    execution.execution_id,
                    ExecutionStage.ABANDONED,
                    detail="D365 does not know this execution id: never imported; the OData path settles its documents",
                )
                for row in rows.values():
                    self.s.ledger.release(row, self.s.run_id)
                continue
            items = self._items_from_ledger(execution, rows)
            with NoticeQueue(self.syncer, report, self.coupa_concurrency) as notices:
                self._settle(execution.execution_id, execution.package, items, report, notices, redrive_now=True)
            settled.update(item.row.coupa_id for item in items)
        return settled

    # -- import ------------------------------------------------------------------------------
    def _import(self, legal_entity: str, items: list[Packaged]) -> Submitted | list[dict[str, Any]]:
        """Package, record, submit and wait for ``items`` of one legal entity; returns the execution to
        settle — or, when D365 refused the package outright, the documents to re-drive through OData."""
        s, run = self.s, self.s.run_id
        execution_id = self.executions.next_execution_id(run, legal_entity)
        vendors = self.syncer.vendors.package_rows(legal_entity, execution_id)  # first package of the LE
        package = build_package(
            {
                **({"VendorsV2": vendors} if vendors else {}),
                self.spec.header_set: [i.header for i in items],
                self.spec.line_set: [line for i in items for line in i.lines],
            },
            legal_entity=legal_entity,
            definition_group=self.data_project,
            description=f"Coupa {self.doc_type}s of Dagster run {run}",
        )
        self.executions.record(execution_id, run, self.doc_type, package, [i.row.coupa_id for i in items])
        for item in items:
            self.syncer._audit(
                item.row.coupa_id,
                "dmf_packaged",
                self.spec.header_set,
                dict(item.key, executionId=execution_id),
                payload_sha256=payload_hash([item.header, item.lines]),
            )
        self.summary.executions.append(execution_id)
        self.summary.packaged += len(items)
        # held until the final status; if this run dies first, its claim goes stale with the run
        lock = self._lock()
        try:
            self.dmf.submit(package, execution_id=execution_id)
        except (DmfError, D365Error) as exc:
            if isinstance(exc, (AmbiguousWriteError, SystemUnavailableError)):
                raise  # may have reached D365, or D365 is down: the next run resumes this execution id
            # D365 answered "no" (data project, legal entity, package, blob): nothing was imported
            s.ledger.release(lock, run)
            return self._refused(execution_id, items, exc)
        self.executions.mark(execution_id, ExecutionStage.SUBMITTED)
        final = self.dmf.wait(execution_id, timeout_s=self.wait_timeout_s)
        s.ledger.release(lock, run)
        return Submitted(execution_id, package, items, final.status)

    def _read_back(self, submitted: list[Submitted]) -> list[ImportCheck]:
        """Every package read back at once (one query per entity set for all legal entities), where in
        doubt only: headers in full (each document's D365 key); lines in full after a partial or failed
        import, else spot-checked (a Succeeded import reported no failed row; the sample catches an
        entity imported with zero rows); packaged vendors only when no landed header names them.
        Then the packaged vendors that landed are settled in the ledger."""
        spec = self.spec
        checks = self.dmf.read_back_many(
            [done.package for done in submitted],
            entity_sets={spec.header_set, spec.line_set},
            spot_check=[
                {spec.line_set} if done.status == DmfExecutionStatus.SUCCEEDED else set() for done in submitted
            ],
        )
        vendors: set[tuple[str, str]] = set()
        in_doubt: list[Submitted] = []
        for done, check in zip(submitted, checks, strict=True):
            landed = landed_documents(check, spec.header_set, spec.line_set)
            shown = vendors_shown_by_headers(done, landed, spec.vendor_field, spec.key_field)
            vendors |= {(fold(done.package.legal_entity), account) for account in shown}
            if vendors_unshown(done, shown):
                in_doubt.append(done)
        if in_doubt:
            read = self.dmf.read_back_many([done.package for done in in_doubt], entity_sets={"VendorsV2"})
            vendors |= landed_vendors(in_doubt, read)
        self.syncer.vendors.settle_packaged(vendors)
        return checks

    def _refused(self, execution_id: str, items: list[Packaged], exc: Exception) -> list[dict[str, Any]]:
        """D365 refused the package before importing anything: the documents (recorded as ``writing``)
        go through the OData path in this run, whose lookups settle an interrupted write."""
        reason = f"DMF refused execution {execution_id}: {error_text(exc)}; the documents go through OData"
        self.s.logger.warning("%s", reason)
        self.executions.mark(execution_id, ExecutionStage.ABANDONED, detail=reason)
        for item in items:
            self.syncer._audit(item.row.coupa_id, "dmf_refused", self.spec.header_set, item.key, error=reason)
            self.s.ledger.release(item.row, self.s.run_id)
        self.summary.statuses[execution_id] = "refused"
        return [item.document for item in items]

    def _lock(self) -> LedgerRow:
        """One package import at a time per D365 environment (see the module docstring)."""
        scope = environment_scope(self.s.d365)
        deadline = time.monotonic() + self.lock_wait_s
        while True:
            row = self.s.ledger.claim(LOCK_DOC, 0, self.s.run_id, scope=scope)
            if row is not None:
                return row
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"another run has been importing a DMF package into {self.s.d365.base_url} for more than "
                    f"{self.lock_wait_s:.0f} s; look at its run (dmf_executions table) and re-run this one later"
                )
            time.sleep(2.0)

    def _status_after_grace(self, execution_id: str) -> bool:
        """Does D365 know the execution? "Not found" right after a submission can mean "not yet", so ask
        again for ``not_found_grace_s`` before concluding that it never arrived."""
        deadline = time.monotonic() + self.not_found_grace_s
        while True:
            if self.dmf.status(execution_id).found:
                self.dmf.wait(execution_id, timeout_s=self.wait_timeout_s)
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(2.0, self.not_found_grace_s))

    def _claim_all(self, execution: RecordedExecution) -> dict[int, LedgerRow] | None:
        rows: dict[int, LedgerRow] = {}
        for coupa_id in execution.coupa_ids:
            row = self.s.ledger.claim(self.doc_type, coupa_id, self.s.run_id)
            if row is None:
                for taken in rows.values():
                    self.s.ledger.release(taken, self.s.run_id)
                return None
            rows[coupa_id] = row
        return rows

    def _items_from_ledger(self, execution: RecordedExecution, rows: dict[int, LedgerRow]) -> list[Packaged]:
        """The packaged documents of a recorded execution, from the ledger and the staged documents."""
        documents = self.s.store.documents_by_id(self.doc_type, list(rows))
        items: list[Packaged] = []
        for coupa_id, row in rows.items():
            document = documents.get(coupa_id)
            if document is None or row.state != WRITING or not row.d365_key:
                self.s.ledger.release(row, self.s.run_id)  # settled some other way since: nothing to do here
                continue
            header: dict[str, Any] = {}
            lines: list[dict[str, Any]] = []
            try:  # the bodies as packaged (mapping is deterministic), for the payload hash the ledger keeps
                mapped = self._map_one(document, self.syncer._supplier(document))
                if not isinstance(mapped, Quarantine):
                    header, lines = self._bodies(document, mapped)
            except SystemUnavailableError:
                raise
            except Exception:  # noqa: BLE001 - only the payload hash is lost
                pass
            items.append(
                Packaged(
                    document,
                    row,
                    dict(row.d365_key),
                    header,
                    lines,
                    self.syncer.content_hash(document),
                    self.syncer.label(document),
                )
            )
        return items

    # -- settle ------------------------------------------------------------------------------
    def _settle(
        self,
        execution_id: str,
        package: DmfPackage,
        items: list[Packaged],
        report: SyncReport,
        notices: NoticeQueue,
        *,
        redrive_now: bool,
        check: ImportCheck | None = None,
        status: DmfExecutionStatus | None = None,
    ) -> list[dict[str, Any]]:
        s, run = self.s, self.s.run_id
        status = status or self.dmf.status(execution_id).status
        self.summary.statuses[execution_id] = status.value
        check = check or self.dmf.read_back(package)
        complete = status == DmfExecutionStatus.SUCCEEDED and check.complete
        errors = [] if complete else self.dmf.execution_errors(execution_id)
        reasons = failure_reasons(errors, package, self.spec.key_field)
        landed = landed_documents(check, self.spec.header_set, self.spec.line_set)
        redrive: list[dict[str, Any]] = []
        for item in items:
            ref = fold(item.key[self.spec.key_field])
            coupa_id = item.row.coupa_id
            if ref in landed:
                self._written(item, execution_id, notices)
                continue
            reason = reasons.get(ref) or (
                "DMF reported Succeeded but the rows are not in D365 (the data project may lack the entity mapping)"
                if status == DmfExecutionStatus.SUCCEEDED
                else f"DMF execution ended {status.value} without naming this document's rows"
            )
            reason = f"DMF import {execution_id}: {reason}; re-driven through OData"
            self.syncer._audit(coupa_id, "dmf_failed", self.spec.header_set, item.key, error=reason)
            s.ledger.update(
                item.row, run, release=True, state=FAILED, problem=None, reason=reason, attempts=item.row.attempts + 1
            )
            redrive.append(item.document)
        self.executions.mark(execution_id, ExecutionStage.SETTLED, status=status.value)
        if redrive_now and redrive:
            self.summary.redriven += len(redrive)
            self.syncer.sync_many(redrive, report)
            return []
        return redrive

    def _written(self, item: Packaged, execution_id: str, notices: NoticeQueue) -> None:
        """The document landed: audited as the per-document path's create, then marked written."""
        digest = payload_hash([item.header, item.lines]) if item.header else item.row.payload_hash
        self.syncer._audit(item.row.coupa_id, "create", self.spec.header_set, item.key, 201, payload_sha256=digest)
        self._mark_written(item, digest, notices, f" (DMF {execution_id})")
