"""Issue 3 acceptance: approved invoices into D365 exactly once, against the sandboxes over HTTP."""

from datetime import UTC
from decimal import Decimal

import yaml

from coupa_d365_pipeline.mapping.config import example_mapping_path
from coupa_d365_pipeline_tests.flow.conftest import ledger
from coupa_d365_pipeline_tests.flow.helpers import (
    CHARTS,
    EDIT_DAY,
    FIRST,
    approved,
    d365_invoices,
    d365_writes,
    duplicates,
    expected_display,
    last_seq,
    lines_of,
    metadata,
    run_documents,
    run_master,
)


def test_every_mappable_approved_invoice_exists_once_field_by_field(sandboxes, synced, sandbox_env):
    seed = sandboxes.seed
    unmappable = set(seed.expectations["unmappable_invoices"])
    suppliers = {s["id"]: s for s in seed.coupa_suppliers}
    booked = d365_invoices(sandboxes)
    assert not duplicates(sandboxes)
    checked = 0
    for invoice in approved(seed):
        le = CHARTS.get(invoice["account-type"]["name"])
        vendor = suppliers[invoice["supplier"]["id"]]["number"]
        key = (le, vendor, invoice["invoice-number"])
        if invoice["id"] in unmappable:
            assert not any(k[2] == invoice["invoice-number"] and k[1] == vendor for k in booked), invoice["id"]
            continue
        assert key in booked, f"invoice {invoice['id']} {key} missing in D365"
        [header] = booked[key]
        assert header["Currency"] == invoice["currency"]["code"]
        assert Decimal(str(header["ImportedAmount"])) == Decimal(invoice["gross-total"])
        assert header["InvoiceDate"].startswith(invoice["invoice-date"][:10])
        lines = lines_of(sandboxes, le, header["HeaderReference"])
        assert len(lines) == len(invoice["invoice-lines"])
        for source, line in zip(sorted(invoice["invoice-lines"], key=lambda ln: ln["line-num"]), lines, strict=True):
            account = source["account"]
            assert Decimal(str(line["InvoiceLineNumber"])) == source["line-num"]
            assert Decimal(str(line["ReceiveNow"])) == Decimal(source["quantity"])
            assert Decimal(str(line["UnitPrice"])) == Decimal(source["price"])
            assert Decimal(str(line["Amount"])) == Decimal(source["total"])
            assert line["MainAccountDisplayValue"] == account["segment-1"]
            assert line["DimensionDisplayValue"] == expected_display(
                [account.get("segment-2") or "", account.get("segment-3") or "", account.get("segment-4") or ""]
            )
            assert line["LineDescription"] == source["description"]
            if source.get("item"):
                assert line["ItemNumber"] == source["item"]["item-number"]
        checked += 1
    assert checked == len(approved(seed)) - len(unmappable) > 50
    # credit notes keep their sign; the apostrophe invoice number is intact
    credit = [i for i in approved(seed) if i.get("is-credit-note") and i["id"] not in unmappable]
    assert credit and all(
        Decimal(
            str(
                booked[
                    (CHARTS[i["account-type"]["name"]], suppliers[i["supplier"]["id"]]["number"], i["invoice-number"])
                ][0]["ImportedAmount"]
            )
        )
        < 0
        for i in credit
    )


def test_quarantined_have_reasons_and_the_check_lists_them(sandboxes, synced, sandbox_env):
    unmappable = sandboxes.seed.expectations["unmappable_invoices"]
    rows = {r.coupa_id: r for r in ledger(sandbox_env).rows("invoice", ["quarantined"])}
    assert set(rows) == set(unmappable) & {i["id"] for i in approved(sandboxes.seed)}
    assert all(r.reason for r in rows.values())
    meta = metadata(synced, "d365/vendor_invoices")
    assert meta["quarantined"] == len(rows) and meta["failed"] == 0
    assert str(next(iter(rows))) in meta["problems"]
    check = [c for c in synced.get_asset_check_evaluations() if c.check_name == "vendor_invoices_not_stuck"][0]
    assert check.passed is False and f"{len(rows)} quarantined" in check.description
    # Coupa heard about each quarantine once, as an alert
    alerts = [
        r
        for r in sandboxes.coupa.state.records("integration_history_records")
        if r.get("status") == "Error" and r.get("document-type") == "InvoiceHeader"
    ]
    assert sorted(r["document-id"] for r in alerts) == sorted(rows)


