"""What the reconciliation shows (plain Python, no Dagster): the per legal entity summary (a frame
and its Markdown table), the differences list, the documents as plain values, and the check's
verdict. Amounts are Decimal in the frame and cents text in the tables."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pandas as pd

from ..common.markdown import cell, table
from .reconciliation import Finding, Outcome, Reconciliation, age_text, money_text

SUMMARY_COLUMNS = [
    "legal_entity",
    "currency",
    "approved_in_coupa",
    "coupa_amount",
    "agree",
    "agree_amount",
    "paid",
    "pending",
    "pending_amount",
    "quarantined",
    "failed",
    "missing_in_d365",
    "missing_in_coupa",
    "amount_mismatch",
    "unexplained",
]
SUMMARY_HEADERS = [
    "legal entity",
    "currency",
    "approved in Coupa",
    "Coupa amount",
    "agree (posted/paid)",
    "agree amount",
    "of which paid",
    "pending",
    "pending amount",
    "quarantined",
    "failed",
    "missing in D365",
    "missing in Coupa",
    "amount mismatch",
    "unexplained",
]
COUNTED = (
    Outcome.QUARANTINED,
    Outcome.FAILED,
    Outcome.MISSING_IN_D365,
    Outcome.MISSING_IN_COUPA,
    Outcome.AMOUNT_MISMATCH,
)


def _amount(findings: Sequence[Finding]) -> Decimal:
    return sum((f.coupa_amount for f in findings if f.coupa_amount is not None), Decimal(0))


def summary(rec: Reconciliation) -> pd.DataFrame:
    """One row per (legal entity, currency): counts (int) and Coupa amounts (Decimal) per outcome.
    ``approved_in_coupa`` counts every approved Coupa invoice of the window (all but ``missing_in_coupa``)."""
    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in rec.findings:
        groups.setdefault((f.legal_entity, f.currency), []).append(f)
    rows: list[dict[str, Any]] = []
    for (le, currency), found in sorted(groups.items()):
        approved = [f for f in found if f.outcome != Outcome.MISSING_IN_COUPA]
        agree = [f for f in found if f.outcome == Outcome.AGREE]
        pending = [f for f in found if f.outcome == Outcome.PENDING]
        row: dict[str, Any] = {
            "legal_entity": le,
            "currency": currency,
            "approved_in_coupa": len(approved),
            "coupa_amount": _amount(approved),
            "agree": len(agree),
            "agree_amount": _amount(agree),
            "paid": sum(1 for f in agree if f.d365_status == "paid"),
            "pending": len(pending),
            "pending_amount": _amount(pending),
        }
        for outcome in COUNTED:
            row[outcome.value] = sum(1 for f in found if f.outcome == outcome)
        row["unexplained"] = sum(1 for f in found if f.is_difference and not f.explained)
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def summary_markdown(rec: Reconciliation) -> str:
    rows = [
        [money_text(v) if isinstance(v, Decimal) else v for v in row]
        for row in summary(rec).itertuples(index=False, name=None)
    ]
    return table(SUMMARY_HEADERS, rows, empty="No approved Coupa invoice in the window and nothing of ours in D365.")


def differences_markdown(findings: Sequence[Finding], *, limit: int = 200, empty: str = "No differences.") -> str:
    """One row per document: unexplained first (the order of :attr:`Reconciliation.differences`)."""
    return table(
        [
            "legal entity",
            "invoice",
            "vendor",
            "Coupa id",
            "difference",
            "explained",
            "Coupa",
            "D365",
            "age",
            "what differs",
        ],
        (
            [
                f.legal_entity,
                f.invoice_number,
                f.vendor_account,
                f.coupa_id if f.coupa_id is not None else "",
                f.outcome.value,
                "yes" if f.explained else "NO",
                money_text(f.coupa_amount),
                f"{money_text(f.d365_amount)} {f.d365_status}".strip(),
                age_text(f.age),
                cell(f.detail, max_chars=300),
            ]
            for f in findings
        ),
        limit=limit,
        empty=empty,
    )


def named(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    """The documents of ``findings`` as plain values (JSON metadata), amounts as cents text."""
    return [
        {
            "legal_entity": f.legal_entity,
            "invoice_number": f.invoice_number,
            "vendor_account": f.vendor_account,
            "coupa_id": f.coupa_id,
            "difference": f.outcome.value,
            "coupa_amount": money_text(f.coupa_amount),
            "d365_amount": money_text(f.d365_amount),
            "d365_status": f.d365_status,
            "detail": f.detail,
        }
        for f in findings
    ]


def check_description(rec: Reconciliation, *, shown: int = 20) -> str:
    """The check's verdict: each unexplained document (legal entity, invoice number, Coupa id,
    vendor, what differs), or what the explained differences are."""
    bad = rec.unexplained
    if not bad:
        n = rec.counts()
        return (
            f"No unexplained difference: {n['agree']} posted/paid with the Coupa total, {n['pending']} pending in "
            f"D365 (not posted yet), {n['quarantined']} quarantined and {n['failed']} failed with the ledger's reason."
        )
    lines = [
        f"{f.legal_entity} {f.invoice_number} (Coupa {f.coupa_id}, vendor {f.vendor_account}): {f.outcome.value} — "
        f"{f.detail}"
        for f in bad[:shown]
    ]
    more = f"\n… and {len(bad) - shown} more (see metadata 'documents')" if len(bad) > shown else ""
    return f"{len(bad)} unexplained differences between Coupa and D365:\n" + "\n".join(lines) + more
