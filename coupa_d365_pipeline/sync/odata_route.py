"""The lean OData route: the first writes of a documents run under ``D365_DMF_THRESHOLD`` — new
invoices and purchase orders — written many per ``$batch`` request, a few requests in flight, with
the Coupa notices sent alongside. Plain Python; no Dagster import.

Per run (:meth:`ODataBulkRoute.sync_many`):
1. plan in bulk (``sync/bulk_plan.py``): map, look D365 up per legal entity for everything the run
   may write (two queries for invoices, one for POs, whatever the number of documents), claim, make
   sure of the vendors (one read per legal entity), record the intent (``writing`` + D365 key);
2. write: ``D365_BATCH_DOCUMENTS`` documents per ``$batch``, one changeset per document (header and
   lines, all or nothing), up to ``D365_MAX_CONCURRENCY`` requests in flight. Every part's status is
   read (F&O answers 200 even when a changeset failed):
   - created -> ``written`` (the per-document path's ledger fields and audit), Coupa told through
     :class:`~.notices.NoticeQueue` while the next batches go on;
   - refused for the document's own reason -> ``failed`` with D365's reason, Coupa alerted once
     (the per-document path's ``_fail``);
   - "already exists" (our key is taken: an earlier or concurrent write of ours) or throttled (429:
     nothing of the changeset was applied) -> re-driven through the per-document path, which adopts
     or retries;
   - an ambiguous answer for the whole request (timeout, dropped connection, cut-short answer) ->
     one query reads back which of its invoice headers landed (booked: a changeset is atomic); the
     rest is re-driven through the per-document path, whose lookup under the recorded key comes
     before any write: never a blind second write;
3. everything else of the run (updates, voids, documents D365 already holds, re-drives) goes through
   the per-document path (``syncer.sync_many``) as before.

A system failure (D365 or Coupa down, credentials refused) stops the route: batches not yet sent are
cancelled and their documents released (``writing`` with their key: the next run's lookups settle
them), what was written is recorded, and the error carries the partial report.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from ..common.http import AmbiguousWriteError, SystemUnavailableError
from ..d365 import odata
from ..d365.batch import BatchOperation, Changeset
from ..d365.client import ChangesetResult
from ..state.store import payload_hash
from .base import DocumentSync
from .bulk_plan import BulkPlanner
from .context import error_text
from .dmf_plan import Packaged, split_candidates
from .notices import NoticeQueue
from .report import SyncReport

THROTTLED = 429


@dataclass
class ODataRunSummary:
    """What the route did, for the materialization metadata."""

    batches: int = 0  # $batch requests sent
    batched: int = 0  # documents sent in them
    redriven: int = 0  # documents handed to the per-document path after a batch


class ODataBulkRoute(BulkPlanner):
    def __init__(
        self,
        syncer: DocumentSync,
        *,
        documents_per_batch: int = 20,
        d365_concurrency: int = 4,
        coupa_concurrency: int = 4,
    ) -> None:
        super().__init__(syncer)
        self.documents_per_batch = max(1, documents_per_batch)
        self.d365_concurrency = max(1, d365_concurrency)
        self.coupa_concurrency = max(1, coupa_concurrency)
        self.summary = ODataRunSummary()

    def sync_many(self, documents: Iterable[dict[str, Any]], report: SyncReport | None = None) -> SyncReport:
        report = report or SyncReport()
        candidates, others = split_candidates(self.s, self.doc_type, documents)
        to_odata: list[dict[str, Any]] = []
        redrive: list[dict[str, Any]] = []
        if candidates:
            try:
                planned, to_odata = self._plan(candidates, report)
                redrive = self._write(planned, report)
            except SystemUnavailableError as exc:
                exc.report = report  # type: ignore[attr-defined]
                raise
        self.summary.redriven += len(redrive)
        return self.syncer.sync_many([*to_odata, *others, *redrive], report)

    # -- write -------------------------------------------------------------------------------
    def _write(self, planned: list[Packaged], report: SyncReport) -> list[dict[str, Any]]:
        """Send ``planned`` in batches; returns the documents to re-drive through the per-document path."""
        size = self.documents_per_batch
        chunks = [planned[start : start + size] for start in range(0, len(planned), size)]
        redrive: list[dict[str, Any]] = []
        system_error: SystemUnavailableError | None = None
        with NoticeQueue(self.syncer, report, self.coupa_concurrency) as notices:
            with ThreadPoolExecutor(max_workers=self.d365_concurrency, thread_name_prefix="d365-batch") as pool:
                futures: dict[Future[list[ChangesetResult]], list[Packaged]] = {
                    pool.submit(self._send, chunk): chunk for chunk in chunks
                }
                for future in as_completed(futures):
                    chunk = futures[future]
                    if future.cancelled():
                        self._release(chunk)
                        continue
                    try:
                        results = future.result()
                    except SystemUnavailableError as exc:
                        system_error = system_error or exc
                        self._release(chunk)
                        for other in futures:
                            other.cancel()  # not sent yet: never sent
                        continue
                    except AmbiguousWriteError as exc:
                        try:
                            redrive += self._settle_ambiguous(chunk, exc, notices)
                        except SystemUnavailableError as lookup_failed:
                            system_error = system_error or lookup_failed
                            self._release(chunk)
                            for other in futures:
                                other.cancel()
                        except Exception:  # noqa: BLE001 - the read-back failed: each is looked up on its own
                            self._release(chunk)
                            redrive += [item.document for item in chunk]
                        continue
                    except Exception as exc:  # noqa: BLE001 - refused as a whole: settled per document
                        redrive += self._batch_failed(chunk, exc)
                        continue
                    self.summary.batches += 1
                    self.summary.batched += len(chunk)
                    for item, result in zip(chunk, results, strict=True):
                        redrive += self._settle(item, result, notices, report)
            if system_error is not None:
                raise system_error
        return redrive

    def _send(self, chunk: list[Packaged]) -> list[ChangesetResult]:
        """One ``$batch``: one changeset (header + lines) per document. Runs on a worker thread."""
        changesets = [
            Changeset(
                [
                    BatchOperation("POST", self.spec.header_set, item.header),
                    *(BatchOperation("POST", self.spec.line_set, line) for line in item.lines),
                ]
            )
            for item in chunk
        ]
        return self.s.d365.batch(changesets)

    def _settle(
        self, item: Packaged, result: ChangesetResult, notices: NoticeQueue, report: SyncReport
    ) -> list[dict[str, Any]]:
        s, run = self.s, self.s.run_id
        coupa_id = item.row.coupa_id
        digest = payload_hash([item.header, item.lines])
        error = result.error
        status = 201 if result.ok else (error.status if error else None)
        detail = None if result.ok else (error.detail if error else "unknown error")
        self.syncer._audit(
            coupa_id, "create", self.spec.header_set, item.key, status, error=detail, payload_sha256=digest
        )
        if result.ok:
            self._mark_written(item, digest, notices)
            return []
        if error is not None and (error.is_duplicate or error.status == THROTTLED):
            s.ledger.release(item.row, run)  # our key is taken, or nothing was applied: the per-document path decides
            return [item.document]
        what = "invoice" if self.doc_type == "invoice" else "purchase order"
        report.add(
            self.syncer._fail(
                item.row, item.document, str(item.key["dataAreaId"]), f"D365 rejected the {what}: {detail}"
            )
        )
        return []

    def _settle_ambiguous(
        self, chunk: list[Packaged], exc: AmbiguousWriteError, notices: NoticeQueue
    ) -> list[dict[str, Any]]:
        """The answer to a whole ``$batch`` was lost (timeout, dropped connection, cut short): D365 may
        have applied any of its changesets. One query reads back which of our invoice headers are
        there — a changeset is atomic, so a header means its lines too — and those are booked; every
        other document (and every PO, whose number the per-document path must judge ours or not)
        goes through the per-document path, which looks its recorded key up before writing again."""
        reason = error_text(exc)
        self._audit_batch(chunk, "create_ambiguous", reason)
        landed: set[tuple[str, str]] = set()
        if self.doc_type == "invoice":
            refs = [str(item.key["HeaderReference"]) for item in chunk]
            for row in self.s.d365.query(
                self.spec.header_set,
                legal_entity=sorted({odata.fold(item.key["dataAreaId"]) for item in chunk}),
                filter=odata.prefix_cover("HeaderReference", refs),
                select=["dataAreaId", "HeaderReference"],
            ):
                landed.add((odata.fold(row.get("dataAreaId")), odata.fold(row.get("HeaderReference"))))
        redrive: list[dict[str, Any]] = []
        for item in chunk:
            if (odata.fold(item.key["dataAreaId"]), odata.fold(item.key.get("HeaderReference"))) in landed:
                digest = payload_hash([item.header, item.lines])
                self.syncer._audit(
                    item.row.coupa_id, "create", self.spec.header_set, item.key, 201, payload_sha256=digest
                )
                self._mark_written(item, digest, notices)
            else:
                self.s.ledger.release(item.row, self.s.run_id)
                redrive.append(item.document)
        self.s.logger.warning(
            "%s: the answer to a $batch of %d documents was lost (%s); %d found in D365 and booked, %d settled "
            "by the per-document path",
            self.doc_type,
            len(chunk),
            reason,
            len(chunk) - len(redrive),
            len(redrive),
        )
        return redrive

    def _batch_failed(self, chunk: list[Packaged], exc: Exception) -> list[dict[str, Any]]:
        """The request as a whole was refused before any changeset ran (an unambiguous error answer):
        each document goes through the per-document path, which looks its recorded key up first."""
        reason = error_text(exc)
        self.s.logger.warning(
            "%s: a $batch of %d documents failed as a whole (%s); each is settled by the per-document path",
            self.doc_type,
            len(chunk),
            reason,
        )
        self._audit_batch(chunk, "create_batch_failed", reason)
        self._release(chunk)
        return [item.document for item in chunk]

    def _audit_batch(self, chunk: list[Packaged], action: str, reason: str) -> None:
        for item in chunk:
            self.syncer._audit(
                item.row.coupa_id,
                action,
                self.spec.header_set,
                item.key,
                error=reason,
                payload_sha256=payload_hash([item.header, item.lines]),
            )

    def _release(self, chunk: list[Packaged]) -> None:
        for item in chunk:
            self.s.ledger.release(item.row, self.s.run_id)
