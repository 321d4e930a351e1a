"""Reconciliation of approved Coupa invoices with D365 and the sync ledger: the comparison core.

Plain Python on pandas frames (no Dagster, no HTTP): :mod:`.reconciliation_reads` fills the frames
from Coupa, D365 and the ledger; ``defs/reconciliation.py`` shows the result. Every approved Coupa
invoice of the window gets exactly one outcome, and so does every D365 pending invoice carrying our
``HeaderReference`` (``COUPA-<id>``) that no Coupa invoice of the window claims:

- ``agree``: posted (or posted and paid) in D365 with the Coupa total;
- ``pending`` (explained): a D365 pending invoice with the Coupa total, not posted yet;
- ``quarantined`` / ``failed`` (explained): never booked, the ledger says why (with its age);
- ``amount_mismatch``: D365's header total (pending ``ImportedAmount``, posted ``InvoiceAmount`` less
  ``SumTax``) differs from Coupa's ``gross-total`` — explained only when the ledger recorded that the
  latest Coupa version could not be applied (``problem`` quarantined/failed, with the reason);
- ``missing_in_d365``: approved in Coupa, booked nowhere in D365, not explained by the ledger;
- ``missing_in_coupa``: a D365 pending invoice with our reference whose Coupa invoice is not
  approved (voided, gone, another status) or that a second D365 invoice already books.

Matching, in this order, each D365 row used once: pending by our reference (``COUPA-<id>`` or the
one the ledger recorded for an adopted invoice), posted by natural key (legal entity, vendor
account, invoice number — the ledger's when it booked the invoice, else the mapped one), pending
by natural key. A never-booked ledger row (quarantined/failed) is not matched by natural key: a
D365 invoice with its number is the one its duplicate quarantine is about. Money is Decimal,
compared to the cent; keys compare as F&O does (casefolded).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any

import pandas as pd

from ..state.ledger_schema import BOOKED_STATES, FAILED, QUARANTINED, WRITING

CENT = Decimal("0.01")
OUR_REFERENCE = re.compile(r"^COUPA-(\d+)$", re.IGNORECASE)
NO_LEGAL_ENTITY = "(unmapped)"

COUPA_COLUMNS = ["coupa_id", "legal_entity", "vendor_account", "invoice_number", "currency", "amount"]
LEDGER_COLUMNS = [
    "coupa_id",
    "state",
    "problem",
    "reason",
    "legal_entity",
    "vendor_account",
    "document_number",
    "header_reference",
    "updated_at",
]
PENDING_COLUMNS = ["legal_entity", "header_reference", "vendor_account", "invoice_number", "currency", "amount"]
POSTED_COLUMNS = ["legal_entity", "vendor_account", "invoice_number", "currency", "amount", "voucher"]
TRANS_COLUMNS = ["legal_entity", "vendor_account", "invoice_number", "voucher", "amount_cur", "settle_amount_cur"]
NEVER_BOOKED = (QUARANTINED.value, FAILED.value)
LIVE_BOOKING = {s.value for s in (*BOOKED_STATES, WRITING)}  # D365 holds (or may hold) it for us


class Outcome(StrEnum):
    AGREE = "agree"
    PENDING = "pending"
    QUARANTINED = "quarantined"
    FAILED = "failed"
    AMOUNT_MISMATCH = "amount_mismatch"
    MISSING_IN_D365 = "missing_in_d365"
    MISSING_IN_COUPA = "missing_in_coupa"


@dataclass(frozen=True)
class Finding:
    """One document's outcome. ``explained`` findings are reported; unexplained ones fail the check."""

    legal_entity: str
    outcome: Outcome
    explained: bool
    coupa_id: int | None
    invoice_number: str
    vendor_account: str
    currency: str
    coupa_amount: Decimal | None
    d365_amount: Decimal | None
    d365_status: str  # pending / posted / paid / "" (not in D365)
    ledger_state: str
    detail: str
    age: timedelta | None = None

    @property
    def is_difference(self) -> bool:
        return self.outcome != Outcome.AGREE


