"""Issue 12: the same partition range through DMF (D365_DMF_THRESHOLD=0) and through OData (the
default threshold) into two fresh sandbox pairs ends in the same D365, ledger and Coupa state."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import dagster as dg
import pytest

from coupa_d365_pipeline.sandbox.launch import start_sandboxes
from coupa_d365_pipeline.state.ledger import Ledger
from coupa_d365_pipeline.state.store import make_engine
from coupa_d365_pipeline_tests.flow.helpers import FIRST, metadata, run_documents, run_master

LAST = "2026-11-02"  # two of the seed's days (POs issued, closed, cancelled; invoices booked and quarantined)
ENTITY_SETS = ("PurchaseOrderHeadersV2", "PurchaseOrderLinesV2", "VendorInvoiceHeaders", "VendorInvoiceLines")
# what D365 stamps itself (record ids, etags, timestamps, numbers it assigns): not ours to compare
GENERATED = {"@odata.etag", "RecId", "CreatedDateTime", "ModifiedDateTime", "CreatedOn", "ModifiedOn", "SysRowVersion"}

pytestmark = pytest.mark.usefixtures("quick_dmf")


def _value(v: Any) -> Any:
    if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool):
        return Decimal(str(v)).normalize()
    return v


def d365_state(sandboxes) -> dict[str, list[dict[str, Any]]]:
    state = {}
    for entity_set in ENTITY_SETS:
        rows = [
            {k: _value(v) for k, v in r.items() if k not in GENERATED} for r in sandboxes.d365.state.records(entity_set)
        ]
        state[entity_set] = sorted(rows, key=lambda r: sorted((k, str(v)) for k, v in r.items()))
    return state


def ledger_state(database_url: str) -> dict[tuple[str, int], tuple[Any, ...]]:
    ledger = Ledger(make_engine(database_url))
    return {
        (doc_type, r.coupa_id): (
            r.state,
            r.problem,
            r.natural_key,
            r.d365_key,
            r.coupa_hash,
            r.payload_hash,
            r.coupa_notified,
            r.reason,
            r.attempts,
            r.claimed_by,
        )
        for doc_type in ("invoice", "purchase_order")
        for r in ledger.rows(doc_type)
    }


def coupa_state(sandboxes) -> tuple[set, set]:
    history = {
        (r["document-type"], r["document-id"], r["status"], r["responses"][0]["response-message"])
        for r in sandboxes.coupa.state.records("integration_history_records")
    }
    exported = {
        (resource, d["id"])
        for resource in ("invoices", "purchase_orders")
        for d in sandboxes.coupa.state.records(resource)
        if d.get("exported")
    }
    return history, exported


def test_dmf_and_odata_routes_give_the_same_end_state(
    sandboxes, sandbox_env, instance, seed_data, sandbox_options, tmp_path, monkeypatch
):
    monkeypatch.delenv("D365_DMF_THRESHOLD", raising=False)
    assert run_master(instance).success
    by_odata = run_documents(instance, FIRST, LAST)
    assert by_odata.success
    for asset in ("d365/purchase_orders", "d365/vendor_invoices"):
        meta = metadata(by_odata, asset)
        assert meta["route"] == "odata" and "<= D365_DMF_THRESHOLD=500" in meta["route_reason"], meta["route_reason"]

    fresh = start_sandboxes(sandbox_options, seed=copy.deepcopy(seed_data))
    try:
        dmf_db = f"sqlite:///{tmp_path / 'dmf.db'}"
        for name, value in (
            fresh.env()
            | {"SYNC_DATABASE_URL": dmf_db, "COUPA_MAX_REQUESTS_PER_SECOND": "1000", "D365_DMF_THRESHOLD": "0"}
        ).items():
            monkeypatch.setenv(name, value)
        with dg.instance_for_test() as other_instance:
            assert run_master(other_instance).success
            by_dmf = run_documents(other_instance, FIRST, LAST)
        assert by_dmf.success
        for asset in ("d365/purchase_orders", "d365/vendor_invoices"):
            meta = metadata(by_dmf, asset)
            assert meta["route"] == "dmf" and meta["dmf_packaged"] > 10 and meta["dmf_redriven_through_odata"] == 0
            assert set(meta["dmf_statuses"].split(", ")) and "Succeeded" in meta["dmf_statuses"]
            assert meta["created"] == metadata(by_odata, asset)["created"] > 10
        imports = [e for e in fresh.d365.log.snapshot() if e.path.endswith(".ImportFromPackage")]
        batched = [e for e in fresh.d365.log.snapshot() if e.path.endswith("/$batch")]
        # documents only through packages; the vendors they need are created 20 per $batch
        assert imports and not [e for e in batched if "VendorInvoice" in e.body or "PurchaseOrder" in e.body]

        odata_d365, dmf_d365 = d365_state(sandboxes), d365_state(fresh)
        for entity_set in ENTITY_SETS:
            assert dmf_d365[entity_set] == odata_d365[entity_set], entity_set
        assert ledger_state(dmf_db) == ledger_state(sandbox_env["SYNC_DATABASE_URL"])
        assert coupa_state(fresh) == coupa_state(sandboxes)
    finally:
        fresh.stop()
