"""The sync core driven directly (no Dagster), over real HTTP against the seeded sandboxes, so each
test can interleave Coupa edits, AP actions in D365 and sync runs exactly as a review found them."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from coupa_d365_pipeline.mapping.config import load_mapping
from coupa_d365_pipeline.mapping.master import D365MasterData
from coupa_d365_pipeline.sandbox.launch import RunningSandboxes
from coupa_d365_pipeline.state.ledger import Ledger
from coupa_d365_pipeline.state.store import SyncStore
from coupa_d365_pipeline.sync.context import SyncServices
from coupa_d365_pipeline.sync.invoices import InvoiceSync
from coupa_d365_pipeline.sync.master_data import read_master_rows
from coupa_d365_pipeline.sync.purchase_orders import PurchaseOrderSync
from coupa_d365_pipeline.sync.report import Outcome
from coupa_d365_pipeline.sync.vendors import VendorSync
from coupa_d365_pipeline_tests.conftest import make_coupa_client, make_d365_client
from coupa_d365_pipeline_tests.flow.helpers import CHARTS


@pytest.fixture
def services(sandboxes: RunningSandboxes, tmp_path) -> Iterator[SyncServices]:
    coupa = make_coupa_client(sandboxes, max_requests_per_second=1000)
    d365 = make_d365_client(sandboxes)
    store = SyncStore(f"sqlite:///{tmp_path / 'sync.db'}")
    mapping = load_mapping(None)
    master = D365MasterData.from_rows(read_master_rows(d365, mapping.mapped_legal_entities))
    yield SyncServices(
        coupa=coupa,
        d365=d365,
        store=store,
        ledger=Ledger(store.engine),
        mapping=mapping,
        master=master,
        run_id="run-1",
        logger=logging.getLogger("test.sync"),
    )
    coupa.close()
    d365.close()
    store.dispose()


def as_run(services: SyncServices, run_id: str, **changes: Any) -> SyncServices:
    """The same connections and databases, seen by another Dagster run."""
    return dataclasses.replace(services, run_id=run_id, notifier=None, **changes)


def sync_invoice(services: SyncServices, coupa_id: int, **kwargs: Any) -> Outcome:
    """What a run does with one invoice: read it from Coupa (as staging would) and sync it."""
    invoice = services.coupa.get("invoices", coupa_id)
    services.store.stage("invoice", [invoice], run_id=services.run_id)
    return InvoiceSync(services, **kwargs).sync(invoice)


def sync_po(services: SyncServices, coupa_id: int) -> Outcome:
    po = services.coupa.get("purchase_orders", coupa_id)
    return PurchaseOrderSync(services).sync(po)


def impatient_vendors(services: SyncServices) -> VendorSync:
    return VendorSync(services, claim_wait_s=0.0)


def mappable_invoice(sandboxes: RunningSandboxes, le: str = "usmf", skip: int = 0) -> dict[str, Any]:
    seed = sandboxes.seed
    unmappable = set(seed.expectations["unmappable_invoices"])
    candidates = [
        i
        for i in seed.coupa_invoices
        if i["status"] == "approved"
        and i["id"] not in unmappable
        and not i.get("is-credit-note")
        and CHARTS.get(i["account-type"]["name"]) == le
        and not any(line.get("po-number") for line in i["invoice-lines"])
    ]
    return candidates[skip]


def pending_headers(sandboxes: RunningSandboxes, **equals: Any) -> list[dict[str, Any]]:
    return [
        h
        for h in sandboxes.d365.state.records("VendorInvoiceHeaders")
        if all(str(h.get(k)).casefold() == str(v).casefold() for k, v in equals.items())
    ]


def money(value: Any) -> Decimal:
    return Decimal(str(value))