@dataclass
class Reconciliation:
    findings: list[Finding]
    coupa_lookups: int = 0  # Coupa invoices read one by one to judge D365 invoices with our reference
    unchecked: list[int] = field(default_factory=list)  # ... beyond the lookup cap

    @property
    def differences(self) -> list[Finding]:
        return sorted(
            (f for f in self.findings if f.is_difference),
            key=lambda f: (f.explained, _ORDER[f.outcome], f.legal_entity, f.invoice_number, f.coupa_id or 0),
        )

    @property
    def unexplained(self) -> list[Finding]:
        return [f for f in self.differences if not f.explained]

    def counts(self) -> dict[str, int]:
        counts = {o.value: 0 for o in Outcome}
        for f in self.findings:
            counts[f.outcome.value] += 1
        counts["unexplained"] = len(self.unexplained)
        return counts


UNEXPLAINED_KINDS = (Outcome.MISSING_IN_D365, Outcome.MISSING_IN_COUPA, Outcome.AMOUNT_MISMATCH)
_ORDER = {o: i for i, o in enumerate((*UNEXPLAINED_KINDS, Outcome.FAILED, Outcome.QUARANTINED, Outcome.PENDING))}
_ORDER[Outcome.AGREE] = len(_ORDER)


# ---------------------------------------------------------------------------------------------
# small value helpers
# ---------------------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # NaN from an outer merge


def _text(value: Any) -> str:
    return "" if _missing(value) else str(value)


def money(value: Any) -> Decimal | None:
    """A D365/Coupa amount (number or text) as Decimal to the cent; None when it is no number."""
    if _missing(value) or isinstance(value, bool) or str(value).strip() == "":
        return None
    try:
        d = Decimal(str(value).strip())
    except ArithmeticError:
        return None
    return d.quantize(CENT, rounding=ROUND_HALF_UP) if d.is_finite() else None


def money_text(value: Decimal | None) -> str:
    return "" if value is None else str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def _fold(value: Any) -> str:
    return _text(value).casefold()


def fully_settled(amount_cur: Decimal | None, settle_amount_cur: Decimal | None) -> bool:
    """A VendTrans is paid when SettleAmountCur reached AmountCur with the same sign (invoice < 0)."""
    if amount_cur is None or settle_amount_cur is None or amount_cur == 0:
        return False
    return settle_amount_cur <= amount_cur if amount_cur < 0 else settle_amount_cur >= amount_cur


