"""Issue 8 regressions: a booked invoice is the ledger's to protect. No later Coupa version, mapping
change, busy vendor or unmappable edit may duplicate it, lose its key or leave it payable."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from coupa_d365_pipeline.state.ledger import MISSING_IN_D365, WRITTEN, NaturalKey, Problem
from coupa_d365_pipeline.state.status import StatusEvents
from coupa_d365_pipeline.sync.status import StatusReader
from coupa_d365_pipeline_tests.flow.helpers import d365_writes, last_seq
from coupa_d365_pipeline_tests.sync.conftest import (
    as_run,
    impatient_vendors,
    mappable_invoice,
    money,
    pending_headers,
    sync_invoice,
)


def book(services, sandboxes, skip: int = 0) -> tuple[dict, dict]:
    invoice = mappable_invoice(sandboxes, skip=skip)
    outcome = sync_invoice(services, invoice["id"])
    assert outcome.action == "created", outcome
    [header] = pending_headers(sandboxes, HeaderReference=f"COUPA-{invoice['id']}")
    return invoice, header


def posted_journal(sandboxes, **equals) -> list[dict]:
    return [
        j
        for j in sandboxes.d365.state.records("VendInvoiceJourBiEntities")
        if all(str(j.get(k)).casefold() == str(v).casefold() for k, v in equals.items())
    ]


# -- defect 1: duplicate after posting when the natural key changes ---------------------------
@pytest.mark.parametrize("change", ["invoice_number", "supplier_number", "chart_mapping"])
def test_posted_invoice_is_never_booked_again_when_its_natural_key_changes(services, sandboxes, change):
    invoice, header = book(services, sandboxes)
    sandboxes.d365.state.post_invoice(header["dataAreaId"], header["HeaderReference"])
    journal_before = len(sandboxes.d365.state.records("VendInvoiceJourBiEntities"))
    pending_before = len(sandboxes.d365.state.records("VendorInvoiceHeaders"))
    later = services
    if change == "invoice_number":
        sandboxes.coupa.state.touch("invoices", invoice["id"], **{"invoice-number": "RENUMBERED-1"})
    elif change == "supplier_number":
        supplier = sandboxes.coupa.state.touch("suppliers", invoice["supplier"]["id"], number="NEWNO-77")
        services.store.stage("supplier", [copy.deepcopy(supplier)])
        sandboxes.coupa.state.touch("invoices", invoice["id"], supplier=dict(invoice["supplier"], number="NEWNO-77"))
    else:  # the chart of accounts now maps to another legal entity
        legal_entities = dict(services.mapping.legal_entities, **{invoice["account-type"]["name"]: "demf"})
        later = as_run(
            services, "run-2", mapping=services.mapping.model_copy(update={"legal_entities": legal_entities})
        )
        sandboxes.coupa.state.touch("invoices", invoice["id"], **{"invoice-date": "2026-10-30T00:00:00Z"})
    seq = last_seq(sandboxes)

    outcome = sync_invoice(later, invoice["id"])

    assert outcome.action == "changed_after_post", outcome
    assert len(sandboxes.d365.state.records("VendorInvoiceHeaders")) == pending_before  # no second booking
    assert len(sandboxes.d365.state.records("VendInvoiceJourBiEntities")) == journal_before
    assert not [w for w in d365_writes(sandboxes, seq) if "VendorInvoice" in w.path or "$batch" in w.path]
    row = services.ledger.get("invoice", invoice["id"])
    assert row.state == "changed_after_post" and row.d365_key["dataAreaId"] == header["dataAreaId"]
    assert row.natural_key == NaturalKey(header["dataAreaId"], header["InvoiceAccount"], header["InvoiceNumber"])


# -- defect 2: a later version's trouble never overwrites the booked state ---------------------
def test_amount_change_is_applied_after_the_vendor_was_busy(services, sandboxes):
    invoice, header = book(services, sandboxes)
    line = invoice["invoice-lines"][0]
    new_price = (money(line["price"]) * 2).quantize(Decimal("0.01"))
    new_total = (money(line["quantity"]) * new_price).quantize(Decimal("0.01"))
    delta = new_total - money(line["total"])
    lines = [dict(line, price=str(new_price), total=str(new_total)), *invoice["invoice-lines"][1:]]
    new_gross = money(invoice["gross-total"]) + delta
    sandboxes.coupa.state.touch("invoices", invoice["id"], **{"invoice-lines": lines, "gross-total": str(new_gross)})
    le = header["dataAreaId"]
    other = as_run(services, "run-other")
    assert other.ledger.claim("vendor", invoice["supplier"]["id"], "run-other", scope=le) is not None  # busy elsewhere

    run2 = as_run(services, "run-2")
    outcome = sync_invoice(run2, invoice["id"], vendors=impatient_vendors(run2))
    assert outcome.action == "failed" and "busy" in outcome.detail
    row = services.ledger.get("invoice", invoice["id"])
    assert (row.state, row.problem) == (WRITTEN, Problem.FAILED)
    assert row.d365_key == {"dataAreaId": le, "HeaderReference": header["HeaderReference"]}

    other.ledger.release(other.ledger.get("vendor", invoice["supplier"]["id"], le), "run-other")
    outcome = sync_invoice(as_run(services, "run-3"), invoice["id"])
    assert outcome.action == "updated", outcome
    [updated] = pending_headers(sandboxes, HeaderReference=header["HeaderReference"])
    assert money(updated["ImportedAmount"]) == new_gross
    [first] = [
        ln
        for ln in sandboxes.d365.state.records("VendorInvoiceLines")
        if ln["HeaderReference"] == header["HeaderReference"] and money(ln["InvoiceLineNumber"]) == line["line-num"]
    ]
    assert money(first["UnitPrice"]) == new_price and money(first["Amount"]) == new_total
    row = services.ledger.get("invoice", invoice["id"])
    assert (row.state, row.problem, row.reason) == (WRITTEN, None, None)


def test_unmappable_later_version_keeps_the_booking_so_a_void_still_removes_it(services, sandboxes):
    invoice, header = book(services, sandboxes)
    sandboxes.coupa.state.touch("invoices", invoice["id"], **{"account-type": {"id": 99, "name": "Atlantis Plant"}})
    outcome = sync_invoice(as_run(services, "run-2"), invoice["id"])
    assert outcome.action == "quarantined" and "stays as it is" in outcome.detail
    row = services.ledger.get("invoice", invoice["id"])
    assert (row.state, row.problem) == (WRITTEN, Problem.QUARANTINED) and "Atlantis" in row.reason
    assert row.d365_key["HeaderReference"] == header["HeaderReference"]

    sandboxes.coupa.state.touch("invoices", invoice["id"], status="voided")
    outcome = sync_invoice(as_run(services, "run-3"), invoice["id"])
    assert outcome.action == "voided" and header["HeaderReference"] in outcome.detail
    assert pending_headers(sandboxes, HeaderReference=header["HeaderReference"]) == []  # not left payable
    assert services.ledger.get("invoice", invoice["id"]).state == "voided"


def test_status_of_a_booked_invoice_whose_later_version_is_unmappable_still_reaches_the_reader(services, sandboxes):
    invoice, header = book(services, sandboxes)
    sandboxes.coupa.state.touch("invoices", invoice["id"], **{"account-type": {"id": 99, "name": "Atlantis Plant"}})
    assert sync_invoice(as_run(services, "run-2"), invoice["id"]).action == "quarantined"
    sandboxes.d365.state.post_invoice(header["dataAreaId"], header["HeaderReference"])
    events = StatusEvents(services.store.engine)
    StatusReader(as_run(services, "status-1"), events).read()
    assert [e.kind for e in events.for_invoice(invoice["id"])] == ["posted"]


# -- defect 3: the natural key follows a PATCH; no joined strings --------------------------------
@pytest.mark.parametrize("new_number", ["INV-2026-RENUMBERED", "INV|2026|PIPE"])
def test_renumbered_pending_invoice_is_found_posted_and_never_deleted_after_posting(services, sandboxes, new_number):
    invoice, header = book(services, sandboxes)
    sandboxes.coupa.state.touch("invoices", invoice["id"], **{"invoice-number": new_number})
    outcome = sync_invoice(as_run(services, "run-2"), invoice["id"])
    assert outcome.action == "updated", outcome
    [patched] = pending_headers(sandboxes, HeaderReference=header["HeaderReference"])
    assert patched["InvoiceNumber"] == new_number
    row = services.ledger.get("invoice", invoice["id"])
    assert row.natural_key == NaturalKey(header["dataAreaId"], header["InvoiceAccount"], new_number)

    sandboxes.d365.state.post_invoice(header["dataAreaId"], header["HeaderReference"])
    events = StatusEvents(services.store.engine)
    StatusReader(as_run(services, "status-1"), events).read()
    [posted] = events.for_invoice(invoice["id"])
    assert posted.kind == "posted" and posted.invoice_number == new_number

    sandboxes.coupa.state.touch("invoices", invoice["id"], status="voided")
    seq = last_seq(sandboxes)
    outcome = sync_invoice(as_run(services, "run-3"), invoice["id"])
    assert outcome.action == "void_blocked_posted"
    assert [w for w in d365_writes(sandboxes, seq) if w.method == "DELETE"] == []


def test_interrupted_write_that_landed_and_was_posted_is_recognised_by_its_stored_key(services, sandboxes):
    """Intent recorded, the changeset landed, the answer was lost, AP posted it before the next run,
    and Coupa renumbered the invoice meanwhile: the stored key proves it is booked."""
    invoice, header = book(services, sandboxes)
    row = services.ledger.get("invoice", invoice["id"])
    # rewind the ledger to "writing" as a crash right after the batch would have left it
    crashed = services.ledger.claim("invoice", invoice["id"], "run-crashed")
    services.ledger.update(crashed, "run-crashed", release=True, state="writing", coupa_hash=None)
    sandboxes.d365.state.post_invoice(header["dataAreaId"], header["HeaderReference"])
    sandboxes.coupa.state.touch("invoices", invoice["id"], **{"invoice-number": "RENUMBERED-POSTCRASH"})
    pending_before = len(sandboxes.d365.state.records("VendorInvoiceHeaders"))
    outcome = sync_invoice(as_run(services, "run-2"), invoice["id"])
    assert outcome.action == "changed_after_post", outcome
    assert len(sandboxes.d365.state.records("VendorInvoiceHeaders")) == pending_before
    assert services.ledger.get("invoice", invoice["id"]).natural_key == row.natural_key


def test_pending_invoice_deleted_in_d365_is_reported_not_silently_booked_again(services, sandboxes):
    invoice, header = book(services, sandboxes)
    sandboxes.d365.state.delete(
        "VendorInvoiceHeaders", {"dataAreaId": header["dataAreaId"], "HeaderReference": header["HeaderReference"]}
    )
    sandboxes.coupa.state.touch("invoices", invoice["id"], **{"invoice-date": "2026-10-29T00:00:00Z"})
    outcome = sync_invoice(as_run(services, "run-2"), invoice["id"])
    assert outcome.action == "missing_in_d365" and "rebook_missing" in outcome.detail
    assert pending_headers(sandboxes, InvoiceNumber=invoice["invoice-number"]) == []
    assert services.ledger.get("invoice", invoice["id"]).state == MISSING_IN_D365
    assert sync_invoice(as_run(services, "run-3"), invoice["id"]).action == "missing_in_d365"  # stays put

    outcome = sync_invoice(as_run(services, "replay"), invoice["id"], rebook_missing=True)
    assert outcome.action == "created"
    assert len(pending_headers(sandboxes, InvoiceNumber=invoice["invoice-number"])) == 1
    assert services.ledger.get("invoice", invoice["id"]).state == WRITTEN


def test_interrupted_write_that_landed_is_adopted_and_brought_up_to_date(services, sandboxes):
    """Crash after the batch landed, then Coupa changed the amount: adopting must apply the change."""
    invoice, header = book(services, sandboxes)
    crashed = services.ledger.claim("invoice", invoice["id"], "run-crashed")
    services.ledger.update(crashed, "run-crashed", release=True, state="writing", coupa_hash=None)
    line = invoice["invoice-lines"][-1]
    lines = [*invoice["invoice-lines"][:-1], dict(line, description=line["description"] + " (corrected)")]
    sandboxes.coupa.state.touch("invoices", invoice["id"], **{"invoice-lines": lines})
    outcome = sync_invoice(as_run(services, "run-2"), invoice["id"])
    assert outcome.action == "updated" and "1 lines changed" in outcome.detail
    [last] = [
        ln
        for ln in sandboxes.d365.state.records("VendorInvoiceLines")
        if ln["HeaderReference"] == header["HeaderReference"] and money(ln["InvoiceLineNumber"]) == line["line-num"]
    ]
    assert last["LineDescription"].endswith("(corrected)")
    assert len(pending_headers(sandboxes, InvoiceNumber=invoice["invoice-number"])) == 1
    assert services.ledger.get("invoice", invoice["id"]).state == WRITTEN


# -- defect 7: one bad document never stops the others -----------------------------------------
def test_an_unexpected_error_in_one_invoice_fails_only_that_invoice(services, sandboxes):
    from coupa_d365_pipeline.sync.invoices import InvoiceSync

    good = [mappable_invoice(sandboxes, skip=n) for n in range(3)]
    broken = sandboxes.coupa.state.touch("invoices", good[1]["id"], supplier={"id": "abc", "name": "?"})
    documents = [services.coupa.get("invoices", i["id"]) for i in good]
    report = InvoiceSync(services).sync_many(documents)
    actions = {o.coupa_id: o.action for o in report.outcomes}
    # issue 9: a supplier id that is not a number is the document's own defect -> quarantined with a reason
    assert actions == {good[0]["id"]: "created", broken["id"]: "quarantined", good[2]["id"]: "created"}
    failed = services.ledger.get("invoice", broken["id"])
    assert failed.state == "quarantined" and "supplier id 'abc' is not a Coupa supplier id" in failed.reason
    assert failed.claimed_by is None


# -- defect 6: the connector's own writes to Coupa never look like a business change -------------
def test_voucher_written_to_a_coupa_custom_field_is_not_a_change_after_post(services, sandboxes):
    from coupa_d365_pipeline.sync.status import StatusWriter

    assert services.mapping.coupa_custom_fields  # the bundled mapping writes the voucher to cf-erp-voucher
    invoice, header = book(services, sandboxes)
    sandboxes.d365.state.post_invoice(header["dataAreaId"], header["HeaderReference"])
    status_run = as_run(services, "status-1")
    events = StatusEvents(services.store.engine)
    StatusReader(status_run, events).read()
    StatusWriter(status_run, events).write()
    after = sandboxes.coupa.state.get("invoices", invoice["id"])
    assert set(after["custom-fields"]) == {"cf-erp-voucher"} and after["updated-at"] != invoice["updated-at"]
    alerts_before = [r for r in sandboxes.coupa.state.records("integration_history_records") if r["status"] == "Error"]

    outcome = sync_invoice(as_run(services, "run-2"), invoice["id"])

    assert outcome.action == "already_present", outcome
    assert services.ledger.get("invoice", invoice["id"]).state == "posted"
    assert [
        r for r in sandboxes.coupa.state.records("integration_history_records") if r["status"] == "Error"
    ] == alerts_before


def test_a_real_custom_field_change_after_posting_is_still_reported(services, sandboxes):
    invoice, header = book(services, sandboxes)
    sandboxes.d365.state.post_invoice(header["dataAreaId"], header["HeaderReference"])
    events = StatusEvents(services.store.engine)
    StatusReader(as_run(services, "status-1"), events).read()
    sandboxes.coupa.state.touch("invoices", invoice["id"], **{"custom-fields": {"cost-object": "PRJ-7"}})
    assert sync_invoice(as_run(services, "run-2"), invoice["id"]).action == "changed_after_post"


# -- promises that had no test -------------------------------------------------------------------
def test_invoice_already_posted_in_d365_is_adopted_as_posted_not_booked_again(services, sandboxes):
    """AP keyed and posted the invoice by hand before the connector saw it."""
    invoice = mappable_invoice(sandboxes)
    supplier = next(s for s in sandboxes.seed.coupa_suppliers if s["id"] == invoice["supplier"]["id"])
    from coupa_d365_pipeline.sync.vendors import VendorSync

    assert VendorSync(services).ensure(supplier, "usmf").action in ("created", "already_present")
    sandboxes.d365.state.create(
        "VendorInvoiceHeaders",
        {
            "dataAreaId": "usmf",
            "HeaderReference": "AP-MANUAL-1",
            "InvoiceNumber": invoice["invoice-number"],
            "InvoiceAccount": supplier["number"],
            "Currency": invoice["currency"]["code"],
            "ImportedAmount": invoice["gross-total"],
        },
    )
    posted = sandboxes.d365.state.post_invoice("usmf", "AP-MANUAL-1")
    voucher = posted["VendInvoiceJourBiEntity"]["LedgerVoucher"]
    seq = last_seq(sandboxes)

    outcome = sync_invoice(as_run(services, "run-2"), invoice["id"])

    assert outcome.action == "already_present" and outcome.detail == "already posted in D365"
    assert [w for w in d365_writes(sandboxes, seq) if "VendorInvoice" in w.path or "$batch" in w.path] == []
    row = services.ledger.get("invoice", invoice["id"])
    assert row.state == "posted" and row.d365_key["LedgerVoucher"] == voucher
    assert any(h["action"] == "found_posted" for h in services.ledger.history("invoice", invoice["id"]))
    told = [
        r
        for r in sandboxes.coupa.state.records("integration_history_records")
        if r["document-id"] == invoice["id"] and r["document-type"] == "InvoiceHeader" and r["status"] == "Success"
    ]
    assert len(told) == 1 and voucher in told[0]["responses"][0]["response-message"]
    assert sandboxes.coupa.state.get("invoices", invoice["id"])["exported"] is True


class _RacingWriter:
    """The real OData writer, but another writer of ours lands a header-only copy with the same
    HeaderReference between our lookup and our changeset (an interrupted sequential write)."""

    route = "odata"

    def __init__(self, inner, sandboxes) -> None:
        self.inner = inner
        self.sandboxes = sandboxes

    def create(self, header, lines):
        self.sandboxes.d365.state.create("VendorInvoiceHeaders", dict(header))
        return self.inner.create(header, lines)


def test_duplicate_key_answer_adopts_our_own_header_and_completes_it(services, sandboxes):
    from coupa_d365_pipeline.sync.invoices import InvoiceSync
    from coupa_d365_pipeline.sync.writer import ODataBatchWriter

    invoice = mappable_invoice(sandboxes)
    writer = _RacingWriter(ODataBatchWriter(services.d365, "VendorInvoiceHeaders", "VendorInvoiceLines"), sandboxes)
    outcome = InvoiceSync(services, writer=writer).sync(services.coupa.get("invoices", invoice["id"]))

    assert outcome.action == "repaired" and "adopted existing COUPA-" in outcome.detail
    [header] = pending_headers(sandboxes, InvoiceNumber=invoice["invoice-number"])
    lines = [
        ln
        for ln in sandboxes.d365.state.records("VendorInvoiceLines")
        if ln["HeaderReference"] == header["HeaderReference"]
    ]
    assert len(lines) == len(invoice["invoice-lines"])
    history = services.ledger.history("invoice", invoice["id"])
    [create] = [h for h in history if h["action"] == "create"]
    assert create["http_status"] >= 400 and "already exists" in create["error"]
    assert sum(h["action"] == "complete_line" for h in history) == len(invoice["invoice-lines"])
    assert services.ledger.get("invoice", invoice["id"]).state == WRITTEN


class _PostsBeforeDelete:
    """The real D365 client, while an AP user posts the invoice between our posted-lookup and our DELETE."""

    def __init__(self, inner, sandboxes, header) -> None:
        self._inner, self._sandboxes, self._header = inner, sandboxes, header

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def delete(self, entity_set, key):
        self._sandboxes.d365.state.post_invoice(self._header["dataAreaId"], self._header["HeaderReference"])
        return self._inner.delete(entity_set, key)


def test_invoice_posted_between_the_lookup_and_the_delete_is_void_blocked_not_voided(services, sandboxes):
    invoice, header = book(services, sandboxes)
    sandboxes.coupa.state.touch("invoices", invoice["id"], status="voided")
    racing = as_run(services, "run-2", d365=_PostsBeforeDelete(services.d365, sandboxes, header))
    outcome = sync_invoice(racing, invoice["id"])
    assert outcome.action == "void_blocked_posted", outcome
    assert services.ledger.get("invoice", invoice["id"]).state == "void_blocked_posted"
    assert posted_journal(sandboxes, InvoiceId=invoice["invoice-number"])


def test_adopting_a_pending_invoice_keyed_by_hand_patches_only_what_differs(services, sandboxes):
    """AP keyed the header by hand with exactly what we would send: adopting it adds the lines and
    PATCHes no header field (the lookup must read every field it compares)."""
    from coupa_d365_pipeline.mapping.invoices import map_invoice
    from coupa_d365_pipeline.sync.vendors import VendorSync

    invoice = mappable_invoice(sandboxes)
    supplier = next(s for s in sandboxes.seed.coupa_suppliers if s["id"] == invoice["supplier"]["id"])
    mapped = map_invoice(invoice, services.mapping, services.master, supplier=supplier)
    assert VendorSync(services).ensure(supplier, mapped.legal_entity).action in ("created", "already_present")
    sandboxes.d365.state.create("VendorInvoiceHeaders", dict(mapped.header, HeaderReference="AP-KEYED-1"))
    seq = last_seq(sandboxes)

    outcome = sync_invoice(services, invoice["id"])

    assert outcome.action == "repaired" and "adopted existing AP-KEYED-1, 0 header fields" in outcome.detail
    writes = d365_writes(sandboxes, seq)
    assert [w for w in writes if w.method == "PATCH"] == []
    assert sum(w.method == "POST" and w.path == "/data/VendorInvoiceLines" for w in writes) == len(
        invoice["invoice-lines"]
    )
