"""End-to-end demo on the embedded default: both sandboxes + a SQLite Dagster instance.

Runs real Dagster materializations (recorded in ``DAGSTER_HOME``, visible afterwards in
``dagster dev``) and prints a short table of what moved.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

LOCAL_INSTANCE_YAML = """\
# Embedded default instance for local work: SQLite under this directory, no PostgreSQL needed.
# The production instance is the repository's root dagster.yaml.
telemetry:
  enabled: false
nux:
  enabled: false  # no "Join the Dagster community" dialog over the UI
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 2
concurrency:
  runs:
    max_concurrent_runs: 2
"""


def prepare_dagster_home(path: Path) -> Path:
    """DAGSTER_HOME for local work: created 0700 (run history, logs and event data stay private)."""
    from .common.files import make_private_dirs, write_private_file

    path = path.resolve()
    make_private_dirs(path)
    config = path / "dagster.yaml"
    if not config.exists():
        write_private_file(config, LOCAL_INSTANCE_YAML)
    return path


def _materialized_metadata(result: Any) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        found["/".join(mat.asset_key.path)] = {k: v.value for k, v in mat.metadata.items()}
    return found


def simulate_accounts_payable(sandboxes: Any, database_url: str, count: int = 20) -> tuple[int, str]:
    """What an AP user would do in D365 between runs: post some pending invoices, pay some of them
    (every other one in two partial payments), so the status flow has something to report."""
    from decimal import Decimal

    from .state.ledger import Ledger
    from .state.store import make_engine

    rows = Ledger(make_engine(database_url)).rows("invoice", ["written"])[:count]
    paid_full = paid_part = 0
    for n, row in enumerate(rows):
        key = row.d365_key or {}
        posted = sandboxes.d365.state.post_invoice(key["dataAreaId"], key["HeaderReference"])
        journal = posted["VendInvoiceJourBiEntity"]
        amount = abs(Decimal(str(journal["InvoiceAmount"])))
        if n % 2 == 0 and amount > 0:
            first = (amount / 2).quantize(Decimal("0.01"))
            sandboxes.d365.state.settle_invoice(
                key["dataAreaId"],
                journal["InvoiceId"],
                journal["InvoiceAccount"],
                first,
                "2026-11-27T12:00:00Z",
                f"PAY-{n:04d}-A",
            )
            if n % 4 == 0:
                sandboxes.d365.state.settle_invoice(
                    key["dataAreaId"],
                    journal["InvoiceId"],
                    journal["InvoiceAccount"],
                    amount - first,
                    "2026-11-28T12:00:00Z",
                    f"PAY-{n:04d}-B",
                )
                paid_full += 1
            else:
                paid_part += 1
    return len(rows), f"{paid_full} in full (two payments), {paid_part} in part"


def d365_request_kind(method: str, path: str) -> str:
    """What a D365 sandbox request was, for the demo's breakdown: token, OData read, OData write,
    $batch, DMF status poll, other DMF action, blob transfer."""
    if "oauth2" in path:
        return "token"
    if "DataManagementDefinitionGroups" in path:
        return "DMF status poll" if path.endswith("GetExecutionSummaryStatus") else "DMF action"
    if "/data/" not in path and path != "/data":
        return f"blob {method}"
    if path.rstrip("/").endswith("$batch"):
        return "$batch"
    return "OData read" if method == "GET" else "OData write"


def request_breakdown(entries: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in entries:
        kind = d365_request_kind(entry.method.upper(), entry.path)
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def peak_rss_mb() -> float:
    """Peak resident set size of this process (sandboxes included: they run in it), in MB. On Linux the
    high-water mark of its own memory (``VmHWM``): ``ru_maxrss`` survives ``exec``, so a worker that a
    big process started (the bench's paths) would report its parent's size."""
    import resource
    import sys
    from pathlib import Path

    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run_demo(options: Any, dagster_home: Path, state_dir: Path, dmf_threshold: int | None = None) -> int:
    from .common.files import make_private_dirs
    from .sandbox.launch import start_sandboxes

    started = time.monotonic()
    home = prepare_dagster_home(dagster_home)
    make_private_dirs(state_dir)
    sync_db = (state_dir / "demo-sync.db").resolve()
    sync_db.unlink(missing_ok=True)
    with start_sandboxes(options) as sandboxes:
        os.environ.update(sandboxes.env())
        os.environ["DAGSTER_HOME"] = str(home)
        os.environ["SYNC_DATABASE_URL"] = f"sqlite:///{sync_db}"
        if dmf_threshold is not None:
            os.environ["D365_DMF_THRESHOLD"] = str(dmf_threshold)
        print(f"Coupa sandbox {sandboxes.coupa_url}, D365 sandbox {sandboxes.d365_url}, DAGSTER_HOME={home}")

        import warnings

        warnings.filterwarnings("ignore", message=".*currently in beta.*")
        import dagster as dg
        from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

        from .definitions import defs
        from .defs.partitions import daily_partitions

        instance = dg.DagsterInstance.get()
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the table below is the report
        master = defs.resolve_job_def("master_data_job").execute_in_process(instance=instance, run_config=quiet)
        keys = daily_partitions.get_partition_keys(dynamic_partitions_store=instance)
        d365_before, coupa_before = sandboxes.d365.log.next_seq(), sandboxes.coupa.log.next_seq()
        documents_started = time.monotonic()
        documents = defs.resolve_job_def("daily_documents_job").execute_in_process(
            instance=instance,
            run_config=quiet,
            tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
        )
        documents_s = time.monotonic() - documents_started
        documents_d365 = [e for e in sandboxes.d365.log.snapshot() if e.seq >= d365_before]
        documents_coupa = sum(1 for e in sandboxes.coupa.log.snapshot() if e.seq >= coupa_before)
        posted, payments = simulate_accounts_payable(sandboxes, os.environ["SYNC_DATABASE_URL"])
        status = defs.resolve_job_def("invoice_status_job").execute_in_process(instance=instance, run_config=quiet)
        meta = _materialized_metadata(master) | _materialized_metadata(documents) | _materialized_metadata(status)
        checks = [
            (e.check_name, e.passed)
            for e in [
                *master.get_asset_check_evaluations(),
                *documents.get_asset_check_evaluations(),
                *status.get_asset_check_evaluations(),
            ]
        ]
        from .state.ledger import Ledger
        from .state.store import make_engine

        vendor_counts = Ledger(make_engine(os.environ["SYNC_DATABASE_URL"])).counts("vendor")
        coupa_calls = len(sandboxes.coupa.log.snapshot())
        d365_calls = len(sandboxes.d365.log.snapshot())

    suppliers = meta.get("coupa/suppliers", {})
    invoices = meta.get("coupa/invoices", {})
    orders = meta.get("coupa/purchase_orders", {})
    booked = meta.get("d365/vendor_invoices", {})
    pos = meta.get("d365/purchase_orders", {})
    status_meta = meta.get("coupa/invoice_status", {})
    vendor_states = vendor_counts
    d365_invoice_requests = booked.get("d365_requests", 0)
    rows = [
        ("Coupa suppliers -> staged", suppliers.get("fetched", 0), ""),
        (
            "  -> D365 vendors written (VendorsV2)",
            vendor_states.get("written", 0),
            f"in the legal entities they are used in; quarantined {vendor_states.get('quarantined', 0)}",
        ),
        (
            "Coupa invoices (approved/voided) -> staged",
            invoices.get("fetched", 0),
            f"{len(keys)} daily partitions in one single-run backfill",
        ),
        (
            "  -> D365 pending vendor invoices created",
            booked.get("created", 0),
            "header + lines in one $batch changeset each",
        ),
        (
            "  -> already in D365 (adopted, not duplicated)",
            booked.get("already_present", 0) + booked.get("repaired", 0),
            "",
        ),
        (
            "  -> quarantined (not written, reason in ledger)",
            booked.get("quarantined", 0),
            "check vendor_invoices_not_stuck lists them",
        ),
        ("  -> voided in Coupa (removed / never booked)", booked.get("voided", 0), ""),
        ("  -> failed", booked.get("failed", 0), ""),
        ("AP user in D365 (simulated): invoices posted", posted, "and paid: " + payments),
        (
            "  -> Coupa invoices updated with posted/paid status",
            status_meta.get("invoices_updated", 0),
            "history record with voucher; payments, paid flag",
        ),
        ("Coupa purchase orders (issued/closed/cancelled) -> staged", orders.get("fetched", 0), ""),
        ("  -> D365 purchase orders created", pos.get("created", 0), "PurchaseOrderHeadersV2 + PurchaseOrderLinesV2"),
        ("  -> closed / cancelled recorded", pos.get("closed", 0) + pos.get("cancelled", 0), ""),
        ("  -> quarantined or failed", pos.get("quarantined", 0) + pos.get("failed", 0), ""),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    print(f"{'what moved':<{width}}  {'count':>6}  note")
    print(f"{'-' * width}  {'-' * 6}  ----")
    for label, count, note in rows:
        print(f"{label:<{width}}  {count:>6}  {note}")
    for name, passed in checks:
        print(f"asset check {name}: {'PASSED' if passed else 'FAILED'}")
    processed = booked.get("processed", 0) or 1
    print(
        f"\nD365 requests per processed invoice: {d365_invoice_requests / processed:.2f}; "
        f"Coupa requests per processed invoice: {booked.get('coupa_requests', 0) / processed:.2f}"
    )
    breakdown = request_breakdown(documents_d365)
    print(
        f"documents run (invoices + POs, route {booked.get('route', '?')}/{pos.get('route', '?')}): "
        f"{documents_s:.1f} s; Coupa {documents_coupa} requests; D365 {len(documents_d365)} requests: "
        + ", ".join(f"{kind} {n}" for kind, n in breakdown.items())
    )
    reads: dict[str, int] = {}
    for entry in documents_d365:
        if d365_request_kind(entry.method.upper(), entry.path) in ("OData read", "OData write"):
            name = entry.path.split("/data/", 1)[-1].split("(", 1)[0]
            reads[f"{entry.method} {name}"] = reads.get(f"{entry.method} {name}", 0) + 1
    print("  OData by entity set: " + ", ".join(f"{k} {n}" for k, n in sorted(reads.items(), key=lambda i: -i[1])))
    print(f"peak RSS of the demo process (sandboxes included): {peak_rss_mb():.0f} MB")
    print(
        f"\nruns: {master.run_id[:8]} (master data), {documents.run_id[:8]} (documents), "
        f"{status.run_id[:8]} (status); "
        f"HTTP calls: Coupa {coupa_calls}, D365 {d365_calls}; wall time {time.monotonic() - started:.1f} s"
    )
    print(
        f"Browse these runs in the UI: DAGSTER_HOME={home} .venv/bin/dagster dev  "
        "(to launch new runs, start the sandboxes first: see README, 'Opening the UI')"
    )
    print(
        "Quarantined invoices are expected with the seed: it contains unmappable ones on purpose "
        "(unknown chart, missing main account, unreleased item, supplier without number)."
    )
    return 0 if master.success and documents.success and status.success else 1
