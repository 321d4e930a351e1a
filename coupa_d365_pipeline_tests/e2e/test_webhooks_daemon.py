"""Webhooks end to end with real processes: both sandboxes, `coupa-d365 webhooks serve`, and
`dagster-daemon run` with the code location on a real (SQLite) instance. Signed `invoice.approved`
events lead to pending invoices in the D365 sandbox through coupa_webhook_sensor at its default
interval; the receiver killed with SIGKILL right after answering 2xx loses nothing.

Writes the measured latencies (signed POST answered -> pending header in D365) to
``webhook_latency.json`` in the test's directory and prints p50/p95."""

import base64
import hashlib
import hmac
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from coupa_d365_pipeline.demo import prepare_dagster_home
from coupa_d365_pipeline.sandbox.server import free_port

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EVENTS = 20
SPACING_S = 1.0
P95_TARGET_S = 30.0


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks v1, restated independently of the product's code."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def post_event(url: str, secret: str, invoice: dict) -> httpx.Response:
    body = json.dumps(
        {
            "type": "invoice.approved",
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {"id": invoice["id"], "updated_at": str(invoice["updated-at"])},
        }
    ).encode()
    webhook_id = f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
    }
    return httpx.post(f"{url}/webhooks/coupa", content=body, headers=headers, timeout=10)


def start(args: list[str], env: dict, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def bookable_invoices(sandboxes) -> list[dict]:
    """Approved invoices the seed means to be booked without a PO or any special handling."""
    expect = sandboxes.seed.expectations
    left_out = set(expect["unmappable_invoices"]) | set(expect["po_backed_invoices"]) | set(expect["credit_notes"])
    left_out |= set(expect["foreign_currency_invoices"]) | set(expect["special_invoice_numbers"])
    bad_suppliers = set(expect["unmappable_suppliers"]) | set(expect["inactive_suppliers"])
    return [
        i
        for i in sandboxes.coupa.state.records("invoices")
        if i["status"] == "approved" and i["id"] not in left_out and i["supplier"]["id"] not in bad_suppliers
    ]


def pending_numbers(sandboxes) -> set[str]:
    return {h["InvoiceNumber"] for h in sandboxes.d365.state.records("VendorInvoiceHeaders")}


def wait_for(predicate, timeout_s: float, what: str, logs: list[Path]) -> float:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in logs if p.exists())
            raise AssertionError(f"{what} within {timeout_s} s\n{tails}")
        time.sleep(0.1)
    return time.monotonic()


def test_signed_events_reach_d365_through_the_daemon_and_a_killed_receiver_loses_nothing(sandboxes, tmp_path):
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    staging_dir = tmp_path / "webhooks"
    env = {
        **os.environ,
        **sandboxes.env(),
        "DAGSTER_HOME": str(prepare_dagster_home(tmp_path / "home")),
        "SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'sync.db'}",
        "COUPA_MAX_REQUESTS_PER_SECOND": "1000",
        "WEBHOOK_STAGING_DIR": str(staging_dir),
        "COUPA_WEBHOOK_SECRET": secret,
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = [tmp_path / "receiver.log", tmp_path / "daemon.log"]
    receiver_args = [str(BIN / "coupa-d365"), "webhooks", "serve", "--host", "127.0.0.1", "--port", str(port)]
    receiver = start(receiver_args, env, logs[0])
    daemon = start([str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")], env, logs[1])
    invoices = bookable_invoices(sandboxes)
    assert len(invoices) >= EVENTS + 2, "the test seed has too few approved invoices"
    try:
        wait_for(lambda: _healthy(url), 60, "the receiver did not answer /healthz", logs)
        # warm-up: the first event also waits for the daemon and the code location to start
        warm_up = invoices[0]
        assert post_event(url, secret, warm_up).status_code in (200, 202)
        wait_for(lambda: warm_up["invoice-number"] in pending_numbers(sandboxes), 180, "warm-up not pending", logs)

        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        watching = threading.Event()

        def watch() -> None:  # records when each announced invoice first shows up pending in D365
            while not watching.is_set():
                pending = pending_numbers(sandboxes)
                now = time.monotonic()
                for number in list(sent):
                    if number in pending and number not in seen:
                        seen[number] = now
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            for invoice in invoices[1 : EVENTS + 1]:
                posted_at = time.monotonic()
                answer = post_event(url, secret, invoice)
                assert answer.status_code in (200, 202), answer.text
                sent[invoice["invoice-number"]] = posted_at
                time.sleep(SPACING_S)
            wait_for(lambda: len(seen) == EVENTS, 180, f"not every event's invoice pending ({EVENTS})", logs)
        finally:
            watching.set()
            watcher.join(timeout=5)

        # the receiver dies right after its 2xx: the staged event is still synced by the sensor
        last = invoices[EVENTS + 1]
        assert post_event(url, secret, last).status_code in (200, 202)
        os.killpg(receiver.pid, signal.SIGKILL)
        receiver.wait(timeout=10)
        wait_for(lambda: last["invoice-number"] in pending_numbers(sandboxes), 120, "killed receiver lost", logs)
    finally:
        stop(receiver)
        stop(daemon)

    latencies = sorted(seen[n] - sent[n] for n in sent)
    p50 = statistics.median(latencies)
    p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
    report = {
        "events": len(latencies),
        "p50_s": round(p50, 2),
        "p95_s": round(p95, 2),
        "latencies_s": [round(x, 2) for x in latencies],
        "where_the_time_goes_s": run_phases(Path(env["DAGSTER_HOME"])),
    }
    (tmp_path / "webhook_latency.json").write_text(json.dumps(report, indent=2))
    print(f"webhook -> pending in D365 over {len(latencies)} events: p50 {p50:.1f} s, p95 {p95:.1f} s")
    headers = sandboxes.d365.state.records("VendorInvoiceHeaders")
    keys = [(h["dataAreaId"], h["InvoiceAccount"], h["InvoiceNumber"]) for h in headers]
    assert len(keys) == len(set(keys)) == EVENTS + 2  # exactly the announced invoices, each once
    assert p95 <= P95_TARGET_S, report


def run_phases(home: Path) -> dict[str, float]:
    """Median seconds per phase of the event-driven runs: the sensor picking the batch up after the
    last event of it arrived, the queue, the run process starting, and the sync itself."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home))
    phases: dict[str, list[float]] = {"queued": [], "process_start": [], "sync_step": []}
    try:
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS])):
            stamps: dict[str, float] = {}
            for record in instance.get_records_for_run(run.run_id).records:
                entry = record.event_log_entry
                if entry.dagster_event is not None:
                    stamps.setdefault(entry.dagster_event.event_type_value, entry.timestamp)
            phases["queued"].append(stamps["PIPELINE_STARTING"] - stamps["PIPELINE_ENQUEUED"])
            phases["process_start"].append(stamps["PIPELINE_START"] - stamps["PIPELINE_STARTING"])
            phases["sync_step"].append(stamps["STEP_SUCCESS"] - stamps["STEP_START"])
    finally:
        instance.dispose()
    return {name: round(statistics.median(values), 2) for name, values in phases.items() if values}


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
