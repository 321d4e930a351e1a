"""What D365 already holds for a Coupa invoice, read by exact natural key or by our own key:
pending headers (and the verdict whether one may be adopted), posted journals, current lines, and
the D365 PO lines an invoice line may reference. Reads only; no Dagster import."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..d365.odata import fold
from ..mapping.invoices import MappedInvoice
from ..state.ledger import BOOKED_STATES, WRITING, LedgerRow, NaturalKey
from .adoption import Verdict
from .adoption import judge as judge_adoption
from .context import SyncServices
from .dmf_lookups import purchase_order_lines_in_d365
from .settlements import posted_journal_rows

DOC = "invoice"
HEADER_SET, LINE_SET, POSTED_SET = "VendorInvoiceHeaders", "VendorInvoiceLines", "VendInvoiceJourBiEntities"
HEADER_UPDATE_FIELDS = (
    "InvoiceNumber",
    "InvoiceAccount",
    "InvoiceDate",
    "Currency",
    "ImportedAmount",
    "InvoiceDescription",
)
LINE_COMPARE_FIELDS = (
    "LineDescription",
    "ReceiveNow",
    "UnitPrice",
    "Amount",
    "Currency",
    "MainAccountDisplayValue",
    "DimensionDisplayValue",
    "ItemNumber",
    "ProcurementCategoryName",
    "PurchaseOrder",
    "PurchLineNumber",
)


def header_reference(coupa_id: int) -> str:
    """Our HeaderReference for a Coupa invoice: deterministic, so a repeated create collides
    ("The record already exists.") instead of duplicating."""
    return f"COUPA-{int(coupa_id)}"


class InvoiceLookups:
    """The D365 reads of the invoice sync, with a per-run cache of the PO lines found."""

    def __init__(self, services: SyncServices) -> None:
        self.s = services
        self._po_lines: dict[tuple[str, str, str], bool] = {}

    def pending(
        self, row: LedgerRow, mapped: MappedInvoice, coupa_id: int
    ) -> tuple[dict[str, Any] | None, Verdict | None]:
        """The pending header to adopt, and the verdict on it — or, when none is ours, the verdict
        on the first one found (a duplicate invoice number)."""
        rows = list(
            self.s.d365.query(
                HEADER_SET,
                legal_entity=mapped.legal_entity,
                exact={"InvoiceNumber": mapped.invoice_number, "InvoiceAccount": mapped.vendor_account},
                select=["HeaderReference", *HEADER_UPDATE_FIELDS],
            )
        )  # every field an adoption compares
        if not rows:
            return None, None
        judged = sorted(
            ((r, self.judge(row, mapped, coupa_id, r, posted=False)) for r in rows),
            key=lambda pair: (not pair[1].adoptable, pair[1].adoption != "ours"),
        )
        if len(rows) > 1:
            self.s.logger.warning(
                "D365 holds %d pending invoices %s for %s in %s; judged %s",
                len(rows),
                mapped.invoice_number,
                mapped.vendor_account,
                mapped.legal_entity,
                [(r["HeaderReference"], v.adoption.value) for r, v in judged],
            )
        found, verdict = judged[0]
        return (found if verdict.adoptable else None), verdict

    def judge(
        self, row: LedgerRow, mapped: MappedInvoice, coupa_id: int, record: dict[str, Any], *, posted: bool
    ) -> Verdict:
        """Ours or a duplicate invoice number? The ledger is read only when D365 holds a record."""
        natural = NaturalKey(mapped.legal_entity, mapped.vendor_account, mapped.invoice_number).folded()
        booked_for = [
            r.coupa_id
            for r in self.s.ledger.rows(DOC, (*BOOKED_STATES, WRITING))
            if r.coupa_id != coupa_id and r.natural_key is not None and r.natural_key.folded() == natural
        ]
        ours = [header_reference(coupa_id), str((row.d365_key or {}).get("HeaderReference") or "")]
        return judge_adoption(record, mapped, coupa_id, posted=posted, our_references=ours, booked_for=booked_for)

    def posted(self, natural: NaturalKey) -> dict[str, Any] | None:
        rows = posted_journal_rows(self.s.d365, natural, top=1)
        return rows[0] if rows else None

    def posted_for_row(self, row: LedgerRow, mapped: MappedInvoice | None) -> tuple[NaturalKey, dict[str, Any]] | None:
        """Posted under the key the ledger booked it with — or, if a change to it was under way, the new one."""
        candidates = [k for k in (row.natural_key,) if k is not None]
        if mapped is not None:
            new_key = NaturalKey(mapped.legal_entity, mapped.vendor_account, mapped.invoice_number)
            if all(new_key.folded() != k.folded() for k in candidates):
                candidates.append(new_key)
        for natural in candidates:
            posted = self.posted(natural)
            if posted is not None:
                return natural, posted
        return None

    def current_lines(self, le: str, ref: str) -> list[dict[str, Any]]:
        return list(
            self.s.d365.query(
                LINE_SET,
                legal_entity=le,
                exact={"HeaderReference": ref},
                select=["HeaderReference", "InvoiceLineNumber", *LINE_COMPARE_FIELDS],
            )
        )

    def prefetch_po_lines(self, invoices: Sequence[MappedInvoice]) -> None:
        """Answer :meth:`link_purchase_orders` for all of ``invoices`` from one bulk read of the
        referenced D365 PO lines (every legal entity at once) instead of one GET per line."""
        wanted: dict[tuple[str, str, str], tuple[str, str, int]] = {}
        for mapped in invoices:
            for po_number, po_line in mapped.po_lines.values():
                cache_key = (mapped.legal_entity, str(po_number), str(po_line))
                if cache_key in self._po_lines or cache_key in wanted:
                    continue
                try:
                    wanted[cache_key] = (mapped.legal_entity, str(po_number), int(str(po_line)))
                except ValueError:
                    self._po_lines[cache_key] = False
        if not wanted:
            return
        found = purchase_order_lines_in_d365(self.s.d365, wanted.values())
        for cache_key, (le, po_number, line) in wanted.items():
            self._po_lines[cache_key] = (fold(le), fold(po_number), line) in found

    def link_purchase_orders(self, mapped: MappedInvoice) -> None:
        """PO-backed lines reference the D365 PO line when that PO exists in D365."""
        for index, (po_number, po_line) in mapped.po_lines.items():
            cache_key = (mapped.legal_entity, str(po_number), str(po_line))
            if cache_key not in self._po_lines:
                try:
                    line_number = int(str(po_line))
                except ValueError:
                    self._po_lines[cache_key] = False
                    continue
                self._po_lines[cache_key] = (
                    self.s.d365.get(
                        "PurchaseOrderLinesV2",
                        {
                            "dataAreaId": mapped.legal_entity,
                            "PurchaseOrderNumber": str(po_number),
                            "LineNumber": line_number,
                        },
                    )
                    is not None
                )
            if self._po_lines[cache_key]:
                mapped.lines[index]["PurchaseOrder"] = str(po_number)
                mapped.lines[index]["PurchLineNumber"] = int(str(po_line))
