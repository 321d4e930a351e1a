"""The bench's floor sets every approved invoice's export flag at Coupa's request limit — not one
request after another, which with 50 ms latency tops out at 20 requests/s and flatters every path
compared with it."""

import time

from coupa_d365_pipeline.bench import naive
from coupa_d365_pipeline.sandbox.faults import FaultConfig


def test_the_floor_flags_every_approved_invoice_with_requests_in_flight_at_once(sandboxes):
    approved = [i["id"] for i in sandboxes.seed.coupa_invoices if i["status"] == "approved"]
    sandboxes.coupa.injector.configure(FaultConfig(latency_ms=50))
    env = sandboxes.env() | {"COUPA_MAX_REQUESTS_PER_SECOND": "1000"}

    started = time.monotonic()
    flagged = naive.run_floor(env)
    elapsed = time.monotonic() - started

    assert flagged == len(approved) > 80
    assert all(sandboxes.coupa.state.get("invoices", i)["exported"] for i in approved)
    one_after_another = len(approved) * 0.050  # the flags alone, without the pages
    assert elapsed < 0.6 * one_after_another, (elapsed, one_after_another)
