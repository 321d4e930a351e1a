"""Issue 14 (peak RSS ≤ 1 GB for 100,000 invoices on DMF): a run's memory must not grow with its window.
A parsed Coupa invoice is about 16 KB in Python, so a window held whole is 1.6 GB at 100,000. Staging
stores a chunk of records at a time, the documents step reads and syncs SYNC_DOCUMENTS_PER_CHUNK
documents at a time (the route still decided on the whole window), and the vendors step reads the
staged documents a page at a time. Spied on the store: no call hands out more than a chunk."""

from __future__ import annotations

from typing import Any

import pytest

from coupa_d365_pipeline.defs import coupa_staging
from coupa_d365_pipeline.state import store as store_module
from coupa_d365_pipeline.state.store import SyncStore
from coupa_d365_pipeline_tests.flow.helpers import approved, d365_invoices, metadata, run_documents, run_master

CHUNK = 40  # documents per chunk (the test seed's window holds 120 invoices, 3 legal entities)
STAGE_CHUNK = 25
PAGE = 30

pytestmark = pytest.mark.usefixtures("quick_dmf")


class Held:
    """How many documents each store call handed out or took in, and which types were read in pages."""

    def __init__(self) -> None:
        self.read: list[int] = []
        self.staged: list[int] = []
        self.paged: list[str] = []


@pytest.fixture
def held(monkeypatch) -> Held:
    spy = Held()
    for name in ("documents_by_id", "documents"):
        original = getattr(SyncStore, name)

        def counted(self, *args: Any, _original=original, **kwargs: Any):
            found = _original(self, *args, **kwargs)
            spy.read.append(len(found))
            return found

        monkeypatch.setattr(SyncStore, name, counted)
    iterate = SyncStore.iter_documents

    def paged(self, doc_type: str, *args: Any, **kwargs: Any):
        spy.paged.append(doc_type)  # READ_PAGE_SIZE documents parsed at a time: state/test_store_reads.py
        yield from iterate(self, doc_type, *args, **kwargs)

    monkeypatch.setattr(SyncStore, "iter_documents", paged)
    stage = SyncStore.stage

    def staged(self, doc_type, records, run_id=None):
        records = list(records)
        spy.staged.append(len(records))
        return stage(self, doc_type, records, run_id=run_id)

    monkeypatch.setattr(SyncStore, "stage", staged)
    return spy


def test_a_window_is_staged_read_and_synced_a_chunk_at_a_time(
    sandbox_env, sandboxes, instance, seed_data, monkeypatch, held
):
    monkeypatch.setenv("SYNC_DOCUMENTS_PER_CHUNK", str(CHUNK))
    monkeypatch.setenv("D365_DMF_THRESHOLD", "0")
    monkeypatch.setattr(coupa_staging, "STAGE_CHUNK_RECORDS", STAGE_CHUNK)
    monkeypatch.setattr(store_module, "READ_PAGE_SIZE", PAGE)
    assert run_master(instance).success
    result = run_documents(instance)
    assert result.success
    assert run_master(instance).success  # the vendors step now reads every staged document

    meta = metadata(result, "d365/vendor_invoices")
    staged = metadata(result, "coupa/invoices")["fetched"]
    assert staged == sum(i["status"] in ("approved", "voided") for i in seed_data.coupa_invoices) > 2 * CHUNK
    # the route is still decided on the whole window, not per chunk
    assert meta["route"] == "dmf" and meta["documents_to_write"] > CHUNK, meta["route_reason"]
    # each chunk is its own round of packages: more executions than legal entities
    assert len(meta["dmf_executions"].split(", ")) > 3
    assert held.read and max(held.read) <= CHUNK, held.read
    assert {"invoice", "purchase_order", "supplier"} <= set(held.paged), held.paged  # the vendors step
    assert held.staged and max(held.staged) <= STAGE_CHUNK and sum(held.staged) >= staged, held.staged
    # and the end state is what one whole-window run gives: each approved invoice booked exactly once
    booked = d365_invoices(sandboxes)
    assert all(len(headers) == 1 for headers in booked.values())
    assert meta["created"] == len(booked) and meta["created"] + meta["quarantined"] == len(approved(seed_data))
