"""The DMF route of the sync core (no Dagster) against the sandboxes over HTTP: a package with bad
rows, a re-run, and a run that dies between ImportFromPackage and the final status."""

from __future__ import annotations

import csv
import io
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from coupa_d365_pipeline.d365.dmf import DmfClient
from coupa_d365_pipeline.d365.dmf_package import DmfPackage
from coupa_d365_pipeline.state.dmf_executions import DmfExecutions, ExecutionStage
from coupa_d365_pipeline.state.ledger import Ledger
from coupa_d365_pipeline.sync.context import SyncServices
from coupa_d365_pipeline.sync.dmf_route import DmfRoute
from coupa_d365_pipeline.sync.invoices import InvoiceSync
from coupa_d365_pipeline.sync.report import Action, SyncReport
from coupa_d365_pipeline.sync.vendors import VendorSync
from coupa_d365_pipeline_tests.clients.test_dmf_client import rewrite
from coupa_d365_pipeline_tests.flow.helpers import CHARTS
from coupa_d365_pipeline_tests.sync.conftest import as_run

PROJECT = "Coupa documents"  # the sandbox's default data project


class Crash(BaseException):
    """The process dies (not an error any handler catches)."""


def fast_dmf(
    services: SyncServices,
    *,
    crash_on_wait: bool = False,
    rewrite: Callable[[DmfPackage], DmfPackage] | None = None,
) -> DmfClient:
    """Short polls; ``crash_on_wait``: the process dies while waiting; ``rewrite``: what D365 receives
    instead of the package built (a package D365 treats differently from what the route expects)."""

    class Client(DmfClient):
        def submit(self, package: DmfPackage, **kwargs: Any) -> str:  # type: ignore[override]
            return super().submit(rewrite(package) if rewrite else package, **kwargs)

        def wait(self, execution_id: str, **kwargs: Any):  # type: ignore[override]
            if crash_on_wait:
                raise Crash(f"killed while waiting for {execution_id}")
            return super().wait(execution_id, initial_delay_s=0.1, max_delay_s=0.2, **kwargs)

    return Client(services.d365, sleep=time.sleep)


def route(services: SyncServices, **kwargs: Any) -> DmfRoute:
    return DmfRoute(
        InvoiceSync(services), data_project=PROJECT, dmf=fast_dmf(services, **kwargs), not_found_grace_s=0.0
    )


def approved_invoices(sandboxes) -> list[dict[str, Any]]:
    return [
        sandboxes.coupa.state.get("invoices", i["id"])
        for i in sandboxes.seed.coupa_invoices
        if i["status"] == "approved"
    ]


def imports(sandboxes) -> int:
    return sum(1 for e in sandboxes.d365.log.snapshot() if e.path.endswith(".ImportFromPackage"))


def writes(sandboxes, since: int = 0) -> list[Any]:
    return [
        e
        for e in sandboxes.d365.log.snapshot()
        if e.seq > since
        and e.method in ("POST", "PATCH", "PUT", "DELETE")
        and "DataManagement" not in e.path
        and "/_blob/" not in e.path
    ]


def last_seq(sandboxes) -> int:
    entries = sandboxes.d365.log.snapshot()
    return entries[-1].seq if entries else 0


def plant_unknown_vendors(services: SyncServices, sandboxes, invoices: list[dict[str, Any]]) -> list[int]:
    """Invoices of three suppliers with a single invoice each (~3 %): their vendors are created, known to the
    ledger, then deleted in D365 behind the connector's back — D365 refuses their rows."""
    per_vendor = Counter((i["supplier"]["id"], i["account-type"]["name"]) for i in invoices)
    unmappable = set(sandboxes.seed.expectations["unmappable_invoices"])
    chosen: list[int] = []
    for invoice in invoices:
        pair = (invoice["supplier"]["id"], invoice["account-type"]["name"])
        le = CHARTS.get(pair[1])
        if per_vendor[pair] != 1 or le is None or invoice["id"] in unmappable or len(chosen) == 3:
            continue
        supplier = services.supplier(invoice["supplier"]["id"])
        assert supplier is not None
        assert VendorSync(services).ensure(supplier, le).action in (Action.CREATED, Action.ALREADY_PRESENT)
        vendor = services.ledger.get("vendor", supplier["id"], scope=le)
        assert vendor is not None and vendor.d365_key
        key = vendor.d365_key
        sandboxes.d365.state.delete("VendorsV2", key)
        chosen.append(invoice["id"])
    assert len(chosen) == 3
    return chosen


