"""Issue 12: a backfill launched the way the UI launches it takes the route rule.

Real `dagster-webserver` and `dagster-daemon run` against a SQLite instance and both sandboxes, with
D365_DMF_THRESHOLD=0 in the code location's environment. The test sends the webserver the mutation
the UI's "Materialize > Launch backfill" sends for the four document assets over two daily
partitions; the daemon's backfill daemon turns it into ONE run (every asset has
``BackfillPolicy.single_run()``), and both D365 assets go through DMF packages.

LAUNCH_PARTITION_BACKFILL is the UI's own document, as Apollo Client puts it on the wire: the
mutation ``LAUNCH_PARTITION_BACKFILL_MUTATION`` of ui-core/src/instance/backfill/BackfillUtils.tsx
plus ``PYTHON_ERROR_FRAGMENT`` (ui-core/src/app/PythonErrorFragment.tsx), with the ``__typename``
Apollo's cache adds to every selection set below the operation (both files are in the source map of
dagster_webserver/webapp/build/_next/static/chunks/2093.*.js). ui_backfill_params() is the last
branch of ``onLaunchAsBackfill`` in ui-core/src/assets/LaunchAssetChoosePartitionsDialog.tsx: the
branch the UI takes when the assets' first common job is the hidden ``__ASSET_JOB`` (asserted below).

Timing: the backfill daemon evaluates backfills every 30 s (a constant in Dagster, not configurable),
starting when the daemon starts. The daemon is started after the backfill is launched, so its first
pass requests the run at once; the first pass after the run ended (30 s later, or 60 s when the run
takes longer than that) marks the backfill complete. A pair of its own for this reason: in
test_dagster_dev's `dagster dev` the daemon's passes fall at a random point of the test, which would
add up to another 30 s."""

import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from coupa_d365_pipeline.demo import prepare_dagster_home
from coupa_d365_pipeline.sandbox.server import free_port
from coupa_d365_pipeline_tests.e2e.processes import start, stop, wait_for
from coupa_d365_pipeline_tests.e2e.test_dagster_dev import graphql
from coupa_d365_pipeline_tests.flow.helpers import FIRST

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECOND = (date.fromisoformat(FIRST) + timedelta(days=1)).isoformat()
ASSETS = [["coupa", "purchase_orders"], ["coupa", "invoices"], ["d365", "purchase_orders"], ["d365", "vendor_invoices"]]
FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

LAUNCH_PARTITION_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    ... on LaunchBackfillSuccess {
      backfillId
      __typename
    }
    ... on PartitionSetNotFoundError {
      message
      __typename
    }
    ... on PartitionKeysNotFoundError {
      message
      __typename
    }
    ... on InvalidStepError {
      invalidStepKey
      __typename
    }
    ... on InvalidOutputError {
      stepKey
      invalidOutputName
      __typename
    }
    ... on UnauthorizedError {
      message
      __typename
    }
    ... on PipelineNotFoundError {
      message
      __typename
    }
    ... on RunConflict {
      message
      __typename
    }
    ... on ConflictingExecutionParamsError {
      message
      __typename
    }
    ... on PresetNotFoundError {
      message
      __typename
    }
    ... on RunConfigValidationInvalid {
      pipelineName
      errors {
        message
        path
        reason
        __typename
      }
      __typename
    }
    ...PythonErrorFragment
    __typename
  }
}

fragment PythonErrorFragment on PythonError {
  message
  stack
  errorChain {
    ...PythonErrorChain
    __typename
  }
  __typename
}

fragment PythonErrorChain on ErrorChainLink {
  isExplicitLink
  error {
    message
    stack
    __typename
  }
  __typename
}"""
ASSET_JOBS = "query Jobs($keys: [AssetKeyInput!]) { assetNodes(assetKeys: $keys) { assetKey { path } jobNames } }"
BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs { runId status tags { key value } } }
    ... on PythonError { message }
  }
}"""


def ui_backfill_params(asset_paths: list[list[str]], partition_names: list[str]) -> dict[str, Any]:
    """``backfillParams`` as the dialog builds them for a hidden-job target without saved config
    (``runConfigData: undefined`` is dropped by JSON, ``tags`` are the UI execution tags)."""
    return {
        "tags": [{"key": "dagster/from_ui", "value": "true"}],
        "assetSelection": [{"path": path} for path in asset_paths],
        "partitionNames": partition_names,
        "fromFailure": False,
    }


