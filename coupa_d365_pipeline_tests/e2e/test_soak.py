"""`coupa-d365 soak --size ci` as a real process: faulty sandboxes, two SIGKILLed documents runs,
webhooks through the receiver and dagster-daemon, a status run overlapping a documents run; after
convergence nothing is duplicated, missing or off by an amount, every payment is in Coupa once, and
the request logs prove every kind of fault was really injected. The seed's dates and the sandboxes'
clock are fixed (--start-date, the soak's SimulatedClock), so nothing depends on today."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_ci_soak_converges_with_every_fault_injected(tmp_path):
    out = tmp_path / "soak"
    args = ["soak", "--size", "ci", "--seed", "42", "--start-date", "2026-11-01", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "coupa_d365_pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ),
    )
    report = json.loads((out / "soak.json").read_text())
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert report["ok"] and report["converged"] and report["problems"] == {}
    end = report["end_state"]
    assert end["invoices_expected"] == end["invoices_booked"] > 150
    for name in ("invoice_duplicates", "invoices_missing", "invoices_unexpected", "invoice_amount_differences"):
        assert end[name] == 0, name
    assert end["purchase_orders_expected"] > 0 and end["purchase_order_duplicates"] == 0
    assert end["purchase_orders_missing"] == end["purchase_order_amount_differences"] == 0
    assert end["payments_made"] == end["payments_in_coupa"] > 0
    assert end["payment_duplicates"] == end["payments_missing"] == end["payments_unexpected"] == 0
    # the two kills happened mid-write, and the status run wrote while a documents run was parked
    assert report["kills"] == 2
    assert sum(1 for run in report["runs"] if run["killed"]) == 2
    assert report["overlap"]["overlapped"] is True
    # every fault kind really fired (counted from the sandboxes' request logs, not assumed)
    faults = report["faults"]
    for kind in ("429", "5xx", "drop_after", "revoke"):
        assert faults["coupa"].get(kind, 0) + faults["d365"].get(kind, 0) > 0, kind
    assert faults["d365"].get("hold", 0) == 2 and faults["coupa"].get("hold", 0) == 1
    assert faults["coupa"]["answered_401"] + faults["d365"]["answered_401"] > 0  # revoked tokens refused
    webhooks = report["webhooks"]
    assert webhooks["deliveries"] > webhooks["events"] > 0  # some delivered twice
    assert webhooks["receiver_duplicate"] == webhooks["deliveries"] - webhooks["events"]
    assert webhooks["processed"] + webhooks["failed"] == webhooks["events"]
    assert "invoice duplicates" not in proc.stdout and "duplicates 0" in proc.stdout