def test_bad_rows_end_failed_with_reasons_the_rest_booked_and_a_rerun_imports_nothing(services, sandboxes):
    invoices = approved_invoices(sandboxes)[:80]  # 3 refused of 80: ~4 %
    services.store.stage("invoice", invoices, run_id="run-1")
    bad = plant_unknown_vendors(services, sandboxes, invoices)
    unmappable = set(sandboxes.seed.expectations["unmappable_invoices"]) & {i["id"] for i in invoices}

    bulk = route(services)
    report = bulk.sync_many(invoices)

    by_action = {a: {o.coupa_id for o in report.outcomes if o.action == a} for a in Action}
    assert by_action[Action.FAILED] == set(bad)
    assert by_action[Action.QUARANTINED] == unmappable
    assert by_action[Action.CREATED] == {i["id"] for i in invoices} - set(bad) - unmappable
    assert bulk.summary.redriven == 3 and bulk.summary.packaged == len(invoices) - len(unmappable)
    assert set(bulk.summary.statuses.values()) <= {"Succeeded", "PartiallySucceeded"}
    assert "PartiallySucceeded" in bulk.summary.statuses.values()
    ledger = services.ledger
    for coupa_id in bad:
        row = ledger.get("invoice", coupa_id)
        # as the OData path leaves a refused create: "writing" (its lookups settle it) with the problem
        assert (row.state, row.problem) == ("writing", "failed") and "'Vendors'" in row.reason, row.reason
        assert not row.coupa_notified and row.alerted_reason == row.reason
        history = ledger.history("invoice", coupa_id)
        actions = [h["action"] for h in history]
        assert actions.index("dmf_failed") < actions.index("create")  # then the OData re-drive, refused too
        dmf_reason = history[actions.index("dmf_failed")]["error"]
        assert "Vendor invoice header row" in dmf_reason and "'Vendors'" in dmf_reason, dmf_reason
    for coupa_id in unmappable:
        assert ledger.get("invoice", coupa_id).state == "quarantined" and ledger.get("invoice", coupa_id).reason
    written = ledger.rows("invoice", ["written"])
    assert len(written) == len(by_action[Action.CREATED]) and all(r.coupa_notified for r in written)
    refs = [h["HeaderReference"] for h in sandboxes.d365.state.records("VendorInvoiceHeaders")]
    assert sorted(refs) == sorted(f"COUPA-{i}" for i in by_action[Action.CREATED])
    history = Counter(
        r["document-id"]
        for r in sandboxes.coupa.state.records("integration_history_records")
        if r["status"] == "Success" and r["document-type"] == "InvoiceHeader"
    )
    assert history == Counter(by_action[Action.CREATED])

    # the same window again: no second import, nothing new lands, Coupa is told nothing twice
    imported, seq = imports(sandboxes), last_seq(sandboxes)
    headers = len(sandboxes.d365.state.records("VendorInvoiceHeaders"))
    lines = len(sandboxes.d365.state.records("VendorInvoiceLines"))
    history_count = len(sandboxes.coupa.state.records("integration_history_records"))
    again = route(as_run(services, "run-2"))
    rerun = again.sync_many(invoices)
    assert imports(sandboxes) == imported and again.summary.executions == []
    assert len(sandboxes.d365.state.records("VendorInvoiceHeaders")) == headers
    assert len(sandboxes.d365.state.records("VendorInvoiceLines")) == lines
    assert len(sandboxes.coupa.state.records("integration_history_records")) == history_count
    counts = Counter(o.action for o in rerun.outcomes)
    assert counts == Counter(
        {Action.ALREADY_PRESENT: len(by_action[Action.CREATED]), Action.FAILED: 3, Action.QUARANTINED: len(unmappable)}
    )
    # the only D365 writes: the failed documents' retry through OData (one $batch each, refused again)
    retried = writes(sandboxes, seq)
    assert len(retried) == 3 and all(e.path.endswith("/$batch") for e in retried)


