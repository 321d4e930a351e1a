"""Issue 4 acceptance: purchase orders into D365, kept in step, against the sandboxes over HTTP."""

import copy
from decimal import Decimal

from coupa_d365_pipeline_tests.flow.conftest import ledger
from coupa_d365_pipeline_tests.flow.helpers import (
    CHARTS,
    EDIT_DAY,
    FIRST,
    d365_writes,
    expected_display,
    last_seq,
    lines_of,
    metadata,
    run_documents,
)

ALL_DAYS = (FIRST, EDIT_DAY)  # the seed's days and the day the tests edit documents


def d365_po(sandboxes, le, number):
    headers = [
        h
        for h in sandboxes.d365.state.records("PurchaseOrderHeadersV2")
        if h["dataAreaId"] == le and h["PurchaseOrderNumber"] == number
    ]
    lines = sorted(
        (
            ln
            for ln in sandboxes.d365.state.records("PurchaseOrderLinesV2")
            if ln["dataAreaId"] == le and ln["PurchaseOrderNumber"] == number
        ),
        key=lambda ln: int(ln["LineNumber"]),
    )
    return headers, lines


def written_po(sandboxes, sandbox_env, *, lines_at_least=2):
    suppliers = {s["id"]: s for s in sandboxes.seed.coupa_suppliers}
    for row in ledger(sandbox_env).rows("purchase_order", ["written"]):
        po = sandboxes.coupa.state.get("purchase_orders", row.coupa_id)
        if len(po["order-lines"]) >= lines_at_least:
            return row, po, suppliers[po["supplier"]["id"]]
    raise AssertionError("no written PO with enough lines")


def test_every_issued_mappable_po_exists_once_field_by_field(sandboxes, synced, sandbox_env):
    rows = {r.coupa_id: r for r in ledger(sandbox_env).rows("purchase_order")}
    suppliers = {s["id"]: s for s in sandboxes.seed.coupa_suppliers}
    headers = sandboxes.d365.state.records("PurchaseOrderHeadersV2")
    keys = [(h["dataAreaId"], h["PurchaseOrderNumber"]) for h in headers]
    assert len(keys) == len(set(keys))
    issued = [p for p in sandboxes.seed.coupa_purchase_orders if p["status"] == "issued"]
    checked = 0
    for po in issued:
        row = rows[po["id"]]
        le = CHARTS.get(po["order-lines"][0]["account"]["account-type"]["name"])
        if row.state == "quarantined":
            assert row.reason
            assert not d365_po(sandboxes, le, po["po-number"])[0]
            continue
        assert row.state == "written", (po["id"], row.state, row.reason)
        [header], lines = d365_po(sandboxes, le, po["po-number"])
        assert header["OrderVendorAccountNumber"] == suppliers[po["supplier"]["id"]]["number"]
        assert header["CurrencyCode"] == po["currency"]["code"]
        assert header["VendorOrderReference"] == po["po-number"]
        assert len(lines) == len(po["order-lines"])
        for source, line in zip(sorted(po["order-lines"], key=lambda ln: int(ln["line-num"])), lines, strict=True):
            account = source["account"]
            assert int(line["LineNumber"]) == int(source["line-num"])
            assert Decimal(str(line["OrderedPurchaseQuantity"])) == Decimal(source["quantity"])
            assert Decimal(str(line["PurchasePrice"])) == Decimal(source["price"])
            assert Decimal(str(line["LineAmount"])) == Decimal(source["total"])
            assert line["PurchaseUnitSymbol"].lower() == source["uom"]["code"].lower()
            assert line["MainAccountIdDisplayValue"] == account["segment-1"]
            assert line["DefaultLedgerDimensionDisplayValue"] == expected_display(
                [account.get("segment-2") or "", account.get("segment-3") or "", account.get("segment-4") or ""]
            )
            if source.get("item"):
                assert line["ItemNumber"] == source["item"]["item-number"]
            else:
                assert line["ProcurementProductCategoryName"]
        checked += 1
    assert checked == len(issued) == 162  # every issued PO of the seed maps
    written = [r for r in rows.values() if r.state == "written"]
    assert all(sandboxes.coupa.state.get("purchase_orders", r.coupa_id)["exported"] for r in written)


def test_re_runs_write_nothing_new(sandboxes, synced, instance):
    seq = last_seq(sandboxes)
    for _ in range(2):
        meta = metadata(run_documents(instance), "d365/purchase_orders")
        assert meta["created"] == 0 and meta["updated"] == 0
    assert [e for e in d365_writes(sandboxes, seq) if "PurchaseOrder" in e.path or "PurchaseOrder" in e.body] == []


