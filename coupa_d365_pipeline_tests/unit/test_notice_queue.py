"""The Coupa notice queue of the bulk routes: settling the notices that ended must not rescan every
notice still in flight on each submit (a 10k-invoice DMF run submits ~9,000 notices faster than Coupa's
20 requests/s answer them: rescanning made the submits quadratic — the connector's top CPU cost in the
10k profile)."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pytest

from coupa_d365_pipeline.common.http import SystemUnavailableError
from coupa_d365_pipeline.sync.notices import NoticeQueue
from coupa_d365_pipeline.sync.report import Action, Outcome, SyncReport


@dataclass
class _Notifier:
    gate: threading.Event = field(default_factory=threading.Event)
    told: list[int] = field(default_factory=list)
    fail: dict[int, Exception] = field(default_factory=dict)

    def success(self, doc: str, coupa_id: int, message: str, **kwargs: Any) -> None:
        self.gate.wait(timeout=30)
        if coupa_id in self.fail:
            raise self.fail[coupa_id]
        self.told.append(coupa_id)


@dataclass
class _Services:
    notifier: _Notifier
    run_id: str = "run-1"
    ledger: Any = None


class _Syncer:
    """The three calls NoticeQueue makes on a document sync, recorded."""

    DOC = "invoice"

    def __init__(self) -> None:
        self.s = _Services(_Notifier())
        self.done: list[int] = []

    def _notice_started(self, row: Any, document: dict[str, Any]) -> bool:
        return False

    def _notice_done(self, row: Any, document: dict[str, Any]) -> None:
        self.done.append(int(document["id"]))

    def booked_message(self, row: Any) -> str:
        return "booked"


def outcome(coupa_id: int) -> Outcome:
    return Outcome("invoice", coupa_id, Action.CREATED, f"INV-{coupa_id}", "usmf")


def test_submitting_while_coupa_lags_costs_the_same_per_notice_whatever_is_in_flight(monkeypatch):
    checks = 0
    original = Future.done

    def counted(self: Future) -> bool:
        nonlocal checks
        checks += 1
        return original(self)

    monkeypatch.setattr(Future, "done", counted)
    syncer, report = _Syncer(), SyncReport()
    n = 2_000
    with NoticeQueue(syncer, report, workers=4) as notices:  # type: ignore[arg-type]
        try:
            for coupa_id in range(1, n + 1):
                notices.submit(None, {"id": coupa_id}, outcome(coupa_id))  # type: ignore[arg-type]
            submitted_checks = checks
        finally:
            syncer.s.notifier.gate.set()  # Coupa answers (also when an assertion below fails)
    assert submitted_checks <= n  # linear; rescanning every notice in flight on each submit made it ~n²/2
    assert sorted(syncer.done) == list(range(1, n + 1))
    assert sorted(o.coupa_id for o in report.outcomes) == list(range(1, n + 1))


def test_notices_that_ended_are_settled_by_the_next_submit_and_failures_are_kept_apart():
    syncer, report = _Syncer(), SyncReport()
    syncer.s.notifier.gate.set()
    with NoticeQueue(syncer, report, workers=1) as notices:  # type: ignore[arg-type]
        notices.submit(None, {"id": 1}, outcome(1))  # type: ignore[arg-type]
        deadline = threading.Event()
        while not syncer.s.notifier.told and not deadline.wait(0.01):
            pass
        deadline.wait(0.05)  # the done callback runs right after the answer
        notices.submit(None, {"id": 2}, outcome(2))  # type: ignore[arg-type]
        assert 1 in syncer.done  # settled on this thread by the submit after it ended
    assert syncer.done == [1, 2] and [o.coupa_id for o in report.outcomes] == [1, 2]


def test_a_system_failure_is_raised_once_every_notice_has_ended():
    syncer, report = _Syncer(), SyncReport()
    syncer.s.notifier.fail[2] = SystemUnavailableError("Coupa is down")

    class _Ledger:
        released: list[Any] = []

        def release(self, row: Any, run_id: str) -> None:
            self.released.append(row)

    syncer.s.ledger = _Ledger()
    syncer.s.notifier.gate.set()
    with pytest.raises(SystemUnavailableError, match="Coupa is down"):
        with NoticeQueue(syncer, report, workers=2) as notices:  # type: ignore[arg-type]
            for coupa_id in (1, 2, 3):
                notices.submit(f"row-{coupa_id}", {"id": coupa_id}, outcome(coupa_id))  # type: ignore[arg-type]
    assert sorted(syncer.done) == [1, 3] and syncer.s.ledger.released == ["row-2"]