def test_a_run_killed_after_import_is_resumed_by_the_next_run_and_never_imported_twice(services, sandboxes):
    invoices = [
        i for i in approved_invoices(sandboxes) if i["id"] not in sandboxes.seed.expectations["unmappable_invoices"]
    ][:30]
    services.store.stage("invoice", invoices, run_id="run-1")
    with pytest.raises(Crash):
        route(services, crash_on_wait=True).sync_many(invoices)
    recorded = DmfExecutions(services.ledger.engine).unfinished("invoice")
    assert recorded and all(e.stage == ExecutionStage.SUBMITTED for e in recorded)
    assert {r.state for r in services.ledger.rows("invoice")} == {"writing"}
    first_imports = imports(sandboxes)
    assert first_imports == len(recorded)

    # the next run (Dagster says run-1 ended, so its claims are stale)
    ledger = Ledger(services.ledger.engine, is_run_finished=lambda run_id: run_id == "run-1")
    run2 = as_run(services, "run-2", ledger=ledger)
    bulk = route(run2)
    report = SyncReport()
    settled = bulk.resume(report)
    # the execution that was running when the process died; the documents of the legal entities not
    # reached yet were left "writing" without an import, so the OData path's lookups settle them
    assert settled == {c for e in recorded for c in e.coupa_ids} and 0 < len(settled) < len(invoices)
    assert sorted(bulk.summary.resumed) == sorted(e.execution_id for e in recorded)
    assert {o.action for o in report.outcomes} == {Action.CREATED}
    rerun = bulk.sync_many([i for i in invoices if i["id"] not in settled], report)
    assert imports(sandboxes) == first_imports  # resumed, not imported again
    assert {r.state for r in ledger.rows("invoice")} == {"written"}
    assert all(r.coupa_notified for r in ledger.rows("invoice"))
    assert not DmfExecutions(ledger.engine).unfinished("invoice")
    refs = Counter(h["HeaderReference"] for h in sandboxes.d365.state.records("VendorInvoiceHeaders"))
    assert refs == Counter(f"COUPA-{i['id']}" for i in invoices)
    assert Counter(o.action for o in rerun.outcomes) == Counter({Action.CREATED: len(invoices)})


def test_a_package_d365_refuses_outright_goes_through_odata_in_the_same_run(services, sandboxes):
    invoices = [
        i for i in approved_invoices(sandboxes) if i["id"] not in sandboxes.seed.expectations["unmappable_invoices"]
    ][:5]
    services.store.stage("invoice", invoices, run_id="run-1")
    bulk = DmfRoute(InvoiceSync(services), data_project="No such project", dmf=fast_dmf(services))
    report = bulk.sync_many(invoices)
    assert Counter(o.action for o in report.outcomes) == Counter({Action.CREATED: len(invoices)})
    assert set(bulk.summary.statuses.values()) == {"refused"}
    executions = DmfExecutions(services.ledger.engine)
    assert not executions.unfinished("invoice")
    recorded = [executions.get(e) for e in bulk.summary.executions]
    assert all(r is not None and r.stage == ExecutionStage.ABANDONED for r in recorded)
    assert {r.state for r in services.ledger.rows("invoice")} == {"written"}
    assert len(sandboxes.d365.state.records("VendorInvoiceHeaders")) == len(invoices)
    # the vendors the refused package carried were created by the OData re-drive of their documents
    packaged = services.ledger.audit_count(doc_type="vendor", action="dmf_packaged")
    assert packaged >= 1 and services.ledger.audit_count(doc_type="vendor", action="create") == packaged
    for invoice in invoices:
        vendor = services.ledger.get("vendor", invoice["supplier"]["id"], scope=CHARTS[invoice["account-type"]["name"]])
        assert vendor is not None and vendor.state == "written"
        assert sandboxes.d365.state.get("VendorsV2", vendor.d365_key) is not None


