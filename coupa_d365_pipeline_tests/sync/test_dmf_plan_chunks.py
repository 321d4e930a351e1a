"""A documents run's window in chunks, and its route decided on the whole window from (id, status)
pairs alone (the ledger read a chunk of ids at a time)."""

from __future__ import annotations

from types import SimpleNamespace

from coupa_d365_pipeline.sync.dmf_plan import Route, route_for_refs, split_candidates, window_chunks


def test_window_chunks_cover_every_id_once_and_an_empty_window_is_one_empty_chunk():
    assert window_chunks([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert window_chunks([1, 2], 10) == [[1, 2]]
    assert window_chunks([], 10) == [[]]


class FakeLedger:
    """Rows for the ids asked; records the size of each ask."""

    def __init__(self, rows: dict[int, object]) -> None:
        self._rows = rows
        self.asked: list[int] = []

    def rows(self, doc_type: str, coupa_ids: list[int]):
        self.asked.append(len(coupa_ids))
        return [self._rows[i] for i in coupa_ids if i in self._rows]


def test_route_for_refs_counts_the_first_writes_split_candidates_finds_reading_the_ledger_a_chunk_at_a_time():
    booked = SimpleNamespace(coupa_id=2, state="written", d365_key={"HeaderReference": "X"}, problem=None)
    ledger = FakeLedger({2: booked})
    services = SimpleNamespace(ledger=ledger)
    refs = [(1, "approved"), (2, "approved"), (3, "voided"), (4, "approved"), (5, "approved"), (None, "approved")]
    decision = route_for_refs(services, "invoice", refs, threshold=2, chunk=2)
    assert decision.route == Route.DMF and decision.to_write == 3  # 1, 4, 5: not booked 2, not voided 3
    assert ledger.asked == [2, 2, 1]
    documents = [{"id": i, "status": s} for i, s in refs if i is not None]
    assert len(split_candidates(services, "invoice", documents)[0]) == decision.to_write
    assert route_for_refs(services, "invoice", refs, threshold=3, chunk=2).route == Route.ODATA
