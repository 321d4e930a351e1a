"""The bench.json document (pydantic): one result per path plus the settings it ran with."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class PathName(StrEnum):
    BASELINE = "baseline"
    ODATA = "odata"
    DMF = "dmf"
    FLOOR = "floor"


ALL_PATHS: tuple[PathName, ...] = (PathName.BASELINE, PathName.ODATA, PathName.DMF, PathName.FLOOR)


class PathResult(BaseModel):
    documents: int = Field(ge=0, description="invoices booked in D365 (floor: invoices flagged exported in Coupa)")
    wall_s: float = Field(ge=0, description="seconds from the first to the last request of the path's work")
    d365_requests: int = Field(ge=0)
    coupa_requests: int = Field(ge=0)
    peak_rss_mb: float = Field(ge=0, description="peak RSS of the path's own process (sandboxes not included)")


class BenchSettings(BaseModel):
    invoices: int = Field(ge=1, description="seed size: invoices generated (about 93% approved)")
    seed: int
    d365_latency_ms: float = Field(ge=0)
    coupa_latency_ms: float = Field(ge=0)
    coupa_max_requests_per_second: float = Field(gt=0)
    approved_invoices: int = Field(ge=0, description="approved invoices in the seed (the floor's work)")
    baseline_invoices: int | None = Field(
        default=None, ge=1, description="the baseline booked only this many approved invoices (None: all)"
    )
    paths: list[PathName]


class BenchDocument(BaseModel):
    paths: dict[PathName, PathResult]
    settings: BenchSettings
    # documents booked over time per path: [seconds since the path started, documents]
    series: dict[PathName, list[tuple[float, int]]] = Field(default_factory=dict)
