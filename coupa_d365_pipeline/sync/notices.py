"""Coupa success notices of documents booked in bulk (export flag + one Success history record, the
per-document path's own notice), sent by a few threads while the route goes on writing to D365: the
notices are off the critical path, and Coupa's own limiter (20 requests/s, shared by the threads)
keeps the pace within Coupa's 25/s. Ledger and audit work stays on the caller's thread; the
threads only talk to Coupa. Plain Python; no Dagster import.

A booked document whose notice fails keeps its booking: a system failure (Coupa down, credentials
refused) releases its claim (the next run tells Coupa) and is raised once every notice in flight
has ended; any other failure is recorded on the document (``failed``, retried next run).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..common.http import SystemUnavailableError
from ..state.ledger import LedgerRow, Problem
from .base import DocumentSync
from .context import error_text
from .report import Action, Outcome, SyncReport


@dataclass
class _InFlight:
    future: Future[None]
    row: LedgerRow
    document: dict[str, Any]
    outcome: Outcome


class NoticeQueue:
    """Use as a context manager; :meth:`submit` per booked document, :meth:`drain` (or leaving the
    ``with`` block) waits for the rest and settles them."""

    def __init__(self, syncer: DocumentSync, report: SyncReport, workers: int = 4) -> None:
        self.syncer = syncer
        self.s = syncer.s
        self.report = report
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="coupa-notice")
        self._in_flight: dict[int, _InFlight] = {}  # submission number -> notice not settled yet
        self._ended: deque[int] = deque()  # submission numbers of ended notices (appended by the threads)
        self._submitted = 0
        self._system_error: SystemUnavailableError | None = None
        self.sent = 0

    def __enter__(self) -> NoticeQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                self.drain()
            else:  # the route is failing already: settle what ran, never mask its error
                self._settle(block=True)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, row: LedgerRow, document: dict[str, Any], outcome: Outcome) -> None:
        """Tell Coupa that ``document`` is booked as ``row.d365_key``; ``outcome`` is reported once it has."""
        may_exist = self.syncer._notice_started(row, document)
        future = self._pool.submit(
            self.s.notifier.success,
            self.syncer.DOC,
            int(document["id"]),
            self.syncer.booked_message(row),
            document_status=document.get("status"),
            may_exist=may_exist,
        )
        number = self._submitted = self._submitted + 1
        self._in_flight[number] = _InFlight(future, row, document, outcome)
        # the pool thread reports the end; settling then costs nothing per notice still in flight
        # (rescanning them all on each submit was quadratic when Coupa lags behind D365)
        future.add_done_callback(lambda _f: self._ended.append(number))
        self._settle(block=False)

    def drain(self) -> None:
        """Wait for every notice; raise the first system failure after all are settled."""
        self._settle(block=True)
        if self._system_error is not None:
            error, self._system_error = self._system_error, None
            raise error

    def _settle(self, *, block: bool) -> None:
        """Settle, on the caller's thread, the notices that ended (``block``: every notice, waiting)."""
        while self._ended:
            item = self._in_flight.pop(self._ended.popleft(), None)
            if item is not None:
                self._settle_one(item)
        if block:
            for number in sorted(self._in_flight):
                self._settle_one(self._in_flight.pop(number))

    def _settle_one(self, item: _InFlight) -> None:
        s, run = self.s, self.s.run_id
        try:
            item.future.result()
        except SystemUnavailableError as exc:  # booked, Coupa not told: the next run tells it
            s.ledger.release(item.row, run)
            self._system_error = self._system_error or exc
            return
        except Exception as exc:  # noqa: BLE001 - the booking stands; telling Coupa is retried next run
            reason = error_text(exc)
            current = s.ledger.get(self.syncer.DOC, item.row.coupa_id) or item.row
            s.ledger.record_problem(current, run, Problem.FAILED, reason)
            o = item.outcome
            self.report.add(Outcome(o.doc_type, o.coupa_id, Action.FAILED, o.document, o.legal_entity, reason))
            return
        self.syncer._notice_done(item.row, item.document)
        self.sent += 1
        self.report.add(item.outcome)