def test_a_dmf_run_makes_a_constant_number_of_d365_requests_whatever_the_number_of_invoices(services, sandboxes):
    """Bulk, not per document: lookups, referenced PO lines and read-back are one query per entity set
    for all legal entities; per legal entity only the package's write URL, blob PUT and import."""
    invoices = approved_invoices(sandboxes)
    services.store.stage("invoice", invoices, run_id="run-1")
    vendors = VendorSync(services)  # the vendors as the master-data run leaves them
    for invoice in invoices:
        le = CHARTS.get(invoice["account-type"]["name"])
        supplier = services.supplier(invoice["supplier"]["id"])
        if le is not None and supplier is not None:
            vendors.ensure(supplier, le)
    seq = last_seq(sandboxes)

    bulk = route(services)
    report = bulk.sync_many(invoices)

    created = [o for o in report.outcomes if o.action == Action.CREATED]
    legal_entities = {o.legal_entity for o in created}
    assert len(created) > 60 and len(legal_entities) == 3 and len(bulk.summary.executions) == 3
    requests = [e for e in sandboxes.d365.log.snapshot() if e.seq > seq and not e.path.endswith("Status")]
    kinds = Counter(
        e.path.rsplit(".", 1)[-1]
        if "DataManagement" in e.path
        else ("PUT blob" if "/_blob/" in e.path else f"{e.method} {e.path.rsplit('/', 1)[-1]}")
        for e in requests
    )
    assert kinds == Counter(
        {
            "GetAzureWriteUrl": 3,
            "PUT blob": 3,
            "ImportFromPackage": 3,
            "GET VendorInvoiceHeaders": 2,  # lookup by natural key or HeaderReference; read-back
            "GET VendorInvoiceLines": 1,  # read-back
            "GET VendInvoiceJourBiEntities": 1,  # posted with that natural key
            "GET PurchaseOrderLinesV2": 1,  # the PO lines the invoices reference
        }
    ), kinds


def test_vendors_d365_lacks_go_in_the_package_ahead_of_the_documents_not_in_batches(services, sandboxes):
    """A first load into legal entities whose vendors D365 does not hold yet: the vendors travel in the
    same package ("Vendors V2", imported before the headers), so the run sends no vendor write of its
    own; once read back they are written in the ledger with an audit, as an OData create leaves them."""
    invoices = [
        i for i in approved_invoices(sandboxes) if i["id"] not in sandboxes.seed.expectations["unmappable_invoices"]
    ]
    services.store.stage("invoice", invoices, run_id="run-1")
    needed = {
        (invoice["supplier"]["id"], CHARTS[invoice["account-type"]["name"]])
        for invoice in invoices
        if invoice["account-type"]["name"] in CHARTS
    }
    before = {(v["dataAreaId"], v["VendorAccountNumber"]) for v in sandboxes.d365.state.records("VendorsV2")}
    seq = last_seq(sandboxes)

    bulk = route(services)
    report = bulk.sync_many(invoices)

    assert Counter(o.action for o in report.outcomes) == Counter({Action.CREATED: len(invoices)})
    # the only write besides the packages: the vendors D365 holds with other values, one $batch of PATCHes
    [updates] = writes(sandboxes, seq)
    assert updates.path.endswith("/$batch") and "POST " not in updates.body
    assert updates.body.count("PATCH ") == updates.body.count("VendorsV2(") >= 1
    requests = [e for e in sandboxes.d365.log.snapshot() if e.seq > seq and not e.path.endswith("Status")]
    assert Counter(f"{e.method} {e.path.rsplit('/', 1)[-1]}" for e in requests if "VendorsV2" in e.path) == Counter(
        {"GET VendorsV2": 1}  # what D365 holds of the run's vendors; a packaged vendor is known to have landed
    )  # when a header naming it did (D365 refuses a header whose vendor it lacks): no read-back of its own

    ledger = services.ledger
    created = []
    for supplier_id, le in needed:
        row = ledger.get("vendor", supplier_id, scope=le)
        assert row is not None and row.state == "written" and row.claimed_by is None, (supplier_id, le, row)
        key = (row.d365_key["dataAreaId"], row.d365_key["VendorAccountNumber"])
        assert sandboxes.d365.state.get("VendorsV2", row.d365_key) is not None
        if key not in before:
            created.append(supplier_id)
            history = [h["action"] for h in ledger.history("vendor", supplier_id) if h["scope"] == le]
            assert history == ["dmf_packaged", "create"], history
    assert services.ledger.audit_count(doc_type="vendor", action="dmf_packaged") == len(created)
    assert created, "the seed should leave some vendors to create"
    vendors = Counter((v["dataAreaId"], v["VendorAccountNumber"]) for v in sandboxes.d365.state.records("VendorsV2"))
    assert max(vendors.values()) == 1


