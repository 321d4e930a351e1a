"""bench/latency.py: the nearest-rank percentiles, webhook_latency.json and its Markdown table."""

import json

import pytest

from coupa_d365_pipeline.bench.latency import (
    TARGET_P95_S,
    WebhookBenchSettings,
    WebhookLatencyDocument,
    latency_document,
    percentile,
    render_markdown,
)

SETTINGS = WebhookBenchSettings(
    events=50,
    spacing_s=1.0,
    d365_latency_ms=100,
    coupa_latency_ms=50,
    coupa_max_requests_per_second=25,
    seed=42,
    invoices=200,
    sensor_interval_s=5,
)


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 21)]  # 1..20, shuffled below
    shuffled = values[::2] + values[1::2]
    assert percentile(shuffled, 95) == 19.0  # ceil(0.95 * 20) = 19th value
    assert percentile(shuffled, 50) == 10.0  # the lower middle, not the mean of 10 and 11
    assert percentile(shuffled, 100) == 20.0
    assert percentile(shuffled, 1) == 1.0
    assert percentile([7.5], 95) == 7.5


def test_percentile_of_fifty_values():
    values = [float(v) for v in range(50, 0, -1)]
    assert percentile(values, 95) == 48.0  # ceil(47.5) = 48th
    assert percentile(values, 50) == 25.0


@pytest.mark.parametrize("p", [0, -1, 100.5])
def test_percentile_rejects_p_outside_0_100(p):
    with pytest.raises(ValueError, match="percentile p"):
        percentile([1.0, 2.0], p)


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_document_sorts_rounds_and_judges_the_target():
    latencies = [12.3456, 4.0, 31.0] + [8.0] * 17  # 20 values: p95 is the 19th = 12.3456
    doc = latency_document(latencies, SETTINGS, {"queued": 1.234, "sync_step": 0.5})
    assert doc.events == 20
    assert doc.latencies_s == sorted(round(x, 2) for x in latencies)
    assert (doc.p50_s, doc.p95_s, doc.max_s) == (8.0, 12.35, 31.0)
    assert doc.target_p95_s == TARGET_P95_S == 30.0
    assert doc.met is True  # the max above 30 s does not matter, p95 does
    assert doc.where_the_time_goes_s == {"queued": 1.234, "sync_step": 0.5}


def test_document_not_met_when_p95_above_target():
    doc = latency_document([10.0] * 18 + [30.5, 40.0], SETTINGS)
    assert doc.p95_s == 30.5 and doc.met is False
    assert latency_document([10.0] * 18 + [30.0, 40.0], SETTINGS).met is True  # at the target is met
    assert latency_document([10.0, 20.0], SETTINGS, target_p95_s=15).met is False


def test_json_has_the_documented_fields_and_round_trips():
    doc = latency_document([3.0, 1.0, 2.0], SETTINGS)
    raw = json.loads(doc.model_dump_json())
    assert {"events", "p50_s", "p95_s", "max_s", "latencies_s", "settings", "target_p95_s", "met"} <= raw.keys()
    assert raw["settings"]["d365_latency_ms"] == 100 and raw["settings"]["spacing_s"] == 1.0
    assert WebhookLatencyDocument.model_validate(raw) == doc


def test_markdown_table():
    met = render_markdown(latency_document([5.0] * 19 + [9.0], SETTINGS, {"process_start": 2.5, "other": 1.0}))
    assert "| 20 | 5.00 | 5.00 | 9.00 | 30 | met |" in met
    assert "one every 1 s" in met and "latency D365 100 ms, Coupa 50 ms" in met and "every 5 s" in met
    assert "| run process start (code location load, resources) | 2.50 |" in met
    assert "| other | 1.00 |" in met  # an unknown phase keeps its name
    missed = render_markdown(latency_document([31.0, 32.0], SETTINGS))
    assert "| 2 | 31.00 | 32.00 | 32.00 | 30 | not met |" in missed
    assert "phase of the event-driven runs" not in missed  # no phases, no phase table
