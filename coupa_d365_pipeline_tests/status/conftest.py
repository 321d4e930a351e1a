"""Fixtures of the status tests: invoices booked straight into the ledger and the D365 sandbox (no
document sync, so each test takes seconds), and the status reader and writer run as a status run
would run them — each "run" with its own run id, clients and ledger handle."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from coupa_d365_pipeline.mapping.config import load_mapping
from coupa_d365_pipeline.mapping.master import D365MasterData
from coupa_d365_pipeline.state.ledger import WRITTEN, DocState, Ledger, NaturalKey
from coupa_d365_pipeline.state.status import StatusEvents
from coupa_d365_pipeline.state.store import SyncStore
from coupa_d365_pipeline.sync.context import SyncServices
from coupa_d365_pipeline.sync.report import SyncReport
from coupa_d365_pipeline.sync.status import StatusReader, StatusWriter
from coupa_d365_pipeline_tests.conftest import make_coupa_client, make_d365_client

LEGAL_ENTITY = "usmf"
VENDOR = "US-STATUS-1"


@dataclass(frozen=True)
class Booked:
    """An invoice (or credit note) the document sync booked: pending in D365, ``written`` in the ledger."""

    coupa_id: int
    legal_entity: str
    vendor: str
    number: str
    header_reference: str
    amount: Decimal  # the D365 invoice amount, Coupa's sign (credit note < 0)


class StatusHarness:
    def __init__(self, sandboxes: Any, database_url: str) -> None:
        self.sandboxes = sandboxes
        self.d365 = sandboxes.d365.state
        self.coupa = sandboxes.coupa.state
        self.store = SyncStore(database_url)
        self.mapping = load_mapping(None)
        self.events = StatusEvents(self.store.engine)
        self.ledger = Ledger(self.store.engine)
        self._clients: list[Any] = []
        self._runs = itertools.count(1)
        self._invoices = iter(
            [i for i in sandboxes.seed.coupa_invoices if i["status"] == "approved" and not i.get("is-credit-note")]
        )
        self._credit_notes = iter(
            [i for i in sandboxes.seed.coupa_invoices if i["status"] == "approved" and i.get("is-credit-note")]
        )

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.store.dispose()

    # -- D365 / ledger set-up ----------------------------------------------------------------
    def book(self, amount: Decimal | str, *, credit_note: bool = False, state: DocState = WRITTEN) -> Booked:
        invoice = next(self._credit_notes if credit_note else self._invoices)
        coupa_id, number = int(invoice["id"]), str(invoice["invoice-number"])
        ref = f"STATUS-{coupa_id}"
        self.d365.load(
            "VendorInvoiceHeaders",
            [
                {
                    "dataAreaId": LEGAL_ENTITY,
                    "HeaderReference": ref,
                    "InvoiceNumber": number,
                    "InvoiceAccount": VENDOR,
                    "VendorAccount": VENDOR,
                    "InvoiceDate": "2026-11-20T12:00:00Z",
                    "Currency": "USD",
                    "ImportedAmount": Decimal(str(amount)),
                }
            ],
        )
        self.set_state(
            coupa_id,
            state,
            natural_key=NaturalKey(LEGAL_ENTITY, VENDOR, number),
            d365_key={"dataAreaId": LEGAL_ENTITY, "HeaderReference": ref},
        )
        return Booked(coupa_id, LEGAL_ENTITY, VENDOR, number, ref, Decimal(str(amount)))

    def set_state(self, coupa_id: int, state: DocState, **fields: Any) -> None:
        """What a document sync run does to the ledger row: claim, change, release."""
        row = self.ledger.claim("invoice", coupa_id, "document-sync-run")
        assert row is not None, "the ledger row is claimed by someone else"
        self.ledger.update(row, "document-sync-run", release=True, state=state, **fields)

    def post(self, booked: Booked, **kwargs: Any) -> dict[str, Any]:
        return self.d365.post_invoice(booked.legal_entity, booked.header_reference, **kwargs)

    def settle(self, booked: Booked, amount: Decimal | str, date: str, reference: str, **kwargs: Any) -> dict:
        return self.d365.settle_invoice(
            booked.legal_entity, booked.number, booked.vendor, Decimal(str(amount)), date, reference, **kwargs
        )

    def reverse(self, settled: dict[str, Any]) -> dict:
        row = settled.get("VendSettlementBiEntity") or settled["InvoiceSettlement"]
        return self.d365.reverse_settlement(row["dataAreaId"], row["SourceKey"])

    # -- status runs ---------------------------------------------------------------------------
    def services(self, run_id: str | None = None) -> SyncServices:
        coupa, d365 = make_coupa_client(self.sandboxes), make_d365_client(self.sandboxes)
        self._clients += [coupa, d365]
        return SyncServices(
            coupa=coupa,
            d365=d365,
            store=self.store,
            ledger=Ledger(self.store.engine),
            mapping=self.mapping,
            master=D365MasterData(),
            run_id=run_id or f"status-run-{next(self._runs)}",
        )

    def read(self, services: SyncServices | None = None) -> dict[str, int]:
        return StatusReader(services or self.services(), self.events).read()

    def write(self, services: SyncServices | None = None) -> SyncReport:
        return StatusWriter(services or self.services(), self.events).write()

    def run(self) -> tuple[dict[str, int], SyncReport]:
        """One status run: the D365 reader, then the Coupa writer."""
        services = self.services()
        return self.read(services), self.write(services)

    # -- Coupa views ---------------------------------------------------------------------------
    def invoice(self, booked: Booked) -> dict[str, Any]:
        return self.coupa.get("invoices", booked.coupa_id)

    def payments(self, booked: Booked) -> list[tuple[Decimal, str]]:
        return [(Decimal(p["amount-paid"]), p.get("notes") or "") for p in self.invoice(booked)["payments"]]

    def history(self, booked: Booked, code: str) -> list[dict[str, Any]]:
        return [
            r
            for r in self.coupa.records("integration_history_records")
            if r["document-id"] == booked.coupa_id and r["responses"][0]["response-code"] == code
        ]

    def coupa_writes(self, after_seq: int = 0) -> list[Any]:
        return [
            e
            for e in self.sandboxes.coupa.log.snapshot()
            if e.seq > after_seq and e.method in ("PUT", "POST") and e.path.startswith("/api/")
        ]

    def coupa_seq(self) -> int:
        return max((e.seq for e in self.sandboxes.coupa.log.snapshot()), default=0)


@pytest.fixture
def harness(sandboxes: Any, tmp_path: Any) -> Iterator[StatusHarness]:
    h = StatusHarness(sandboxes, f"sqlite:///{tmp_path / 'status.db'}")
    try:
        yield h
    finally:
        h.close()
