"""The two reference paths, plain clients and no Dagster:

- ``baseline``: what most integrations do, one document at a time: look the invoice up in D365 (GET by
  filter), POST the header, POST each line, set the Coupa export flag (PUT).
- ``floor``: what no connector can beat: page every approved invoice out of Coupa and set each export
  flag, at the Coupa client's rate limit (several in flight, so latency does not hold it below it).

Both read their configuration from the environment (the sandboxes' ``env()``); the baseline maps with
the project's mapping and the master data snapshot the setup left in the sync database.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from ..coupa.client import CoupaClient
from ..d365.client import D365Client
from ..mapping.config import load_mapping
from ..mapping.invoices import MappedInvoice, map_invoice
from ..mapping.master import D365MasterData
from ..settings import (
    ConfigError,
    coupa_client,
    d365_client,
    load_coupa_settings,
    load_d365_settings,
    mapping_file_path,
    throughput_settings,
)
from ..sync.invoice_lookups import header_reference
from ..sync.master_data import MASTER_SNAPSHOT

APPROVED = {"status": "approved"}


def _coupa(env: Mapping[str, str]) -> CoupaClient:
    problems: list[str] = []
    settings = load_coupa_settings(env, problems)
    if problems:
        raise ConfigError(problems)
    return coupa_client(settings)


def _d365(env: Mapping[str, str]) -> D365Client:
    problems: list[str] = []
    settings = load_d365_settings(env, problems)
    if problems:
        raise ConfigError(problems)
    return d365_client(settings)


def _master(env: Mapping[str, str]) -> D365MasterData:
    from ..state.store import SyncStore

    snapshot = SyncStore(env["SYNC_DATABASE_URL"]).load_snapshot(MASTER_SNAPSHOT)
    if snapshot is None:
        raise ConfigError(["the sync database has no D365 master data snapshot: run the bench setup first"])
    return D365MasterData.from_rows(dict(snapshot))


def book_one(d365: D365Client, coupa: CoupaClient, invoice: dict, mapped: MappedInvoice) -> bool:
    """One document the naive way; True when this call booked it."""
    ref = header_reference(int(invoice["id"]))
    found = list(
        d365.query(
            "VendorInvoiceHeaders",
            legal_entity=mapped.legal_entity,
            exact={"HeaderReference": ref},
            select=["HeaderReference"],
            top=1,
        )
    )
    booked = False
    if not found:
        d365.create("VendorInvoiceHeaders", dict(mapped.header, HeaderReference=ref))
        for line in mapped.lines:
            d365.create("VendorInvoiceLines", dict(line, HeaderReference=ref))
        booked = True
    coupa.mark_exported("invoices", int(invoice["id"]))
    return booked


def run_baseline(env: Mapping[str, str] | None = None) -> int:
    """Book every approved, mappable invoice sequentially — or only the first ``BENCH_BASELINE_INVOICES``
    approved ones (``--baseline-invoices``); the number booked."""
    env = os.environ if env is None else env
    mapping, master = load_mapping(mapping_file_path(env)), _master(env)
    limit = int(env.get("BENCH_BASELINE_INVOICES") or 0) or None
    booked = 0
    with _coupa(env) as coupa, _d365(env) as d365:
        for seen, invoice in enumerate(coupa.iter_records("invoices", APPROVED)):
            if limit is not None and seen >= limit:
                break
            mapped = map_invoice(invoice, mapping, master)
            if not isinstance(mapped, MappedInvoice):
                continue  # unmappable on purpose (the seed's quarantine cases): a naive integration skips it
            booked += book_one(d365, coupa, invoice, mapped)
    return booked


def run_floor(env: Mapping[str, str] | None = None) -> int:
    """Page every approved invoice and set its export flag, with ``COUPA_MAX_CONCURRENCY`` flags in flight
    (the project's own notice concurrency) so the Coupa client's limiter, not the latency, sets the pace;
    the number flagged."""
    env = os.environ if env is None else env
    workers = throughput_settings(env).coupa_concurrency
    with _coupa(env) as coupa, ThreadPoolExecutor(max_workers=workers) as pool:
        flags = [
            pool.submit(coupa.mark_exported, "invoices", int(invoice["id"]))
            for invoice in coupa.iter_records("invoices", APPROVED)
        ]
        for flag in flags:
            flag.result()
    return len(flags)
