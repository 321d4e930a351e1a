"""materialize() against the sandboxes over real HTTP, on a temporary SQLite instance."""

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from coupa_d365_pipeline.defs.documents import coupa_invoices, coupa_purchase_orders
from coupa_d365_pipeline.defs.master_data import coupa_suppliers, d365_legal_entities, default_legal_entity_exists
from coupa_d365_pipeline.defs.resources import build_resources
from coupa_d365_pipeline.state.store import SyncStore


def test_master_data_and_check(sandbox_env, sandboxes):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [coupa_suppliers, d365_legal_entities, default_legal_entity_exists],
            resources=build_resources(),
            instance=instance,
        )
        assert result.success
        mats = {
            "/".join(e.asset_key.path): e.event_specific_data.materialization.metadata
            for e in result.get_asset_materialization_events()
        }
        assert mats["coupa/suppliers"]["fetched"].value == len(sandboxes.seed.coupa_suppliers)
        assert mats["d365/legal_entities"]["default_found"].value is True
        checks = result.get_asset_check_evaluations()
        assert [c.passed for c in checks] == [True]

        # incremental: the second run reads only what changed after the watermark
        supplier_id = sandboxes.seed.coupa_suppliers[3]["id"]
        sandboxes.coupa.state.touch("suppliers", supplier_id, name="Renamed Supplier")
        again = dg.materialize([coupa_suppliers], resources=build_resources(), instance=instance)
        meta = again.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
        # the touched supplier, plus the one record sitting exactly on the watermark (updated-at[gt_or_eq])
        counts = {name: meta[name].value for name in ("fetched", "changed", "unchanged", "new")}
        assert counts == {"fetched": 2, "changed": 1, "unchanged": 1, "new": 0}


def test_wrong_default_legal_entity_fails_the_check(sandbox_env, monkeypatch):
    monkeypatch.setenv("D365_DEFAULT_LEGAL_ENTITY", "zzzz")
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [d365_legal_entities, default_legal_entity_exists],
            resources=build_resources(),
            instance=instance,
            raise_on_error=False,
        )
        evaluation = result.get_asset_check_evaluations()[0]
        assert evaluation.passed is False
        assert "zzzz" in evaluation.description and "usmf" in evaluation.description


def test_daily_partitions_single_run_backfill_stages_each_invoice_once(sandbox_env, sandboxes):
    from coupa_d365_pipeline.defs.partitions import daily_partitions

    start, end = "2026-11-01", "2026-11-06"
    assert daily_partitions.start.strftime("%Y-%m-%d") <= start
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [coupa_invoices, coupa_purchase_orders],
            resources=build_resources(),
            instance=instance,
            tags={ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end},
        )
        assert result.success
        meta = {
            "/".join(e.asset_key.path): e.event_specific_data.materialization.metadata
            for e in result.get_asset_materialization_events()
        }
        expected = [i for i in sandboxes.seed.coupa_invoices if i["status"] in ("approved", "voided")]
        assert meta["coupa/invoices"]["fetched"].value == len(expected)
        assert meta["coupa/invoices"]["partitions"].value == 6
        store = SyncStore(sandbox_env["SYNC_DATABASE_URL"])
        assert sorted(d["id"] for d in store.documents("invoice")) == sorted(i["id"] for i in expected)
        # one partition alone reads only that day's window
        one = dg.materialize([coupa_invoices], resources=build_resources(), instance=instance, partition_key=start)
        day = [i for i in expected if i["updated-at"].startswith(start)]
        fetched = one.get_asset_materialization_events()[0].event_specific_data.materialization.metadata["fetched"]
        assert fetched.value == len(day)