def test_coupa_is_told_exported_and_booked(sandboxes, synced, sandbox_env):
    written = ledger(sandbox_env).rows("invoice", ["written"])
    assert written
    history = {}
    for record in sandboxes.coupa.state.records("integration_history_records"):
        if record.get("status") == "Success" and record.get("document-type") == "InvoiceHeader":
            history.setdefault(record["document-id"], []).append(record)
    for row in written:
        invoice = sandboxes.coupa.state.get("invoices", row.coupa_id)
        assert invoice["exported"] is True
        [record] = history[row.coupa_id]
        assert row.d365_key["HeaderReference"] in record["responses"][0]["response-message"]
    export_puts = [e for e in sandboxes.coupa.log.snapshot() if e.method == "PUT" and "exported=true" in e.query]
    assert all(e.body in ("", "null") for e in export_puts)  # its own request, no body


def test_three_more_runs_write_nothing_new(sandboxes, synced, sandbox_env, instance):
    before = {k: len(v) for k, v in d365_invoices(sandboxes).items()}
    lines_before = len(sandboxes.d365.state.records("VendorInvoiceLines"))
    history_before = len(sandboxes.coupa.state.records("integration_history_records"))
    seq = last_seq(sandboxes)
    for _ in range(3):
        result = run_documents(instance)
        meta = metadata(result, "d365/vendor_invoices")
        assert meta["created"] == 0 and meta["updated"] == 0 and meta["failed"] == 0
    assert {k: len(v) for k, v in d365_invoices(sandboxes).items()} == before
    assert len(sandboxes.d365.state.records("VendorInvoiceLines")) == lines_before
    assert d365_writes(sandboxes, seq) == []
    assert len(sandboxes.coupa.state.records("integration_history_records")) == history_before


def test_posted_invoices_are_never_modified(sandboxes, synced, sandbox_env, instance):
    rows = ledger(sandbox_env).rows("invoice", ["written"])[:4]
    posted_keys = []
    for row in rows:
        sandboxes.d365.state.post_invoice(row.d365_key["dataAreaId"], row.d365_key["HeaderReference"])
        posted_keys.append(row.d365_key["HeaderReference"])
    changed, voided = rows[0].coupa_id, rows[1].coupa_id
    invoice = sandboxes.coupa.state.get("invoices", changed)
    sandboxes.coupa.state.touch(
        "invoices",
        changed,
        **{"invoice-lines": [dict(ln, description=ln["description"] + " (edited)") for ln in invoice["invoice-lines"]]},
    )
    sandboxes.coupa.state.touch("invoices", voided, status="voided")
    seq = last_seq(sandboxes)
    result = run_documents(instance, FIRST, EDIT_DAY)
    assert result.success
    touched = [e for e in d365_writes(sandboxes, seq) if any(ref in e.path or ref in e.body for ref in posted_keys)]
    assert touched == []  # no PATCH/DELETE/POST anywhere near a posted invoice
    states = {r.coupa_id: r for r in ledger(sandbox_env).rows("invoice")}
    assert states[changed].state == "changed_after_post" and "never modified" in states[changed].reason
    assert states[voided].state == "void_blocked_posted" and "credit note" in states[voided].reason
    meta = metadata(result, "d365/vendor_invoices")
    assert meta["changed_after_post"] == 1 and meta["void_blocked_posted"] == 1


def test_voided_pending_invoice_is_removed(sandboxes, synced, sandbox_env, instance):
    row = ledger(sandbox_env).rows("invoice", ["written"])[5]
    sandboxes.coupa.state.touch("invoices", row.coupa_id, status="voided")
    result = run_documents(instance, FIRST, EDIT_DAY)
    assert metadata(result, "d365/vendor_invoices")["voided"] == 1
    refs = {h["HeaderReference"] for h in sandboxes.d365.state.records("VendorInvoiceHeaders")}
    assert row.d365_key["HeaderReference"] not in refs
    assert not lines_of(sandboxes, row.d365_key["dataAreaId"], row.d365_key["HeaderReference"])
    assert ledger(sandbox_env).get("invoice", row.coupa_id).state == "voided"


