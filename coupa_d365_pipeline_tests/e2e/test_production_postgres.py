"""Issue 13: production on ONE PostgreSQL database, as deployed.

The root dagster.yaml (copied into DAGSTER_HOME, PostgreSQL through DAGSTER_PG_*) with
``dagster-webserver``, ``dagster-daemon run`` and the code location (``dagster api grpc``, reached
through a ``grpc_server`` workspace) as separate processes, and SYNC_DATABASE_URL naming the SAME
database. ``master_data_job`` and a documents run are launched through the webserver's GraphQL API,
wait in the queued run coordinator, are launched by the daemon and succeed; the sync ledger is in the
connector's schema, Dagster's tables in ``public``, and the D365 writers took slots of the
``d365_writes`` pool at its default limit."""

import os
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from coupa_d365_pipeline.defs.resources import D365_WRITES_POOL
from coupa_d365_pipeline.sandbox.server import free_port
from coupa_d365_pipeline.state.migrate import SCHEMA, head
from coupa_d365_pipeline_tests.e2e.processes import start, stop, wait_for
from coupa_d365_pipeline_tests.e2e.test_dagster_dev import LAUNCH, STATUS, graphql
from coupa_d365_pipeline_tests.flow.helpers import FIRST

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "coupa_d365_pipeline"
JOBS = "{ repositoriesOrError { ... on RepositoryConnection { nodes { jobs { name } } } } }"


def _jobs(url: str) -> set[str]:
    try:
        found = graphql(url, JOBS)["repositoriesOrError"].get("nodes") or []
    except httpx.HTTPError:
        return set()
    return {job["name"] for repo in found for job in repo["jobs"]}


def _launch(url: str, job: str, tags: dict[str, str]) -> str:
    params = {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "jobName": job},
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }
    launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def _status(url: str, run_id: str) -> str:
    return graphql(url, STATUS, {"id": run_id})["runOrError"]["status"]


def _finished(url: str, run_id: str) -> bool:
    time.sleep(0.5)
    return _status(url, run_id) in ("SUCCESS", "FAILURE", "CANCELED")


def test_webserver_daemon_and_code_server_on_one_postgres_database(sandboxes, postgres_database, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())  # the production file, as is
    grpc_port, web_port = free_port(), free_port()
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {grpc_port}\n"
        f"      location_name: {LOCATION}\n"
    )
    database_url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{postgres_database}"
    pg = {"HOST": "127.0.0.1", "PORT": "5432", "USER": "postgres", "PASSWORD": "", "DB": postgres_database}
    for name, value in pg.items():  # this process reads the instance at the end
        monkeypatch.setenv(f"DAGSTER_PG_{name}", value)
    env = {
        **os.environ,
        **sandboxes.env(),
        "DAGSTER_HOME": str(home),
        "SYNC_DATABASE_URL": database_url,  # the same database as Dagster's storage
        "COUPA_MAX_REQUESTS_PER_SECOND": "1000",
        "WEBHOOK_STAGING_DIR": str(tmp_path / "webhooks"),  # coupa_webhook_sensor runs by default: nothing for it
    }
    logs = [tmp_path / "code-server.log", tmp_path / "webserver.log", tmp_path / "daemon.log"]
    url = f"http://127.0.0.1:{web_port}"
    grpc = [str(BIN / "dagster"), "api", "grpc", "-m", "coupa_d365_pipeline.definitions", "--location-name", LOCATION]
    procs = [start([*grpc, "-h", "127.0.0.1", "-p", str(grpc_port)], env, logs[0])]
    try:
        webserver = [str(BIN / "dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1", "-p", str(web_port)]
        procs.append(start(webserver, env, logs[1]))
        procs.append(start([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, logs[2]))
        wait_for(lambda: "master_data_job" in _jobs(url), 120, "the code location did not load", logs)

        # both at once: the first steps of both runs open the fresh sync database together
        master = _launch(url, "master_data_job", {})
        documents = _launch(url, "daily_documents_job", {"dagster/partition": FIRST})
        for run_id in (master, documents):
            wait_for(lambda run_id=run_id: _finished(url, run_id), 240, f"run {run_id} did not finish", logs)
        assert (_status(url, master), _status(url, documents)) == ("SUCCESS", "SUCCESS"), logs[2].read_text()[-3000:]
    finally:
        for proc in reversed(procs):
            stop(proc)

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            public = set(inspector.get_table_names(schema="public"))
            assert {"runs", "event_logs", "snapshots", "alembic_version"} <= public  # Dagster's
            assert not public & {"sync_ledger", "staged_documents", "watermarks", "sync_audit"}
            ours = f"{SCHEMA}.sync_ledger"
            rows = conn.execute(sa.text(f"SELECT doc_type, state, count(*) FROM {ours} GROUP BY doc_type, state"))
            counts = {(doc_type, state): n for doc_type, state, n in rows}
            version = conn.execute(sa.text(f"SELECT version_num FROM {SCHEMA}.alembic_version")).scalar_one()
            snapshot = conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.snapshots")).scalar_one()
    finally:
        engine.dispose()
    assert version == head() and snapshot > 0
    for doc_type in ("vendor", "invoice", "purchase_order"):  # booked by the two runs
        assert counts.get((doc_type, "written"), 0) > 0, counts

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert {r.run_id for r in instance.get_runs()} >= {master, documents}
        for run_id in (master, documents):  # through the queued run coordinator (the daemon launched them)
            assert len(instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED).records) == 1
        pool = instance.event_log_storage.get_concurrency_info(D365_WRITES_POOL)
        assert pool.slot_count == 4  # concurrency.pools.default_limit of the root dagster.yaml
    finally:
        instance.dispose()
