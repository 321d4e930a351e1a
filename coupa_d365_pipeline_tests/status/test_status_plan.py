"""The pure parts of the status writer: settlement markers in Coupa payment notes, the payment plan
(what Coupa needs so its payments match D365's current settlements), ``paid`` and the notes."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import unquote_plus

from coupa_d365_pipeline.state.ledger import NaturalKey
from coupa_d365_pipeline.state.status import LEGACY_PAYMENT, StatusEvent
from coupa_d365_pipeline.sync.settlements import (
    NOTES_MAX,
    CoupaPayment,
    D365Settlement,
    InvoiceSettlements,
    SettlementId,
    SettlementKind,
    describe,
    payment_notes,
    plan_payments,
)
from coupa_d365_pipeline_tests.status.conftest import StatusHarness

KEY = NaturalKey("usmf", "US-1", "INV-1")


def state(amount_cur: str, settle_amount_cur: str, *settlements: D365Settlement) -> InvoiceSettlements:
    return InvoiceSettlements(
        KEY, "APVOU-1", Decimal(amount_cur), Decimal(settle_amount_cur), "2026-11-30T09:00:00Z", tuple(settlements)
    )


def cash(key: int, amount: str, reference: str = "PAY-1") -> D365Settlement:
    return D365Settlement(
        SettlementId("usmf", key), SettlementKind.PAYMENT, Decimal(amount), "2026-11-25T12:00:00Z", reference
    )


def coupa(amount: str, notes: str) -> CoupaPayment:
    return CoupaPayment.parse({"amount-paid": amount, "notes": notes})


def legacy(key: int, amount: str, reference: str) -> StatusEvent:
    return StatusEvent(
        id=key,
        coupa_id=1,
        kind=LEGACY_PAYMENT,
        event_key=str(key),
        legal_entity="usmf",
        invoice_number="INV-1",
        amount=amount,
        event_date="2026-11-25T12:00:00Z",
        reference=reference,
        pushed=True,
    )


def test_notes_keep_the_reference_readable_and_the_settlement_id_within_coupas_255_characters() -> None:
    settlement = SettlementId("usmf", 5637144600)
    notes = payment_notes("CHK-" + "9" * 400, settlement)
    assert len(notes) <= NOTES_MAX and notes.startswith("CHK-999") and notes.endswith(settlement.marker())
    parsed = CoupaPayment.parse({"amount-paid": "10.00", "notes": notes})
    assert parsed.settlement == settlement and not parsed.reversal
    reversal = CoupaPayment.parse({"amount-paid": "-10.00", "notes": payment_notes("PAY-7", settlement, reversal=True)})
    assert reversal.settlement == settlement and reversal.reversal and reversal.reference == "PAY-7"
    assert CoupaPayment.parse({"amount-paid": "5", "check-number": "1003"}).settlement is None


def test_paid_is_fully_settled_now_with_the_documents_own_sign() -> None:
    assert state("-100", "-100").fully_settled and not state("-100", "-60").fully_settled
    assert state("40", "40").fully_settled and not state("40", "0").fully_settled  # credit note
    assert not state("0", "0").fully_settled
    assert state("-100", "-60").coupa_open == Decimal("40") and state("40", "10").coupa_open == Decimal("-30")


def test_the_plan_sends_only_what_coupa_lacks_per_settlement_id() -> None:
    d365 = state("-300", "-200", cash(1, "100"), cash(2, "100"))  # identical amount/date/reference
    have = [coupa("100.00", payment_notes("PAY-1", SettlementId("usmf", 1)))]
    plan = plan_payments(d365, have)
    assert [(p["amount-paid"], CoupaPayment.parse(p).settlement) for p in plan.to_send] == [
        ("100.00", SettlementId("usmf", 2))
    ]
    assert not plan.reversed and not plan.problems


def test_a_settlement_coupa_has_but_d365_no_longer_has_is_offset_once() -> None:
    sent = coupa("100.00", payment_notes("PAY-1", SettlementId("usmf", 1)))
    plan = plan_payments(state("-300", "0"), [sent])
    [offset] = plan.to_send
    assert offset["amount-paid"] == "-100.00" and CoupaPayment.parse(offset).reversal
    assert offset["payment-date"] == "2026-11-30T09:00:00Z"
    again = plan_payments(state("-300", "0"), [sent, CoupaPayment.parse(offset)])
    assert again.to_send == [] and SettlementId("usmf", 1) in again.reversed  # still named in the notes
    assert "reversed in D365: PAY-1 100.00" in describe(state("-300", "0"), again)


def test_payments_the_first_version_sent_without_a_settlement_id_are_recognised_one_to_one() -> None:
    d365 = state("-300", "-200", cash(11, "100", "PAY-A"), cash(12, "100", "PAY-A"))
    have = [coupa("100.00", "PAY-A")]  # the first version sent settlement 11 only
    plan = plan_payments(d365, have, [legacy(11, "100", "PAY-A")])
    assert [CoupaPayment.parse(p).settlement for p in plan.to_send] == [SettlementId("usmf", 12)]
    # ... and its credit-note application sent as cash (offset voucher as notes) is taken back
    note = D365Settlement(
        SettlementId("usmf", 13),
        SettlementKind.DOCUMENT,
        Decimal("50"),
        "2026-11-26T12:00:00Z",
        "CN-1",
        offset_is_credit_note=True,
    )
    plan = plan_payments(state("-300", "-50", note), [coupa("50.00", "APVOU-9")], [legacy(13, "50", "APVOU-9")])
    [offset] = plan.to_send
    assert offset["amount-paid"] == "-50.00" and CoupaPayment.parse(offset).settlement == SettlementId("usmf", 13)


def test_payments_that_disagree_with_d365_are_reported_not_guessed() -> None:
    have = [coupa("90.00", payment_notes("PAY-1", SettlementId("usmf", 1)))]
    plan = plan_payments(state("-100", "-100", cash(1, "100")), have)
    assert plan.to_send == [] and "add up to 90.00 but D365 settled 100.00" in plan.problems[0]


def test_a_long_payment_reference_still_reaches_coupa_with_its_settlement_id(harness: StatusHarness) -> None:
    invoice = harness.book("100.00")
    harness.post(invoice)
    settled = harness.settle(invoice, "100.00", "2026-11-25T12:00:00Z", "REMITTANCE " + "X" * 300)
    _, report = harness.run()
    assert report.counts()["failed"] == 0
    [(_, notes)] = harness.payments(invoice)
    assert len(notes) <= NOTES_MAX and str(settled["VendSettlementBiEntity"]["SourceKey"]) in notes


def test_the_first_vendtrans_read_after_an_upgrade_starts_where_the_other_readers_are(harness: StatusHarness) -> None:
    harness.store.set_watermark("d365.posted.usmf", "2026-11-30T08:00:00Z")
    harness.store.set_watermark("d365.settlements.usmf", "2026-11-30T07:00:00Z")
    seq = max((e.seq for e in harness.sandboxes.d365.log.snapshot()), default=0)
    harness.read()
    queries = [
        unquote_plus(e.query)
        for e in harness.sandboxes.d365.log.snapshot()
        if e.seq > seq and e.path == "/data/VendTransBiEntities" and "SysModifiedDateTime" in e.query
    ]
    usmf = [q for q in queries if "dataAreaId eq 'usmf'" in q]
    assert len(usmf) == 1 and "SysModifiedDateTime ge 2026-11-30T03:00:00Z" in usmf[0]  # 07:00 - 4 h overlap
    assert "TransType ne Microsoft.Dynamics.DataEntities.LedgerTransType'Payment'" in usmf[0]
