"""Issue 9 item 2 through Dagster: a Coupa invoice whose currency is a bare string (or any other
shape) no longer fails coupa/invoices for the whole partition; every invoice of the window is staged."""

import dagster as dg

from coupa_d365_pipeline.defs.documents import coupa_invoices
from coupa_d365_pipeline.defs.resources import build_resources
from coupa_d365_pipeline.state.store import SyncStore


def test_invoices_with_odd_currencies_are_all_staged(sandbox_env, sandboxes):
    approved = [i for i in sandboxes.seed.coupa_invoices if i["status"] == "approved"][:4]
    for invoice, currency in zip(approved, ["USD", 840, None, {"code": "EUR"}], strict=True):
        touched = sandboxes.coupa.state.touch("invoices", invoice["id"], currency=currency)
    partition = touched["updated-at"][:10]  # the sandbox clock's day (conftest.TEST_NOW)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [coupa_invoices],
            resources=build_resources(),
            instance=instance,
            partition_key=partition,
            raise_on_error=False,
        )
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        meta = result.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
    assert meta["fetched"].value == 4 and meta["new"].value == 4
    by_currency = meta["by_currency"].value
    assert "| USD | 1 |" in by_currency and "| EUR | 1 |" in by_currency and "| 840 | 1 |" in by_currency
    store = SyncStore(sandbox_env["SYNC_DATABASE_URL"])
    try:
        staged = store.documents_by_id("invoice", [i["id"] for i in approved])
        assert staged[approved[0]["id"]]["currency"] == "USD"
    finally:
        store.dispose()
