"""Issue 12: `dagster asset materialize --partition-range A...B` (the real CLI, its own process)
takes the route rule — with D365_DMF_THRESHOLD=0 the documents go through DMF packages."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

from coupa_d365_pipeline_tests.flow.helpers import FIRST

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).parent / "dagster")
ASSETS = "coupa/purchase_orders,coupa/invoices,d365/purchase_orders,d365/vendor_invoices"


def test_partition_range_materialize_takes_the_dmf_route(sandboxes, sandbox_env, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, **sandbox_env, "DAGSTER_HOME": str(home), "D365_DMF_THRESHOLD": "0"}
    out = subprocess.run(
        [
            DAGSTER,
            "asset",
            "materialize",
            "-m",
            "coupa_d365_pipeline",
            "--select",
            ASSETS,
            "--partition-range",
            f"{FIRST}...2026-11-02",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "route dmf (D365_DMF_THRESHOLD=0" in out.stderr + out.stdout

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        for path in (["d365", "purchase_orders"], ["d365", "vendor_invoices"]):
            event = instance.get_latest_materialization_event(dg.AssetKey(path))
            assert event is not None and event.asset_materialization is not None
            meta: dict[str, Any] = {k: v.value for k, v in event.asset_materialization.metadata.items()}
            assert meta["route"] == "dmf" and meta["partitions"] == 2, meta
            assert meta["dmf_packaged"] == meta["created"] > 0
            run = instance.get_run_by_id(event.run_id)
            assert run is not None
            assert all(e.startswith(f"coupa-d365-{run.run_id[:8]}-") for e in meta["dmf_executions"].split(", "))
    log = sandboxes.d365.log.snapshot()
    assert any(e.path.endswith(".ImportFromPackage") for e in log)
    documents_batched = [
        e for e in log if e.path.endswith("/$batch") and ("VendorInvoice" in e.body or "PurchaseOrder" in e.body)
    ]
    assert documents_batched == []  # no document went through OData writes (only the vendors they need)