def test_changed_po_is_reflected_and_a_received_line_change_is_reported(sandboxes, synced, sandbox_env, instance):
    row, po, _ = written_po(sandboxes, sandbox_env, lines_at_least=3)
    le, number = row.d365_key["dataAreaId"], row.d365_key["PurchaseOrderNumber"]
    lines = copy.deepcopy(sorted(po["order-lines"], key=lambda ln: int(ln["line-num"])))
    first, received_line, removed = lines[0], lines[1], lines[-1]
    # D365 receives line 2 fully; Coupa then raises quantities on lines 1 and 2, adds a line and removes the last
    sandboxes.d365.state.receive_po_line(le, number, int(received_line["line-num"]), Decimal(received_line["quantity"]))
    for line in (first, received_line):
        line["quantity"] = str(Decimal(line["quantity"]) + 5)
        line["total"] = str((Decimal(line["quantity"]) * Decimal(line["price"])).quantize(Decimal("0.01")))
    added = dict(
        copy.deepcopy(first), id=first["id"] + 100000, **{"line-num": str(max(int(ln["line-num"]) for ln in lines) + 1)}
    )
    new_lines = [ln for ln in lines if ln is not removed] + [added]
    sandboxes.coupa.state.touch("purchase_orders", po["id"], **{"order-lines": new_lines, "version": po["version"] + 1})
    result = run_documents(instance, *ALL_DAYS)
    meta = metadata(result, "d365/purchase_orders")
    assert meta["change_blocked"] == 1
    _, d365_lines = d365_po(sandboxes, le, number)
    by_number = {int(ln["LineNumber"]): ln for ln in d365_lines}
    assert Decimal(str(by_number[int(first["line-num"])]["OrderedPurchaseQuantity"])) == Decimal(first["quantity"])
    assert (
        Decimal(str(by_number[int(received_line["line-num"])]["OrderedPurchaseQuantity"]))
        == Decimal(received_line["quantity"]) - 5
    )  # received: not changed
    assert int(added["line-num"]) in by_number
    assert int(removed["line-num"]) not in by_number
    state = ledger(sandbox_env).get("purchase_order", po["id"])
    assert (
        state.state == "change_blocked" and f"line {int(received_line['line-num'])} has been received" in state.reason
    )
    alerts = [
        r
        for r in sandboxes.coupa.state.records("integration_history_records")
        if r.get("status") == "Error" and r["document-id"] == po["id"] and r["document-type"] == "OrderHeader"
    ]
    assert len(alerts) == 1


def test_cancelled_po_cancels_its_unreceived_lines(sandboxes, synced, sandbox_env, instance):
    row, po, _ = written_po(sandboxes, sandbox_env, lines_at_least=2)
    le, number = row.d365_key["dataAreaId"], row.d365_key["PurchaseOrderNumber"]
    kept = sorted(po["order-lines"], key=lambda ln: int(ln["line-num"]))[0]
    sandboxes.d365.state.receive_po_line(le, number, int(kept["line-num"]), Decimal(kept["quantity"]) / 2)
    sandboxes.coupa.state.touch("purchase_orders", po["id"], status="cancelled")
    result = run_documents(instance, *ALL_DAYS)
    assert metadata(result, "d365/purchase_orders")["cancelled"] == 1
    _, lines = d365_po(sandboxes, le, number)
    statuses = {int(ln["LineNumber"]): ln["PurchaseOrderLineStatus"] for ln in lines}
    assert statuses[int(kept["line-num"])] != "Canceled"
    assert all(s == "Canceled" for n, s in statuses.items() if n != int(kept["line-num"]))
    assert ledger(sandbox_env).get("purchase_order", po["id"]).state == "cancelled"


def test_po_backed_invoice_references_the_d365_po_line(sandboxes, synced, sandbox_env):
    written_pos = {
        (r.d365_key["dataAreaId"], r.d365_key["PurchaseOrderNumber"])
        for r in ledger(sandbox_env).rows("purchase_order", ["written"])
    }
    linked = 0
    for row in ledger(sandbox_env).rows("invoice", ["written"]):
        invoice = sandboxes.coupa.state.get("invoices", row.coupa_id)
        po_lines = [ln for ln in invoice["invoice-lines"] if ln.get("po-number")]
        if not po_lines or (row.d365_key["dataAreaId"], po_lines[0]["po-number"]) not in written_pos:
            continue
        d365_lines = {
            Decimal(str(ln["InvoiceLineNumber"])): ln
            for ln in lines_of(sandboxes, row.d365_key["dataAreaId"], row.d365_key["HeaderReference"])
        }
        for source in po_lines:
            line = d365_lines[Decimal(source["line-num"])]
            assert line["PurchaseOrder"] == source["po-number"]
            assert int(line["PurchLineNumber"]) == int(source["order-line-num"])
            linked += 1
    assert linked > 0
