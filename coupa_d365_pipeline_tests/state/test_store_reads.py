"""The store's bounded reads: a page of staged documents at a time (keyset pages in id order), and
the (id, status) pairs a documents run decides its route on before reading any document."""

from __future__ import annotations

import sqlalchemy as sa

from coupa_d365_pipeline.state.store import SyncStore


def _invoice(coupa_id: int, day: int, status: str = "approved") -> dict:
    return {"id": coupa_id, "status": status, "updated-at": f"2026-11-{day:02d}T10:00:00Z", "lines": []}


def test_iter_documents_reads_a_page_at_a_time_in_id_order_and_sees_every_document(tmp_path):
    store = SyncStore(f"sqlite:///{tmp_path / 'sync.db'}")
    ids = [7, 3, 11, 5, 2, 13, 17]
    store.stage("invoice", [_invoice(i, 1) for i in ids])
    store.stage("purchase_order", [_invoice(100, 1)])
    selects: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: selects.append(a[2]))
    seen = [d["id"] for d in store.iter_documents("invoice", page_size=3)]
    assert seen == sorted(ids)
    # 7 documents, 3 per page: 3 queries (the last page short), each LIMIT 3
    pages = [q for q in selects if "staged_documents" in q]
    assert len(pages) == 3 and all("LIMIT" in q for q in pages)
    assert store.documents("invoice") == [_invoice(i, 1) for i in sorted(ids)]
    store.dispose()


def test_refs_updated_between_are_the_windows_ids_and_statuses_without_the_documents(tmp_path):
    store = SyncStore(f"sqlite:///{tmp_path / 'sync.db'}")
    store.stage("invoice", [_invoice(4, 1), _invoice(2, 2, "voided"), _invoice(3, 2), _invoice(1, 3)])
    refs = store.refs_updated_between("invoice", "2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z")
    assert refs == [(2, "voided"), (3, "approved")]
    store.dispose()
