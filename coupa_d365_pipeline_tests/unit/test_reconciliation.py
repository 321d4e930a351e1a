"""The reconciliation's comparison core alone: frames built from dicts, an injected ``now``, no
HTTP, no Dagster — every outcome, the matching order, and what the UI and the check show."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from coupa_d365_pipeline.sync.reconciliation import (
    COUPA_COLUMNS,
    LEDGER_COLUMNS,
    PENDING_COLUMNS,
    POSTED_COLUMNS,
    TRANS_COLUMNS,
    Finding,
    Outcome,
    Reconciliation,
    frame,
    fully_settled,
    money,
    reconcile,
)
from coupa_d365_pipeline.sync.reconciliation_reads import pending_row, posted_row, trans_row
from coupa_d365_pipeline.sync.reconciliation_report import (
    check_description,
    differences_markdown,
    named,
    summary,
    summary_markdown,
)

# Any instant works: every age below is relative to it (no test depends on today's date).
NOW = datetime(2031, 5, 17, 8, 30, tzinfo=UTC)


def coupa(
    coupa_id: int, number: str, amount: str, *, le: str | None = "usmf", vendor: str = "V1", currency: str = "USD"
):
    return {
        "coupa_id": coupa_id,
        "legal_entity": le,
        "vendor_account": vendor,
        "invoice_number": number,
        "currency": currency,
        "amount": Decimal(amount),
    }


def booked(coupa_id: int, number: str, *, state: str = "written", le: str = "usmf", vendor: str = "V1", **extra: Any):
    row = {
        "coupa_id": coupa_id,
        "state": state,
        "legal_entity": le,
        "vendor_account": vendor,
        "document_number": number,
        "header_reference": f"COUPA-{coupa_id}",
        "updated_at": NOW - timedelta(hours=1),
    }
    return row | extra


def never_booked(coupa_id: int, state: str, reason: str | None, age: timedelta, le: str | None = "usmf"):
    return {"coupa_id": coupa_id, "state": state, "reason": reason, "legal_entity": le, "updated_at": NOW - age}


def pending(ref: str, number: str, amount: str, *, le: str = "usmf", vendor: str = "V1", currency: str = "USD"):
    return {
        "legal_entity": le,
        "header_reference": ref,
        "vendor_account": vendor,
        "invoice_number": number,
        "currency": currency,
        "amount": Decimal(amount),
    }


def posted(number: str, amount: str, voucher: str, *, le: str = "usmf", vendor: str = "V1"):
    return {
        "legal_entity": le,
        "vendor_account": vendor,
        "invoice_number": number,
        "currency": "USD",
        "amount": Decimal(amount),
        "voucher": voucher,
    }


def trans(number: str, voucher: str, amount_cur: str, settled: str, *, le: str = "usmf", vendor: str = "V1"):
    return {
        "legal_entity": le,
        "vendor_account": vendor,
        "invoice_number": number,
        "voucher": voucher,
        "amount_cur": Decimal(amount_cur),
        "settle_amount_cur": Decimal(settled),
    }


def run(c=(), led=(), pend=(), post=(), tr=(), **kwargs) -> Reconciliation:
    return reconcile(
        frame(c, COUPA_COLUMNS),
        frame(led, LEDGER_COLUMNS),
        frame(pend, PENDING_COLUMNS),
        frame(post, POSTED_COLUMNS),
        frame(tr, TRANS_COLUMNS),
        now=NOW,
        **kwargs,
    )


def by_id(rec: Reconciliation) -> dict[int | None, Finding]:
    found = {f.coupa_id: f for f in rec.findings}
    assert len(found) == len(rec.findings), "one finding per document"
    return found


def test_posted_paid_pending_each_get_their_outcome():
    rec = run(
        c=[
            coupa(1, "INV-1", "100.00"),
            coupa(2, "INV-2", "200.00"),
            coupa(3, "INV-3", "50.50"),
            coupa(4, "INV-4", "9"),
        ],
        led=[
            booked(1, "INV-1", state="posted"),
            booked(2, "INV-2", state="posted"),
            booked(3, "INV-3"),
            booked(4, "INV-4"),
        ],
        pend=[pending("COUPA-3", "INV-3", "50.5")],
        post=[posted("INV-1", "100", "V-1"), posted("INV-2", "200.00", "V-2"), posted("INV-4", "9", "V-4")],
        tr=[
            trans("INV-1", "V-1", "-100", "-100"),
            trans("INV-2", "V-2", "-200", "-150"),
            trans("INV-4", "V-OTHER", "-9", "-9"),
        ],
    )
    found = by_id(rec)
    assert (found[1].outcome, found[1].d365_status) == (Outcome.AGREE, "paid")
    assert (found[2].outcome, found[2].d365_status) == (Outcome.AGREE, "posted")  # partly settled
    assert (found[3].outcome, found[3].explained, found[3].d365_status) == (Outcome.PENDING, True, "pending")
    assert found[4].d365_status == "posted"  # a settled VendTrans of another voucher does not pay it
    assert rec.unexplained == [] and rec.counts()["agree"] == 3


@pytest.mark.parametrize(
    ("amount_cur", "settled", "paid"),
    [("-100", "-100", True), ("-100", "-99.99", False), ("-100", "0", False), ("40", "40", True), ("40", "-40", False)],
)
def test_fully_settled_keeps_the_sign(amount_cur, settled, paid):
    assert fully_settled(Decimal(amount_cur), Decimal(settled)) is paid


def test_amount_mismatch_pending_and_posted_to_the_cent():
    rec = run(
        c=[coupa(1, "INV-1", "100.00"), coupa(2, "INV-2", "200.00"), coupa(3, "INV-3", "300.004")],
        led=[booked(1, "INV-1"), booked(2, "INV-2", state="posted"), booked(3, "INV-3")],
        pend=[pending("COUPA-1", "INV-1", "100.01"), pending("COUPA-3", "INV-3", "300.00")],
        post=[posted("INV-2", "180", "V-2")],
    )
    found = by_id(rec)
    assert (found[1].outcome, found[1].explained) == (Outcome.AMOUNT_MISMATCH, False)
    assert (found[1].coupa_amount, found[1].d365_amount) == (Decimal("100.00"), Decimal("100.01"))
    assert "Coupa gross-total 100.00 USD, D365 pending COUPA-1 total 100.01 USD" == found[1].detail
    assert found[2].outcome == Outcome.AMOUNT_MISMATCH and "D365 posted voucher V-2 total 180.00" in found[2].detail
    assert found[3].outcome == Outcome.PENDING  # 300.004 is 300.00 to the cent
    assert [f.coupa_id for f in rec.unexplained] == [1, 2]


def test_currency_difference_is_a_mismatch_even_with_equal_amounts():
    rec = run(
        c=[coupa(1, "INV-1", "10")], led=[booked(1, "INV-1")], pend=[pending("COUPA-1", "INV-1", "10", currency="EUR")]
    )
    assert by_id(rec)[1].outcome == Outcome.AMOUNT_MISMATCH


def test_amount_mismatch_explained_by_a_failed_latest_version():
    rec = run(
        c=[coupa(1, "INV-1", "120.00")],
        led=[booked(1, "INV-1", problem="failed", reason="D365 refused the change: period closed")],
        pend=[pending("COUPA-1", "INV-1", "100.00")],
    )
    finding = by_id(rec)[1]
    assert (finding.outcome, finding.explained) == (Outcome.AMOUNT_MISMATCH, True)
    assert "latest Coupa version is failed in the ledger: D365 refused the change" in finding.detail
    assert rec.unexplained == []


def test_quarantined_and_failed_are_explained_with_their_age():
    rec = run(
        c=[coupa(1, "INV-1", "10"), coupa(2, "INV-2", "20"), coupa(3, "INV-3", "30", le=None)],
        led=[
            never_booked(1, "quarantined", "main account 699999 does not exist", timedelta(days=3, hours=4)),
            never_booked(2, "failed", "D365: vendor on hold", timedelta(minutes=95)),
            never_booked(3, "quarantined", "chart 'CA Plant' not mapped", timedelta(hours=2), le=None),
        ],
    )
    found = by_id(rec)
    assert (found[1].outcome, found[1].explained, found[1].age) == (
        Outcome.QUARANTINED,
        True,
        timedelta(days=3, hours=4),
    )
    assert found[1].detail == "quarantined: main account 699999 does not exist"
    assert (found[2].outcome, found[2].age) == (Outcome.FAILED, timedelta(minutes=95))
    assert found[3].legal_entity == "(unmapped)"
    assert rec.unexplained == []
    table = differences_markdown(rec.differences)
    assert "| 3d 4h |" in table and "| 1h 35m |" in table


def test_quarantined_without_a_reason_is_not_explained():
    rec = run(c=[coupa(1, "INV-1", "10")], led=[never_booked(1, "failed", None, timedelta(hours=1))])
    assert by_id(rec)[1].explained is False


@pytest.mark.parametrize(
    ("ledger_rows", "says"),
    [
        ([], "no documents run synced it yet"),
        ([{"coupa_id": 1, "state": "new", "updated_at": NOW}], "no documents run synced it yet"),
        ([booked(1, "INV-1")], "the ledger says written"),
        ([booked(1, "INV-1", state="missing_in_d365", reason="gone from D365")], "missing_in_d365 (gone from D365)"),
        ([booked(1, "INV-1", state="writing")], "the ledger says writing"),
    ],
)
def test_missing_in_d365_is_unexplained_whatever_the_ledger_booked(ledger_rows, says):
    rec = run(c=[coupa(1, "INV-1", "10")], led=ledger_rows, pend=[pending("COUPA-2", "INV-2", "10")])
    finding = by_id(rec)[1]
    assert (finding.outcome, finding.explained, finding.d365_status) == (Outcome.MISSING_IN_D365, False, "")
    assert says in finding.detail


def test_found_by_our_reference_even_under_another_number_or_case():
    rec = run(
        c=[coupa(7, "INV-NEW", "10", le="USMF", vendor="v1")],
        led=[booked(7, "inv-old", header_reference="coupa-7")],
        pend=[pending("COUPA-7", "INV-OLD", "10", le="usmf", vendor="V1")],
    )
    finding = by_id(rec)[7]
    assert finding.outcome == Outcome.PENDING and finding.invoice_number == "inv-old"  # the ledger's booked key
    assert finding.legal_entity == "usmf"


def test_adopted_header_is_found_by_the_reference_the_ledger_recorded():
    rec = run(
        c=[coupa(5, "INV-5", "10")],
        led=[booked(5, "INV-5", header_reference="APINV-000123", vendor="V9", document_number="OTHER")],
        pend=[pending("APINV-000123", "INV-5", "10")],
    )
    assert by_id(rec)[5].outcome == Outcome.PENDING


def test_posted_is_found_by_the_ledgers_booked_natural_key_not_the_new_coupa_number():
    rec = run(
        c=[coupa(8, "INV-RENAMED", "10")],
        led=[booked(8, "INV-8", state="posted")],
        post=[posted("INV-RENAMED", "10", "V-X", vendor="V2"), posted("INV-8", "10", "V-8")],
    )
    finding = by_id(rec)[8]
    assert finding.outcome == Outcome.AGREE and "V-8" in finding.detail


def test_a_quarantined_duplicate_is_not_matched_to_the_invoice_it_duplicates():
    rec = run(
        c=[coupa(1, "INV-1", "10"), coupa(2, "INV-1", "10"), coupa(3, "INV-3", "30")],
        led=[
            booked(1, "INV-1"),
            never_booked(2, "quarantined", "duplicate of Coupa invoice 1", timedelta(hours=5)),
            never_booked(3, "quarantined", "D365 already holds INV-3 for V1, not booked by us", timedelta(hours=5)),
        ],
        pend=[pending("COUPA-1", "INV-1", "10"), pending("APINV-77", "INV-3", "30")],  # AP keyed INV-3 itself
    )
    found = by_id(rec)
    assert found[1].outcome == Outcome.PENDING
    assert (found[2].outcome, found[3].outcome) == (Outcome.QUARANTINED, Outcome.QUARANTINED)
    assert "D365 already holds INV-3" in found[3].detail and rec.unexplained == []


def test_one_d365_record_serves_one_coupa_invoice():
    rec = run(
        c=[coupa(1, "INV-1", "10"), coupa(2, "INV-1", "10")],
        led=[booked(1, "INV-1", state="posted"), booked(2, "INV-1", state="posted")],
        post=[posted("INV-1", "10", "V-1")],
    )
    found = by_id(rec)
    assert found[1].outcome == Outcome.AGREE and found[2].outcome == Outcome.MISSING_IN_D365


def test_pending_with_our_reference_and_no_approved_coupa_invoice():
    asked: list[list[int]] = []

    def status(ids: list[int]) -> dict[int, str | None]:
        asked.append(list(ids))
        return {901: None, 902: "voided", 903: "approved", 905: "approved"}

    rec = run(
        c=[coupa(1, "INV-1", "10")],
        led=[
            booked(1, "INV-1"),
            booked(902, "INV-902", state="voided"),
            booked(904, "INV-904"),  # booked for another day's Coupa invoice: that day reconciles it
            never_booked(905, "quarantined", "bad account", timedelta(hours=1)),  # yet D365 holds it
        ],
        pend=[
            pending("COUPA-1", "INV-1", "10"),
            pending("COUPA-901", "GHOST", "5", le="demf"),
            pending("COUPA-902", "INV-902", "6"),
            pending("COUPA-903", "INV-903", "7"),
            pending("COUPA-904", "INV-904", "8"),
            pending("COUPA-905", "INV-905", "9"),
            pending("APINV-1", "AP-OWN", "9"),  # not ours
        ],
        coupa_status=status,
    )
    assert asked == [[901, 902, 903, 905]]
    found = by_id(rec)
    assert set(found) == {1, 901, 902}
    assert (found[901].outcome, found[901].legal_entity, found[901].d365_amount) == (
        Outcome.MISSING_IN_COUPA,
        "demf",
        Decimal("5.00"),
    )
    assert "Coupa has no invoice 901" in found[901].detail and "no ledger row" in found[901].detail
    assert "the Coupa invoice is voided, not approved" in found[902].detail
    assert rec.coupa_lookups == 4 and rec.unchecked == []


def test_a_second_d365_invoice_for_a_window_invoice_is_reported_without_a_lookup():
    rec = run(
        c=[coupa(3, "INV-3", "10")],
        led=[booked(3, "INV-3", header_reference="APINV-9")],
        pend=[pending("APINV-9", "INV-3", "10"), pending("COUPA-3", "INV-3-BIS", "10")],
        coupa_status=lambda ids: pytest.fail(f"looked up {ids}"),
    )
    [second] = rec.unexplained
    assert (second.outcome, second.invoice_number) == (Outcome.MISSING_IN_COUPA, "INV-3-BIS")
    assert "a second D365 invoice" in second.detail


def test_lookups_are_capped_and_the_rest_reported_unchecked():
    rec = run(
        pend=[pending(f"COUPA-{i}", f"N-{i}", "1") for i in (11, 12, 13)],
        coupa_status=lambda ids: dict.fromkeys(ids),
        max_lookups=2,
    )
    assert rec.coupa_lookups == 2 and rec.unchecked == [13]
    assert "not checked in Coupa" in by_id(rec)[13].detail and not by_id(rec)[13].explained


def test_empty_window_has_no_findings():
    rec = run()
    assert rec.findings == [] and rec.unexplained == []
    assert summary(rec).empty
    assert "No approved Coupa invoice" in summary_markdown(rec)
    assert check_description(rec).startswith("No unexplained difference: 0 posted/paid")


def test_summary_per_legal_entity_and_currency_counts_and_decimal_amounts():
    rec = run(
        c=[
            coupa(1, "A", "100.10"),
            coupa(2, "B", "200.20"),
            coupa(3, "C", "0.30"),
            coupa(4, "D", "5", le="demf", currency="EUR"),
            coupa(5, "E", "7", le="demf", currency="EUR"),
        ],
        led=[
            booked(1, "A", state="posted"),
            booked(2, "B"),
            booked(3, "C"),
            booked(4, "D", le="demf"),
            never_booked(5, "quarantined", "bad account", timedelta(hours=1), le="demf"),
        ],
        pend=[
            pending("COUPA-2", "B", "200.20"),
            pending("COUPA-3", "C", "0.31"),
            pending("COUPA-4", "D", "5", le="demf", currency="EUR"),
        ],
        post=[posted("A", "100.10", "V-A")],
        tr=[trans("A", "V-A", "-100.10", "-100.10")],
    )
    rows = summary(rec).set_index(["legal_entity", "currency"]).to_dict(orient="index")
    assert rows[("usmf", "USD")] | {} == {
        "approved_in_coupa": 3,
        "coupa_amount": Decimal("300.60"),
        "agree": 1,
        "agree_amount": Decimal("100.10"),
        "paid": 1,
        "pending": 1,
        "pending_amount": Decimal("200.20"),
        "quarantined": 0,
        "failed": 0,
        "missing_in_d365": 0,
        "missing_in_coupa": 0,
        "amount_mismatch": 1,
        "unexplained": 1,
    }
    assert (rows[("demf", "EUR")]["pending"], rows[("demf", "EUR")]["quarantined"]) == (1, 1)
    assert rows[("demf", "EUR")]["unexplained"] == 0
    md = summary_markdown(rec)
    assert "| usmf | USD | 3 | 300.60 | 1 | 100.10 | 1 | 1 | 200.20 | 0 | 0 | 0 | 0 | 1 | 1 |" in md


def test_the_check_names_each_unexplained_document_and_the_table_escapes_it():
    rec = run(
        c=[coupa(1, "INV|1", "10", vendor="V|1"), coupa(2, "INV-2", "20")],
        led=[booked(1, "INV|1", vendor="V|1")],
        pend=[pending("COUPA-1", "INV|1", "11", vendor="V|1")],
    )
    text = check_description(rec)
    assert text.startswith("2 unexplained differences between Coupa and D365:")
    assert "usmf INV|1 (Coupa 1, vendor V|1): amount_mismatch" in text
    assert "usmf INV-2 (Coupa 2, vendor V1): missing_in_d365" in text
    assert [d["invoice_number"] for d in named(rec.unexplained)] == ["INV-2", "INV|1"]  # missing first
    assert named(rec.unexplained)[1]["d365_amount"] == "11.00"
    assert "| INV\\|1 | V\\|1 |" in differences_markdown(rec.differences)


def test_the_check_description_is_capped_but_the_documents_are_all_named():
    rec = run(c=[coupa(i, f"INV-{i}", "1") for i in range(1, 31)])
    text = check_description(rec, shown=20)
    assert text.startswith("30 unexplained") and "… and 10 more" in text
    assert len(named(rec.unexplained)) == 30


def test_d365_rows_become_comparison_records():
    assert pending_row(
        {
            "dataAreaId": "usmf",
            "HeaderReference": "COUPA-1",
            "InvoiceNumber": "I",
            "InvoiceAccount": "V",
            "Currency": "USD",
            "ImportedAmount": 12.3,
        }
    )["amount"] == Decimal("12.30")
    row = posted_row(
        {
            "dataAreaId": "usmf",
            "InvoiceId": "I",
            "InvoiceAccount": "V",
            "InvoiceAmount": 119,
            "SumTax": 19,
            "LedgerVoucher": "X",
        }
    )
    assert (row["amount"], row["voucher"]) == (Decimal("100.00"), "X")
    assert posted_row({"InvoiceAmount": "50.5"})["amount"] == Decimal("50.50")  # no SumTax: no tax
    assert trans_row({"AmountCur": -5, "SettleAmountCur": "-5"})["settle_amount_cur"] == Decimal("-5.00")
    assert money("n/a") is None and money(None) is None and money(float("nan")) is None
