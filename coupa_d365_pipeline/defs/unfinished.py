"""The "not stuck" asset checks' body: every unfinished ledger row of a document type, with its
reason and age, as one check result (shared by vendors, purchase orders and invoices)."""

from datetime import timedelta

import dagster as dg

from ..common.markdown import cell, table
from ..state.ledger import Ledger


def _age(age: timedelta) -> str:
    minutes = int(age.total_seconds() // 60)
    return f"{minutes // 1440}d {minutes % 1440 // 60}h" if minutes >= 1440 else f"{minutes // 60}h {minutes % 60}m"


def stuck_check(ledger: Ledger, doc_type: str, what: str) -> dg.AssetCheckResult:
    """Every unfinished row with its reason and age. ERROR when a person is needed or D365's state is
    unknown (quarantined, failed, interrupted write, missing/changed/void after posting); WARN when
    the only thing left is telling Coupa about a booking D365 already holds (the next run does it)."""
    items = ledger.unfinished(doc_type)
    details = table(
        ["Coupa id", "scope", "state", "reason", "age", "since"],
        (
            [
                i.row.coupa_id,
                i.row.scope or i.row.legal_entity or "",
                i.kind,
                cell(i.reason, max_chars=300),
                _age(i.age),
                f"{i.row.updated_at:%Y-%m-%d %H:%M}",
            ]
            for i in items
        ),
        limit=200,
        empty="Nothing stuck.",
    )
    by_state: dict[str, int] = {}
    for i in items:
        by_state[i.kind] = by_state.get(i.kind, 0) + 1
    errors = any(i.severity == "error" for i in items)
    oldest = max((i.age for i in items), default=None)
    return dg.AssetCheckResult(
        passed=not items,
        severity=dg.AssetCheckSeverity.ERROR if errors else dg.AssetCheckSeverity.WARN,
        description=None
        if not items
        else f"{len(items)} {what} need attention: " + ", ".join(f"{n} {s}" for s, n in sorted(by_state.items())),
        metadata={
            "stuck": len(items),
            "by_state": dg.MetadataValue.json(by_state),
            "oldest_age_s": int(oldest.total_seconds()) if oldest is not None else 0,
            "details": dg.MetadataValue.md(details),
        },
    )
