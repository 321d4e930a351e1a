"""Exactly once with real processes: `dagster asset materialize` killed with SIGKILL mid-partition
and re-run, and two runs of the same partitions at the same time against PostgreSQL."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coupa_d365_pipeline.demo import prepare_dagster_home
from coupa_d365_pipeline.sandbox.faults import FaultConfig
from coupa_d365_pipeline.state.ledger import Ledger
from coupa_d365_pipeline.state.store import make_engine
from coupa_d365_pipeline_tests.flow.helpers import CHARTS, approved, d365_invoices, duplicates, lines_of

pytestmark = pytest.mark.e2e
DAGSTER = str(Path(sys.executable).parent / "dagster")
COMMAND = [DAGSTER, "asset", "materialize", "-m", "coupa_d365_pipeline.definitions",
           "--select", "coupa/invoices,d365/vendor_invoices", "--partition-range", "2026-11-01...2026-11-06"]


def run_env(sandboxes, home: Path, database_url: str) -> dict[str, str]:
    return {**os.environ, **sandboxes.env(), "DAGSTER_HOME": str(prepare_dagster_home(home)),
            "SYNC_DATABASE_URL": database_url, "COUPA_MAX_REQUESTS_PER_SECOND": "1000"}


def assert_booked_exactly_once(sandboxes) -> int:
    seed = sandboxes.seed
    suppliers = {s["id"]: s for s in seed.coupa_suppliers}
    unmappable = set(seed.expectations["unmappable_invoices"])
    booked = d365_invoices(sandboxes)
    assert not duplicates(sandboxes), duplicates(sandboxes)
    count = 0
    for invoice in approved(seed):
        if invoice["id"] in unmappable:
            continue
        key = (CHARTS[invoice["account-type"]["name"]], suppliers[invoice["supplier"]["id"]]["number"],
               invoice["invoice-number"])
        assert key in booked, f"invoice {invoice['id']} missing"
        [header] = booked[key]
        assert len(lines_of(sandboxes, key[0], header["HeaderReference"])) == len(invoice["invoice-lines"])
        count += 1
    assert len(booked) == count
    return count


def test_sigkill_mid_partition_then_rerun_leaves_no_duplicate_and_nothing_missing(sandboxes, tmp_path):
    sandboxes.d365.injector.configure(FaultConfig(latency_ms=25))  # slow enough to be killed mid-way
    env = run_env(sandboxes, tmp_path / "home", f"sqlite:///{tmp_path / 'sync.db'}")
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(COMMAND, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while len(sandboxes.d365.state.records("VendorInvoiceHeaders")) < 20:
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the first run never started writing"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    log.close()
    assert first.returncode == -signal.SIGKILL
    at_kill = len(sandboxes.d365.state.records("VendorInvoiceHeaders"))
    rows = Ledger(make_engine(env["SYNC_DATABASE_URL"])).rows("invoice")
    assert any(r.claimed_by for r in rows) or any(r.state == "writing" for r in rows) or at_kill > 0

    sandboxes.d365.injector.configure(FaultConfig())
    rerun = subprocess.run(COMMAND, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    booked = assert_booked_exactly_once(sandboxes)
    assert at_kill < booked  # the kill really happened in the middle


@pytest.mark.postgres
def test_two_concurrent_runs_on_postgresql_write_each_invoice_once(sandboxes, tmp_path, postgres_database):
    sandboxes.d365.injector.configure(FaultConfig(latency_ms=5))
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{postgres_database}"
    procs = []
    for name in ("a", "b"):
        env = run_env(sandboxes, tmp_path / f"home_{name}", url)
        procs.append(subprocess.Popen(COMMAND, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    assert_booked_exactly_once(sandboxes)
    ledger = Ledger(make_engine(url))
    creators = {h["run_id"] for r in ledger.rows("invoice", ["written"]) for h in ledger.history("invoice", r.coupa_id)
                if h["action"] == "create"}
    assert len(creators) == 2  # both runs really wrote (they overlapped), yet nothing twice