def common_jobs(url: str) -> list[str]:
    """The jobs every selected asset belongs to, in the order the UI's getCommonJob() sees them;
    empty while the code location is still loading."""
    nodes = graphql(url, ASSET_JOBS, {"keys": [{"path": path} for path in ASSETS]})["assetNodes"]
    if len(nodes) < len(ASSETS):
        return []
    first, *others = nodes
    return [job for job in first["jobNames"] if all(job in node["jobNames"] for node in others)]


def backfill(url: str, backfill_id: str) -> dict[str, Any]:
    found = graphql(url, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
    assert found["__typename"] == "PartitionBackfill", found
    return found


def finished(url: str, backfill_id: str) -> bool:
    time.sleep(1)  # the backfill daemon moves a backfill on every 30 s: no need to ask more often
    return backfill(url, backfill_id)["status"] in FINISHED


def test_ui_launched_backfill_runs_once_and_takes_the_dmf_route(sandboxes, sandbox_env, tmp_path):
    home = prepare_dagster_home(tmp_path / "home")
    env = {
        **os.environ,
        **sandbox_env,
        "DAGSTER_HOME": str(home),
        "D365_DMF_THRESHOLD": "0",
        "WEBHOOK_STAGING_DIR": str(tmp_path / "webhooks"),  # coupa_webhook_sensor runs by default: nothing for it
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = [tmp_path / "webserver.log", tmp_path / "daemon.log"]
    workspace = str(REPO / "workspace.yaml")
    webserver_args = [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)]
    webserver = start(webserver_args, env, logs[0])
    daemon = None
    try:
        wait_for(lambda: _answers(url) and bool(common_jobs(url)), 120, "the code location did not load", logs)
        # the UI launches an asset-job backfill with the ExecutionParams-less params for a hidden job
        assert common_jobs(url)[0] == "__ASSET_JOB"
        variables = {"backfillParams": ui_backfill_params(ASSETS, [FIRST, SECOND])}
        launched = graphql(url, LAUNCH_PARTITION_BACKFILL, variables)["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]

        daemon = start([str(BIN / "dagster-daemon"), "run", "-w", workspace], env, logs[1])
        wait_for(lambda: finished(url, backfill_id), 150, "the backfill did not finish", logs)
        done = backfill(url, backfill_id)
    finally:
        if daemon is not None:
            stop(daemon)
        stop(webserver)

    assert done["status"] == "COMPLETED_SUCCESS", done
    assert len(done["runs"]) == 1, done["runs"]  # single_run policy: both partitions, all four assets
    run = done["runs"][0]
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert run["status"] == "SUCCESS"
    assert tags["dagster/backfill"] == backfill_id and tags["dagster/from_ui"] == "true"
    assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == (FIRST, SECOND)

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        for path in ASSETS:
            event = instance.get_latest_materialization_event(dg.AssetKey(path))
            assert event is not None and event.asset_materialization is not None, path
            meta: dict[str, Any] = {k: v.value for k, v in event.asset_materialization.metadata.items()}
            assert event.run_id == run["runId"] and meta["partitions"] == 2, (path, meta)
            if path[0] == "d365":
                assert meta["route"] == "dmf", meta
                assert meta["route_reason"].startswith("D365_DMF_THRESHOLD=0"), meta
                assert meta["dmf_packaged"] == meta["created"] > 0, meta
                executions = meta["dmf_executions"].split(", ")
                assert all(e.startswith(f"coupa-d365-{run['runId'][:8]}-") for e in executions), meta
    finally:
        instance.dispose()
    d365_log = sandboxes.d365.log.snapshot()
    assert any(e.path.endswith(".ImportFromPackage") for e in d365_log)
    documents_batched = [
        e for e in d365_log if e.path.endswith("/$batch") and ("VendorInvoice" in e.body or "PurchaseOrder" in e.body)
    ]
    assert documents_batched == []  # no document went through OData writes (only the vendors they need)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/server_info", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
