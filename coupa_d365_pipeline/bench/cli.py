"""The ``coupa-d365 bench`` and ``coupa-d365 bench-webhooks`` subcommands (registered by cli.build_parser)."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from ..settings import DEFAULT_SYNC_START_DATE
from .model import ALL_PATHS, PathName


def _paths(value: str) -> list[PathName]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    try:
        chosen = {PathName(n) for n in names}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--paths takes a comma-separated subset of {','.join(p.value for p in ALL_PATHS)}; got {value!r}"
        ) from None
    if not chosen:
        raise argparse.ArgumentTypeError("--paths needs at least one path")
    return [p for p in ALL_PATHS if p in chosen]


def _bench(args: argparse.Namespace) -> int:
    from .runner import BenchError, BenchOptions, run_bench, write_outputs

    if args.invoices < 1:
        print("error: --invoices must be at least 1", file=sys.stderr)
        return 2
    if args.baseline_invoices is not None and args.baseline_invoices < 1:
        print("error: --baseline-invoices must be at least 1", file=sys.stderr)
        return 2
    opts = BenchOptions(
        out=Path(args.out),
        invoices=args.invoices,
        seed=args.seed,
        d365_latency_ms=args.d365_latency_ms,
        coupa_latency_ms=args.coupa_latency_ms,
        coupa_max_requests_per_second=args.coupa_rps,
        start_date=date.fromisoformat(args.start_date),
        paths=args.paths,
        baseline_invoices=args.baseline_invoices,
    )
    try:
        doc = run_bench(opts)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in write_outputs(doc, opts.out):
        print(f"wrote {path}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help="measure wall time, requests and peak RSS of the baseline, OData, DMF and floor paths on the sandboxes",
        description="Each path runs on fresh sandboxes seeded alike, in its own process; writes bench.json, "
        "bench.md (ratios, targets) and bench.png (documents booked over time) to --out.",
    )
    bench.add_argument("--invoices", type=int, default=10_000, help="seed size (default 10000)")
    bench.add_argument("--out", default="bench-out", help="output directory (default bench-out)")
    bench.add_argument("--d365-latency-ms", type=float, default=100.0, help="D365 latency per request (default 100)")
    bench.add_argument("--coupa-latency-ms", type=float, default=50.0, help="Coupa latency per request (default 50)")
    bench.add_argument(
        "--coupa-rps", type=float, default=25.0, help="the Coupa client's request limit per second (default 25)"
    )
    bench.add_argument(
        "--paths",
        type=_paths,
        default=list(ALL_PATHS),
        help="comma-separated subset of baseline,odata,dmf,floor (default: all four)",
    )
    bench.add_argument(
        "--baseline-invoices",
        type=int,
        default=None,
        metavar="M",
        help="the baseline books only the first M approved invoices and is compared per document (it books "
        "one after another: at the defaults 10,000 would take over 2 hours); default: all",
    )
    bench.add_argument("--seed", type=int, default=42, help="random seed of the data (default 42)")
    bench.add_argument("--start-date", default=DEFAULT_SYNC_START_DATE, help="first day of the seed's updated-at range")
    bench.set_defaults(func=_bench)


def _bench_webhooks(args: argparse.Namespace) -> int:
    from .webhook_rig import RigError, WebhookBenchOptions, run_webhook_bench, write_latency_outputs

    if args.events < 1 or args.spacing_s < 0 or args.timeout_s <= 0:
        print("error: --events must be at least 1, --spacing-s at least 0, --timeout-s above 0", file=sys.stderr)
        return 2
    opts = WebhookBenchOptions(
        events=args.events,
        spacing_s=args.spacing_s,
        d365_latency_ms=args.d365_latency_ms,
        coupa_latency_ms=args.coupa_latency_ms,
        coupa_max_requests_per_second=args.coupa_rps,
        seed=args.seed,
        timeout_s=args.timeout_s,
    )
    try:
        doc = run_webhook_bench(opts)
    except RigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in write_latency_outputs(doc, Path(args.out)):
        print(f"wrote {path}")
    verdict = "met" if doc.met else "NOT met"
    print(
        f"webhook -> pending in D365 over {doc.events} events: p50 {doc.p50_s:.2f} s, p95 {doc.p95_s:.2f} s, "
        f"max {doc.max_s:.2f} s (target p95 <= {doc.target_p95_s:g} s: {verdict})"
    )
    return 0


def add_webhooks_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench-webhooks",
        help="measure webhook -> pending invoice in D365 latency (p50/p95) through the receiver and dagster-daemon",
        description="Starts fresh sandboxes (with latency), `coupa-d365 webhooks serve` and `dagster-daemon run` "
        "(fresh DAGSTER_HOME in a temporary directory), sends one warm-up event and then --events signed "
        "invoice.approved events, and times each from the POST sent to its invoice pending in D365. Writes "
        "webhook_latency.json and webhook_latency.md to --out; exits 1 if an invoice is not pending within "
        "--timeout-s after the last event.",
    )
    bench.add_argument("--events", type=int, default=50, help="events measured (default 50)")
    bench.add_argument("--spacing-s", type=float, default=1.0, help="seconds between two events (default 1)")
    bench.add_argument("--out", default="bench-out", help="output directory (default bench-out)")
    bench.add_argument("--d365-latency-ms", type=float, default=100.0, help="D365 latency per request (default 100)")
    bench.add_argument("--coupa-latency-ms", type=float, default=50.0, help="Coupa latency per request (default 50)")
    bench.add_argument(
        "--coupa-rps", type=float, default=25.0, help="the Coupa client's request limit per second (default 25)"
    )
    bench.add_argument("--seed", type=int, default=42, help="random seed of the data (default 42)")
    bench.add_argument(
        "--timeout-s",
        type=float,
        default=300.0,
        help="fail when an announced invoice is not pending this many seconds after the last event (default 300)",
    )
    bench.set_defaults(func=_bench_webhooks)
