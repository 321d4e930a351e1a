"""webhook_latency.json and webhook_latency.md: the latencies of ``coupa-d365 bench-webhooks`` (signed
``invoice.approved`` webhook sent -> pending vendor invoice in D365), their percentiles and the target.
Pure functions: no processes, no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, Field

TARGET_P95_S = 30.0  # issue 14: p95 from signed webhook to pending invoice in D365


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``p`` percent of the values at or below it."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile p must be in (0, 100]; got {p}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class WebhookBenchSettings(BaseModel):
    events: int = Field(ge=1, description="events measured (the warm-up event not included)")
    spacing_s: float = Field(ge=0, description="seconds between two events")
    d365_latency_ms: float = Field(ge=0)
    coupa_latency_ms: float = Field(ge=0)
    coupa_max_requests_per_second: float = Field(gt=0)
    seed: int
    invoices: int = Field(ge=1, description="seed size; the events announce approved invoices that map cleanly")
    sensor_interval_s: float = Field(ge=0, description="coupa_webhook_sensor's minimum interval")


class WebhookLatencyDocument(BaseModel):
    events: int = Field(ge=1)
    p50_s: float = Field(ge=0)
    p95_s: float = Field(ge=0)
    max_s: float = Field(ge=0)
    latencies_s: list[float] = Field(description="per event, ascending: signed POST sent -> pending header in D365")
    settings: WebhookBenchSettings
    target_p95_s: float = TARGET_P95_S
    met: bool
    # median seconds per phase of the event-driven runs (empty when the run history could not be read)
    where_the_time_goes_s: dict[str, float] = Field(default_factory=dict)


def latency_document(
    latencies: Sequence[float],
    settings: WebhookBenchSettings,
    phases: dict[str, float] | None = None,
    target_p95_s: float = TARGET_P95_S,
) -> WebhookLatencyDocument:
    ordered = sorted(latencies)
    p95 = percentile(ordered, 95)
    return WebhookLatencyDocument(
        events=len(ordered),
        p50_s=round(percentile(ordered, 50), 2),
        p95_s=round(p95, 2),
        max_s=round(ordered[-1], 2),
        latencies_s=[round(x, 2) for x in ordered],
        settings=settings,
        target_p95_s=target_p95_s,
        met=p95 <= target_p95_s,
        where_the_time_goes_s=dict(phases or {}),
    )


PHASE_LABELS = {
    "queued": "queued (sensor's run request -> run coordinator starts it)",
    "process_start": "run process start (code location load, resources)",
    "sync_step": "sync step (Coupa re-read, D365 writes)",
    "event_age_at_sync_end": "event age when its run's sync ended (received -> synced; the rest waits for the sensor)",
}


def render_markdown(doc: WebhookLatencyDocument) -> str:
    s = doc.settings
    verdict = "met" if doc.met else "not met"
    lines = [
        "# coupa-d365 bench-webhooks",
        "",
        f"{doc.events} signed `invoice.approved` events, one every {s.spacing_s:g} s, through `coupa-d365 webhooks "
        f"serve` and `dagster-daemon run` (coupa_webhook_sensor every {s.sensor_interval_s:g} s); latency D365 "
        f"{s.d365_latency_ms:g} ms, Coupa {s.coupa_latency_ms:g} ms per request; Coupa client limited to "
        f"{s.coupa_max_requests_per_second:g} requests/s; seed {s.seed} ({s.invoices} invoices). Latency: signed "
        "POST sent -> the invoice's pending header in D365.",
        "",
        "| events | p50 s | p95 s | max s | target p95 s | verdict |",
        "|---:|---:|---:|---:|---:|---|",
        f"| {doc.events} | {doc.p50_s:.2f} | {doc.p95_s:.2f} | {doc.max_s:.2f} | {doc.target_p95_s:g} | {verdict} |",
    ]
    if doc.where_the_time_goes_s:
        lines += ["", "| phase of the event-driven runs | median s |", "|---|---:|"]
        for name, seconds in doc.where_the_time_goes_s.items():
            lines.append(f"| {PHASE_LABELS.get(name, name)} | {seconds:.2f} |")
    return "\n".join(lines) + "\n"
