"""Defect 4: a status writer claims the invoice's ledger row (the one the document sync claims), so
two overlapping status runs — or a status run and a document sync — never write the same payment
twice; a busy invoice is reported as busy and retried by the next run."""

from __future__ import annotations

from decimal import Decimal

from coupa_d365_pipeline.state.ledger import Ledger
from coupa_d365_pipeline.sync.report import SyncReport
from coupa_d365_pipeline_tests.status.conftest import StatusHarness


def test_two_overlapping_status_writers_send_a_payment_once(harness: StatusHarness) -> None:
    invoice = harness.book("1000.00")
    harness.post(invoice)
    harness.run()  # the posting is in Coupa
    harness.settle(invoice, "400.00", "2026-11-25T12:00:00Z", "PAY-OVERLAP")
    harness.read()

    first, second = harness.services("status-run-A"), harness.services("status-run-B")
    inner: list[SyncReport] = []
    send = first.coupa.update_invoice

    def let_the_other_run_in_before_the_payments_land(invoice_id, changes):
        # Run A has decided what to send; run B now runs completely before A's PUT arrives.
        if "payments" in changes and not inner:
            inner.append(harness.write(second))
        return send(invoice_id, changes)

    first.coupa.update_invoice = let_the_other_run_in_before_the_payments_land
    outer = harness.write(first)

    [(amount, notes)] = harness.payments(invoice)
    assert amount == Decimal("400.00") and "PAY-OVERLAP" in notes
    assert inner and inner[0].counts()["busy"] == 1 and outer.counts()["updated"] == 1
    [busy] = inner[0].problems()
    assert busy.coupa_id == invoice.coupa_id and "next" in busy.detail
    harness.run()
    assert len(harness.payments(invoice)) == 1


def test_a_status_writer_leaves_an_invoice_a_document_sync_holds_to_the_next_run(harness: StatusHarness) -> None:
    invoice = harness.book("500.00")
    harness.post(invoice)
    harness.settle(invoice, "500.00", "2026-11-25T12:00:00Z", "PAY-HELD")
    harness.read()
    sync = Ledger(harness.store.engine)
    held = sync.claim("invoice", invoice.coupa_id, "document-sync-run-7")
    assert held is not None

    report = harness.write()
    assert report.counts()["busy"] == 1
    assert harness.payments(invoice) == [] and harness.history(invoice, "D365-POSTED") == []
    assert harness.events.unpushed_invoice_ids() == [invoice.coupa_id]

    sync.release(held, "document-sync-run-7")
    report = harness.write()
    assert report.counts()["updated"] == 1
    assert len(harness.payments(invoice)) == 1 and len(harness.history(invoice, "D365-POSTED")) == 1
    assert harness.events.unpushed_invoice_ids() == []
    assert harness.ledger.get("invoice", invoice.coupa_id).claimed_by is None  # released after writing