def strip_line_entity_map(package: DmfPackage) -> DmfPackage:
    """The package without the invoice lines' EntityMapList: D365 imports zero lines and says Succeeded."""

    def edit(name: str, data: bytes) -> bytes:
        if name != "Manifest.xml":
            return data
        data, n = re.subn(
            rb"<EntityMapList>(?:(?!</EntityMapList>).)*</EntityMapList>(\s*<EntityName>Vendor invoice line<)",
            rb"\1",
            data,
            flags=re.S,
        )
        assert n == 1
        return data

    return rewrite(package, edit)


def test_a_succeeded_import_reads_headers_back_in_full_and_spot_checks_the_lines(services, sandboxes):
    """Succeeded with no row error: every header is read back (it gives each document its D365 key), the
    lines only for a sample of documents per package — enough to catch the one silent failure, an entity
    D365 imported zero rows of — so the read-back costs one lines request however many lines were sent."""
    invoices = [
        i for i in approved_invoices(sandboxes) if i["id"] not in sandboxes.seed.expectations["unmappable_invoices"]
    ]
    services.store.stage("invoice", invoices, run_id="run-1")
    sandboxes.d365.config.page_size = 100  # a full read of the lines would take several pages
    seq = last_seq(sandboxes)

    bulk = route(services)
    report = bulk.sync_many(invoices)

    assert Counter(o.action for o in report.outcomes) == Counter({Action.CREATED: len(invoices)})
    assert set(bulk.summary.statuses.values()) == {"Succeeded"}
    sent = sum(len(i["invoice-lines"]) for i in invoices)
    assert len(sandboxes.d365.state.records("VendorInvoiceLines")) == sent > 300
    line_reads = [e for e in sandboxes.d365.log.snapshot() if e.seq > seq and e.path.endswith("/VendorInvoiceLines")]
    assert len(line_reads) == 1, [e.query for e in line_reads]
    assert all(r.state == "written" for r in services.ledger.rows("invoice"))