def test_header_without_lines_is_completed_not_duplicated(sandbox_env, sandboxes, instance, mastered):
    """A header left by an interrupted sequential write is adopted and completed on the next run."""
    suppliers = {s["id"]: s for s in sandboxes.seed.coupa_suppliers}
    unmappable = set(sandboxes.seed.expectations["unmappable_invoices"])
    target = next(
        i
        for i in approved(sandboxes.seed)
        if i["id"] not in unmappable
        and len(i["invoice-lines"]) > 1
        and CHARTS.get(i["account-type"]["name"]) == "usmf"
        and any(
            v["VendorAccountNumber"] == suppliers[i["supplier"]["id"]]["number"]
            for v in sandboxes.seed.d365["VendorsV2"]
            if v["dataAreaId"] == "usmf"
        )
    )
    vendor = suppliers[target["supplier"]["id"]]["number"]
    sandboxes.d365.state.create(
        "VendorInvoiceHeaders",
        {
            "dataAreaId": "usmf",
            "HeaderReference": "HALF-1",
            "InvoiceNumber": target["invoice-number"],
            "InvoiceAccount": vendor,
            "Currency": target["currency"]["code"],
            "ImportedAmount": target["gross-total"],
        },
    )
    assert run_documents(instance).success
    headers = d365_invoices(sandboxes)[("usmf", vendor, target["invoice-number"])]
    assert [h["HeaderReference"] for h in headers] == ["HALF-1"]
    assert len(lines_of(sandboxes, "usmf", "HALF-1")) == len(target["invoice-lines"])
    row = ledger(sandbox_env).get("invoice", target["id"])
    assert row.state == "written" and row.d365_key["HeaderReference"] == "HALF-1"
    assert any(h["action"] == "complete_line" for h in ledger(sandbox_env).history("invoice", target["id"]))


def test_quarantined_invoice_is_booked_once_the_mapping_is_fixed(
    sandbox_env, sandboxes, synced, instance, tmp_path, monkeypatch
):
    ca_plant = [
        i
        for i, reason in sandboxes.seed.expectations["unmappable_invoices"].items()
        if reason == "account_type_unmapped" and sandboxes.seed.coupa_invoices[i - 1]["status"] == "approved"
    ]
    assert ca_plant == [20]  # the seed's one approved CA Plant invoice
    mapping = yaml.safe_load(example_mapping_path().read_text())
    mapping["legal_entities"]["CA Plant"] = "usmf"
    fixed = tmp_path / "mapping.yaml"
    fixed.write_text(yaml.safe_dump(mapping))
    monkeypatch.setenv("COUPA_D365_MAPPING_FILE", str(fixed))
    result = run_documents(instance, "2026-11-01", "2026-11-01")  # any partition: open rows are retried
    meta = metadata(result, "d365/vendor_invoices")
    unmappable = sandboxes.seed.expectations["unmappable_invoices"]
    in_window = [i for i in unmappable if sandboxes.seed.coupa_invoices[i - 1]["updated-at"].startswith("2026-11-01")]
    assert meta["retried_from_earlier_runs"] == len(unmappable) - len(in_window)  # every open row, once
    assert meta["created"] == 1
    invoice = sandboxes.coupa.state.get("invoices", 20)
    supplier = next(s for s in sandboxes.seed.coupa_suppliers if s["id"] == invoice["supplier"]["id"])
    row = ledger(sandbox_env).get("invoice", 20)
    assert (row.state, row.problem, row.reason) == ("written", None, None)
    [header] = d365_invoices(sandboxes)[("usmf", supplier["number"], invoice["invoice-number"])]
    assert header["HeaderReference"] == row.d365_key["HeaderReference"] == "COUPA-20"
    assert Decimal(str(header["ImportedAmount"])) == Decimal(invoice["gross-total"])
    assert len(lines_of(sandboxes, "usmf", "COUPA-20")) == len(invoice["invoice-lines"])
    assert invoice["exported"] is True
    success = [
        r
        for r in sandboxes.coupa.state.records("integration_history_records")
        if r["document-id"] == 20 and r["document-type"] == "InvoiceHeader" and r["status"] == "Success"
    ]
    assert len(success) == 1 and "COUPA-20" in success[0]["responses"][0]["response-message"]
    assert not duplicates(sandboxes)