def frame(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """Records as a frame with exactly ``columns`` (object dtype, so Decimals and None stay as they are)."""
    records = [{c: row.get(c) for c in columns} for row in rows]
    return pd.DataFrame(records, columns=list(columns), dtype=object)


def _age(value: Any, now: datetime) -> timedelta | None:
    if _missing(value) or not isinstance(value, datetime):
        return None
    return max(now - value, timedelta(0))


def age_text(age: timedelta | None) -> str:
    if age is None:
        return ""
    minutes = int(age.total_seconds() // 60)
    return f"{minutes // 1440}d {minutes % 1440 // 60}h" if minutes >= 1440 else f"{minutes // 60}h {minutes % 60}m"


# ---------------------------------------------------------------------------------------------
# matching
# ---------------------------------------------------------------------------------------------


def _column(df: pd.DataFrame, values: Iterable[Any]) -> pd.Series:
    """``values`` as a column of ``df`` that stays ``object`` even when empty (merge keys must agree)."""
    return pd.Series(list(values), index=df.index, dtype=object)


def _keys(df: pd.DataFrame, le: str, vendor: str, number: str) -> pd.Series:
    """The folded natural key (legal entity, vendor account, invoice number) of each row."""
    return _column(df, ((_fold(a), _fold(b), _fold(n)) for a, b, n in zip(df[le], df[vendor], df[number], strict=True)))


def _expected(coupa: pd.DataFrame, ledger: pd.DataFrame) -> pd.DataFrame:
    """Coupa invoices with their ledger row and the key D365 should hold them under: the ledger's
    booked natural key when it has one (the authority once booked), else the mapped one."""
    led = ledger.rename(columns={c: f"ledger_{c}" for c in LEDGER_COLUMNS if c != "coupa_id"})
    c = coupa.merge(led, on="coupa_id", how="left", indicator="ledger_row")
    booked_key = c["ledger_legal_entity"].notna() & c["ledger_vendor_account"].notna()
    booked_key &= c["ledger_document_number"].notna()
    c["le"] = c["ledger_legal_entity"].where(c["ledger_legal_entity"].notna(), c["legal_entity"])
    c["vendor"] = c["ledger_vendor_account"].where(booked_key, c["vendor_account"])
    c["number"] = c["ledger_document_number"].where(booked_key, c["invoice_number"])
    c["key"] = _keys(c, "le", "vendor", "number")
    c["never_booked"] = _column(c, (_text(s) in NEVER_BOOKED for s in c["ledger_state"]))
    return c


def _claim(left: pd.DataFrame, right: pd.DataFrame, on: str, taken: set[int], used: set[str]) -> pd.DataFrame:
    """Pairs of a still unmatched Coupa invoice and a still unused D365 row with equal ``on``; each
    side used once (the lowest Coupa id wins a contested D365 row)."""
    free_left = left.loc[[int(i) not in taken for i in left["coupa_id"]]]
    free_right = right.loc[[r not in used for r in right["row_id"]]]
    pairs = free_left.merge(free_right, on=on, how="inner", suffixes=("", "_d365"))
    pairs = pairs.sort_values(["coupa_id", "row_id"]).drop_duplicates("row_id").drop_duplicates("coupa_id")
    taken.update(int(i) for i in pairs["coupa_id"])
    used.update(str(r) for r in pairs["row_id"])
    return pairs


def _d365_frames(pending: pd.DataFrame, posted: pd.DataFrame, trans: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pending headers and posted journals with row ids and folded keys; a posted one is ``paid``
    when its VendTrans (same natural key and voucher) is fully settled."""
    p = pending.copy()
    p["row_id"] = _column(p, (f"pending:{i}" for i in range(len(p))))
    p["ref"] = _column(p, (_fold(r) for r in p["header_reference"]))
    p["key"] = _keys(p, "legal_entity", "vendor_account", "invoice_number")
    p["status"] = "pending"
    p["voucher"] = None
    t = trans.copy()
    t["key"] = _keys(t, "legal_entity", "vendor_account", "invoice_number")
    paid = {
        (key, _fold(voucher))
        for key, voucher, amount, settled in zip(
            t["key"], t["voucher"], t["amount_cur"], t["settle_amount_cur"], strict=True
        )
        if fully_settled(money(amount), money(settled))
    }
    j = posted.copy()
    j["row_id"] = _column(j, (f"posted:{i}" for i in range(len(j))))
    j["key"] = _keys(j, "legal_entity", "vendor_account", "invoice_number")
    j["status"] = _column(
        j, ("paid" if (k, _fold(v)) in paid else "posted" for k, v in zip(j["key"], j["voucher"], strict=True))
    )
    j["header_reference"] = None
    return p, j


def orphan_ids(pending: pd.DataFrame) -> list[int]:
    """Coupa ids named by the ``COUPA-<id>`` references of pending invoices."""
    found = (OUR_REFERENCE.match(_text(ref).strip()) for ref in pending["header_reference"])
    return sorted({int(m.group(1)) for m in found if m})


# ---------------------------------------------------------------------------------------------
# the comparison
# ---------------------------------------------------------------------------------------------

CoupaStatusLookup = Callable[[list[int]], Mapping[int, str | None]]
MATCHED = ["coupa_id", "row_id", "status", "amount_d365", "currency_d365", "header_reference", "voucher"]


def reconcile(
    coupa: pd.DataFrame,
    ledger: pd.DataFrame,
    pending: pd.DataFrame,
    posted: pd.DataFrame,
    trans: pd.DataFrame,
    *,
    now: datetime,
    coupa_status: CoupaStatusLookup | None = None,
    max_lookups: int = 100,
) -> Reconciliation:
    """Compare the window's approved Coupa invoices (``COUPA_COLUMNS``) with their ledger rows
    (``LEDGER_COLUMNS``; include the rows of the ids ``COUPA-<id>`` pending invoices name) and what
    D365 holds: pending headers, posted journals and the posted invoices' VendTrans (``*_COLUMNS``).

    ``coupa_status(ids)`` answers the current Coupa status of invoices that a D365 pending invoice
    names but neither the window nor a live ledger booking accounts for (None: no such invoice); an
    approved one belongs to another day's reconciliation. At most ``max_lookups`` ids are asked; the
    rest are reported unchecked. ``now`` dates the ledger's quarantines and failures (injected)."""
    c = _expected(coupa, ledger)
    p, j = _d365_frames(pending, posted, trans)
    taken: set[int] = set()
    used: set[str] = set()
    by_ref = pd.concat(
        [
            c.assign(ref=_column(c, (f"coupa-{int(i)}" for i in c["coupa_id"]))),
            c.assign(ref=_column(c, (None if _missing(r) else _fold(r) for r in c["ledger_header_reference"]))).dropna(
                subset=["ref"]
            ),
        ]
    )
    by_key = c.loc[[not n for n in c["never_booked"]]]
    matched = pd.concat(
        [
            _claim(by_ref, p, "ref", taken, used).reindex(columns=MATCHED),
            _claim(by_key, j, "key", taken, used).reindex(columns=MATCHED),
            _claim(by_key, p, "key", taken, used).reindex(columns=MATCHED),
        ]
    )
    result = c.merge(matched, on="coupa_id", how="left", indicator="in_d365")
    findings = [_judge(row, now) for row in result.to_dict(orient="records")]
    unknown, checked, unchecked = _unknown_in_d365(p, used, coupa, ledger, coupa_status, max_lookups)
    return Reconciliation([*findings, *unknown], coupa_lookups=checked, unchecked=unchecked)


def _unknown_in_d365(
    p: pd.DataFrame,
    used: set[str],
    coupa: pd.DataFrame,
    ledger: pd.DataFrame,
    coupa_status: CoupaStatusLookup | None,
    max_lookups: int,
) -> tuple[list[Finding], int, list[int]]:
    """Pending invoices carrying our reference that no approved Coupa invoice of the window claimed;
    also how many Coupa invoices were looked up and which were not (beyond ``max_lookups``)."""
    claimed = pd.DataFrame({"row_id": sorted(used)}, dtype=object)
    rest = p.merge(claimed, on="row_id", how="left", indicator="claimed")
    rest = rest.loc[rest["claimed"] == "left_only"]
    ledger_by_id = {int(r["coupa_id"]): r for r in ledger.to_dict(orient="records")}
    window = {int(i) for i in coupa["coupa_id"]}
    findings: list[Finding] = []
    candidates: list[tuple[dict[str, Any], int, Mapping[str, Any] | None]] = []
    for row in rest.to_dict(orient="records"):
        found = OUR_REFERENCE.match(_text(row["header_reference"]).strip())
        if not found:
            continue  # not ours: AP's own invoices are not the connector's to reconcile
        coupa_id = int(found.group(1))
        led = ledger_by_id.get(coupa_id)
        if coupa_id in window:  # its Coupa invoice was matched to another D365 record: a second booking
            why = "a second D365 invoice for this Coupa invoice, which D365 already holds under another record"
            findings.append(_orphan(row, coupa_id, led, why))
        elif led is not None and _text(led.get("state")) in LIVE_BOOKING:
            continue  # the ledger booked it for a Coupa invoice of another day: that day reconciles it
        else:
            candidates.append((row, coupa_id, led))
    ask = sorted({i for _, i, _ in candidates})
    checked = ask[:max_lookups]
    statuses: Mapping[int, str | None] = coupa_status(checked) if (coupa_status and checked) else {}
    for row, coupa_id, led in candidates:
        if coupa_id not in statuses:
            why = f"not checked in Coupa (more than {max_lookups} to look up, or no Coupa client)"
        elif statuses[coupa_id] is None:
            why = f"Coupa has no invoice {coupa_id}"
        elif statuses[coupa_id] == "approved":
            continue  # approved on another day: that day's reconciliation matches it
        else:
            why = f"the Coupa invoice is {statuses[coupa_id]}, not approved"
        findings.append(_orphan(row, coupa_id, led, why))
    return findings, len(statuses), ask[max_lookups:]


def _orphan(row: Mapping[str, Any], coupa_id: int, led: Mapping[str, Any] | None, why: str) -> Finding:
    state = _text((led or {}).get("state")) or "no ledger row"
    return Finding(
        legal_entity=_text(row["legal_entity"]).lower() or NO_LEGAL_ENTITY,
        outcome=Outcome.MISSING_IN_COUPA,
        explained=False,
        coupa_id=coupa_id,
        invoice_number=_text(row["invoice_number"]),
        vendor_account=_text(row["vendor_account"]),
        currency=_text(row["currency"]),
        coupa_amount=None,
        d365_amount=money(row["amount"]),
        d365_status="pending",
        ledger_state=state,
        detail=f"D365 pending invoice {_text(row['header_reference'])} has no approved Coupa counterpart: {why} "
        f"(ledger: {state})",
    )


def _judge(row: Mapping[str, Any], now: datetime) -> Finding:
    """The outcome of one approved Coupa invoice (a row of the Coupa ⋈ ledger ⋈ D365 merge)."""
    state, problem, reason = _text(row["ledger_state"]), _text(row["ledger_problem"]), _text(row["ledger_reason"])
    coupa_amount = money(row["amount"])
    d365_amount = money(row["amount_d365"])
    status = _text(row["status"]) if row["in_d365"] == "both" else ""
    base = {
        "legal_entity": _text(row["le"]).lower() or NO_LEGAL_ENTITY,
        "coupa_id": int(row["coupa_id"]),
        "invoice_number": _text(row["number"]),
        "vendor_account": _text(row["vendor"]),
        "currency": _text(row["currency"]) or _text(row["currency_d365"]),
        "coupa_amount": coupa_amount,
        "d365_amount": d365_amount,
        "d365_status": status,
        "ledger_state": state or "no ledger row",
    }
    age = _age(row["ledger_updated_at"], now)
    if status:
        record = _text(row["header_reference"]) or (f"voucher {_text(row['voucher'])}" if _text(row["voucher"]) else "")
        where = f"D365 {status} {record or 'invoice'}"
        currency_d365 = _text(row["currency_d365"])
        differs = coupa_amount is None or d365_amount is None or coupa_amount != d365_amount
        differs |= bool(currency_d365) and _fold(currency_d365) != _fold(row["currency"])
        if differs:
            detail = (
                f"Coupa gross-total {money_text(coupa_amount) or '?'} {_text(row['currency'])}, "
                f"{where} total {money_text(d365_amount) or '?'} {currency_d365}"
            )
            if problem in NEVER_BOOKED and reason:
                return Finding(
                    **base,
                    outcome=Outcome.AMOUNT_MISMATCH,
                    explained=True,
                    age=age,
                    detail=f"{detail}; the latest Coupa version is {problem} in the ledger: {reason}",
                )
            return Finding(**base, outcome=Outcome.AMOUNT_MISMATCH, explained=False, age=age, detail=detail)
        if status == "pending":
            return Finding(**base, outcome=Outcome.PENDING, explained=True, detail=f"{where}: written, not posted yet")
        return Finding(**base, outcome=Outcome.AGREE, explained=True, detail=f"{where}, same total")
    if state in NEVER_BOOKED:
        outcome = Outcome.QUARANTINED if state == QUARANTINED.value else Outcome.FAILED
        if reason:
            return Finding(**base, outcome=outcome, explained=True, age=age, detail=f"{state}: {reason}")
        return Finding(
            **base,
            outcome=outcome,
            explained=False,
            age=age,
            detail=f"{state} in the ledger without a reason; re-drive it with replay_invoices_job",
        )
    if not state or state == "new":
        why = "the ledger has no booking for it: no documents run synced it yet (run daily_documents_job for its day)"
    else:
        why = f"the ledger says {state}" + (f" ({reason})" if reason else "")
    detail = f"approved in Coupa, neither pending nor posted in D365; {why}"
    return Finding(**base, outcome=Outcome.MISSING_IN_D365, explained=False, age=age, detail=detail)