def test_lines_d365_silently_left_out_are_caught_by_the_spot_check_and_re_driven(services, sandboxes):
    """The trap one level down: the lines entity has no mapping, D365 imports the headers, no line and
    says Succeeded. The spot check finds lines missing, the lines are read back in full, every document
    is marked failed with the reason and completed through OData (its header found, its lines added)."""
    invoices = [
        i for i in approved_invoices(sandboxes) if i["id"] not in sandboxes.seed.expectations["unmappable_invoices"]
    ][:20]
    services.store.stage("invoice", invoices, run_id="run-1")

    bulk = route(services, rewrite=strip_line_entity_map)
    report = bulk.sync_many(invoices)

    assert set(bulk.summary.statuses.values()) == {"Succeeded"}  # what D365 says
    assert bulk.summary.redriven == len(invoices)
    # the OData path finds each header and adds its lines
    assert Counter(o.action for o in report.outcomes) == Counter({Action.REPAIRED: len(invoices)})
    for invoice in invoices:
        actions = [h["action"] for h in services.ledger.history("invoice", invoice["id"])]
        assert "dmf_failed" in actions, actions
        reason = services.ledger.history("invoice", invoice["id"])[actions.index("dmf_failed")]["error"]
        assert "entity mapping" in reason, reason
        assert services.ledger.get("invoice", invoice["id"]).state == "written"
    lines = Counter(line["HeaderReference"] for line in sandboxes.d365.state.records("VendorInvoiceLines"))
    assert lines == Counter({f"COUPA-{i['id']}": len(i["invoice-lines"]) for i in invoices})
    headers = Counter(h["HeaderReference"] for h in sandboxes.d365.state.records("VendorInvoiceHeaders"))
    assert headers == Counter({f"COUPA-{i['id']}": 1 for i in invoices})


def test_a_packaged_vendor_no_landed_header_names_is_read_back_before_the_ledger_records_it(services, sandboxes):
    """A vendor travels in the package but every header naming it fails (here: its account misspelt in
    the header file): nothing vouches for the vendor, so its row is read back — it landed, the ledger
    records it — and its invoices are re-driven through OData against it."""
    invoices = [
        i for i in approved_invoices(sandboxes) if i["id"] not in sandboxes.seed.expectations["unmappable_invoices"]
    ]
    services.store.stage("invoice", invoices, run_id="run-1")
    misspelt: dict[str, str] = {}  # legal entity -> vendor account the headers misspell

    def misspell(package: DmfPackage) -> DmfPackage:
        vendors = package.entity("VendorsV2")
        if vendors is None:
            return package
        account = str(vendors.keys[0][0])
        misspelt[package.legal_entity] = account

        def edit(name: str, data: bytes) -> bytes:
            if name != "Vendor invoice header.csv":
                return data
            rows = list(csv.reader(io.StringIO(data.decode("utf-16"), newline="")))
            column = rows[0].index("INVOICEACCOUNT")
            for row in rows[1:]:
                if row[column] == account:
                    row[column] = account + "X"
            text = io.StringIO(newline="")
            csv.writer(text, lineterminator="\r\n").writerows(rows)
            return b"\xff\xfe" + text.getvalue().encode("utf-16-le")

        return rewrite(package, edit)

    seq = last_seq(sandboxes)
    bulk = route(services, rewrite=misspell)
    report = bulk.sync_many(invoices)

    assert misspelt, "the seed should leave vendors to create"
    assert Counter(o.action for o in report.outcomes) == Counter({Action.CREATED: len(invoices)})
    redriven = [
        i["id"] for i in invoices if "dmf_failed" in [h["action"] for h in services.ledger.history("invoice", i["id"])]
    ]
    assert len(redriven) == bulk.summary.redriven >= len(misspelt)
    requests = [e for e in sandboxes.d365.log.snapshot() if e.seq > seq and e.path.endswith("/VendorsV2")]
    assert [e.method for e in requests] == ["GET", "GET"]  # what D365 holds; the vendors in doubt read back
    for le, account in misspelt.items():
        [row] = [
            r
            for r in services.ledger.rows("vendor")
            if r.d365_key.get("VendorAccountNumber") == account and r.scope == le
        ]
        assert row.state == "written", row
        history = [h["action"] for h in services.ledger.history("vendor", row.coupa_id) if h["scope"] == le]
        assert history == ["dmf_packaged", "create"], history
    vendors = Counter((v["dataAreaId"], v["VendorAccountNumber"]) for v in sandboxes.d365.state.records("VendorsV2"))
    assert max(vendors.values()) == 1
