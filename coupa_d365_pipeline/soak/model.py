"""Soak sizes, options and the report (``soak.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any


class SoakSize(StrEnum):
    CI = "ci"
    FULL = "full"


@dataclass(frozen=True)
class SizeSpec:
    invoices: int
    purchase_orders: int
    suppliers: int
    days: int  # daily partitions the seed's updated-at spreads over
    retry_after_s: int  # the Retry-After of an injected 429 (ci: 0, i.e. "retry now", to fit its time budget)


SIZES: dict[SoakSize, SizeSpec] = {
    SoakSize.FULL: SizeSpec(invoices=2000, purchase_orders=500, suppliers=200, days=14, retry_after_s=1),
    SoakSize.CI: SizeSpec(invoices=200, purchase_orders=50, suppliers=20, days=7, retry_after_s=0),
}


@dataclass
class SoakOptions:
    out: Path
    size: SoakSize = SoakSize.CI
    seed: int = 42
    start_date: date = date(2026, 11, 1)
    rate_429: float = 0.10
    retry_after_s: int | None = None  # the Retry-After of a 429 (None: the size's)
    rate_5xx: float = 0.05
    rate_drop: float = 0.02
    revoke_tokens_every: int = 300  # requests per sandbox between two revocations of every token
    webhook_share: float = 0.2  # share of the bookable invoices announced by a webhook
    webhook_twice: float = 0.3  # share of the webhooks delivered twice (same webhook-id)
    max_rounds: int = 6  # documents / status runs after the kills before giving up on convergence

    @property
    def spec(self) -> SizeSpec:
        return SIZES[self.size]


@dataclass
class EndState:
    """The comparison of both sandboxes' end state with what the seed and the AP user imply."""

    invoices_expected: int = 0
    invoices_booked: int = 0  # expected invoices found in D365 (pending or posted)
    invoice_duplicates: int = 0  # extra D365 rows for a natural key already booked
    invoices_missing: int = 0
    invoices_unexpected: int = 0  # booked in D365 though the seed does not expect it
    invoice_amount_differences: int = 0
    invoice_line_differences: int = 0  # pending invoices whose line count differs from Coupa's
    purchase_orders_expected: int = 0  # issued POs not quarantined by the ledger for a stated reason
    purchase_orders_quarantined: int = 0
    purchase_order_duplicates: int = 0
    purchase_orders_missing: int = 0
    purchase_order_amount_differences: int = 0  # sum of line amounts differs from Coupa's
    vendor_duplicates: int = 0
    payments_made: int = 0  # by the simulated AP user in D365
    payments_in_coupa: int = 0  # of those, found in Coupa (matched by reference)
    payments_missing: int = 0
    payment_duplicates: int = 0  # a D365 payment written more than once to Coupa
    payment_amount_differences: int = 0
    payments_unexpected: int = 0  # Coupa payments no AP payment explains
    paid_flag_differences: int = 0  # Coupa ``paid`` differs from "fully settled in D365"

    def problems(self) -> dict[str, int]:
        """The counts that must be 0 after convergence."""
        names = (
            "invoice_duplicates",
            "invoices_missing",
            "invoices_unexpected",
            "invoice_amount_differences",
            "invoice_line_differences",
            "purchase_order_duplicates",
            "purchase_orders_missing",
            "purchase_order_amount_differences",
            "vendor_duplicates",
            "payments_missing",
            "payment_duplicates",
            "payment_amount_differences",
            "payments_unexpected",
            "paid_flag_differences",
        )
        return {name: getattr(self, name) for name in names if getattr(self, name)}


@dataclass
class RunRecord:
    name: str
    command: str  # the job
    returncode: int | None
    wall_s: float
    killed: bool = False


@dataclass
class SoakReport:
    size: str
    seed: int
    settings: dict[str, Any]
    wall_s: float = 0.0
    converged: bool = False
    documents_rounds: int = 0
    status_rounds: int = 0
    kills: int = 0
    overlap: dict[str, Any] = field(default_factory=dict)
    runs: list[RunRecord] = field(default_factory=list)
    faults: dict[str, dict[str, int]] = field(default_factory=dict)  # per sandbox: injected kind -> count
    requests: dict[str, int] = field(default_factory=dict)
    webhooks: dict[str, int] = field(default_factory=dict)
    end_state: EndState = field(default_factory=EndState)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        overlapped = bool(self.overlap.get("overlapped"))
        return self.converged and overlapped and self.kills == 2 and not self.end_state.problems()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok, "problems": self.end_state.problems()}
