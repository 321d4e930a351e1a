"""Exactly once with real processes: `dagster asset materialize` killed with SIGKILL mid-partition
and re-run, and two runs of the same partitions at the same time against PostgreSQL.

No wall-clock races: a scripted ``hold`` fault parks one invoice write inside the D365 sandbox, and
the test acts (SIGKILL, or waiting for the other run to write) while the request log shows it parked."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coupa_d365_pipeline.demo import prepare_dagster_home
from coupa_d365_pipeline.sandbox.faults import ScriptedFault
from coupa_d365_pipeline.state.ledger import Ledger
from coupa_d365_pipeline.state.store import make_engine
from coupa_d365_pipeline_tests.flow.helpers import CHARTS, approved, d365_invoices, duplicates, lines_of

pytestmark = pytest.mark.e2e
DAGSTER = str(Path(sys.executable).parent / "dagster")
COMMAND = [
    DAGSTER,
    "asset",
    "materialize",
    "-m",
    "coupa_d365_pipeline.definitions",
    "--select",
    "coupa/invoices,d365/vendor_invoices",
    "--partition-range",
    "2026-11-01...2026-11-06",
]
BATCH_PATH = r"^/data/\$batch$"  # invoices go 20 per $batch, header + lines as one changeset each
INVOICES = "VendorInvoiceHeaders"  # in the body of an invoice $batch (vendors and POs go in batches too)


def run_env(sandboxes, home: Path, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        **sandboxes.env(),
        "DAGSTER_HOME": str(prepare_dagster_home(home)),
        "SYNC_DATABASE_URL": database_url,
        "COUPA_MAX_REQUESTS_PER_SECOND": "1000",
    }


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
        key = (
            CHARTS[invoice["account-type"]["name"]],
            suppliers[invoice["supplier"]["id"]]["number"],
            invoice["invoice-number"],
        )
        assert key in booked, f"invoice {invoice['id']} missing"
        [header] = booked[key]
        assert len(lines_of(sandboxes, key[0], header["HeaderReference"])) == len(invoice["invoice-lines"])
        count += 1
    assert len(booked) == count
    return count


def wait_in_log(sandbox, predicate, procs: list[subprocess.Popen], logs: list[Path], timeout_s: float = 240):
    """Block until the sandbox's request log satisfies ``predicate``; fail early if a run died.
    The timeout only guards against a hang: the logic waits on the log, never on time."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return sandbox.log.wait_for(predicate, timeout_s=1.0)
        except TimeoutError:
            for proc, log in zip(procs, logs, strict=True):
                assert proc.poll() is None, f"{log.name} ended early:\n" + log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the sandbox never saw the awaited request"


def kill_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL the run's whole process group (the `dagster` CLI and the step worker it forked) and
    return once none of them is left — a machine losing power, not a polite cancel."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, "processes of the killed run are still alive"
        time.sleep(0.05)


def batches(entries, since_seq: int = 0):
    """The invoice $batch requests after ``since_seq``."""
    return [
        e
        for e in entries
        if e.path == "/data/$batch" and e.method == "POST" and e.seq > since_seq and INVOICES in e.body
    ]


def header_refs(sandboxes) -> set[str]:
    return {h["HeaderReference"] for h in sandboxes.d365.state.records("VendorInvoiceHeaders")}


def refs_in(entry) -> set[str]:
    return set(re.findall(r'"HeaderReference": ?"(COUPA-\d+)"', entry.body))