def test_audit_trail_and_replay_use_the_same_dedupe(sandbox_env, sandboxes, synced, instance):
    from coupa_d365_pipeline.definitions import defs

    row = ledger(sandbox_env).rows("invoice", ["written"])[0]
    history = ledger(sandbox_env).history("invoice", row.coupa_id)
    create = [h for h in history if h["action"] == "create"][0]
    assert create["http_status"] == 201 and create["entity"] == "VendorInvoiceHeaders"
    assert len(create["payload_sha256"]) == 64 and create["run_id"]
    seq = last_seq(sandboxes)
    result = defs.resolve_job_def("replay_invoices_job").execute_in_process(
        instance=instance, run_config={"ops": {"replay_invoices": {"config": {"coupa_ids": [row.coupa_id]}}}}
    )
    assert result.success
    assert result.output_for_node("replay_invoices") == {"already_present": 1}
    assert d365_writes(sandboxes, seq) == []
    # "everything failed since T" picks up the quarantined ones and re-drives them (still unmappable)
    result = defs.resolve_job_def("replay_invoices_job").execute_in_process(
        instance=instance, run_config={"ops": {"replay_invoices": {"config": {"failed_since": "2020-01-01T00:00:00Z"}}}}
    )
    assert result.output_for_node("replay_invoices") == {"quarantined": 5}  # the seed's five unmappable ones


def test_lost_batch_answer_is_settled_by_lookup(sandbox_env, sandboxes, instance, mastered):
    from coupa_d365_pipeline.sandbox.faults import ScriptedFault

    # the run books the seed's issued POs first, then the invoices (20 changesets per $batch): the answers
    # to the first three invoice batches are lost after D365 applied them
    sandboxes.d365.injector.script(
        ScriptedFault(
            kind="drop_after", method="POST", path_regex=r"\$batch", body_regex="VendorInvoiceHeaders", times=3
        )
    )
    result = run_documents(instance)
    assert result.success
    dropped = [e for e in sandboxes.d365.log.snapshot() if e.injected == "drop_after"]
    assert len(dropped) == 3 and all(e.path.endswith("$batch") for e in dropped)  # the faults fired
    assert not duplicates(sandboxes)
    unmappable = set(sandboxes.seed.expectations["unmappable_invoices"])
    assert len(d365_invoices(sandboxes)) == len([i for i in approved(sandboxes.seed) if i["id"] not in unmappable])
    import re

    lost = {int(m) for e in dropped for m in re.findall(r"COUPA-(\d+)", e.body)}
    invoice_batches = [e for e in dropped if "VendorInvoiceHeaders" in e.body]
    assert len(invoice_batches) == 3 and len(lost) == 60  # three batches of 20 invoices lost their answer
    for coupa_id in lost:  # each lost answer was settled by the lookup: booked once, never resent
        row = ledger(sandbox_env).get("invoice", coupa_id)
        assert row.state == "written"
        assert [h["action"] for h in ledger(sandbox_env).history("invoice", coupa_id)].count("create_ambiguous") == 1
        assert (
            sum(
                bool(re.search(rf"COUPA-{coupa_id}\b", e.body)) and e.path.endswith("$batch")
                for e in sandboxes.d365.log.snapshot()
            )
            == 1
        )


def test_supplier_changes_update_the_vendor_in_every_legal_entity_never_a_second_one(
    sandboxes, synced, instance, sandbox_env
):
    vendors_before = len(sandboxes.d365.state.records("VendorsV2"))
    rows = [r for r in ledger(sandbox_env).rows("vendor", ["written"])]
    supplier_id = rows[0].coupa_id
    legal_entities = {r.scope for r in rows if r.coupa_id == supplier_id}
    sandboxes.coupa.state.touch("suppliers", supplier_id, name="Renamed Industrial GmbH", status="inactive")
    result = run_master(instance)
    assert result.success
    meta = metadata(result, "d365/vendors")
    assert meta["updated"] == len(legal_entities) and meta["failed"] == 0
    account = rows[0].vendor_account
    for le in legal_entities:
        [vendor] = [
            v
            for v in sandboxes.d365.state.records("VendorsV2")
            if v["dataAreaId"] == le and v["VendorAccountNumber"] == account
        ]
        assert vendor["VendorOrganizationName"] == "Renamed Industrial GmbH"
        assert vendor["OnHoldStatus"] == "All"
    # only vendors that were missing were added (suppliers used in a legal entity only by quarantined invoices)
    assert len(sandboxes.d365.state.records("VendorsV2")) == vendors_before + meta["created"]
    accounts = [(v["dataAreaId"], v["VendorAccountNumber"]) for v in sandboxes.d365.state.records("VendorsV2")]
    assert len(accounts) == len(set(accounts))


