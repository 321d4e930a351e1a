"""Reading what the reconciliation compares (plain Python, no Dagster): the window's approved Coupa
invoices (one paged listing), the ledger rows of those invoices, and D365 in bulk — one query per
entity set for every legal entity at once (cross-company), never one per document:

- ``VendorInvoiceHeaders``: every pending invoice carrying our reference (``HeaderReference eq
  'COUPA-*'``) plus those with the window's invoice numbers or the references the ledger recorded
  for adopted invoices;
- ``VendInvoiceJourBiEntities``: posted invoices with the window's invoice numbers (prefix cover);
- ``VendTransBiEntities``: the posted ones' vendor transactions (paid = fully settled).

Each query narrows by a prefix cover (``d365.odata.prefix_cover``), a superset; the comparison
core matches exact (folded) keys. Coupa invoices a D365 pending invoice names but the window does
not hold are read one by one (capped) to tell "approved on another day" from "voided" or "gone".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..common.clock import SYSTEM_CLOCK, Clock
from ..coupa.client import CoupaClient, CoupaError
from ..d365 import odata
from ..d365.client import D365Client
from ..mapping.config import MappingConfig
from ..mapping.fields import text_of
from ..mapping.invoices import legal_entity_for
from ..mapping.vendors import vendor_account_for
from ..state.ledger import Ledger, LedgerRow
from .reconciliation import (
    COUPA_COLUMNS,
    LEDGER_COLUMNS,
    PENDING_COLUMNS,
    POSTED_COLUMNS,
    TRANS_COLUMNS,
    Reconciliation,
    frame,
    money,
    orphan_ids,
    reconcile,
)

DOC = "invoice"
HEADER_SET, JOURNAL_SET, TRANS_SET = "VendorInvoiceHeaders", "VendInvoiceJourBiEntities", "VendTransBiEntities"
OUR_REFERENCES = "COUPA-" + odata.WILDCARD
LEDGER_CHUNK = 500  # ids per ledger query (SQL IN list)
DEFAULT_MAX_LOOKUPS = 100


def coupa_row(invoice: Mapping[str, Any], mapping: MappingConfig) -> dict[str, Any]:
    """An approved Coupa invoice as the comparison sees it (legal entity and vendor as the mapping
    derives them; the ledger's booked key takes precedence in the core)."""
    supplier = invoice.get("supplier") if isinstance(invoice.get("supplier"), dict) else {}
    currency = invoice.get("currency")
    return {
        "coupa_id": int(invoice["id"]),
        "legal_entity": legal_entity_for(dict(invoice), mapping),
        "vendor_account": vendor_account_for(supplier or {}, mapping),
        "invoice_number": text_of(invoice.get("invoice-number")),
        "currency": text_of(currency.get("code") if isinstance(currency, dict) else currency),
        "amount": money(invoice.get("gross-total")),
    }


def ledger_row(row: LedgerRow) -> dict[str, Any]:
    return {
        "coupa_id": row.coupa_id,
        "state": row.state.value,
        "problem": row.problem.value if row.problem else None,
        "reason": row.reason,
        "legal_entity": row.legal_entity,
        "vendor_account": row.vendor_account,
        "document_number": row.document_number,
        "header_reference": (row.d365_key or {}).get("HeaderReference"),
        "updated_at": row.updated_at,
    }


def pending_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "legal_entity": text_of(row.get("dataAreaId")),
        "header_reference": text_of(row.get("HeaderReference")),
        "vendor_account": text_of(row.get("InvoiceAccount")),
        "invoice_number": text_of(row.get("InvoiceNumber")),
        "currency": text_of(row.get("Currency")),
        "amount": money(row.get("ImportedAmount")),
    }


def posted_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A posted journal; its total without sales tax (the connector books Coupa's gross-total, no tax)."""
    amount, tax = money(row.get("InvoiceAmount")), money(row.get("SumTax"))
    return {
        "legal_entity": text_of(row.get("dataAreaId")),
        "vendor_account": text_of(row.get("InvoiceAccount")),
        "invoice_number": text_of(row.get("InvoiceId")),
        "currency": text_of(row.get("CurrencyCode")),
        "amount": None if amount is None else amount - (tax or 0),
        "voucher": text_of(row.get("LedgerVoucher")),
    }


def trans_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "legal_entity": text_of(row.get("dataAreaId")),
        "vendor_account": text_of(row.get("AccountNum")),
        "invoice_number": text_of(row.get("Invoice")),
        "voucher": text_of(row.get("Voucher")),
        "amount_cur": money(row.get("AmountCur")),
        "settle_amount_cur": money(row.get("SettleAmountCur")),
    }


@dataclass
class ReconciliationInputs:
    coupa: pd.DataFrame
    ledger: pd.DataFrame
    pending: pd.DataFrame
    posted: pd.DataFrame
    trans: pd.DataFrame
    legal_entities: list[str]


