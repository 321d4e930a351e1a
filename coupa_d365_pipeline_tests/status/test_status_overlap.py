"""Suspicion 4: D365 stamps CreatedOn when a row is inserted, but a long batch posting commits it
(and so shows it to readers) much later. The incremental reads re-read a configurable overlap sized
for that; unique event keys and exact payment matching make the re-reads harmless."""

from __future__ import annotations

from datetime import timedelta

import pytest

from coupa_d365_pipeline_tests.status.conftest import StatusHarness


def test_a_posting_committed_late_with_an_older_created_on_is_still_read(harness: StatusHarness, sandbox_clock) -> None:
    early, late = harness.book("100.00"), harness.book("200.00")
    harness.post(early)  # CreatedOn 09:00 -> watermark 09:00
    harness.run()
    sandbox_clock.advance(timedelta(hours=2))
    # a batch posting that started at 08:30 commits now: its rows appear with CreatedOn 08:30,
    # older than watermark - 10 minutes
    harness.post(late, created_on="2026-11-30T08:30:00Z")
    harness.settle(late, "200.00", "2026-11-30T08:40:00Z", "PAY-LATE", created_on="2026-11-30T08:40:00Z")
    harness.run()
    assert len(harness.history(late, "D365-POSTED")) == 1
    assert harness.ledger.get("invoice", late.coupa_id).state == "posted"
    [(amount, notes)] = harness.payments(late)
    assert "PAY-LATE" in notes and harness.invoice(late)["paid"] is True


def test_repeated_reads_over_the_overlap_send_nothing_twice(harness: StatusHarness, sandbox_clock) -> None:
    paid, part, credit_note = harness.book("900.00"), harness.book("500.00"), harness.book("-50.00", credit_note=True)
    for booked in (paid, part, credit_note):
        harness.post(booked)
    harness.settle(paid, "400.00", "2026-11-25T12:00:00Z", "PAY-1")
    harness.settle(paid, "500.00", "2026-11-26T12:00:00Z", "PAY-2")
    harness.d365.settle_credit_note(
        part.legal_entity, part.number, credit_note.number, part.vendor, "50.00", "2026-11-26"
    )
    harness.settle(part, "100.00", "2026-11-27T12:00:00Z", "PAY-3")
    first_counts, _ = harness.run()
    assert first_counts["posted_new"] == 3
    events = harness.events.counts()
    seq = harness.coupa_seq()
    for _ in range(3):  # later runs, all well inside the overlap
        sandbox_clock.advance(timedelta(minutes=30))
        counts, report = harness.run()
        assert counts["rows_read"] > 0  # the overlap re-reads the same rows ...
        assert {k: v for k, v in counts.items() if k.endswith("_new")} == {k: 0 for k in counts if k.endswith("_new")}
        assert report.outcomes == []
    assert harness.coupa_writes(seq) == []  # ... and sends nothing twice
    assert harness.events.counts() == events
    assert len(harness.payments(paid)) == 2 and len(harness.payments(part)) == 1


def test_the_overlap_comes_from_the_environment(monkeypatch) -> None:
    from coupa_d365_pipeline.sync.status import DEFAULT_READ_OVERLAP, READ_OVERLAP_ENV, read_overlap

    monkeypatch.delenv(READ_OVERLAP_ENV, raising=False)
    assert read_overlap() == DEFAULT_READ_OVERLAP >= timedelta(hours=2)
    monkeypatch.setenv(READ_OVERLAP_ENV, "45")
    assert read_overlap() == timedelta(minutes=45)
    monkeypatch.setenv(READ_OVERLAP_ENV, "two hours")
    with pytest.raises(ValueError, match=READ_OVERLAP_ENV):
        read_overlap()
