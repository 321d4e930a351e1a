"""Issue 9 item 2: one bad document never stops the others. Hostile Coupa invoices (NUL or 300
characters in the invoice number, supplier id "abc", a bare-string currency, a negative quantity,
an id that is not a number) staged and synced in one window with good ones, on SQLite and on
PostgreSQL: each hostile one ends quarantined/failed with a reason (or booked, for the bare
currency code), every good one is booked, and nothing unbooked is marked exported."""

from __future__ import annotations

import dataclasses
import logging
from decimal import Decimal
from typing import Any

import pytest

from coupa_d365_pipeline.state.ledger import Ledger
from coupa_d365_pipeline.state.store import SyncStore
from coupa_d365_pipeline.sync.invoices import InvoiceSync
from coupa_d365_pipeline_tests.sync.conftest import mappable_invoice, pending_headers


def _negative_quantity(invoice: dict[str, Any]) -> dict[str, Any]:
    lines = [dict(ln) for ln in invoice["invoice-lines"]]
    lines[0]["quantity"] = "-3"
    lines[0]["total"] = str(Decimal("-3") * Decimal(str(lines[0]["price"])))
    gross = sum(Decimal(str(ln["total"])) for ln in lines)
    return {"invoice-lines": lines, "gross-total": str(gross)}


# name -> (changes made in Coupa, expected action, words the reason must contain)
HOSTILE: dict[str, tuple[Any, str, tuple[str, ...]]] = {
    "nul_number": (
        lambda inv: {"invoice-number": "INV\x00001"},
        "quarantined",
        ("invoice-number", "control character U+0000", "InvoiceNumber"),
    ),
    "long_number": (lambda inv: {"invoice-number": "N" * 300}, "quarantined", ("300 characters", "at most 20")),
    "supplier_abc": (
        lambda inv: {"supplier": dict(inv["supplier"], id="abc")},
        "quarantined",
        ("supplier id 'abc' is not a Coupa supplier id",),
    ),
    "string_currency": (lambda inv: {"currency": inv["currency"]["code"]}, "created", ()),
    "negative_quantity": (_negative_quantity, "quarantined", ("quantity -3 on an invoice that is not a credit note",)),
}


@pytest.fixture(params=["sqlite", "postgres"])
def window_services(request, services):
    if request.param == "sqlite":
        yield services
        return
    request.applymarker(pytest.mark.postgres)
    name = request.getfixturevalue("postgres_database")
    store = SyncStore(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}")
    yield dataclasses.replace(services, store=store, ledger=Ledger(store.engine), notifier=None)
    store.dispose()


def test_hostile_invoices_never_stop_the_window(window_services, sandboxes):
    services = window_services
    good = [mappable_invoice(sandboxes, skip=i) for i in range(len(HOSTILE), len(HOSTILE) + 3)]
    hostile: dict[str, dict[str, Any]] = {}
    for index, (name, (changes, _, _)) in enumerate(HOSTILE.items()):
        invoice = mappable_invoice(sandboxes, skip=index)
        sandboxes.coupa.state.touch("invoices", invoice["id"], **changes(invoice))
        hostile[name] = invoice
    documents = [services.coupa.get("invoices", inv["id"]) for inv in [*hostile.values(), *good]]
    documents.append({"id": "not-a-number", "invoice-number": "X-1", "status": "approved"})

    staged = services.store.stage("invoice", documents, run_id="run-1")  # PostgreSQL: NUL and 300 chars too
    assert staged.new == len(documents) - 1 and [r.coupa_id for r in staged.rejected] == ["not-a-number"]
    nul = services.store.documents_by_id("invoice", [hostile["nul_number"]["id"]])[hostile["nul_number"]["id"]]
    assert nul["invoice-number"] == "INV\x00001"  # stored as Coupa sent it

    report = InvoiceSync(services).sync_many(documents)

    outcomes = {o.coupa_id: o for o in report.outcomes}
    for inv in good:
        assert outcomes[inv["id"]].action == "created", outcomes[inv["id"]]
    for name, (_, action, words) in HOSTILE.items():
        outcome = outcomes[hostile[name]["id"]]
        assert outcome.action == action, (name, outcome)
        for word in words:
            assert word in outcome.detail, (name, outcome.detail)
        row = services.ledger.get("invoice", hostile[name]["id"])
        assert row is not None and row.state == ("written" if action == "created" else "quarantined"), (name, row)
        exported = sandboxes.coupa.state.get("invoices", hostile[name]["id"])["exported"]
        assert exported is (action == "created"), name
        if action == "quarantined":
            assert not pending_headers(sandboxes, HeaderReference=f"COUPA-{hostile[name]['id']}")
    [bad_id] = [o for o in report.outcomes if o.action == "failed" and o.document == "X-1"]
    assert "'not-a-number' is not a Coupa id" in bad_id.detail
    assert report.counts("invoice")["failed"] == 1


def test_a_document_without_a_usable_id_is_counted_failed_and_logged(services, sandboxes, caplog):
    good = mappable_invoice(sandboxes)
    with caplog.at_level(logging.ERROR):
        report = InvoiceSync(services).sync_many(
            [{"id": None}, {"id": True}, {"id": "12abc"}, services.coupa.get("invoices", good["id"])]
        )
    assert [o.action for o in report.outcomes] == ["failed", "failed", "failed", "created"]
    assert sum("cannot be tracked or booked" in r.getMessage() for r in caplog.records) == 3


@pytest.mark.postgres
def test_staging_on_postgres_stores_what_it_can_and_names_what_it_cannot(postgres_database):
    store = SyncStore(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{postgres_database}")
    try:
        documents = [
            {"id": 1, "status": "approved\x00", "updated-at": "2026-11-02T10:00:00Z", "x": "a\x00b"},
            {"id": 2, "status": "s" * 300, "updated-at": "garbage\x00" * 10},
            {"id": "abc", "status": "approved"},
            {"status": "approved"},
            {"id": 3, "status": "approved", "updated-at": "2026-11-02T11:00:00Z"},
        ]
        result = store.stage("invoice", documents)
        assert (result.new, len(result.rejected)) == (3, 2)
        assert [r.reason for r in result.rejected] == [
            "the id 'abc' is not a Coupa id (a whole number)",
            "the document has no id",
        ]
        assert store.documents_by_id("invoice", [1])[1]["x"] == "a\x00b"
        assert store.refs_updated_between("invoice", "2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z")[-1] == (
            3,
            "approved",
        )
    finally:
        store.dispose()
