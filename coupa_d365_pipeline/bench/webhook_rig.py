"""The real processes of the event-driven flow, for ``coupa-d365 bench-webhooks`` and the e2e test that
kills the receiver: ``coupa-d365 webhooks serve`` and ``dagster-daemon run`` with the code location on a
fresh SQLite instance, both pointed at running sandboxes; signed ``invoice.approved`` events posted to
the receiver, and the moment each announced invoice shows up pending in D365. Plain Python: it launches
processes and never imports Dagster (the run phases are read by ``bench.worker phases``)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import httpx

from ..sandbox.faults import FaultConfig
from ..sandbox.launch import RunningSandboxes, SandboxOptions, start_sandboxes
from ..sandbox.seed import SeedConfig
from ..sandbox.server import free_port
from ..settings import DEFAULT_WEBHOOK_SENSOR_INTERVAL_S
from ..webhooks.signing import sign
from .latency import WebhookBenchSettings, WebhookLatencyDocument, latency_document, render_markdown

BIN = Path(sys.executable).parent
WORKSPACE_YAML = """\
load_from:
  - python_module:
      module_name: coupa_d365_pipeline.definitions
      location_name: coupa_d365_pipeline
"""
POLL_S = 0.05


class RigError(RuntimeError):
    """Something did not happen in time; the message carries the end of the processes' logs."""


def _executable(name: str) -> str:
    beside = BIN / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def bookable_invoices(sandboxes: RunningSandboxes) -> list[dict]:
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


