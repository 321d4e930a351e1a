"""``coupa-d365`` command line: ping real or sandbox systems, run the sandboxes, run the demo, show or
upgrade the sync database's schema (``db current | upgrade``), keep credentials in the encrypted store
(``credentials_cli``)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from .common.credentials import CredentialStoreError
from .settings import (
    DEFAULT_PING_TIMEOUT_S,
    DEFAULT_SYNC_START_DATE,
    DEFAULT_WEBHOOK_STAGING_DIR,
    ENV_VARS,
    ConfigError,
    coupa_client,
    d365_client,
    load_coupa_settings,
    load_d365_settings,
)


def _ping(args: argparse.Namespace) -> int:
    """Check each system with the configured credentials; print PASS/FAIL per system."""
    from .common.redact import install_log_redaction, redact

    install_log_redaction()
    results: list[tuple[str, bool, str]] = []
    problems: list[str] = []
    coupa_settings = load_coupa_settings(os.environ, problems)
    if problems:
        results.append(("coupa", False, "; ".join(problems)))
    else:
        try:
            with coupa_client(coupa_settings.model_copy(update={"timeout_s": args.timeout})) as coupa:
                facts = coupa.ping()
            results.append(("coupa", True, f"token ok, suppliers readable, X-COUPA-API-VERSION={facts['api_version']}"))
        except Exception as exc:  # report every failure kind the same way
            results.append(("coupa", False, redact(str(exc))))
    problems = []
    d365_settings = load_d365_settings(os.environ, problems)
    if problems:
        results.append(("d365", False, "; ".join(problems)))
    else:
        try:
            with d365_client(d365_settings.model_copy(update={"timeout_s": args.timeout})) as d365:
                facts = d365.ping(d365_settings.default_legal_entity)
            if facts["legal_entity_exists"]:
                results.append(
                    (
                        "d365",
                        True,
                        f"token ok, legal entity {facts['legal_entity']} ({facts['legal_entity_name']}) exists",
                    )
                )
            else:
                results.append(
                    (
                        "d365",
                        False,
                        f"token ok, but legal entity {facts['legal_entity']!r} does not "
                        "exist; fix D365_DEFAULT_LEGAL_ENTITY",
                    )
                )
        except Exception as exc:
            results.append(("d365", False, redact(str(exc))))
    for system, ok, reason in results:
        print(f"{system:<6} {'PASS' if ok else 'FAIL'}  {reason}")
    return 0 if all(ok for _, ok, _ in results) else 1


def _sandbox_options(args: argparse.Namespace):
    from .sandbox.faults import FaultConfig
    from .sandbox.launch import SandboxOptions
    from .sandbox.seed import SeedConfig

    faults = FaultConfig(
        seed=args.seed,
        rate_429=args.rate_429,
        retry_after_s=args.retry_after,
        rate_5xx=args.rate_5xx,
        rate_drop=args.rate_drop,
        latency_ms=args.latency_ms,
    )
    return SandboxOptions(
        host=args.host,
        coupa_port=getattr(args, "coupa_port", 0),
        d365_port=getattr(args, "d365_port", 0),
        seed=SeedConfig(seed=args.seed, invoices=args.invoices, start_date=date.fromisoformat(args.start_date)),
        coupa_faults=faults,
        d365_faults=faults,
    )


def _sandbox(args: argparse.Namespace) -> int:
    """Run both emulators in the foreground until interrupted."""
    from .sandbox import launch

    warning = launch.exposure_warning(args.host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    sandboxes = launch.start_sandboxes(_sandbox_options(args))
    env = sandboxes.env()
    lines = list(launch.iter_env_lines(env))
    if args.env_file:
        launch.write_env_file(args.env_file, lines)
    print(f"Coupa sandbox: {sandboxes.coupa_url}   D365 sandbox: {sandboxes.d365_url}")
    print(
        f"seed {args.seed}: {len(sandboxes.seed.coupa_suppliers)} suppliers, "
        f"{len(sandboxes.seed.coupa_purchase_orders)} POs, {len(sandboxes.seed.coupa_invoices)} invoices"
    )
    print("Environment for the connector" + (f" (also written to {args.env_file})" if args.env_file else "") + ":")
    print("\n".join(lines), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    sandboxes.stop()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .sandbox.launch import exposure_warning

    warning = exposure_warning(args.host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    return run_demo(
        _sandbox_options(args),
        dagster_home=Path(args.dagster_home),
        state_dir=Path(args.state_dir),
        dmf_threshold=args.dmf_threshold,
    )


def _env(args: argparse.Namespace) -> int:
    width = max(len(name) for name in ENV_VARS) + 1
    print(f"{'variable':<{width}} {'required':<9} description")
    for name, (required, description) in ENV_VARS.items():
        print(f"{name:<{width}} {'yes' if required else 'no':<9} {description}")
    return 0


def _webhooks_serve(args: argparse.Namespace) -> int:
    from .webhooks.service import serve

    return serve(args.host, args.port, os.environ)


def _webhook_staging(args: argparse.Namespace):
    from .settings import webhook_staging_dir
    from .webhooks.staging import WebhookStaging

    staging = WebhookStaging(args.staging_dir or webhook_staging_dir(os.environ))
    if not staging.exists():
        print(f"error: no webhook staging directory at {staging.root} (set WEBHOOK_STAGING_DIR)", file=sys.stderr)
        return None
    return staging


def _webhooks_status(args: argparse.Namespace) -> int:
    from .webhooks.staging import Place

    staging = _webhook_staging(args)
    if staging is None:
        return 2
    for place in (Place.INCOMING, Place.BATCHES, Place.PROCESSED, Place.FAILED):
        print(f"{place.value:<10} {staging.count(place)}")
    for event in staging.failed_events(limit=50):
        print(f"failed: {event.event_type.value} {event.coupa_id} (webhook-id {event.webhook_id}): {event.failure}")
    return 0


def _webhooks_requeue_failed(args: argparse.Namespace) -> int:
    staging = _webhook_staging(args)
    if staging is None:
        return 2
    moved = staging.requeue_failed()
    print(f"{moved} failed event(s) moved back to incoming/; coupa_webhook_sensor picks them up on its next tick")
    return 0


def _webhooks_sign(args: argparse.Namespace) -> int:
    from .webhooks.service import sign_command

    body = sys.stdin.buffer.read() if args.body_file == "-" else Path(args.body_file).read_bytes()
    try:
        print(sign_command(args.id, args.timestamp, body, os.environ))
    except UnicodeDecodeError:
        print("error: the body is not UTF-8; Standard Webhooks events are JSON (UTF-8)", file=sys.stderr)
        return 2
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _db_connection():
    from .settings import sync_database_url
    from .state.database_url import connect_error
    from .state.store import make_engine

    engine = make_engine(sync_database_url(os.environ))
    try:
        return engine, engine.connect()
    except Exception as exc:  # the driver's error, explained without the password
        engine.dispose()
        raise connect_error(engine.url, exc) from None


def _db_current(args: argparse.Namespace) -> int:
    from .state.database_url import redact_url
    from .state.migrate import SyncSchemaError, check_known, status

    engine, conn = _db_connection()
    try:
        found = status(conn)
        where = redact_url(engine.url) + (f" (schema {found.schema})" if found.schema else "")
        print(f"database  {where}")
        print(f"revision  {found.current or 'none (empty, or created before migrations: the next upgrade adopts it)'}")
        print(f"head      {found.head}" + (" (up to date)" if found.up_to_date else " (run: coupa-d365 db upgrade)"))
        try:
            check_known(conn, found.current)
        except SyncSchemaError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0 if found.up_to_date else 1
    finally:
        conn.close()
        engine.dispose()


def _db_upgrade(args: argparse.Namespace) -> int:
    from .state.migrate import SyncSchemaError, upgrade

    engine, conn = _db_connection()
    try:
        before, after = upgrade(conn)
    except SyncSchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
        engine.dispose()
    print(
        f"sync database already at {after}"
        if before == after
        else f"sync database upgraded: {before or 'none'} -> {after}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coupa-d365",
        description=(
            "Coupa -> Dynamics 365 F&O connector. Configuration comes from environment variables "
            "(run 'coupa-d365 env' for the list); credentials may come from an encrypted store instead "
            "('coupa-d365 credentials --help')."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ping = sub.add_parser("ping", help="check Coupa and D365 with the configured credentials (token + one read)")
    ping.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_PING_TIMEOUT_S,
        help=f"seconds per HTTP call (default {DEFAULT_PING_TIMEOUT_S:g})",
    )
    ping.set_defaults(func=_ping)

    def sandbox_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--host",
            default="127.0.0.1",
            help="interface to bind (default 127.0.0.1, this machine only; anything else is reachable "
            "from the network and prints a warning)",
        )
        p.add_argument(
            "--invoices", type=int, default=500, help="seed size: approved invoices to generate (default 500)"
        )
        p.add_argument("--seed", type=int, default=42, help="random seed for data and faults (default 42)")
        p.add_argument("--start-date", default=DEFAULT_SYNC_START_DATE, help="first day of the seed's updated-at range")
        p.add_argument("--rate-429", type=float, default=0.0, help="share of API calls answered 429 (0..1)")
        p.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds sent with injected 429s")
        p.add_argument("--rate-5xx", type=float, default=0.0, help="share of API calls answered 503 (0..1)")
        p.add_argument(
            "--rate-drop",
            type=float,
            default=0.0,
            help="share of API calls whose connection drops after the server processed them (0..1)",
        )
        p.add_argument("--latency-ms", type=float, default=0.0, help="latency added to every API call")

    sandbox = sub.add_parser("sandbox", help="run the Coupa and D365 emulators with seed data until Ctrl-C")
    sandbox_flags(sandbox)
    sandbox.add_argument("--coupa-port", type=int, default=8701, help="Coupa sandbox port (default 8701)")
    sandbox.add_argument("--d365-port", type=int, default=8702, help="D365 sandbox port (default 8702)")
    sandbox.add_argument(
        "--env-file",
        default=".sandbox.env",
        help="write 'export VAR=value' lines for the connector here, mode 0600 (default .sandbox.env, git-ignored)",
    )
    sandbox.set_defaults(func=_sandbox)

    demo = sub.add_parser(
        "demo", help="start both sandboxes, materialize every asset on a local Dagster instance and print what moved"
    )
    sandbox_flags(demo)
    demo.add_argument(
        "--dagster-home", default=".dagster_home", help="DAGSTER_HOME to use (SQLite; default .dagster_home)"
    )
    demo.add_argument("--state-dir", default=".sync_state", help="where the demo's sync database lives")
    demo.add_argument(
        "--dmf-threshold",
        type=int,
        default=None,
        help="D365_DMF_THRESHOLD for the demo's documents run: 0 = invoices and POs through the DMF package "
        "API, a number above the seed size = OData only (default: the environment's value, else 500)",
    )
    demo.set_defaults(func=_demo)

    webhooks = sub.add_parser(
        "webhooks",
        help="the Standard Webhooks receiver for Coupa events (serve), a signing helper (sign), and the staged "
        "events (status, requeue-failed)",
        description="Coupa events reach the connector through a relay that signs them (Standard Webhooks v1) "
        "with the secret(s) in COUPA_WEBHOOK_SECRET; accepted events are staged in WEBHOOK_STAGING_DIR for "
        "the coupa_webhook_sensor.",
    )
    webhooks_sub = webhooks.add_subparsers(dest="webhooks_command", required=True)
    serve = webhooks_sub.add_parser(
        "serve",
        help="run the receiver (POST /webhooks/coupa, GET /healthz) until Ctrl-C",
        description="Run the webhook receiver on uvicorn. Needs COUPA_WEBHOOK_SECRET (whsec_<base64>, "
        "comma-separated while rotating); stages events in WEBHOOK_STAGING_DIR (default "
        f"{DEFAULT_WEBHOOK_STAGING_DIR}), created if missing. Serve it behind a TLS-terminating proxy "
        "when the relay reaches it over a network.",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default 127.0.0.1, this machine only; use 0.0.0.0 behind a proxy)",
    )
    serve.add_argument("--port", type=int, default=8703, help="port to listen on (default 8703)")
    serve.set_defaults(func=_webhooks_serve)
    sign = webhooks_sub.add_parser(
        "sign",
        help="print the Standard Webhooks headers for a body (to check a relay's signatures)",
        description="Sign a body with the first secret in COUPA_WEBHOOK_SECRET and print the webhook-id, "
        "webhook-timestamp and webhook-signature headers, e.g. to compare with what a relay sends or to "
        "send a test event with curl.",
    )
    sign.add_argument("--id", required=True, help="the webhook-id (unique per event, same on redelivery)")
    sign.add_argument("--timestamp", type=int, default=None, help="Unix seconds to sign with (default: now)")
    sign.add_argument("body_file", nargs="?", default="-", help="file holding the exact body bytes (default: stdin)")
    sign.set_defaults(func=_webhooks_sign)
    status = webhooks_sub.add_parser(
        "status",
        help="count staged events (incoming, in runs, processed, failed) and list failed ones with the reason",
    )
    requeue = webhooks_sub.add_parser(
        "requeue-failed",
        help="give events that failed every attempt another round (after fixing the cause)",
        description="Move every event in failed/ back to incoming/; coupa_webhook_sensor batches them again.",
    )
    for command, handler in ((status, _webhooks_status), (requeue, _webhooks_requeue_failed)):
        command.add_argument(
            "--staging-dir", default=None, help="the staging directory (default: WEBHOOK_STAGING_DIR or its default)"
        )
        command.set_defaults(func=handler)

    from .credentials_cli import add_parser as add_credentials_parser

    add_credentials_parser(sub)

    from .bench.cli import add_parser as add_bench_parser
    from .bench.cli import add_webhooks_parser as add_bench_webhooks_parser

    add_bench_parser(sub)
    add_bench_webhooks_parser(sub)

    from .soak.cli import add_parser as add_soak_parser

    add_soak_parser(sub)

    db = sub.add_parser("db", help="the sync database's schema (SYNC_DATABASE_URL): show or upgrade its revision")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser(
        "current", help="print the database's schema revision and the code's (exit 1 when an upgrade is due)"
    ).set_defaults(func=_db_current)
    db_sub.add_parser(
        "upgrade",
        help="migrate the sync database to this code's schema (adopts a database from before migrations)",
    ).set_defaults(func=_db_upgrade)

    env = sub.add_parser("env", help="list the configuration environment variables")
    env.set_defaults(func=_env)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .common.redact import install_log_redaction

    install_log_redaction()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, CredentialStoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
