"""Payments are matched to D365 settlements by the settlement id carried in the Coupa payment's
notes — never by amount, date or reference (suspicion 5 and the identical-payments half of defect 5)."""

from __future__ import annotations

from decimal import Decimal

from coupa_d365_pipeline.sandbox.faults import ScriptedFault
from coupa_d365_pipeline_tests.status.conftest import StatusHarness


def test_two_payments_with_identical_amount_date_and_reference_both_arrive(harness: StatusHarness) -> None:
    invoice = harness.book("1000.00")
    harness.post(invoice)
    first = harness.settle(invoice, "100.00", "2026-11-25T12:00:00Z", "PAY-SAME")
    harness.run()
    second = harness.settle(invoice, "100.00", "2026-11-25T12:00:00Z", "PAY-SAME")
    harness.run()
    payments = harness.payments(invoice)
    assert [amount for amount, _ in payments] == [Decimal("100.00"), Decimal("100.00")]
    for (_, notes), settled in zip(payments, (first, second), strict=True):
        assert "PAY-SAME" in notes and str(settled["VendSettlementBiEntity"]["SourceKey"]) in notes
    assert harness.invoice(invoice)["paid"] is False


def test_a_payment_coupa_shows_in_its_own_time_zone_is_recognised_after_a_lost_answer(harness: StatusHarness) -> None:
    invoice = harness.book("250.00")
    harness.post(invoice)
    harness.run()
    harness.settle(invoice, "250.00", "2026-11-25T12:00:00Z", "PAY-TZ")
    harness.sandboxes.coupa.injector.script(
        ScriptedFault(kind="drop_after", method="PUT", path_regex=f"^/api/invoices/{invoice.coupa_id}$")
    )
    _, report = harness.run()
    assert report.counts()["failed"] == 1 and len(harness.payments(invoice)) == 1  # it landed
    # A Coupa instance in Pacific/Auckland shows the same instant in its own zone: another calendar day.
    with harness.coupa.lock:
        harness.coupa.invoices[invoice.coupa_id]["payments"][0]["payment-date"] = "2026-11-26T01:00:00+13:00"
    _, report = harness.run()
    assert report.counts()["failed"] == 0
    [(amount, notes)] = harness.payments(invoice)
    assert amount == Decimal("250.00") and "PAY-TZ" in notes
    assert harness.invoice(invoice)["paid"] is True