def pending_numbers(sandboxes: RunningSandboxes) -> set[str]:
    return {h["InvoiceNumber"] for h in sandboxes.d365.state.records("VendorInvoiceHeaders")}


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@dataclass
class Rig:
    """The receiver and the daemon, running. Build it with :func:`start_rig`."""

    sandboxes: RunningSandboxes
    workdir: Path
    secret: str
    env: dict[str, str]
    url: str
    receiver: subprocess.Popen
    daemon: subprocess.Popen
    logs: list[Path] = field(default_factory=list)

    def post(self, invoice: dict) -> httpx.Response:
        """A signed ``invoice.approved`` event for ``invoice`` (a Coupa record), as Coupa would send it."""
        body = json.dumps(
            {
                "type": "invoice.approved",
                "timestamp": datetime.now(UTC).isoformat(),
                "data": {"id": invoice["id"], "updated_at": str(invoice["updated-at"])},
            }
        ).encode()
        webhook_id = f"msg_{uuid.uuid4().hex}"
        headers = {"content-type": "application/json", **sign(self.secret, webhook_id, int(time.time()), body)}
        return httpx.post(f"{self.url}/webhooks/coupa", content=body, headers=headers, timeout=10)

    def accept(self, invoice: dict) -> None:
        answer = self.post(invoice)
        if answer.status_code not in (200, 202):
            raise RigError(f"the receiver answered {answer.status_code} to a signed event: {answer.text[:300]}")

    def pending(self) -> set[str]:
        return pending_numbers(self.sandboxes)

    def log_tails(self, chars: int = 2500) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in self.logs if p.exists())

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
        """Poll ``predicate`` until true (returns the monotonic time) or raise RigError("<what> within ...")."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise RigError(f"{what} within {timeout_s:g} s\n{self.log_tails()}")
            time.sleep(POLL_S)
        return time.monotonic()

    def warm_up(self, invoice: dict, timeout_s: float = 180.0) -> None:
        """The receiver answers, and one event goes all the way: the daemon and its code location are up."""
        self.wait_for(self._healthy, 60, "the receiver did not answer /healthz")
        self.accept(invoice)
        self.wait_for(lambda: invoice["invoice-number"] in self.pending(), timeout_s, "the warm-up event not pending")

    def measure(self, invoices: Sequence[dict], spacing_s: float, timeout_s: float) -> list[float]:
        """Post one event per invoice, ``spacing_s`` apart; the seconds from each signed POST sent to its
        invoice first seen pending in D365 (polled every 50 ms), in the order sent. ``timeout_s`` counts
        from the last event sent; RigError names the invoices still missing then."""
        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        lock = threading.Lock()
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                pending = self.pending()
                now = time.monotonic()
                with lock:
                    for number in sent.keys() - seen.keys():
                        if number in pending:
                            seen[number] = now
                time.sleep(POLL_S)

        watcher = threading.Thread(target=watch, name="webhook-latency-watcher", daemon=True)
        watcher.start()
        try:
            for i, invoice in enumerate(invoices):
                if i:
                    time.sleep(spacing_s)
                posted_at = time.monotonic()
                self.accept(invoice)
                with lock:
                    sent[invoice["invoice-number"]] = posted_at
            try:
                self.wait_for(lambda: len(seen) == len(sent), timeout_s, "every event's invoice pending in D365")
            except RigError as exc:
                with lock:
                    missing = sorted(sent.keys() - seen.keys())
                raise RigError(
                    f"{len(missing)} of {len(sent)} announced invoices not pending in D365 within {timeout_s:g} s "
                    f"after the last event ({', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}): {exc}"
                ) from None
        finally:
            done.set()
            watcher.join(timeout=5)
        return [seen[n] - sent[n] for n in sent]

    def kill_receiver(self) -> None:
        os.killpg(self.receiver.pid, signal.SIGKILL)
        self.receiver.wait(timeout=10)

    def run_phases(self) -> dict[str, float]:
        """Median phases of the runs so far (bench.worker phases on this instance); {} if it fails."""
        worker = [sys.executable, "-m", "coupa_d365_pipeline.bench.worker", "phases"]
        proc = subprocess.run(worker, env=self.env, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            return {}
        return {k: float(v) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def rig_env(sandboxes: RunningSandboxes, workdir: Path, secret: str, coupa_rps: float) -> dict[str, str]:
    from ..demo import prepare_dagster_home  # plain: prepare_dagster_home imports no Dagster

    return {
        **os.environ,
        **sandboxes.env(),
        "DAGSTER_HOME": str(prepare_dagster_home(workdir / "dagster_home")),
        "SYNC_DATABASE_URL": f"sqlite:///{(workdir / 'sync.db').resolve()}",
        "COUPA_MAX_REQUESTS_PER_SECOND": f"{coupa_rps:g}",
        "WEBHOOK_STAGING_DIR": str((workdir / "webhooks").resolve()),
        "COUPA_WEBHOOK_SECRET": secret,
    }


@contextmanager
def start_rig(sandboxes: RunningSandboxes, workdir: Path, coupa_rps: float = 1000.0) -> Iterator[Rig]:
    """Start the receiver (a free port on 127.0.0.1) and the daemon in ``workdir`` (their logs, a fresh
    DAGSTER_HOME, the sync database and the staging directory live there); stopped on exit."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    secret = new_secret()
    env = rig_env(sandboxes, workdir, secret, coupa_rps)
    (workdir / "workspace.yaml").write_text(WORKSPACE_YAML)
    port = free_port()
    logs = [workdir / "receiver.log", workdir / "daemon.log"]
    receiver_args = [_executable("coupa-d365"), "webhooks", "serve", "--host", "127.0.0.1", "--port", str(port)]
    daemon_args = [_executable("dagster-daemon"), "run", "-w", str(workdir / "workspace.yaml")]
    started: list[subprocess.Popen] = []
    try:
        for args, log_path in ((receiver_args, logs[0]), (daemon_args, logs[1])):
            with open(log_path, "w") as log:
                started.append(
                    subprocess.Popen(
                        args, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        yield Rig(sandboxes, workdir, secret, env, f"http://127.0.0.1:{port}", started[0], started[1], logs)
    finally:
        for proc in started:
            _stop(proc)


@dataclass
class WebhookBenchOptions:
    events: int = 50
    spacing_s: float = 1.0
    d365_latency_ms: float = 100.0
    coupa_latency_ms: float = 50.0
    coupa_max_requests_per_second: float = 25.0
    seed: int = 42
    start_date: date = date(2026, 11, 1)
    timeout_s: float = 300.0  # after the last event: every invoice pending by then, or RigError
    warm_up_timeout_s: float = 180.0

    @property
    def invoices(self) -> int:
        """The seed size: about 40% of a seed's invoices are plainly bookable; the warm-up takes one."""
        return max(200, 3 * (self.events + 1))


def run_webhook_bench(opts: WebhookBenchOptions, progress: Callable[[str], None] = print) -> WebhookLatencyDocument:
    """Fresh sandboxes with latency, the receiver and the daemon in a temporary directory; one warm-up
    event (the daemon and its code location starting is not what is measured), then ``opts.events``."""
    options = SandboxOptions(
        seed=SeedConfig(seed=opts.seed, invoices=opts.invoices, start_date=opts.start_date),
        coupa_faults=FaultConfig(seed=opts.seed, latency_ms=opts.coupa_latency_ms),
        d365_faults=FaultConfig(seed=opts.seed, latency_ms=opts.d365_latency_ms),
    )
    with tempfile.TemporaryDirectory(prefix="coupa-d365-bench-webhooks-") as tmp, start_sandboxes(options) as sandboxes:
        invoices = bookable_invoices(sandboxes)
        if len(invoices) < opts.events + 1:
            raise RigError(f"the seed has {len(invoices)} bookable invoices; {opts.events + 1} needed")
        with start_rig(sandboxes, Path(tmp), opts.coupa_max_requests_per_second) as rig:
            progress("bench-webhooks: waiting for the receiver, the daemon and a warm-up event ...")
            rig.warm_up(invoices[0], opts.warm_up_timeout_s)
            progress(f"bench-webhooks: {opts.events} events, one every {opts.spacing_s:g} s ...")
            latencies = rig.measure(invoices[1 : opts.events + 1], opts.spacing_s, opts.timeout_s)
            phases = rig.run_phases()
    settings = WebhookBenchSettings(
        events=opts.events,
        spacing_s=opts.spacing_s,
        d365_latency_ms=opts.d365_latency_ms,
        coupa_latency_ms=opts.coupa_latency_ms,
        coupa_max_requests_per_second=opts.coupa_max_requests_per_second,
        seed=opts.seed,
        invoices=opts.invoices,
        sensor_interval_s=DEFAULT_WEBHOOK_SENSOR_INTERVAL_S,
    )
    return latency_document(latencies, settings, phases)


def write_latency_outputs(doc: WebhookLatencyDocument, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "webhook_latency.json", out / "webhook_latency.md"
    json_path.write_text(doc.model_dump_json(indent=2) + "\n")
    md_path.write_text(render_markdown(doc))
    return [json_path, md_path]
