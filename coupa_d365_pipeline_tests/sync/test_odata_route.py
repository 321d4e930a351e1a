"""The lean OData route of the sync core (no Dagster) against the sandboxes over HTTP: many invoices
per $batch with every part's status read, bulk lookups instead of per-document ones, Coupa notices
alongside, and the cases that make exactly-once hard — a refused changeset, a lost answer after D365
applied the batch, D365 going down between batches — ending with every invoice booked once."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest

from coupa_d365_pipeline.common.http import SystemUnavailableError
from coupa_d365_pipeline.sandbox.faults import ScriptedFault
from coupa_d365_pipeline.settings import ConfigError, throughput_settings
from coupa_d365_pipeline.sync.context import SyncServices
from coupa_d365_pipeline.sync.invoices import InvoiceSync
from coupa_d365_pipeline.sync.odata_route import ODataBulkRoute
from coupa_d365_pipeline.sync.purchase_orders import PurchaseOrderSync
from coupa_d365_pipeline.sync.report import Action
from coupa_d365_pipeline.sync.vendors import VendorSync
from coupa_d365_pipeline_tests.conftest import make_d365_client
from coupa_d365_pipeline_tests.flow.helpers import CHARTS
from coupa_d365_pipeline_tests.sync.conftest import as_run
from coupa_d365_pipeline_tests.sync.test_dmf_route import approved_invoices, last_seq, plant_unknown_vendors

BATCH = r"^/data/\$batch$"


def lean(services: SyncServices, **kwargs: Any) -> ODataBulkRoute:
    return ODataBulkRoute(InvoiceSync(services), **{"documents_per_batch": 20, **kwargs})


def mappable(sandboxes, n: int | None = None) -> list[dict[str, Any]]:
    unmappable = set(sandboxes.seed.expectations["unmappable_invoices"])
    found = [i for i in approved_invoices(sandboxes) if i["id"] not in unmappable]
    return found if n is None else found[:n]


def ensure_vendors(services: SyncServices, invoices: list[dict[str, Any]]) -> None:
    """The vendors as the master-data run leaves them."""
    vendors = VendorSync(services)
    for invoice in invoices:
        le = CHARTS.get(invoice["account-type"]["name"])
        supplier = services.supplier(invoice["supplier"]["id"])
        if le is not None and supplier is not None:
            vendors.ensure(supplier, le)


def header_refs(sandboxes) -> Counter[str]:
    return Counter(h["HeaderReference"] for h in sandboxes.d365.state.records("VendorInvoiceHeaders"))


def success_records(sandboxes) -> Counter[int]:
    return Counter(
        r["document-id"]
        for r in sandboxes.coupa.state.records("integration_history_records")
        if r["status"] == "Success" and r["document-type"] == "InvoiceHeader"
    )


def assert_booked_once(services: SyncServices, sandboxes, ids: set[int]) -> None:
    """Each invoice: one pending header with all its lines, ledger written and Coupa told exactly once."""
    assert header_refs(sandboxes) == Counter(f"COUPA-{i}" for i in ids)
    lines = Counter(ln["HeaderReference"] for ln in sandboxes.d365.state.records("VendorInvoiceLines"))
    for coupa_id in ids:
        invoice = sandboxes.coupa.state.get("invoices", coupa_id)
        assert lines[f"COUPA-{coupa_id}"] == len(invoice["invoice-lines"]), coupa_id
        row = services.ledger.get("invoice", coupa_id)
        assert (row.state, row.problem, row.coupa_notified, row.claimed_by) == ("written", None, True, None)
        assert invoice["exported"] is True
    assert success_records(sandboxes) == Counter(ids)


def test_invoices_go_many_per_batch_with_bulk_lookups_and_each_is_booked_once(services, sandboxes):
    invoices = approved_invoices(sandboxes)
    services.store.stage("invoice", invoices, run_id="run-1")
    ensure_vendors(services, invoices)
    unmappable = set(sandboxes.seed.expectations["unmappable_invoices"]) & {i["id"] for i in invoices}
    seq = last_seq(sandboxes)

    route = lean(services)
    report = route.sync_many(invoices)

    created = {o.coupa_id for o in report.outcomes if o.action == Action.CREATED}
    assert created == {i["id"] for i in invoices} - unmappable and len(created) > 60
    assert {o.coupa_id for o in report.outcomes if o.action == Action.QUARANTINED} == unmappable
    assert_booked_once(services, sandboxes, created)
    requests = [e for e in sandboxes.d365.log.snapshot() if e.seq > seq]
    kinds = Counter(f"{e.method} {e.path.rsplit('/', 1)[-1]}" for e in requests)
    assert kinds == Counter(
        {
            "POST $batch": math.ceil(len(created) / 20),
            "GET VendorInvoiceHeaders": 1,  # pending with that natural key or our HeaderReference
            "GET VendInvoiceJourBiEntities": 1,  # posted with that natural key
            "GET PurchaseOrderLinesV2": 1,  # the PO lines the invoices reference
        }
    ), kinds
    assert len(requests) / len(created) <= 0.25
    assert route.summary.batches == math.ceil(len(created) / 20) and route.summary.redriven == 0

    # the same window again: nothing written, nothing told twice
    seq = last_seq(sandboxes)
    rerun = lean(as_run(services, "run-2")).sync_many(invoices)
    assert Counter(o.action for o in rerun.outcomes)[Action.ALREADY_PRESENT] == len(created)
    assert not [e for e in sandboxes.d365.log.snapshot() if e.seq > seq and e.method != "GET"]
    assert_booked_once(services, sandboxes, created)


def test_a_refused_changeset_fails_only_its_invoice_with_d365s_reason(services, sandboxes):
    invoices = approved_invoices(sandboxes)[:80]
    services.store.stage("invoice", invoices, run_id="run-1")
    bad = set(plant_unknown_vendors(services, sandboxes, invoices))
    ensure_vendors(services, [i for i in invoices if i["id"] not in bad])
    unmappable = set(sandboxes.seed.expectations["unmappable_invoices"]) & {i["id"] for i in invoices}

    report = lean(services).sync_many(invoices)

    by_action = {a: {o.coupa_id for o in report.outcomes if o.action == a} for a in Action}
    assert by_action[Action.FAILED] == bad
    assert by_action[Action.CREATED] == {i["id"] for i in invoices} - bad - unmappable
    assert_booked_once(services, sandboxes, by_action[Action.CREATED])
    for coupa_id in bad:
        row = services.ledger.get("invoice", coupa_id)
        # as the per-document path leaves a refused create: "writing" with its key, problem failed
        assert (row.state, row.problem) == ("writing", "failed")
        assert row.reason.startswith("D365 rejected the invoice:") and "'Vendors'" in row.reason, row.reason
        assert row.alerted_reason == row.reason and not row.coupa_notified
        errors = [
            r
            for r in sandboxes.coupa.state.records("integration_history_records")
            if r["document-id"] == coupa_id and r["status"] == "Error"
        ]
        assert len(errors) == 1


@pytest.mark.parametrize("kind", ["drop_after", "truncated"])
def test_a_batch_answer_lost_after_d365_applied_it_is_settled_by_lookup_never_written_twice(services, sandboxes, kind):
    invoices = mappable(sandboxes, 45)  # three batches of up to 20
    services.store.stage("invoice", invoices, run_id="run-1")
    ensure_vendors(services, invoices)
    sandboxes.d365.injector.script(ScriptedFault(kind=kind, method="POST", path_regex=BATCH, after=1))

    route = lean(services, d365_concurrency=1)
    report = route.sync_many(invoices)

    assert [e for e in sandboxes.d365.log.snapshot() if e.injected == kind]  # the fault fired
    assert Counter(o.action for o in report.outcomes) == Counter({Action.CREATED: len(invoices)})
    # the batch whose answer was lost: one read-back found its 20 headers (a changeset is atomic)
    assert route.summary.redriven == 0
    assert_booked_once(services, sandboxes, {i["id"] for i in invoices})
    ambiguous = [
        i["id"]
        for i in invoices
        if "create_ambiguous" in [h["action"] for h in services.ledger.history("invoice", i["id"])]
    ]
    assert len(ambiguous) == 20
    assert not [r for r in sandboxes.coupa.state.records("integration_history_records") if r["status"] == "Error"]


def test_d365_going_down_between_batches_stops_the_run_and_the_next_run_books_the_rest_once(services, sandboxes):
    invoices = mappable(sandboxes, 60)
    ids = {i["id"] for i in invoices}
    services.store.stage("invoice", invoices, run_id="run-1")
    ensure_vendors(services, invoices)
    # the three bulk lookups and the first $batch go through, then D365 answers 503 to every request
    # (Retry-After 0 keeps the test fast: the client honours it exactly)
    sandboxes.d365.injector.script(
        ScriptedFault(kind="5xx", after=4, times=10_000, retry_after_on_5xx=True, retry_after_s=0)
    )
    with pytest.raises(SystemUnavailableError) as err:
        lean(services, d365_concurrency=1).sync_many(invoices)
    partial = err.value.report  # type: ignore[attr-defined]
    written = {o.coupa_id for o in partial.outcomes if o.action == Action.CREATED}
    assert len(written) == 20 and header_refs(sandboxes) == Counter(f"COUPA-{i}" for i in written)
    rows = [services.ledger.get("invoice", i) for i in ids]
    assert all(r.claimed_by is None for r in rows)  # every claim released
    # intent kept with the key: the next run's lookups settle them
    assert {(r.state, tuple(sorted(r.d365_key))) for r in rows if r.coupa_id not in written} == {
        ("writing", ("HeaderReference", "dataAreaId"))
    }
    assert not [r for r in sandboxes.coupa.state.records("integration_history_records") if r["status"] == "Error"]

    sandboxes.d365.injector.clear()
    with make_d365_client(sandboxes) as d365:
        report = lean(as_run(services, "run-2", d365=d365)).sync_many(invoices)
    assert Counter(o.action for o in report.outcomes) == Counter(
        {Action.CREATED: len(ids - written), Action.ALREADY_PRESENT: len(written)}
    )
    assert_booked_once(services, sandboxes, ids)


def test_purchase_orders_take_the_same_route(services, sandboxes):
    pos = [
        sandboxes.coupa.state.get("purchase_orders", p["id"])
        for p in sandboxes.seed.coupa_purchase_orders
        if p["status"] == "issued"
    ]
    services.store.stage("purchase_order", pos, run_id="run-1")
    seq = last_seq(sandboxes)
    route = ODataBulkRoute(PurchaseOrderSync(services), documents_per_batch=20)
    report = route.sync_many(pos)
    created = {o.coupa_id for o in report.outcomes if o.action == Action.CREATED}
    assert len(created) > 20 and route.summary.batched == len(created)
    numbers = Counter(h["PurchaseOrderNumber"] for h in sandboxes.d365.state.records("PurchaseOrderHeadersV2"))
    assert all(n == 1 for n in numbers.values())
    assert all(services.ledger.get("purchase_order", i).coupa_notified for i in created)
    batches = [e for e in sandboxes.d365.log.snapshot() if e.seq > seq and e.path == "/data/$batch"]
    po_batches = [e for e in batches if "PurchaseOrderHeadersV2" in e.body]
    assert len(po_batches) == math.ceil(len(created) / 20)
    # the other batches create the vendors the POs need, 20 per request
    assert all("/data/VendorsV2 HTTP/1.1" in e.body for e in batches if e not in po_batches)


def test_throughput_settings_are_checked():
    assert throughput_settings({}).batch_documents == 20
    assert throughput_settings({"D365_BATCH_DOCUMENTS": "1", "D365_MAX_CONCURRENCY": "2"}).d365_concurrency == 2
    with pytest.raises(ConfigError, match="D365_BATCH_DOCUMENTS='0' is not a whole number from 1 to 200"):
        throughput_settings({"D365_BATCH_DOCUMENTS": "0"})
    with pytest.raises(ConfigError, match="COUPA_MAX_CONCURRENCY='many'"):
        throughput_settings({"COUPA_MAX_CONCURRENCY": "many"})


def test_closed_and_cancelled_pos_never_booked_are_looked_up_in_one_query_not_one_get_each(services, sandboxes):
    from coupa_d365_pipeline.mapping.purchase_orders import MappedPurchaseOrder, map_purchase_order

    pos = [sandboxes.coupa.state.get("purchase_orders", p["id"]) for p in sandboxes.seed.coupa_purchase_orders]
    ended = [p for p in pos if p["status"] in ("closed", "cancelled")]
    assert len(ended) > 5
    # D365 already holds a PO (keyed in by hand, another vendor) under the number of one of them: the
    # bulk query finds it, so that one is still read by key and judged as before
    foreign = next(
        m
        for p in ended
        if isinstance(
            m := map_purchase_order(
                p, services.mapping, services.master, supplier=services.supplier(p["supplier"]["id"])
            ),
            MappedPurchaseOrder,
        )
    )
    hand_keyed = {**foreign.header, "OrderVendorAccountNumber": "HANDKEYED"}
    sandboxes.d365.state.load("PurchaseOrderHeadersV2", [hand_keyed])
    services.store.stage("purchase_order", pos, run_id="run-1")
    seq = last_seq(sandboxes)

    report = ODataBulkRoute(PurchaseOrderSync(services), documents_per_batch=20).sync_many(pos)

    by_id = {o.coupa_id: o for o in report.outcomes}
    judged = 0
    for po in ended:
        row = services.ledger.get("purchase_order", po["id"])
        if po["po-number"] == foreign.purchase_order_number or by_id[po["id"]].action == Action.QUARANTINED:
            continue
        assert row.state == po["status"] and "before it was booked" in (row.reason or ""), (po["id"], row)
        judged += 1
    assert judged > 5
    requests = [e for e in sandboxes.d365.log.snapshot() if e.seq > seq and e.method == "GET"]
    by_key = [e for e in requests if e.path.startswith("/data/PurchaseOrderHeadersV2(")]
    assert len(by_key) == 1 and foreign.purchase_order_number in by_key[0].path  # only the one D365 holds
    [judged_foreign] = [o for o in report.outcomes if o.document == foreign.purchase_order_number]
    assert judged_foreign.action == Action.QUARANTINED and "HANDKEYED" in judged_foreign.detail, judged_foreign
    assert len([e for e in requests if e.path == "/data/PurchaseOrderHeadersV2"]) == 2  # candidates + ended ones
