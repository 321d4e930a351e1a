"""Ledger claims, leases, heartbeats, process identity, retries and upgrades — on a real database,
with an injected clock instead of sleeps."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from coupa_d365_pipeline.common.clock import SimulatedClock
from coupa_d365_pipeline.state.ledger import (
    FAILED,
    QUARANTINED,
    WRITTEN,
    ClaimLostError,
    Ledger,
    NaturalKey,
    Problem,
    process_identity,
)
from coupa_d365_pipeline.state.store import make_engine
from coupa_d365_pipeline_tests.state.conftest import IDENTITY, T0


def ledger_for(engine, clock, **kwargs) -> Ledger:
    kwargs.setdefault("lease", timedelta(minutes=30))
    kwargs.setdefault("identity", IDENTITY)
    kwargs.setdefault("heartbeat_s", 3600)  # tests renew explicitly unless they test the thread
    return Ledger(engine, clock=clock, **kwargs)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_live_claim_is_not_taken(engine, clock):
    a = ledger_for(engine, clock)
    b = ledger_for(engine, clock)
    assert a.claim("invoice", 1, "run-a") is not None
    clock.advance(timedelta(minutes=29))
    assert b.claim("invoice", 1, "run-b") is None


def test_claim_is_taken_over_after_the_lease_expired_and_the_old_holder_cannot_write(engine, clock):
    a = ledger_for(engine, clock)
    b = ledger_for(engine, clock)
    row_a = a.claim("invoice", 1, "run-a")
    assert row_a is not None
    clock.advance(timedelta(minutes=31))
    row_b = b.claim("invoice", 1, "run-b")
    assert row_b is not None and row_b.claimed_by == "run-b"
    with pytest.raises(ClaimLostError, match="no longer claimed by run run-a"):
        a.update(row_a, "run-a", state=WRITTEN)
    assert b.update(row_b, "run-b", state=WRITTEN).state == WRITTEN


def test_claim_is_taken_over_as_soon_as_dagster_says_the_run_ended(engine, clock):
    ended: set[str] = set()
    a = ledger_for(engine, clock)
    b = ledger_for(engine, clock, is_run_finished=lambda run_id: run_id in ended)
    assert a.claim("invoice", 1, "run-a") is not None
    assert b.claim("invoice", 1, "run-b") is None
    ended.add("run-a")
    taken = b.claim("invoice", 1, "run-b")
    assert taken is not None and taken.claimed_by == "run-b"


def test_dead_process_on_this_host_loses_its_claim_but_not_a_namesake_in_another_pid_namespace(engine, clock):
    dead = _dead_pid()
    killed = ledger_for(engine, clock, pid=dead)
    assert killed.claim("invoice", 1, "run-killed") is not None
    same_host = ledger_for(engine, clock)  # same hostname, namespace and boot
    assert same_host.claim("invoice", 1, "run-new") is not None  # the holder's PID is gone: taken over

    killed_elsewhere = ledger_for(engine, clock, pid=dead, identity="worker-1|pid:[4026532000]|0a1b2c3d")
    assert killed_elsewhere.claim("invoice", 2, "run-container") is not None
    # same hostname, other PID namespace: that PID means nothing here, the holder may be alive
    assert same_host.claim("invoice", 2, "run-new") is None


def test_process_identity_names_host_pid_namespace_and_boot():
    identity = process_identity()
    host, namespace, boot = identity.split("|")
    assert host and namespace.startswith("pid:[") and len(boot) == 8


def test_renewed_leases_survive_long_waits_and_a_lost_claim_is_dropped(engine, clock):
    a = ledger_for(engine, clock)
    b = ledger_for(engine, clock)
    row = a.claim("invoice", 1, "run-a")
    assert row is not None
    for _ in range(5):  # 5 x 20 min: a request waiting on Retry-After five times
        clock.advance(timedelta(minutes=20))
        assert a.renew_claims() == 1
        assert b.claim("invoice", 1, "run-b") is None
    assert a.update(row, "run-a", state=WRITTEN).state == WRITTEN
    clock.advance(timedelta(minutes=31))  # not renewed: b takes over, a's next renewal notices
    assert b.claim("invoice", 1, "run-b") is not None
    assert a.renew_claims() == 0 and a.held_claims() == {}


def test_the_heartbeat_thread_renews_while_claims_are_held(engine):
    clock = SimulatedClock(T0, running=False)
    a = ledger_for(engine, clock, heartbeat_s=0.02)
    row = a.claim("invoice", 1, "run-a")
    assert row is not None and row.claimed_at == T0
    clock.advance(timedelta(minutes=10))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        current = a.get("invoice", 1)
        assert current is not None
        if current.claimed_at == T0 + timedelta(minutes=10):
            break
        time.sleep(0.01)
    else:
        pytest.fail("the heartbeat never renewed the claim")
    a.release(row, "run-a")
    assert a.held_claims() == {}


def test_update_and_release_need_the_claim(engine, clock):
    a = ledger_for(engine, clock)
    row = a.claim("invoice", 7, "run-a")
    assert row is not None
    a.release(row, "run-a")
    with pytest.raises(ClaimLostError):
        a.update(row, "run-a", state=WRITTEN)


def test_structured_natural_key_round_trips_any_characters(engine, clock):
    a = ledger_for(engine, clock)
    row = a.claim("invoice", 3, "run-a")
    assert row is not None
    key = NaturalKey("usmf", "US-101", "INV|2026|001 'x'")
    row = a.update(row, "run-a", release=True, state=WRITTEN, natural_key=key, d365_key={"HeaderReference": "COUPA-3"})
    assert row.natural_key == key
    assert a.booked_by_natural_key("invoice") == {("usmf", "us-101", "inv|2026|001 'x'"): row}


def test_failures_are_never_starved_by_many_quarantined_documents(engine, clock):
    """500 permanently unmappable invoices must not stop a later failure from being retried."""
    ledger = ledger_for(engine, clock)
    for coupa_id in range(1, 601):
        row = ledger.claim("invoice", coupa_id, "run-0")
        assert row is not None
        ledger.update(row, "run-0", release=True, state=QUARANTINED, reason="unknown chart")
    clock.advance(timedelta(minutes=1))
    row = ledger.claim("invoice", 10_000, "run-0")
    assert row is not None
    ledger.update(row, "run-0", release=True, state=FAILED, reason="HTTP 503")
    retried_in: list[int] = []
    for run in range(1, 4):  # every run tries 500 and touches what it tried
        clock.advance(timedelta(minutes=5))
        batch = ledger.retry_candidates("invoice", limit=500)
        assert len(batch) == 500
        ids = [r.coupa_id for r in batch]
        if 10_000 in ids:
            retried_in.append(run)
        for candidate in batch:
            claimed = ledger.claim("invoice", candidate.coupa_id, f"run-{run}")
            assert claimed is not None
            ledger.update(claimed, f"run-{run}", release=True)
    assert retried_in and retried_in[0] <= 2


def test_retry_candidates_include_booked_documents_with_a_problem_and_skip_the_window(engine, clock):
    ledger = ledger_for(engine, clock)
    for coupa_id, state, problem in ((1, WRITTEN, Problem.FAILED), (2, WRITTEN, None), (3, QUARANTINED, None)):
        row = ledger.claim("invoice", coupa_id, "run-0")
        assert row is not None
        ledger.update(row, "run-0", release=True, state=state, problem=problem, coupa_notified=state == WRITTEN)
    assert [r.coupa_id for r in ledger.retry_candidates("invoice")] == [1, 3]
    assert [r.coupa_id for r in ledger.retry_candidates("invoice", exclude={1})] == [3]
    assert [r.coupa_id for r in ledger.needing_attention("invoice")] == [1, 3]


def test_a_database_from_the_previous_version_is_upgraded_and_its_keys_kept(tmp_path, clock):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:  # the table as the previous release created it
        conn.execute(
            sa.text(
                "CREATE TABLE sync_ledger (id INTEGER PRIMARY KEY, doc_type VARCHAR(32) NOT NULL, "
                "coupa_id BIGINT NOT NULL,"
                " scope VARCHAR(16) NOT NULL DEFAULT '', state VARCHAR(32) NOT NULL DEFAULT 'new', "
                "legal_entity VARCHAR(8),"
                " natural_key VARCHAR(255), d365_key TEXT, coupa_hash VARCHAR(64), payload_hash VARCHAR(64),"
                " coupa_updated_at VARCHAR(40), reason TEXT, alerted_reason TEXT, "
                "coupa_notified BOOLEAN NOT NULL DEFAULT 0,"
                " attempts INTEGER NOT NULL DEFAULT 0, last_run_id VARCHAR(64), claimed_by VARCHAR(64),"
                " claim_token VARCHAR(32), claimed_at DATETIME, claim_host VARCHAR(255), claim_pid INTEGER,"
                " created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL,"
                " CONSTRAINT uq_sync_ledger_document UNIQUE (doc_type, coupa_id, scope))"
            )
        )
        for coupa_id, doc_type, scope, natural in (
            (1, "invoice", "", "usmf|US-101|INV|7"),
            (2, "purchase_order", "", "usmf|PO-9"),
            (3, "vendor", "usmf", "US-101"),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO sync_ledger (doc_type, coupa_id, scope, state, legal_entity, natural_key, created_at,"
                    " updated_at) VALUES (:t, :i, :s, 'written', 'usmf', :n, '2026-11-01', '2026-11-01')"
                ),
                {"t": doc_type, "i": coupa_id, "s": scope, "n": natural},
            )
    ledger = ledger_for(engine, clock)
    invoice = ledger.get("invoice", 1)
    assert invoice is not None and invoice.natural_key == NaturalKey("usmf", "US-101", "INV|7")
    assert invoice.problem is None
    po = ledger.get("purchase_order", 2)
    assert po is not None and po.document_number == "PO-9"
    vendor = ledger.get("vendor", 3, "usmf")
    assert vendor is not None and vendor.vendor_account == "US-101"
    engine.dispose()


def test_two_threads_claiming_at_once_get_one_winner(engine, clock):
    ledgers = [ledger_for(engine, clock, identity=f"worker-{n}|pid:[1]|0a1b2c3d") for n in range(2)]
    barrier = threading.Barrier(2)
    winners: list[str] = []

    def take(n: int) -> None:
        barrier.wait()
        if ledgers[n].claim("invoice", 9, f"run-{n}") is not None:
            winners.append(f"run-{n}")

    threads = [threading.Thread(target=take, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
