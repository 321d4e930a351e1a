"""Suspicion 3: the status flow records a D365 posting in the ledger only on a row it has claimed,
deciding on the claimed row's state — a state a document sync wrote meanwhile is never erased."""

from __future__ import annotations

import pytest

from coupa_d365_pipeline.state.ledger import (
    CHANGED_AFTER_POST,
    MISSING_IN_D365,
    POSTED,
    VOID_BLOCKED,
    WRITING,
    DocState,
    Ledger,
)
from coupa_d365_pipeline_tests.status.conftest import StatusHarness


def test_a_state_a_sync_wrote_between_the_status_read_and_its_claim_is_kept(harness: StatusHarness) -> None:
    invoice = harness.book("700.00")
    voucher = harness.post(invoice)["VendInvoiceJourBiEntity"]["LedgerVoucher"]
    services = harness.services()
    claim = services.ledger.claim
    interfered: list[int] = []

    def a_sync_run_voids_it_first(doc_type, coupa_id, run_id, scope=""):
        if coupa_id == invoice.coupa_id and not interfered:
            # The status run read the ledger row as `written`; before its claim, a document sync sees the
            # Coupa void of the posted invoice and records void_blocked_posted.
            interfered.append(coupa_id)
            sync = Ledger(harness.store.engine)
            row = sync.claim("invoice", coupa_id, "document-sync-run")
            sync.update(
                row,
                "document-sync-run",
                release=True,
                state=VOID_BLOCKED,
                reason="voided in Coupa after D365 posted it",
            )
        return claim(doc_type, coupa_id, run_id, scope)

    services.ledger.claim = a_sync_run_voids_it_first
    harness.read(services)
    harness.write(services)

    assert interfered
    row = harness.ledger.get("invoice", invoice.coupa_id)
    assert row.state == VOID_BLOCKED and row.reason == "voided in Coupa after D365 posted it"
    assert row.d365_key["LedgerVoucher"] == voucher and row.d365_key["HeaderReference"] == invoice.header_reference
    assert len(harness.history(invoice, "D365-POSTED")) == 1  # Coupa still learns it was posted


@pytest.mark.parametrize("state", [MISSING_IN_D365, WRITING])
def test_missing_and_in_flight_rows_become_posted(harness: StatusHarness, state: DocState) -> None:
    invoice = harness.book("300.00", state=state)
    voucher = harness.post(invoice)["VendInvoiceJourBiEntity"]["LedgerVoucher"]
    harness.run()
    row = harness.ledger.get("invoice", invoice.coupa_id)
    assert row.state == POSTED and row.d365_key["LedgerVoucher"] == voucher
    assert row.claimed_by is None


def test_changed_after_post_keeps_its_state_and_gets_the_voucher(harness: StatusHarness) -> None:
    invoice = harness.book("300.00", state=CHANGED_AFTER_POST)
    voucher = harness.post(invoice)["VendInvoiceJourBiEntity"]["LedgerVoucher"]
    harness.run()
    row = harness.ledger.get("invoice", invoice.coupa_id)
    assert row.state == CHANGED_AFTER_POST and row.d365_key["LedgerVoucher"] == voucher