def test_sigkill_while_an_invoice_write_is_in_flight_then_rerun_books_everything_once(sandboxes, tmp_path):
    answered_before_kill = 2
    # Rendezvous: the 3rd invoice $batch (20 invoices, one changeset each) is parked in the sandbox
    # until released; one request in flight at a time makes "the 3rd" well defined.
    hold = sandboxes.d365.injector.script(
        ScriptedFault(
            kind="hold", method="POST", path_regex=BATCH_PATH, body_regex=INVOICES, after=answered_before_kill
        )
    )
    env = run_env(sandboxes, tmp_path / "home", f"sqlite:///{tmp_path / 'sync.db'}")
    env["D365_MAX_CONCURRENCY"] = "1"
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:  # own process group: the CLI and its step worker die together
        first = subprocess.Popen(
            COMMAND, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        [held] = wait_in_log(
            sandboxes.d365, lambda entries: [e for e in entries if e.injected == "hold"], [first], [log_path]
        )
        # The run is inside its 3rd write: 2 answered, the 3rd received but not applied, nothing else sent.
        sent = batches(sandboxes.d365.log.snapshot())
        assert [e.status for e in sent] == [200] * answered_before_kill + [None]
        at_kill = header_refs(sandboxes)
        assert at_kill == set().union(*(refs_in(e) for e in sent[:answered_before_kill])) and len(at_kill) == 40
        kill_process_group(first)
    finally:
        if first.poll() is None:
            kill_process_group(first)
        hold.release()
    assert first.returncode == -signal.SIGKILL
    in_flight = refs_in(held)
    assert len(in_flight) == 20 and not in_flight & at_kill
    ledger = Ledger(make_engine(env["SYNC_DATABASE_URL"]))
    # intent recorded before the write (for every planned invoice), claims left behind by the dead run
    writing = {r.d365_key["HeaderReference"]: r for r in ledger.rows("invoice", ["writing"])}
    assert in_flight <= set(writing) and all(writing[ref].claimed_by is not None for ref in in_flight)

    # Released after the client died, the write lands with nobody to hear the answer.
    sandboxes.d365.log.wait_for(lambda entries: held.status is not None, timeout_s=60)
    assert held.status == 200 and header_refs(sandboxes) == at_kill | in_flight

    mark = sandboxes.d365.log.next_seq()
    rerun = subprocess.run(COMMAND, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    booked = assert_booked_exactly_once(sandboxes)
    assert len(at_kill | in_flight) < booked  # the kill really happened in the middle
    resent = [e for e in batches(sandboxes.d365.log.snapshot(), since_seq=mark - 1) if refs_in(e) & in_flight]
    assert resent == []  # the rerun found the landed writes and adopted them instead of sending them again
    for ref in in_flight:
        adopted = ledger.get("invoice", writing[ref].coupa_id)
        assert adopted.state == "written" and adopted.d365_key["HeaderReference"] == ref
        assert adopted.claimed_by is None and adopted.coupa_notified


@pytest.mark.postgres
def test_two_overlapping_runs_on_postgresql_write_each_invoice_once(sandboxes, tmp_path, postgres_database):
    # Forced overlap, no race on who plans first: run A (Nov 1-3, one $batch in flight) claims its
    # invoices and its first invoice write is parked; only then run B (Nov 1-6) starts. B finds A's
    # invoices claimed by a live run and must leave them alone, and writes Nov 4-6 while A's write is
    # still parked. (Started together, the run that planned first could claim the whole window and
    # the other write nothing: a race, not a test.)
    hold = sandboxes.d365.injector.script(
        ScriptedFault(kind="hold", method="POST", path_regex=BATCH_PATH, body_regex=INVOICES)
    )
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{postgres_database}"
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []

    def start(name: str, partition_range: str, **extra: str) -> None:
        env = {**run_env(sandboxes, tmp_path / f"home_{name}", url), **extra}
        logs.append(tmp_path / f"run_{name}.log")
        command = [*COMMAND[:-1], partition_range]
        with open(logs[-1], "w") as log:
            procs.append(subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT))

    try:
        start("a", "2026-11-01...2026-11-03", D365_MAX_CONCURRENCY="1")
        [held] = wait_in_log(sandboxes.d365, lambda entries: [e for e in entries if e.injected == "hold"], procs, logs)
        start("b", "2026-11-01...2026-11-06")
        [*_, written_by_b] = wait_in_log(
            sandboxes.d365, lambda entries: [e for e in batches(entries, held.seq) if e.status == 200], procs, logs
        )
        assert held.status is None  # B wrote while A's write was still parked: the runs overlapped
        assert not refs_in(written_by_b) & refs_in(held)
        hold.release()
        for proc in procs:
            proc.wait(timeout=300)
    finally:
        hold.release()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log.read_text()[-2000:] for log in logs)
    assert held.status == 200
    assert_booked_exactly_once(sandboxes)
    ledger = Ledger(make_engine(url))
    creators = {
        h["run_id"]
        for r in ledger.rows("invoice", ["written"])
        for h in ledger.history("invoice", r.coupa_id)
        if h["action"] == "create"
    }
    assert len(creators) == 2  # both runs really wrote, yet nothing twice
