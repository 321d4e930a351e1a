"""Issue 9 item 4: what the ``*_not_stuck`` checks, the retry rotation and the replay job see —
every unfinished row, not only quarantined/failed ones (on a real database, injected clock)."""

from __future__ import annotations

from datetime import timedelta

from coupa_d365_pipeline.state.ledger import (
    CANCELLED,
    CLOSED,
    FAILED,
    POSTED,
    QUARANTINED,
    VOIDED,
    WRITING,
    WRITTEN,
    Ledger,
    Problem,
)
from coupa_d365_pipeline_tests.state.conftest import IDENTITY, T0


def ledger_for(engine, clock) -> Ledger:
    return Ledger(engine, clock=clock, lease=timedelta(minutes=30), identity=IDENTITY, heartbeat_s=3600)


def put(
    ledger: Ledger,
    doc_type: str,
    coupa_id: int,
    state,
    *,
    notified: bool = False,
    problem=None,
    release: bool = True,
    reason: str | None = None,
) -> None:
    row = ledger.claim(doc_type, coupa_id, "run-0")
    assert row is not None
    ledger.update(row, "run-0", release=release, state=state, coupa_notified=notified, problem=problem, reason=reason)


def test_checks_list_writes_left_unfinished_and_bookings_coupa_was_never_told_about(engine, clock):
    ledger = ledger_for(engine, clock)
    put(ledger, "invoice", 1, WRITTEN, notified=True)  # done
    put(ledger, "invoice", 2, WRITTEN)  # booked, Coupa not told
    put(ledger, "invoice", 3, POSTED)  # posted, Coupa not told
    put(ledger, "invoice", 4, WRITING)  # write interrupted, claim released
    put(ledger, "invoice", 5, VOIDED)  # nothing to tell Coupa
    put(ledger, "invoice", 6, QUARANTINED, reason="unknown chart")
    put(ledger, "invoice", 7, WRITTEN, problem=Problem.FAILED, reason="HTTP 503")
    clock.advance(timedelta(hours=2))
    items = {i.row.coupa_id: i for i in ledger.unfinished("invoice")}
    assert sorted(items) == [2, 3, 4, 6, 7]
    assert items[2].kind == "not_notified" and "Coupa" in items[2].reason and items[2].severity == "warn"
    assert items[3].kind == "not_notified"
    assert items[4].kind == "writing" and items[4].severity == "error" and "may or may not" in items[4].reason
    assert items[6].kind == "quarantined" and items[6].reason == "unknown chart" and items[6].severity == "error"
    assert items[7].kind == "written (latest version failed)" and items[7].severity == "error"
    assert all(i.age == timedelta(hours=2) for i in items.values())
    assert [r.coupa_id for r in ledger.needing_attention("invoice")] == [2, 3, 4, 6, 7]


def test_purchase_orders_closed_or_cancelled_but_not_told_are_listed_vendors_never_are(engine, clock):
    ledger = ledger_for(engine, clock)
    put(ledger, "purchase_order", 1, WRITTEN)
    put(ledger, "purchase_order", 2, CLOSED)
    put(ledger, "purchase_order", 3, CANCELLED, notified=True)
    put(ledger, "vendor", 10, WRITTEN)  # vendors are never notified to Coupa
    assert [i.row.coupa_id for i in ledger.unfinished("purchase_order")] == [1, 2]
    assert ledger.unfinished("vendor") == []


def test_a_write_in_progress_is_not_stuck_until_its_claim_goes_stale(engine, clock):
    ledger = ledger_for(engine, clock)
    put(ledger, "invoice", 1, WRITING, release=False)  # a run is writing it right now
    put(ledger, "invoice", 2, WRITTEN, release=False)  # ... or notifying Coupa right now
    clock.advance(timedelta(minutes=10))
    assert ledger.unfinished("invoice") == []
    clock.advance(timedelta(minutes=25))  # lease (30 min) expired: nobody renews it
    assert [i.row.coupa_id for i in ledger.unfinished("invoice")] == [1, 2]


def test_retry_rotation_and_replay_include_bookings_coupa_was_never_told_about(engine, clock):
    ledger = ledger_for(engine, clock)
    put(ledger, "invoice", 1, WRITTEN, notified=True)
    put(ledger, "invoice", 2, WRITTEN)
    put(ledger, "invoice", 3, FAILED)
    put(ledger, "invoice", 4, POSTED)
    put(ledger, "purchase_order", 5, CANCELLED)
    put(ledger, "vendor", 6, WRITTEN)
    assert [r.coupa_id for r in ledger.retry_candidates("invoice")] == [2, 3, 4]
    assert [r.coupa_id for r in ledger.retry_candidates("purchase_order")] == [5]
    assert ledger.retry_candidates("vendor") == []
    assert [r.coupa_id for r in ledger.replay_candidates("invoice", since=T0)] == [2, 3, 4]
    assert ledger.replay_candidates("invoice", since=T0 + timedelta(seconds=1)) == []
