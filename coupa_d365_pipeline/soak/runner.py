"""The soak scenario: faulty sandboxes, real run processes, two SIGKILLs, webhooks, an overlap of a
status run and a documents run, convergence, then the end-state comparison.

1. master data (re-run until it succeeds);
2. a documents run killed with SIGKILL while its 2nd invoice ``$batch`` is parked in the D365 sandbox
   (a scripted ``hold``: the kill is a rendezvous, not a timer); the parked write lands afterwards,
   with nobody to hear the answer; then a second documents run killed the same way at a later batch;
3. signed ``invoice.approved`` webhooks (some twice, shuffled) to the receiver; ``dagster-daemon``'s
   ``coupa_webhook_sensor`` runs them while the documents runs re-run until converged (run succeeded,
   no ledger row ``writing``/``failed``, no webhook backlog);
4. the simulated AP user posts and pays some invoices in D365;
5. a status run started while a documents run is parked on its Coupa invoice read; the documents run
   goes on once the status run has written to Coupa (both alive at once, deterministically);
6. status runs until one succeeds without writing anything to Coupa;
7. the comparison (:mod:`.verify`) and the faults the sandboxes' request logs say were injected.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Any

from ..common.clock import SimulatedClock
from ..sandbox.faults import FaultConfig, LoggedRequest, RequestLog, ScriptedFault
from ..sandbox.launch import RunningSandboxes, SandboxOptions, start_sandboxes
from ..sandbox.seed import SeedConfig
from ..state.ledger import Ledger
from ..state.store import make_engine
from .model import RunRecord, SoakOptions, SoakReport
from .processes import Launcher, RunProcess
from .verify import APWork, compare, simulate_accounts_payable
from .webhooks import WebhookRelay, new_secret

BATCH_PATH = r"^/data/\$batch$"
INVOICE_BATCH = "VendorInvoiceHeaders"  # in the body of an invoice $batch
RUN_TIMEOUT_S = 900.0
DOCUMENTS, MASTER, STATUS = "daily_documents_job", "master_data_job", "invoice_status_job"


class SoakError(RuntimeError):
    """The scenario could not be carried out (a run kept failing, a rendezvous never came)."""


def _wait_in_log(log: RequestLog, predicate: Callable[[list[LoggedRequest]], Any], runs: list[RunProcess]) -> Any:
    """Block until the request log satisfies ``predicate``; None as soon as one of ``runs`` ended."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            return log.wait_for(predicate, timeout_s=0.5)
        except TimeoutError:
            if any(not run.alive() for run in runs):
                return None
    raise SoakError("the sandbox never saw the awaited request")


