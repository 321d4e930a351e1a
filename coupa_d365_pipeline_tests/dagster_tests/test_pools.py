"""Concurrent D365 writers are limited by one Dagster pool: every step that writes to D365 takes a slot
of ``d365_writes``, whose limit is the instance's ``concurrency.pools.default_limit`` (README
"Production instance"); steps that only read D365 take none."""

import re
from pathlib import Path

import yaml

from coupa_d365_pipeline.definitions import defs
from coupa_d365_pipeline.defs.resources import D365_WRITES_POOL

REPO = Path(__file__).resolve().parents[2]
D365_WRITERS = {"d365/vendors", "d365/purchase_orders", "d365/vendor_invoices", "webhooks/coupa_events"}
D365_READERS = {
    "d365/legal_entities",
    "d365/master_data",
    "d365/invoice_status",
    "coupa/invoice_status",
    "reconciliation/coupa_vs_d365",
}


def _assets_using_d365() -> dict[str, str | None]:
    found = {}
    for assets_def in defs.resolve_asset_graph().assets_defs:
        if "d365" in assets_def.required_resource_keys and assets_def.is_executable:
            for key in assets_def.keys:
                found["/".join(key.path)] = assets_def.op.pool
    return found


def test_every_step_that_writes_to_d365_takes_a_d365_writes_slot():
    assert D365_WRITES_POOL == "d365_writes"  # a published name: limits set in the instance refer to it
    pools = _assets_using_d365()
    assert set(pools) == D365_WRITERS | D365_READERS, "a new asset uses D365: is it a writer or a reader?"
    assert {name: pools[name] for name in D365_WRITERS} == dict.fromkeys(D365_WRITERS, D365_WRITES_POOL)
    assert {name: pools[name] for name in D365_READERS} == dict.fromkeys(D365_READERS)
    replay = defs.resolve_job_def("replay_invoices_job")
    assert [(node.name, node.definition.pool) for node in replay.nodes] == [("replay_invoices", D365_WRITES_POOL)]


def test_the_pools_default_limit_is_the_documented_one():
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    limit = config["concurrency"]["pools"]["default_limit"]
    readme = (REPO / "README.md").read_text()
    documented = re.search(r"at most\s+(\d+)\s+steps\s+that\s+write\s+to\s+D365\s+run\s+at\s+once", readme)
    assert documented is not None and int(documented.group(1)) == limit == 4
