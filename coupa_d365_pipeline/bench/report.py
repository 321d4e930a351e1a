"""bench.md: the results as a Markdown table with ratios to the baseline and to the floor, and the targets."""

from __future__ import annotations

from dataclasses import dataclass

from .model import ALL_PATHS, BenchDocument, PathName, PathResult

DMF_SPEEDUP_TARGET = 10.0  # dmf at least this many times faster than the baseline
DMF_FLOOR_TARGET = 1.5  # dmf wall time at most this multiple of the floor's
ODATA_REQUESTS_TARGET = 0.25  # odata D365 requests per invoice at most this


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def speedup(result: PathResult, baseline: PathResult | None, *, per_document: bool = False) -> float | None:
    """How many times faster than the baseline: its wall time / this one's. ``per_document`` (the baseline
    was sampled with ``--baseline-invoices``): its seconds per document / this path's — the naive path
    books one invoice after another, so its time per document does not depend on how many it books."""
    if baseline is None:
        return None
    if per_document and baseline.documents > 0 and result.documents > 0:
        return ratio(baseline.wall_s / baseline.documents, result.wall_s / result.documents)
    return ratio(baseline.wall_s, result.wall_s)


def of_floor(result: PathResult, floor: PathResult | None, *, per_document: bool = False) -> float | None:
    """Wall time as a multiple of the floor's; ``per_document`` (a sampled baseline): seconds per document."""
    if floor is None:
        return None
    if per_document and result.documents > 0 and floor.documents > 0:
        return ratio(result.wall_s / result.documents, floor.wall_s / floor.documents)
    return ratio(result.wall_s, floor.wall_s)


def per_invoice(requests: int, result: PathResult) -> float | None:
    return ratio(requests, result.documents)


@dataclass(frozen=True)
class Target:
    description: str
    value: float | None  # None: a path it needs was not measured
    met: bool | None

    @property
    def verdict(self) -> str:
        return "not measured" if self.met is None else "met" if self.met else "not met"


def targets(doc: BenchDocument) -> list[Target]:
    paths = doc.paths
    baseline, odata, dmf, floor = (paths.get(p) for p in ALL_PATHS)
    sampled = doc.settings.baseline_invoices is not None
    dmf_speedup = speedup(dmf, baseline, per_document=sampled) if dmf else None
    dmf_floor = of_floor(dmf, floor) if dmf else None
    odata_req = per_invoice(odata.d365_requests, odata) if odata else None
    return [
        Target(
            f"dmf >= {DMF_SPEEDUP_TARGET:g}x faster than baseline",
            dmf_speedup,
            None if dmf_speedup is None else dmf_speedup >= DMF_SPEEDUP_TARGET,
        ),
        Target(
            f"dmf wall time <= {DMF_FLOOR_TARGET:g}x floor",
            dmf_floor,
            None if dmf_floor is None else dmf_floor <= DMF_FLOOR_TARGET,
        ),
        Target(
            f"odata <= {ODATA_REQUESTS_TARGET:g} D365 requests per invoice",
            odata_req,
            None if odata_req is None else odata_req <= ODATA_REQUESTS_TARGET,
        ),
    ]


def _num(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def render_markdown(doc: BenchDocument) -> str:
    s = doc.settings
    baseline, floor = doc.paths.get(PathName.BASELINE), doc.paths.get(PathName.FLOOR)
    sampled = s.baseline_invoices is not None
    lines = [
        "# coupa-d365 bench",
        "",
        f"Seed {s.seed}: {s.invoices} invoices ({s.approved_invoices} approved); latency D365 "
        f"{s.d365_latency_ms:g} ms, Coupa {s.coupa_latency_ms:g} ms per request; Coupa client limited to "
        f"{s.coupa_max_requests_per_second:g} requests/s. Each path ran on fresh sandboxes with the same seed.",
        *(
            [
                "",
                f"The baseline booked only the first {s.baseline_invoices} approved invoices (--baseline-invoices): "
                "it books one invoice after another, so its speedup ratios compare seconds per document.",
            ]
            if s.baseline_invoices
            else []
        ),
        "",
        "| path | documents | wall s | speedup vs baseline | wall / floor | D365 req/invoice | Coupa req/invoice "
        "| D365 requests | Coupa requests | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ALL_PATHS:
        r = doc.paths.get(name)
        if r is None:
            continue
        lines.append(
            f"| {name.value} | {r.documents} | {r.wall_s:.2f} "
            f"| {_num(speedup(r, baseline, per_document=sampled), 1, 'x')} "
            f"| {_num(of_floor(r, floor, per_document=sampled and name == PathName.BASELINE), 2, 'x')} "
            f"| {_num(per_invoice(r.d365_requests, r))} "
            f"| {_num(per_invoice(r.coupa_requests, r))} | {r.d365_requests} | {r.coupa_requests} "
            f"| {r.peak_rss_mb:.0f} |"
        )
    lines += ["", "| target | value | verdict |", "|---|---:|---|"]
    for t in targets(doc):
        lines.append(f"| {t.description} | {_num(t.value)} | {t.verdict} |")
    return "\n".join(lines) + "\n"