class ReconciliationReader:
    """Reads one window's inputs and runs the comparison; counts its requests through the clients."""

    def __init__(
        self,
        coupa: CoupaClient,
        d365: D365Client,
        ledger: Ledger,
        mapping: MappingConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        max_lookups: int = DEFAULT_MAX_LOOKUPS,
    ) -> None:
        self.coupa, self.d365, self.ledger, self.mapping = coupa, d365, ledger, mapping
        self.clock = clock
        self.max_lookups = max_lookups

    def approved_in_window(self, start: str, end: str) -> list[dict[str, Any]]:
        """Approved Coupa invoices whose updated-at is in [start, end) — the staging assets' filters."""
        filters = {"updated-at[gt_or_eq]": start, "updated-at[lt]": end, "status[in]": "approved"}
        return list(self.coupa.iter_records("invoices", filters))

    def ledger_rows(self, coupa_ids: Iterable[int]) -> list[dict[str, Any]]:
        ids = sorted({int(i) for i in coupa_ids})
        rows: list[dict[str, Any]] = []
        for at in range(0, len(ids), LEDGER_CHUNK):
            rows += [
                ledger_row(r) for r in self.ledger.rows(DOC, coupa_ids=ids[at : at + LEDGER_CHUNK]) if r.scope == ""
            ]
        return rows

    def read(self, start: str, end: str) -> ReconciliationInputs:
        coupa = frame((coupa_row(i, self.mapping) for i in self.approved_in_window(start, end)), COUPA_COLUMNS)
        ledger = self.ledger_rows(int(i) for i in coupa["coupa_id"])
        companies = sorted(
            {odata.fold(le) for le in self.mapping.mapped_legal_entities}
            | {odata.fold(r["legal_entity"]) for r in ledger if r["legal_entity"]}
        )
        numbers = {text_of(n) for n in coupa["invoice_number"]} | {text_of(r["document_number"]) for r in ledger}
        numbers.discard("")
        refs = {text_of(r["header_reference"]) for r in ledger} - {""}
        pending = [pending_row(r) for r in self._pending(companies, numbers, refs)]
        known = {int(r["coupa_id"]) for r in ledger}
        named = [i for i in orphan_ids(frame(pending, PENDING_COLUMNS)) if i not in known]
        ledger += self.ledger_rows(named)
        posted = [posted_row(r) for r in self._posted(companies, numbers)]
        trans = [trans_row(r) for r in self._trans(companies, {r["invoice_number"] for r in posted})]
        return ReconciliationInputs(
            coupa=coupa,
            ledger=frame(ledger, LEDGER_COLUMNS),
            pending=frame(pending, PENDING_COLUMNS),
            posted=frame(posted, POSTED_COLUMNS),
            trans=frame(trans, TRANS_COLUMNS),
            legal_entities=companies,
        )

    def run(self, start: str, end: str) -> Reconciliation:
        inputs = self.read(start, end)
        return reconcile(
            inputs.coupa,
            inputs.ledger,
            inputs.pending,
            inputs.posted,
            inputs.trans,
            now=self.clock.now(),
            coupa_status=self.coupa_statuses,
            max_lookups=self.max_lookups,
        )

    def coupa_statuses(self, coupa_ids: Sequence[int]) -> dict[int, str | None]:
        """Current Coupa status of each invoice (None: Coupa has no such invoice)."""
        found: dict[int, str | None] = {}
        for coupa_id in coupa_ids:
            try:
                found[coupa_id] = text_of(self.coupa.get("invoices", coupa_id).get("status")) or "without status"
            except CoupaError as exc:
                if exc.status != 404:
                    raise
                found[coupa_id] = None
        return found

    # -- D365, in bulk ---------------------------------------------------------------------------
    def _pending(self, companies: list[str], numbers: set[str], refs: set[str]) -> list[dict[str, Any]]:
        if not companies:
            return []
        by_number = odata.prefix_cover("InvoiceNumber", numbers) if numbers else ""
        adopted = [r for r in refs if not r.upper().startswith("COUPA-")]
        by_ref = odata.prefix_cover("HeaderReference", adopted) if adopted else ""
        narrowed = by_number is not None and by_ref is not None
        condition = odata.or_(*(c for c in (odata.eq("HeaderReference", OUR_REFERENCES), by_number, by_ref) if c))
        return list(
            self.d365.query(
                HEADER_SET,
                legal_entity=companies,
                filter=condition if narrowed else None,  # no cover fits the URL: read them all
                select=[
                    "dataAreaId",
                    "HeaderReference",
                    "InvoiceNumber",
                    "InvoiceAccount",
                    "Currency",
                    "ImportedAmount",
                ],
            )
        )

    def _posted(self, companies: list[str], numbers: set[str]) -> list[dict[str, Any]]:
        if not companies or not numbers:
            return []
        return list(
            self.d365.query(
                JOURNAL_SET,
                legal_entity=companies,
                filter=odata.prefix_cover("InvoiceId", numbers),
                select=[
                    "dataAreaId",
                    "InvoiceId",
                    "InvoiceAccount",
                    "InvoiceAmount",
                    "SumTax",
                    "CurrencyCode",
                    "LedgerVoucher",
                ],
            )
        )

    def _trans(self, companies: list[str], numbers: set[str]) -> list[dict[str, Any]]:
        numbers = {n for n in numbers if n}
        if not companies or not numbers:
            return []
        not_payment = odata.compare("TransType", "ne", odata.Enum("LedgerTransType", "Payment"))
        return list(
            self.d365.query(
                TRANS_SET,
                legal_entity=companies,
                filter=odata.and_(odata.prefix_cover("Invoice", numbers), not_payment),
                select=["dataAreaId", "AccountNum", "Invoice", "Voucher", "AmountCur", "SettleAmountCur", "TransType"],
            )
        )