def test_vendor_write_failure_fails_the_invoice_and_the_next_run_recovers(
    sandbox_env, sandboxes, instance, monkeypatch
):
    from coupa_d365_pipeline.sandbox.d365.odata import ODataError
    from coupa_d365_pipeline.sandbox.faults import ScriptedFault

    # D365 refuses every vendor the run creates: the batched creates are refused part by part; each
    # vendor is then looked up and created alone, and that single POST fails with a 503
    real_create = sandboxes.d365.state.create

    def refusing_vendors(entity_set, body):
        if entity_set == "VendorsV2":
            raise ODataError(500, "Write failed for table row of type 'VendVendorV2Entity'.")
        return real_create(entity_set, body)

    monkeypatch.setattr(sandboxes.d365.state, "create", refusing_vendors)
    sandboxes.d365.injector.script(
        ScriptedFault(kind="5xx", method="POST", path_regex="^/data/VendorsV2$", status=503, times=1000)
    )
    vendors_before = len(sandboxes.d365.state.records("VendorsV2"))
    result = run_documents(instance)
    assert result.success
    meta = metadata(result, "d365/vendor_invoices")
    assert meta["failed"] > 0 and "vendor" in meta["problems"]
    failed = ledger(sandbox_env).rows("invoice", ["failed"])
    assert failed and all("vendor" in r.reason for r in failed)
    assert len(sandboxes.d365.state.records("VendorsV2")) == vendors_before
    assert [e for e in sandboxes.d365.log.snapshot() if e.method == "POST" and e.path == "/data/$batch"]
    vendor_posts = [e for e in sandboxes.d365.log.snapshot() if e.method == "POST" and e.path == "/data/VendorsV2"]
    assert vendor_posts and all(e.injected == "5xx" and e.status == 503 for e in vendor_posts)  # the fault fired
    monkeypatch.setattr(sandboxes.d365.state, "create", real_create)
    sandboxes.d365.injector.clear()
    assert run_documents(instance).success
    assert ledger(sandbox_env).rows("invoice", ["failed"]) == []
    assert not duplicates(sandboxes)


def _age_supplier_update(sandboxes, supplier_id: int, before: str, minutes: int, **changes) -> None:
    """A supplier saved in a long Coupa transaction: changed now, but its updated-at is older than the
    watermark the last read stored."""
    from datetime import datetime, timedelta

    record = sandboxes.coupa.state.touch("suppliers", supplier_id, **changes)
    stamp = datetime.fromisoformat(before.replace("Z", "+00:00")) - timedelta(minutes=minutes)
    record["updated-at"] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_supplier_committed_late_within_the_overlap_is_still_read(sandboxes, synced, instance, sandbox_env):
    from coupa_d365_pipeline.state.store import SyncStore

    watermark = SyncStore(sandbox_env["SYNC_DATABASE_URL"]).get_watermark("coupa.suppliers.updated_at")
    row = ledger(sandbox_env).rows("vendor", ["written"])[0]
    _age_supplier_update(sandboxes, row.coupa_id, watermark, 30, name="Late Commit Industrial")
    result = run_master(instance)
    assert result.success and metadata(result, "coupa/suppliers")["changed"] == 1
    vendor = sandboxes.d365.state.get("VendorsV2", {"dataAreaId": row.scope, "VendorAccountNumber": row.vendor_account})
    assert vendor["VendorOrganizationName"] == "Late Commit Industrial"


def test_nightly_full_supplier_read_catches_what_an_incremental_read_missed(sandboxes, synced, instance, sandbox_env):
    from coupa_d365_pipeline.definitions import defs
    from coupa_d365_pipeline.state.store import SyncStore

    watermark = SyncStore(sandbox_env["SYNC_DATABASE_URL"]).get_watermark("coupa.suppliers.updated_at")
    row = ledger(sandbox_env).rows("vendor", ["written"])[0]
    _age_supplier_update(sandboxes, row.coupa_id, watermark, 600, name="Very Late Industrial")
    assert metadata(run_master(instance), "coupa/suppliers")["changed"] == 0  # beyond the overlap
    from datetime import datetime

    import dagster as dg

    nightly = next(s for s in defs.schedules if s.name == "master_data_nightly_full")
    tick = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 30, 2, 5, tzinfo=UTC))
    [request] = nightly.evaluate_tick(tick).run_requests
    result = defs.resolve_job_def(request.job_name or "master_data_job").execute_in_process(
        instance=instance, run_config=request.run_config, raise_on_error=False
    )
    assert result.success and metadata(result, "coupa/suppliers")["changed"] == 1
    vendor = sandboxes.d365.state.get("VendorsV2", {"dataAreaId": row.scope, "VendorAccountNumber": row.vendor_account})
    assert vendor["VendorOrganizationName"] == "Very Late Industrial"
