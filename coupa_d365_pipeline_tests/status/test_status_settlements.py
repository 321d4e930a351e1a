"""Defect 5: Coupa's payments and ``paid`` follow the invoice's *current* D365 settlements —
reversals included, credit-note applications never as cash, signs kept."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from coupa_d365_pipeline_tests.status.conftest import StatusHarness


def test_a_reversed_settlement_already_in_coupa_is_offset_and_paid_turns_false(
    harness: StatusHarness, sandbox_clock
) -> None:
    invoice = harness.book("1000.00")
    harness.post(invoice)
    harness.run()
    settled = harness.settle(invoice, "1000.00", "2026-11-25T12:00:00Z", "PAY-REV")
    settlement_id = str(settled["VendSettlementBiEntity"]["SourceKey"])
    harness.run()
    assert harness.invoice(invoice)["paid"] is True
    [(amount, notes)] = harness.payments(invoice)
    assert amount == Decimal("1000.00") and "PAY-REV" in notes and settlement_id in notes

    sandbox_clock.advance(timedelta(minutes=10))
    harness.reverse(settled)  # AP reverses the settlement: no new settlement row, the VendTrans reopens
    harness.run()

    coupa = harness.invoice(invoice)
    assert coupa["paid"] is False
    payments = harness.payments(invoice)
    assert [amount for amount, _ in payments] == [Decimal("1000.00"), Decimal("-1000.00")]
    assert all(settlement_id in notes and "PAY-REV" in notes for _, notes in payments)
    assert "revers" in payments[1][1].casefold() and "revers" not in payments[0][1].casefold()
    assert "revers" in coupa["payment-notes"].casefold()
    assert len(harness.history(invoice, "D365-PAYMENT-REVERSED")) == 1

    seq = harness.coupa_seq()
    harness.run()  # nothing new: no second offsetting payment, no second alert
    assert harness.coupa_writes(seq) == []

    harness.settle(invoice, "1000.00", "2026-11-29T12:00:00Z", "PAY-REV-2")
    harness.run()
    coupa = harness.invoice(invoice)
    assert coupa["paid"] is True and coupa["payment-date"].startswith("2026-11-29")
    assert sum(amount for amount, _ in harness.payments(invoice)) == Decimal("1000.00")
    assert len(harness.payments(invoice)) == 3


def test_a_payment_unsettled_and_settled_again_counts_once_for_paid(harness: StatusHarness) -> None:
    invoice = harness.book("1000.00")
    harness.post(invoice)
    first = harness.settle(invoice, "600.00", "2026-11-25T12:00:00Z", "PAY-600")
    harness.run()
    harness.reverse(first)
    harness.settle(invoice, "600.00", "2026-11-26T12:00:00Z", "PAY-600")
    harness.run()
    coupa = harness.invoice(invoice)
    assert coupa["paid"] is False  # 600 of 1000 settled in D365
    assert sum(amount for amount, _ in harness.payments(invoice)) == Decimal("600.00")


def test_a_credit_note_application_is_never_a_cash_payment(harness: StatusHarness) -> None:
    invoice = harness.book("1000.00")
    credit_note = harness.book("-200.00", credit_note=True)
    harness.post(invoice)
    harness.post(credit_note)
    harness.run()
    harness.d365.settle_credit_note(
        invoice.legal_entity, invoice.number, credit_note.number, invoice.vendor, Decimal("200.00"), "2026-11-26"
    )
    harness.settle(invoice, "800.00", "2026-11-27T12:00:00Z", "PAY-REST")
    harness.run()

    coupa = harness.invoice(invoice)
    [(amount, notes)] = harness.payments(invoice)
    assert amount == Decimal("800.00") and "PAY-REST" in notes
    assert coupa["paid"] is True  # fully settled: 800 cash + 200 credit note
    assert credit_note.number in coupa["payment-notes"] and "credit note" in coupa["payment-notes"].casefold()

    note = harness.invoice(credit_note)
    assert note["payments"] == [] and note["paid"] is True  # settled against the invoice, no cash
    assert invoice.number in note["payment-notes"]


def test_a_credit_note_refund_keeps_its_negative_sign(harness: StatusHarness) -> None:
    credit_note = harness.book("-300.00", credit_note=True)
    harness.post(credit_note)
    harness.settle(credit_note, "300.00", "2026-11-26T12:00:00Z", "REFUND-1")
    harness.run()
    coupa = harness.invoice(credit_note)
    assert [amount for amount, _ in harness.payments(credit_note)] == [Decimal("-300.00")]
    assert coupa["paid"] is True
