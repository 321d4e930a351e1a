"""Settlement hooks of the D365 sandbox: payments, credit-note applications and reversals as F&O
records them (VendTrans SettleAmountCur/Closed/SysModifiedDateTime, VendSettlement rows), over OData."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from coupa_d365_pipeline.common.clock import SimulatedClock
from coupa_d365_pipeline.sandbox.d365.schema import EMPTY_DATE
from coupa_d365_pipeline_tests.sandbox.test_d365_sandbox import HEADER, Env, start

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW, running=False)


@pytest.fixture
def env(clock: SimulatedClock) -> Iterator[Env]:
    e, server = start(clock=clock)
    try:
        yield e
    finally:
        e.http.close()
        server.stop()


def posted(env: Env, number: str, amount: int | str, **kwargs: Any) -> dict[str, Any]:
    rec, _ = env.sb.state.create(
        "VendorInvoiceHeaders", {**HEADER, "InvoiceNumber": number, "ImportedAmount": Decimal(str(amount))}
    )
    return env.sb.state.post_invoice("usmf", rec["HeaderReference"], **kwargs)


def trans(env: Env, number: str) -> dict[str, Any]:
    rows = env.get(
        "/data/VendTransBiEntities",
        **{
            "cross-company": "true",
            "$filter": f"dataAreaId eq 'usmf' and AccountNum eq 'US-101' and Invoice eq '{number}'",
        },
    ).json()["value"]
    assert len(rows) == 1, rows
    return rows[0]


def settlements_of(env: Env, source_key: int) -> list[dict[str, Any]]:
    return env.get(
        "/data/VendSettlementBiEntities",
        **{
            "cross-company": "true",
            "$filter": f"dataAreaId eq 'usmf' and TransRecId eq {source_key}",
            "$orderby": "SourceKey",
        },
    ).json()["value"]


def test_posting_and_settling_stamp_sys_modified_date_time_and_rec_version(env: Env, clock: SimulatedClock) -> None:
    result = posted(env, "INV-MOD-1", 150)
    before = trans(env, "INV-MOD-1")
    assert before["SysModifiedDateTime"] == before["CreatedOn"] == "2026-11-30T09:00:00Z"
    assert result["VendInvoiceJourBiEntity"]["SysModifiedDateTime"] == "2026-11-30T09:00:00Z"
    clock.advance(timedelta(minutes=5))
    env.sb.state.settle_invoice("usmf", "INV-MOD-1", "US-101", Decimal("40"), "2026-11-29", "PAY-1")
    after = trans(env, "INV-MOD-1")
    assert after["SysModifiedDateTime"] == "2026-11-30T09:05:00Z" and after["CreatedOn"] == before["CreatedOn"]
    assert after["SysRecVersion"] != before["SysRecVersion"]
    changed = env.get(
        "/data/VendTransBiEntities",
        **{
            "cross-company": "true",
            "$filter": "dataAreaId eq 'usmf' and SysModifiedDateTime ge 2026-11-30T09:01:00Z",
            "$select": "Invoice,TransType",
        },
    ).json()["value"]
    assert sorted(r["TransType"] for r in changed) == ["Payment", "Purch"]


def test_a_long_posting_keeps_its_early_created_on(env: Env, clock: SimulatedClock) -> None:
    clock.advance(timedelta(hours=2))
    result = posted(env, "INV-LATE-1", 80, created_on="2026-11-30T08:30:00Z")
    assert result["VendInvoiceJourBiEntity"]["CreatedOn"] == "2026-11-30T08:30:00Z"
    assert trans(env, "INV-LATE-1")["CreatedOn"] == "2026-11-30T08:30:00Z"


def test_reversing_a_payment_settlement_removes_the_row_and_reopens_both_transactions(
    env: Env, clock: SimulatedClock
) -> None:
    posted(env, "INV-REV-1", 150)
    first = env.sb.state.settle_invoice("usmf", "INV-REV-1", "US-101", Decimal("100"), "2026-11-25", "PAY-A")
    env.sb.state.settle_invoice("usmf", "INV-REV-1", "US-101", Decimal("50"), "2026-11-27", "PAY-B")
    invoice = trans(env, "INV-REV-1")
    assert invoice["SettleAmountCur"] == -150 and invoice["Closed"] == "2026-11-27T12:00:00Z"
    clock.advance(timedelta(minutes=7))
    settlement_count = len(env.sb.state.records("VendSettlementBiEntities"))

    resp = env.http.post(
        "/_sandbox/d365/reverse_settlement",
        json={"dataAreaId": "usmf", "SourceKey": first["VendSettlementBiEntity"]["SourceKey"]},
    )
    assert resp.status_code == 200, resp.text

    invoice = trans(env, "INV-REV-1")
    assert invoice["SettleAmountCur"] == -50 and invoice["Closed"] == EMPTY_DATE
    assert invoice["LastSettleDate"] == "2026-11-27T12:00:00Z"  # the remaining settlement
    assert invoice["SysModifiedDateTime"] == "2026-11-30T09:07:00Z"
    assert [s["SettleAmountCur"] for s in settlements_of(env, invoice["SourceKey"])] == [-50]
    assert len(env.sb.state.records("VendSettlementBiEntities")) == settlement_count - 1  # deleted, nothing added
    payment = env.sb.state.get(
        "VendTransBiEntities", {"dataAreaId": "usmf", "SourceKey": first["PaymentVendTrans"]["SourceKey"]}
    )
    assert payment["SettleAmountCur"] == 0 and payment["Closed"] == EMPTY_DATE  # the payment is open again
    assert payment["SysModifiedDateTime"] == "2026-11-30T09:07:00Z"
    # the same amount can be settled again: a new settlement row with a new SourceKey
    again = env.sb.state.settle_invoice("usmf", "INV-REV-1", "US-101", Decimal("100"), "2026-11-29", "PAY-A2")
    assert again["VendSettlementBiEntity"]["SourceKey"] != first["VendSettlementBiEntity"]["SourceKey"]
    assert trans(env, "INV-REV-1")["SettleAmountCur"] == -150
    assert (
        env.http.post(
            "/_sandbox/d365/reverse_settlement",
            json={"dataAreaId": "usmf", "SourceKey": first["VendSettlementBiEntity"]["SourceKey"]},
        ).status_code
        == 404
    )


def test_credit_note_settled_against_an_invoice_writes_one_row_per_side_and_no_payment(env: Env) -> None:
    posted(env, "INV-CN-1", 150)
    credit = posted(env, "CN-1", -40)
    assert credit["VendInvoiceJourBiEntity"]["InvoiceAmount"] == Decimal("-40")
    assert credit["VendTransBiEntity"]["AmountCur"] == Decimal("40")  # a credit note is a debit on the vendor
    resp = env.http.post(
        "/_sandbox/d365/settle_credit_note",
        json={
            "dataAreaId": "usmf",
            "InvoiceId": "INV-CN-1",
            "CreditNoteId": "CN-1",
            "VendorAccount": "US-101",
            "Amount": 40,
            "Date": "2026-11-26",
        },
    )
    assert resp.status_code == 200, resp.text
    invoice, note = trans(env, "INV-CN-1"), trans(env, "CN-1")
    assert invoice["SettleAmountCur"] == -40 and invoice["Closed"] == EMPTY_DATE
    assert note["SettleAmountCur"] == 40 and note["Closed"] == "2026-11-26T12:00:00Z"
    [invoice_side] = settlements_of(env, invoice["SourceKey"])
    [note_side] = settlements_of(env, note["SourceKey"])
    assert (invoice_side["SettleAmountCur"], invoice_side["OffsetRecid"]) == (-40, note["SourceKey"])
    assert (note_side["SettleAmountCur"], note_side["OffsetRecid"]) == (40, invoice["SourceKey"])
    assert not [t for t in env.sb.state.records("VendTransBiEntities") if t["TransType"] == "Payment"]
    # reversing either row reverses the whole settlement (both rows, both VendTrans)
    env.sb.state.reverse_settlement("usmf", note_side["SourceKey"])
    assert settlements_of(env, invoice["SourceKey"]) == [] and settlements_of(env, note["SourceKey"]) == []
    assert trans(env, "INV-CN-1")["SettleAmountCur"] == 0 and trans(env, "CN-1")["SettleAmountCur"] == 0
    assert trans(env, "CN-1")["Closed"] == EMPTY_DATE


def test_credit_note_refund_keeps_f_and_o_signs(env: Env) -> None:
    posted(env, "CN-REFUND", -30)
    result = env.sb.state.settle_invoice("usmf", "CN-REFUND", "US-101", Decimal("30"), "2026-11-26", "REFUND-1")
    assert result["PaymentVendTrans"]["AmountCur"] == Decimal("-30")  # money coming back from the vendor
    assert result["VendSettlementBiEntity"]["SettleAmountCur"] == Decimal("30")
    note = trans(env, "CN-REFUND")
    assert note["SettleAmountCur"] == 30 and note["Closed"] == "2026-11-26T12:00:00Z"


def test_settlement_hooks_refuse_what_f_and_o_refuses(env: Env) -> None:
    posted(env, "INV-BAD", 100)
    posted(env, "CN-BAD", -20)
    with pytest.raises(ValueError, match="exceeds"):
        env.sb.state.settle_credit_note("usmf", "INV-BAD", "CN-BAD", "US-101", Decimal("25"), "2026-11-26")
    with pytest.raises(ValueError, match="must be an invoice"):
        env.sb.state.settle_credit_note("usmf", "CN-BAD", "INV-BAD", "US-101", Decimal("5"), "2026-11-26")
    with pytest.raises(KeyError):
        env.sb.state.reverse_settlement("usmf", 1)
    missing = env.http.post("/_sandbox/d365/settle_credit_note", json={"dataAreaId": "usmf", "InvoiceId": "INV-BAD"})
    assert missing.status_code == 400
