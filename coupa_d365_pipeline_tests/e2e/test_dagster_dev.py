"""`dagster dev` (webserver + daemon + code server) as real processes against the sandboxes:
the UI's GraphQL API lists the assets, launches a run through the queue and the run succeeds."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest

from coupa_d365_pipeline.demo import prepare_dagster_home
from coupa_d365_pipeline.sandbox.server import free_port

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
STATUS = "query Status($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"
ASSETS = "{ assetNodes { assetKey { path } groupName isPartitioned } }"


@pytest.fixture
def dagster_dev(sandboxes, tmp_path):
    home = prepare_dagster_home(tmp_path / "home")
    port = free_port()
    env = {
        **os.environ,
        **sandboxes.env(),
        "DAGSTER_HOME": str(home),
        "SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'sync.db'}",
    }
    log = open(tmp_path / "dagster-dev.log", "w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            "dev",
            "-w",
            str(REPO / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "dagster-dev.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "dagster dev did not come up in 120 s"
            time.sleep(0.5)
        yield url, home
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def graphql(url, query, variables=None):
    response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def test_ui_lists_assets_and_runs_master_data_through_the_daemon(dagster_dev, sandboxes):
    url, home = dagster_dev
    deadline = time.monotonic() + 60
    while True:  # the code location may still be loading
        nodes = graphql(url, ASSETS)["assetNodes"]
        if nodes or time.monotonic() > deadline:
            break
        time.sleep(1)
    assets = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert assets["coupa/invoices"]["isPartitioned"] and assets["coupa/invoices"]["groupName"] == "coupa"
    assert assets["d365/legal_entities"]["groupName"] == "d365"

    params = {
        "selector": {
            "repositoryLocationName": "coupa_d365_pipeline",
            "repositoryName": "__repository__",
            "jobName": "master_data_job",
        },
        "runConfigData": {},
    }
    launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + 180
    status = None
    while time.monotonic() < deadline:
        status = graphql(url, STATUS, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)
    assert status == "SUCCESS"
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        event = instance.get_latest_materialization_event(dg.AssetKey(["coupa", "suppliers"]))
        assert event is not None and event.run_id == run_id
        assert event.asset_materialization.metadata["fetched"].value == len(sandboxes.seed.coupa_suppliers)
    finally:
        instance.dispose()