class Soak:
    def __init__(self, opts: SoakOptions, sandboxes: RunningSandboxes, launcher: Launcher, relay: WebhookRelay):
        self.opts, self.sandboxes, self.launcher, self.relay = opts, sandboxes, launcher, relay
        spec = opts.spec
        last = opts.start_date + timedelta(days=spec.days - 1)
        self.window = (opts.start_date.isoformat(), last.isoformat())
        self.report = SoakReport(size=opts.size.value, seed=opts.seed, settings={})
        self.ledger = Ledger(make_engine(launcher.env["SYNC_DATABASE_URL"]))
        self.progress: Callable[[str], None] = print

    # -- runs
    def _record(self, run: RunProcess) -> None:
        code = run.proc.poll()
        self.report.runs.append(RunRecord(run.name, run.job, code, run.wall_s, run.killed))
        self.progress(
            f"soak: {run.name}: "
            + ("killed (SIGKILL)" if run.killed else f"exit {code}")
            + f" after {run.wall_s:.1f} s"
        )

    def run(self, name: str, job: str, **extra_env: str) -> int:
        run = self.launcher.job(name, job, self.window if job == DOCUMENTS else None, **extra_env)
        code = run.wait(RUN_TIMEOUT_S)
        self._record(run)
        return code

    def until_success(self, name: str, job: str) -> None:
        for n in range(1, self.opts.max_rounds + 1):
            if self.run(f"{name}-{n}", job) == 0:
                return
        raise SoakError(f"{job} did not succeed in {self.opts.max_rounds} runs")

    def killed_documents_run(self, name: str, batches_before: int) -> None:
        """A documents run SIGKILLed while its invoice ``$batch`` number ``batches_before + 1`` is parked."""
        d365 = self.sandboxes.d365
        for attempt in range(1, self.opts.max_rounds + 1):
            mark = d365.log.next_seq()
            hold = d365.injector.script(
                ScriptedFault(
                    kind="hold", method="POST", path_regex=BATCH_PATH, body_regex=INVOICE_BATCH, after=batches_before
                )
            )
            run = self.launcher.job(f"{name}-{attempt}", DOCUMENTS, self.window, D365_MAX_CONCURRENCY="1")
            held = _wait_in_log(
                d365.log, lambda es, since=mark: [e for e in es if e.seq >= since and e.injected == "hold"], [run]
            )
            try:
                if held:
                    run.kill()
                    self.report.kills += 1
            finally:
                hold.release()
                if run.alive():
                    run.kill()
            if not held:  # the run ended (failed) before its write; the hold must not catch a later run
                run.wait(RUN_TIMEOUT_S)
                self._record(run)
                d365.injector.withdraw(hold)
                continue
            self._record(run)
            [entry] = held
            d365.log.wait_for(lambda _, e=entry: e.status is not None, timeout_s=120)  # the write lands, unheard
            return
        raise SoakError(f"{name}: no documents run reached its invoice write in {self.opts.max_rounds} attempts")

    def _unfinished(self) -> int:
        return sum(len(self.ledger.rows(doc, ["writing", "failed"])) for doc in ("invoice", "purchase_order"))

    def _drain_webhooks(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.relay.backlog() and time.monotonic() < deadline:
            time.sleep(0.5)
        if self.relay.backlog():
            self.report.notes.append(f"webhook backlog not drained in {timeout_s:.0f} s")

    def converge_documents(self) -> bool:
        for n in range(1, self.opts.max_rounds + 1):
            if n > 1:
                self._drain_webhooks()
            self.report.documents_rounds += 1
            code = self.run(f"documents-{self.report.documents_rounds}", DOCUMENTS)
            if code == 0 and not self._unfinished() and not self.relay.backlog():
                return True
        return False

    def overlap(self) -> None:
        """A documents run parked on its Coupa invoice read; a status run started meanwhile writes to
        Coupa; then the documents run goes on. Both must finish cleanly (or be re-run by convergence)."""
        coupa = self.sandboxes.coupa
        mark = coupa.log.next_seq()
        hold = coupa.injector.script(ScriptedFault(kind="hold", method="GET", path_regex=r"^/api/invoices$"))
        documents = self.launcher.job("overlap-documents", DOCUMENTS, self.window)
        status: RunProcess | None = None
        try:
            held = _wait_in_log(
                coupa.log, lambda es: [e for e in es if e.seq >= mark and e.injected == "hold"], [documents]
            )
            status_mark = coupa.log.next_seq()
            status = self.launcher.job("overlap-status", STATUS)
            wrote = _wait_in_log(
                coupa.log,
                lambda es: [
                    e for e in es if e.seq >= status_mark and e.method in ("PUT", "POST") and "/api/" in e.path
                ],
                [status],
            )
            parked = bool(held) and held[0].status is None and documents.alive()
            self.report.overlap = {
                "documents_parked_on": "GET /api/invoices" if held else None,
                "status_writes_while_parked": len(wrote or []),
                "overlapped": parked and bool(wrote),
            }
        finally:
            hold.release()
        for run in (documents, status):
            if run is not None:
                run.wait(RUN_TIMEOUT_S)
                self._record(run)

    def converge_status(self) -> bool:
        coupa = self.sandboxes.coupa
        for n in range(1, self.opts.max_rounds + 1):
            self.report.status_rounds = n
            mark = coupa.log.next_seq()
            code = self.run(f"status-{n}", STATUS)
            writes = [
                e for e in coupa.log.snapshot() if e.seq >= mark and e.method in ("PUT", "POST") and "/api/" in e.path
            ]
            if code == 0 and not writes:
                return True
        return False


def _faults(opts: SoakOptions, salt: int) -> FaultConfig:
    return FaultConfig(
        seed=opts.seed * 10 + salt,
        rate_429=opts.rate_429,
        retry_after_s=opts.spec.retry_after_s if opts.retry_after_s is None else opts.retry_after_s,
        rate_5xx=opts.rate_5xx,
        rate_drop=opts.rate_drop,
        revoke_tokens_every=opts.revoke_tokens_every,
    )


def injected(log: RequestLog) -> tuple[dict[str, int], int, int]:
    """(injected fault kind -> count, requests, 401 answers) from a sandbox's request log."""
    entries = log.snapshot()
    kinds = Counter(e.injected for e in entries if e.injected)
    return dict(sorted(kinds.items())), len(entries), sum(1 for e in entries if e.status == 401)


def run_soak(opts: SoakOptions, progress: Callable[[str], None] = print) -> SoakReport:
    started = time.monotonic()
    spec = opts.spec
    workdir = (opts.out / "work").resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    last_day = opts.start_date + timedelta(days=spec.days - 1)
    # the sandboxes' "now": two days after the seed's last day, whatever today is
    clock = SimulatedClock(datetime.combine(last_day + timedelta(days=2), dtime(9, 0), tzinfo=UTC))
    options = SandboxOptions(
        seed=SeedConfig(
            seed=opts.seed,
            invoices=spec.invoices,
            start_date=opts.start_date,
            days=spec.days,
            suppliers=spec.suppliers,
            purchase_orders=spec.purchase_orders,
        ),
        coupa_faults=_faults(opts, 1),
        d365_faults=_faults(opts, 2),
        clock=clock,
    )
    from ..demo import prepare_dagster_home

    with start_sandboxes(options) as sandboxes:
        env = {
            **os.environ,
            **sandboxes.env(),
            "DAGSTER_HOME": str(prepare_dagster_home(workdir / "dagster_home")),
            "SYNC_DATABASE_URL": f"sqlite:///{workdir / 'sync.db'}",
            "COUPA_MAX_REQUESTS_PER_SECOND": "1000",
            # the OData route at every size (above the threshold a run would take the DMF package route,
            # whose writes are no invoice $batch for the kills' rendezvous)
            "D365_DMF_THRESHOLD": str(spec.invoices * 10 + 1000),
            "WEBHOOK_STAGING_DIR": str(workdir / "webhooks"),
            "COUPA_WEBHOOK_SECRET": new_secret(),
        }
        relay = WebhookRelay(workdir / "webhooks", env["COUPA_WEBHOOK_SECRET"])
        launcher = Launcher(env, workdir)
        soak = Soak(opts, sandboxes, launcher, relay)
        soak.progress = progress
        report = soak.report
        report.settings = {
            "invoices": spec.invoices,
            "purchase_orders": spec.purchase_orders,
            "suppliers": spec.suppliers,
            "days": spec.days,
            "window": list(soak.window),
            "fault_rates": {"429": opts.rate_429, "5xx": opts.rate_5xx, "drop_after": opts.rate_drop},
            "revoke_tokens_every": opts.revoke_tokens_every,
            "retry_after_s": _faults(opts, 0).retry_after_s,
            "webhook_share": opts.webhook_share,
            "webhook_twice": opts.webhook_twice,
        }
        daemon = launcher.daemon(prepare_dagster_home(workdir / "daemon_home"))
        ap: APWork | None = None
        try:
            soak.until_success("master", MASTER)
            soak.killed_documents_run("documents-killed-a", batches_before=1)
            soak.killed_documents_run("documents-killed-b", batches_before=2)
            rng = random.Random(opts.seed)
            unmappable = {int(i) for i in sandboxes.seed.expectations["unmappable_invoices"]}
            bookable = [
                i for i in sandboxes.seed.coupa_invoices if i["status"] == "approved" and i["id"] not in unmappable
            ]
            announced = rng.sample(bookable, max(1, round(len(bookable) * opts.webhook_share)))
            deliveries = relay.plan(announced, opts.webhook_twice, rng)
            relay.deliver(deliveries)
            report.webhooks = {"events": len(announced), "deliveries": len(deliveries)}
            progress(f"soak: {len(deliveries)} webhook deliveries for {len(announced)} invoices")
            documents_ok = soak.converge_documents()
            ap = simulate_accounts_payable(sandboxes)
            progress(f"soak: AP user posted {ap.posted} invoices, made {len(ap.payments)} payments")
            soak.overlap()
            documents_ok = documents_ok and soak.converge_documents()
            status_ok = soak.converge_status()
            soak._drain_webhooks()
            report.converged = documents_ok and status_ok
        except SoakError as exc:
            report.notes.append(str(exc))
            progress(f"soak: {exc}")
        finally:
            daemon.stop()
            relay.stop()
        report.webhooks |= {f"receiver_{k}": v for k, v in relay.answers.items()} | relay.counts()
        quarantined = {r.coupa_id for r in soak.ledger.rows("purchase_order", ["quarantined"]) if r.reason}
        report.end_state = compare(sandboxes, ap, quarantined)
        for name, log in (("coupa", sandboxes.coupa.log), ("d365", sandboxes.d365.log)):
            kinds, requests, unauthorized = injected(log)
            report.faults[name] = kinds | {"answered_401": unauthorized}
            report.requests[name] = requests
    report.wall_s = round(time.monotonic() - started, 1)
    return report
