"""Issue 5 acceptance: posted and payment status from D365 back to Coupa, each event exactly once."""

import json
from decimal import Decimal

from coupa_d365_pipeline.sandbox.faults import ScriptedFault
from coupa_d365_pipeline_tests.flow.conftest import ledger
from coupa_d365_pipeline_tests.flow.helpers import metadata, run_status


def booked(sandboxes, sandbox_env, n=0):
    row = ledger(sandbox_env).rows("invoice", ["written"])[n]
    header = next(
        h
        for h in sandboxes.d365.state.records("VendorInvoiceHeaders")
        if h["HeaderReference"] == row.d365_key["HeaderReference"]
    )
    return row, header


def history(sandboxes, coupa_id, code):
    return [
        r
        for r in sandboxes.coupa.state.records("integration_history_records")
        if r["document-id"] == coupa_id
        and r.get("document-type") == "InvoiceHeader"
        and r["responses"][0]["response-code"] == code
    ]


def test_posted_then_two_partial_payments_then_paid_each_exactly_once(sandboxes, synced, sandbox_env, instance):
    row, header = booked(sandboxes, sandbox_env)
    le, vendor, number = header["dataAreaId"], header["InvoiceAccount"], header["InvoiceNumber"]
    posted = sandboxes.d365.state.post_invoice(le, header["HeaderReference"])
    voucher = posted["VendInvoiceJourBiEntity"]["LedgerVoucher"]
    total = abs(Decimal(str(posted["VendInvoiceJourBiEntity"]["InvoiceAmount"])))

    assert run_status(instance).success
    [record] = history(sandboxes, row.coupa_id, "D365-POSTED")
    assert (
        voucher in record["responses"][0]["response-message"] and number in record["responses"][0]["response-message"]
    )
    invoice = sandboxes.coupa.state.get("invoices", row.coupa_id)
    assert invoice["payments"] == [] and not invoice["paid"]
    assert ledger(sandbox_env).get("invoice", row.coupa_id).state == "posted"

    first = (total / 3).quantize(Decimal("0.01"))
    settled = sandboxes.d365.state.settle_invoice(le, number, vendor, first, "2026-11-25T12:00:00Z", "PAY-0001")
    result = run_status(instance)
    assert metadata(result, "d365/invoice_status")["settlements_new"] == 1
    invoice = sandboxes.coupa.state.get("invoices", row.coupa_id)
    settlement = f"[D365 {le} settlement {settled['VendSettlementBiEntity']['SourceKey']}]"
    assert [(Decimal(p["amount-paid"]), p["notes"]) for p in invoice["payments"]] == [(first, f"PAY-0001 {settlement}")]
    assert invoice["paid"] is False

    sandboxes.d365.state.settle_invoice(le, number, vendor, total - first, "2026-11-28T12:00:00Z", "PAY-0002")
    assert run_status(instance).success
    for _ in range(2):  # repeated runs add nothing
        assert run_status(instance).success
    invoice = sandboxes.coupa.state.get("invoices", row.coupa_id)
    assert sorted((Decimal(p["amount-paid"]), p["notes"].split(" [")[0]) for p in invoice["payments"]) == [
        (first, "PAY-0001"),
        (total - first, "PAY-0002"),
    ]
    assert invoice["paid"] is True and invoice["payment-date"].startswith("2026-11-28")
    assert "fully settled" in invoice["payment-notes"] and "PAY-0001" in invoice["payment-notes"]
    assert len(history(sandboxes, row.coupa_id, "D365-POSTED")) == 1


def test_payment_whose_coupa_answer_was_lost_is_written_once_after_the_rerun(sandboxes, synced, sandbox_env, instance):
    row, header = booked(sandboxes, sandbox_env, 1)
    le, vendor, number = header["dataAreaId"], header["InvoiceAccount"], header["InvoiceNumber"]
    posted = sandboxes.d365.state.post_invoice(le, header["HeaderReference"])
    total = abs(Decimal(str(posted["VendInvoiceJourBiEntity"]["InvoiceAmount"])))
    assert run_status(instance).success  # posting delivered
    sandboxes.d365.state.settle_invoice(le, number, vendor, total, "2026-11-26T12:00:00Z", "PAY-LOST")
    # Coupa applies the payments PUT but the connection drops before we see the answer
    sandboxes.coupa.injector.script(
        ScriptedFault(kind="drop_after", method="PUT", path_regex=f"^/api/invoices/{row.coupa_id}$")
    )
    first = run_status(instance)
    assert metadata(first, "coupa/invoice_status")["failed"] == 1
    assert len(sandboxes.coupa.state.get("invoices", row.coupa_id)["payments"]) == 1  # it did land
    assert run_status(instance).success
    invoice = sandboxes.coupa.state.get("invoices", row.coupa_id)
    assert [p["notes"].split(" [")[0] for p in invoice["payments"]] == ["PAY-LOST"] and invoice["paid"] is True
    check = [
        c for c in run_status(instance).get_asset_check_evaluations() if c.check_name == "invoice_status_delivered"
    ][0]
    assert check.passed


