"""Webhooks end to end with real processes: both sandboxes, `coupa-d365 webhooks serve`, and
`dagster-daemon run` with the code location on a real (SQLite) instance, started by
coupa_d365_pipeline.bench.webhook_rig (what `coupa-d365 bench-webhooks` runs). Signed
`invoice.approved` events lead to pending invoices in the D365 sandbox through coupa_webhook_sensor
at its default interval; the receiver killed with SIGKILL right after answering 2xx loses nothing.

Writes the measured latencies (signed POST sent -> pending header in D365) to
``webhook_latency.json`` in the test's directory and prints p50/p95."""

import pytest

from coupa_d365_pipeline.bench.latency import TARGET_P95_S, WebhookBenchSettings, latency_document
from coupa_d365_pipeline.bench.webhook_rig import bookable_invoices, start_rig
from coupa_d365_pipeline.settings import DEFAULT_WEBHOOK_SENSOR_INTERVAL_S
from coupa_d365_pipeline_tests.conftest import TEST_SEED

pytestmark = pytest.mark.e2e
EVENTS = 20
SPACING_S = 1.0


def test_signed_events_reach_d365_through_the_daemon_and_a_killed_receiver_loses_nothing(sandboxes, tmp_path):
    invoices = bookable_invoices(sandboxes)
    assert len(invoices) >= EVENTS + 2, "the test seed has too few approved invoices"
    with start_rig(sandboxes, tmp_path / "rig") as rig:
        # warm-up: the first event also waits for the daemon and the code location to start
        rig.warm_up(invoices[0])
        latencies = rig.measure(invoices[1 : EVENTS + 1], SPACING_S, timeout_s=180)
        phases = rig.run_phases()

        # the receiver dies right after its 2xx: the staged event is still synced by the sensor
        last = invoices[EVENTS + 1]
        rig.accept(last)
        rig.kill_receiver()
        rig.wait_for(lambda: last["invoice-number"] in rig.pending(), 120, "killed receiver lost")

    settings = WebhookBenchSettings(
        events=EVENTS,
        spacing_s=SPACING_S,
        d365_latency_ms=0,
        coupa_latency_ms=0,
        coupa_max_requests_per_second=1000,
        seed=TEST_SEED.seed,
        invoices=TEST_SEED.invoices,
        sensor_interval_s=DEFAULT_WEBHOOK_SENSOR_INTERVAL_S,
    )
    report = latency_document(latencies, settings, phases)
    (tmp_path / "webhook_latency.json").write_text(report.model_dump_json(indent=2))
    print(f"webhook -> pending in D365 over {report.events} events: p50 {report.p50_s:.1f} s, p95 {report.p95_s:.1f} s")
    assert len(latencies) == EVENTS and all(x > 0 for x in latencies)
    assert {"queued", "process_start", "sync_step"} <= phases.keys(), phases  # the runs' history was read
    headers = sandboxes.d365.state.records("VendorInvoiceHeaders")
    keys = [(h["dataAreaId"], h["InvoiceAccount"], h["InvoiceNumber"]) for h in headers]
    assert len(keys) == len(set(keys)) == EVENTS + 2  # exactly the announced invoices, each once
    assert report.p95_s <= TARGET_P95_S and report.met, report
