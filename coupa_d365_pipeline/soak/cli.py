"""The ``coupa-d365 soak`` subcommand (registered by cli.build_parser) and its printed report."""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from ..settings import DEFAULT_SYNC_START_DATE
from .model import SIZES, SoakReport, SoakSize


def render(report: SoakReport) -> str:
    end = report.end_state
    lines = [
        f"soak --size {report.size} (seed {report.seed}): "
        + ("OK" if report.ok else "FAILED")
        + f" in {report.wall_s:.0f} s; converged: {'yes' if report.converged else 'NO'} "
        f"(documents runs after the kills: {report.documents_rounds}, status runs: {report.status_rounds})",
        f"SIGKILLed runs: {report.kills}; overlap status/documents: {report.overlap or 'not reached'}",
        "",
        f"invoices: expected {end.invoices_expected}, booked {end.invoices_booked}; "
        f"duplicates {end.invoice_duplicates}, "
        f"missing {end.invoices_missing}, unexpected {end.invoices_unexpected}, "
        f"amount differences {end.invoice_amount_differences}, line differences {end.invoice_line_differences}",
        f"purchase orders: expected {end.purchase_orders_expected} (+{end.purchase_orders_quarantined} quarantined "
        f"with a reason); duplicates {end.purchase_order_duplicates}, missing {end.purchase_orders_missing}, "
        f"amount differences {end.purchase_order_amount_differences}; vendor duplicates {end.vendor_duplicates}",
        f"payments: made in D365 {end.payments_made}, in Coupa {end.payments_in_coupa}; "
        f"missing {end.payments_missing}, "
        f"duplicates {end.payment_duplicates}, amount differences {end.payment_amount_differences}, "
        f"unexpected {end.payments_unexpected}; paid flag differences {end.paid_flag_differences}",
        "",
        "faults injected (from the sandboxes' request logs):",
    ]
    for name, kinds in report.faults.items():
        shown = ", ".join(f"{kind} {n}" for kind, n in kinds.items())
        lines.append(f"  {name}: {report.requests.get(name, 0)} requests; {shown}")
    lines.append("webhooks: " + ", ".join(f"{k} {v}" for k, v in report.webhooks.items()))
    for note in report.notes:
        lines.append(f"note: {note}")
    if report.end_state.problems():
        lines.append("problems: " + json.dumps(report.end_state.problems()))
    return "\n".join(lines)


def _soak(args: argparse.Namespace) -> int:
    from .model import SoakOptions
    from .runner import run_soak

    opts = SoakOptions(
        out=Path(args.out),
        size=SoakSize(args.size),
        seed=args.seed,
        start_date=date.fromisoformat(args.start_date),
        max_rounds=args.max_rounds,
        retry_after_s=args.retry_after_s,
    )
    report = run_soak(opts)
    opts.out.mkdir(parents=True, exist_ok=True)
    path = opts.out / "soak.json"
    path.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    print()
    print(render(report))
    print(f"wrote {path}")
    return 0 if report.ok else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    sizes = "; ".join(
        f"{size.value}: {s.invoices} invoices, {s.purchase_orders} POs, {s.suppliers} suppliers"
        for size, s in SIZES.items()
    )
    soak = sub.add_parser(
        "soak",
        help="chaos soak: the connector as real processes against faulty sandboxes, killed twice, until it converges",
        description="Starts both sandboxes with 10% 429 (with Retry-After), 5% 5xx, 2% connections dropped after "
        "the write, every token revoked every 300 requests; runs master data, two documents runs SIGKILLed "
        "mid-write, signed webhooks (30% twice, shuffled) through the receiver and dagster-daemon's sensor, "
        "documents runs until converged, a simulated AP user posting and paying, a status run overlapping a "
        "documents run, status runs until converged; then compares D365 and Coupa with the seed: "
        "duplicates, missing, amount differences, payments. Prints the counts and the faults injected; "
        f"writes soak.json (and the run logs under work/) to --out. Exit 1 unless all counts are 0. Sizes: {sizes}.",
    )
    soak.add_argument("--size", choices=[s.value for s in SoakSize], default=SoakSize.CI.value, help="default ci")
    soak.add_argument("--out", default="soak-out", help="output directory (default soak-out)")
    soak.add_argument("--seed", type=int, default=42, help="random seed of the data and the faults (default 42)")
    soak.add_argument("--start-date", default=DEFAULT_SYNC_START_DATE, help="first day of the seed's updated-at range")
    soak.add_argument(
        "--max-rounds",
        type=int,
        default=6,
        help="re-runs allowed per phase before giving up on convergence (default 6)",
    )
    soak.add_argument(
        "--retry-after-s",
        type=int,
        default=None,
        help="Retry-After (seconds) of the injected 429s (default: 1 for full; 0 for ci, to fit its time budget)",
    )
    soak.set_defaults(func=_soak)