def test_no_general_ledger_data_is_sent_to_coupa(sandboxes, synced, sandbox_env, instance):
    row, header = booked(sandboxes, sandbox_env, 2)
    le, vendor, number = header["dataAreaId"], header["InvoiceAccount"], header["InvoiceNumber"]
    posted = sandboxes.d365.state.post_invoice(le, header["HeaderReference"])
    total = abs(Decimal(str(posted["VendInvoiceJourBiEntity"]["InvoiceAmount"])))
    sandboxes.d365.state.settle_invoice(le, number, vendor, total, "2026-11-27T12:00:00Z", "PAY-GL")
    seq = max((e.seq for e in sandboxes.coupa.log.snapshot()), default=0)
    assert run_status(instance).success
    sent = [
        e
        for e in sandboxes.coupa.log.snapshot()
        if e.seq > seq and e.method in ("PUT", "POST") and e.path.startswith("/api/")
    ]
    assert sent
    main_accounts = {r["MainAccountId"] for r in sandboxes.seed.d365["MainAccounts"]}
    d365_lines = sandboxes.d365.state.records("VendorInvoiceLines")
    dimension_strings = {ln["DimensionDisplayValue"] for ln in d365_lines if ln.get("DimensionDisplayValue")}
    for entry in sent:
        body = entry.body
        assert not any(account in body for account in main_accounts), body
        assert not any(dims in body for dims in dimension_strings if len(dims) > 4), body
        for word in ("MainAccount", "LedgerDimension", "DimensionDisplayValue", "AccountDisplayValue", "Balance"):
            assert word not in body
        if entry.method == "PUT":
            payload = json.loads(body)
            assert set(payload) <= {"paid", "payment-date", "payment-notes", "payments", "custom-fields"}
            assert all(set(p) <= {"amount-paid", "notes", "payment-date"} for p in payload.get("payments", []))
            voucher = posted["VendInvoiceJourBiEntity"]["LedgerVoucher"]
            assert all(v in (voucher, number) for v in payload.get("custom-fields", {}).values())


def test_posting_fills_the_coupa_custom_field_named_in_the_mapping(sandboxes, synced, sandbox_env, instance):
    row, header = booked(sandboxes, sandbox_env, 3)
    posted = sandboxes.d365.state.post_invoice(header["dataAreaId"], header["HeaderReference"])
    assert run_status(instance).success
    fields = sandboxes.coupa.state.get("invoices", row.coupa_id)["custom-fields"]
    assert fields == {"cf-erp-voucher": posted["VendInvoiceJourBiEntity"]["LedgerVoucher"]}


def test_a_settlement_reversed_in_d365_is_taken_back_in_coupa_by_the_status_job(
    sandboxes, synced, sandbox_env, instance
):
    row, header = booked(sandboxes, sandbox_env, 4)
    le, vendor, number = header["dataAreaId"], header["InvoiceAccount"], header["InvoiceNumber"]
    posted = sandboxes.d365.state.post_invoice(le, header["HeaderReference"])
    amount = Decimal(str(posted["VendInvoiceJourBiEntity"]["InvoiceAmount"]))  # Coupa's sign
    settled = sandboxes.d365.state.settle_invoice(
        le, number, vendor, amount if amount > 0 else -amount, "2026-11-26T12:00:00Z", "PAY-E2E"
    )
    assert run_status(instance).success
    assert sandboxes.coupa.state.get("invoices", row.coupa_id)["paid"] is True

    sandboxes.d365.state.reverse_settlement(le, settled["VendSettlementBiEntity"]["SourceKey"])
    result = run_status(instance)
    assert result.success and metadata(result, "d365/invoice_status")["trans_changes_new"] == 1
    invoice = sandboxes.coupa.state.get("invoices", row.coupa_id)
    assert invoice["paid"] is False
    assert [Decimal(p["amount-paid"]) for p in invoice["payments"]] == [amount, -amount]
    assert "reversed]" in invoice["payments"][1]["notes"]
    assert len(history(sandboxes, row.coupa_id, "D365-PAYMENT-REVERSED")) == 1
    check = [
        c for c in run_status(instance).get_asset_check_evaluations() if c.check_name == "invoice_status_delivered"
    ][0]
    assert check.passed
