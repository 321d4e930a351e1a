"""The simulated AP user of the D365 sandbox: posting invoices, settling payments and credit notes, reversals.

In a real F&O these happen in the client, not over OData; the sandbox offers them as test hooks
(:class:`.state.D365State` delegates to :class:`SimulatedAPUser`, and ``POST /_sandbox/d365/{post_invoice,
settle,settle_credit_note,reverse_settlement}`` in :mod:`.hooks` call them).

- Posting a pending invoice removes the pending header and lines and writes ``VendInvoiceJourBiEntities`` +
  ``VendTransBiEntities``; ``created_on`` back-dates ``CreatedOn`` like a long batch posting that commits late.
- Settling a payment writes a payment VendTrans and a ``VendSettlementBiEntities`` row; settling a credit note
  against an invoice writes one VendSettlement row per side, no payment.
- Reversing a settlement (*Closed transaction editing > Reverse*) deletes its VendSettlement rows, adds none,
  and gives the VendTrans their SettleAmountCur, ``Closed`` and LastSettle* back.

Invariants: every VendTrans insert or update stamps ``SysModifiedDateTime`` and bumps ``SysRecVersion`` (so a
reader can notice a reversal that leaves no row behind); signs are F&O's vendor signs (invoice AmountCur < 0,
credit note and payment > 0; a settlement row has the sign of the VendTrans it settles), never ``abs()``;
every action runs under the store's lock through its journal-aware primitives and is appended to
``posting_log``. The AP user owns no data: everything lives in the :class:`.store.EntityStore` it operates on.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from .entities import FIRST_RECID
from .odata import _norm, _same, to_jsonable
from .schema import EMPTY_DATE, normalize_datetime
from .store import EntityStore


class SimulatedAPUser:
    """An AP clerk working in F&O: posts pending invoices, settles and reverses settlements on ``store``."""

    def __init__(self, store: EntityStore) -> None:
        self.store = store

    @staticmethod
    def _line_amount(line: dict[str, Any]) -> Decimal:
        for prop in ("Amount", "NetAmount"):
            if line.get(prop):
                return Decimal(line[prop])
        return Decimal(line.get("ReceiveNow") or 0) * Decimal(line.get("UnitPrice") or 0)

    def post_invoice(
        self, data_area_id: str, header_reference: str, *, created_on: str | datetime | None = None
    ) -> dict:
        """Post a pending invoice as an AP user would: the pending header and lines disappear and a
        ``VendInvoiceJourBiEntities`` + ``VendTransBiEntities`` (TransType Purch; AmountCur negative for an
        invoice, positive for a credit note) appear.

        ``created_on`` stands for a long posting transaction: F&O stamps ``CreatedOn`` (and
        ``SysModifiedDateTime``) when the row is inserted, but other sessions see the row only when the
        batch commits — possibly long after that instant. Default: the sandbox's now.

        Raises ``KeyError`` when the pending invoice does not exist.
        """
        company = data_area_id.lower()
        with self.store.lock:
            header = self.store.get(
                "VendorInvoiceHeaders", {"dataAreaId": company, "HeaderReference": header_reference}
            )
            if header is None:
                raise KeyError(f"pending vendor invoice {data_area_id}/{header_reference} not found")
            lines = [
                r
                for r in self.store._tables["VendorInvoiceLines"].values()
                if _same(r["dataAreaId"], company) and _same(r["HeaderReference"], header["HeaderReference"])
            ]
            amount = (
                sum((self._line_amount(line) for line in lines), Decimal(0))
                if lines
                else Decimal(header.get("ImportedAmount") or 0)
            )
            invoice_account = header.get("InvoiceAccount") or header.get("VendorAccount") or ""
            order_account = header.get("VendorAccount") or invoice_account
            voucher = f"APVOU-{self.store._next(f'voucher:inv:{company}'):06d}"
            now = normalize_datetime(created_on if created_on is not None else self.store.now())
            invoice_date = header.get("InvoiceDate") or EMPTY_DATE
            trans_date = invoice_date if invoice_date != EMPTY_DATE else normalize_datetime(self.store.now().date())
            currency = header.get("Currency") or ""
            journal = self.store._insert_raw(
                "VendInvoiceJourBiEntities",
                {
                    "dataAreaId": company,
                    "SourceKey": self.store._next("recid", FIRST_RECID),
                    "InvoiceId": header.get("InvoiceNumber", ""),
                    "InvoiceAccount": invoice_account,
                    "OrderAccount": order_account,
                    "InvoiceDate": invoice_date,
                    "DocumentDate": header.get("Date") or EMPTY_DATE,
                    "DueDate": header.get("DueDate") or EMPTY_DATE,
                    "InvoiceAmount": amount,
                    "InvoiceAmountMST": amount,
                    "CurrencyCode": currency,
                    "LedgerVoucher": voucher,
                    "InternalInvoiceId": voucher,
                    "PurchId": header.get("PurchaseOrderNumber", ""),
                    "Description": header.get("InvoiceDescription", ""),
                    "CreatedOn": now,
                    "SysModifiedDateTime": now,
                    "SysRecVersion": 1,
                    "SysDataAreaId": company,
                },
            )
            trans = self.store._insert_raw(
                "VendTransBiEntities",
                {
                    "dataAreaId": company,
                    "SourceKey": self.store._next("recid", FIRST_RECID),
                    "AccountNum": invoice_account,
                    "Invoice": header.get("InvoiceNumber", ""),
                    "Voucher": voucher,
                    "TransType": "Purch",
                    "AmountCur": -amount,
                    "AmountMST": -amount,
                    "SettleAmountCur": Decimal(0),
                    "SettleAmountMST": Decimal(0),
                    "Closed": EMPTY_DATE,
                    "TransDate": trans_date,
                    "DocumentDate": header.get("Date") or EMPTY_DATE,
                    "DueDate": header.get("DueDate") or EMPTY_DATE,
                    "CurrencyCode": currency,
                    "Approved": "Yes",
                    "Txt": header.get("InvoiceDescription", ""),
                    "CreatedOn": now,
                    "SysModifiedDateTime": now,
                    "SysRecVersion": 1,
                    "SysDataAreaId": company,
                },
            )
            self.store._delete_cascade("VendorInvoiceHeaders", header)
            self.store._remove(
                "VendorInvoiceHeaders", self.store._key(self.store._schema("VendorInvoiceHeaders"), header)
            )
            self.store._mark_posted((company, header["HeaderReference"].casefold()))
            result = {
                "HeaderReference": header["HeaderReference"],
                "dataAreaId": company,
                "VendInvoiceJourBiEntity": dict(journal),
                "VendTransBiEntity": dict(trans),
            }
            self.store.posting_log.append({"action": "post_invoice", **to_jsonable(result)})
            return result

    def is_posted(self, data_area_id: str, header_reference: str) -> bool:
        with self.store.lock:
            return (data_area_id.lower(), header_reference.casefold()) in self.store.posted_header_refs

    # ---- settlements (VendSettlement) ---------------------------------------------------------
    # Signs follow F&O's vendor side: an invoice VendTrans has a negative AmountCur (credit), a credit
    # note or a payment a positive one; settling moves each VendTrans' SettleAmountCur towards its
    # AmountCur (same sign), and the VendSettlement row of a VendTrans carries that movement with the
    # sign of the VendTrans it settles (TransRecId). Never abs(): the sign says which side is which.

    def _posted_trans(self, company: str, vendor_account: str, invoice_id: str) -> dict[str, Any]:
        """The VendTrans of a posted invoice or credit note (not a payment); KeyError when none."""
        matches = [
            r
            for r in self.store._tables["VendTransBiEntities"].values()
            if _same(r["dataAreaId"], company)
            and _same(r["AccountNum"], vendor_account)
            and _same(r["Invoice"], invoice_id)
            and r["TransType"] != "Payment"
        ]
        if not matches:
            raise KeyError(f"no posted invoice {invoice_id} for vendor {vendor_account} in {company}")
        return matches[-1]

    @staticmethod
    def _open_amount(trans: dict[str, Any]) -> Decimal:
        """What is still open on a VendTrans, with the VendTrans' own sign (0 when closed)."""
        return Decimal(trans["AmountCur"]) - Decimal(trans["SettleAmountCur"])

    def _touch(self, entity_set: str, rec: dict[str, Any], modified: str) -> None:
        """Store an updated row as F&O does: SysModifiedDateTime now, a new SysRecVersion."""
        rec["SysModifiedDateTime"] = modified
        rec["SysRecVersion"] = int(rec.get("SysRecVersion") or 0) + 1
        self.store._put(entity_set, self.store._key(self.store._schema(entity_set), rec), rec)

    def _apply_settlement(
        self,
        trans: dict[str, Any],
        movement: Decimal,
        when: str,
        offset: dict[str, Any],
        settlement_voucher: str,
        modified: str,
    ) -> dict[str, Any]:
        """Move ``trans``' SettleAmountCur by ``movement`` (its own sign) and record the last settlement."""
        updated = dict(trans)
        updated["SettleAmountCur"] = Decimal(trans["SettleAmountCur"]) + movement
        updated["SettleAmountMST"] = Decimal(trans["SettleAmountMST"]) + movement
        updated["LastSettleDate"] = when
        updated["LastSettleVoucher"] = settlement_voucher
        updated["LastSettleAccountNum"] = offset["AccountNum"]
        updated["LastSettleCompany"] = offset["dataAreaId"]
        updated["Closed"] = when if updated["SettleAmountCur"] == Decimal(updated["AmountCur"]) else EMPTY_DATE
        self._touch("VendTransBiEntities", updated, modified)
        return updated

    def _settlement_row(
        self,
        trans: dict[str, Any],
        offset: dict[str, Any],
        movement: Decimal,
        when: str,
        settlement_voucher: str,
        group: int,
        created: str,
    ) -> dict[str, Any]:
        return self.store._insert_raw(
            "VendSettlementBiEntities",
            {
                "dataAreaId": trans["dataAreaId"],
                "SourceKey": self.store._next("recid", FIRST_RECID),
                "TransRecId": trans["SourceKey"],
                "OffsetRecid": offset["SourceKey"],
                "SettleAmountCur": movement,
                "SettleAmountMST": movement,
                "TransDate": when,
                "SettlementVoucher": settlement_voucher,
                "OffsetTransVoucher": offset["Voucher"],
                "AccountNum": trans["AccountNum"],
                "OffsetAccountNum": offset["AccountNum"],
                "TransCompany": trans["dataAreaId"],
                "OffsetCompany": offset["dataAreaId"],
                "DueDate": trans["DueDate"],
                "TransType": trans["TransType"],
                "CanBeReversed": "Yes",
                "SettlementGroup": group,
                "SysDataAreaId": trans["dataAreaId"],
                "CreatedOn": created,
            },
        )

    def settle_invoice(
        self,
        data_area_id: str,
        invoice_id: str,
        vendor_account: str,
        amount: Decimal | float,
        date: str,
        payment_reference: str,
        *,
        created_on: str | datetime | None = None,
    ) -> dict:
        """Pay (part of) a posted invoice — or refund (part of) a posted credit note: adds a payment
        VendTrans (TransType Payment, AmountCur of the opposite sign, settled at once) and one
        VendSettlement row on the invoice side (simplification: the payment side's row is not
        written), and moves the invoice VendTrans' SettleAmountCur/Closed/LastSettle*.

        ``amount`` is positive: how much of the open balance the payment covers. Raises ``KeyError``
        when no posted invoice matches and ``ValueError`` on over-settlement.
        """
        company = data_area_id.lower()
        pay = Decimal(str(amount))
        if pay <= 0:
            raise ValueError("amount must be positive")
        when = normalize_datetime(date)
        created = normalize_datetime(created_on if created_on is not None else self.store.now())
        with self.store.lock:
            inv = self._posted_trans(company, vendor_account, invoice_id)
            direction = Decimal(-1) if Decimal(inv["AmountCur"]) < 0 else Decimal(1)
            movement = direction * pay  # on the invoice, with the invoice's sign
            open_amount = self._open_amount(inv)
            if direction * open_amount < pay:
                raise ValueError(f"settlement {pay} exceeds the open amount {direction * open_amount}")
            pay_voucher = f"APPAY-{self.store._next(f'voucher:pay:{company}'):06d}"
            payment = self.store._insert_raw(
                "VendTransBiEntities",
                {
                    "dataAreaId": company,
                    "SourceKey": self.store._next("recid", FIRST_RECID),
                    "AccountNum": inv["AccountNum"],
                    "Voucher": pay_voucher,
                    "TransType": "Payment",
                    "AmountCur": -movement,
                    "AmountMST": -movement,
                    "SettleAmountCur": -movement,
                    "SettleAmountMST": -movement,
                    "PaymReference": payment_reference,
                    "TransDate": when,
                    "Closed": when,
                    "CurrencyCode": inv["CurrencyCode"],
                    "LastSettleVoucher": inv["Voucher"],
                    "LastSettleDate": when,
                    "LastSettleAccountNum": inv["AccountNum"],
                    "LastSettleCompany": company,
                    "Approved": "Yes",
                    "SysDataAreaId": company,
                    "CreatedOn": created,
                    "SysModifiedDateTime": created,
                    "SysRecVersion": 1,
                },
            )
            group = self.store._next("settlement_group")
            settlement = self._settlement_row(inv, payment, movement, when, pay_voucher, group, created)
            updated = self._apply_settlement(inv, movement, when, payment, pay_voucher, created)
            result = {
                "VendSettlementBiEntity": dict(settlement),
                "PaymentVendTrans": dict(payment),
                "InvoiceVendTrans": dict(updated),
            }
            self.store.posting_log.append({"action": "settle_invoice", **to_jsonable(result)})
            return result

    def settle_credit_note(
        self,
        data_area_id: str,
        invoice_id: str,
        credit_note_id: str,
        vendor_account: str,
        amount: Decimal | float,
        date: str,
    ) -> dict:
        """Settle a posted credit note against a posted invoice of the same vendor (no cash moves): one
        VendSettlement row per side (invoice side negative, credit-note side positive, same
        SettlementGroup), both VendTrans move towards closed.

        ``amount`` is positive. Raises ``KeyError`` when either is not posted, ``ValueError`` when the
        amount exceeds what is open on either side or the documents are not an invoice and a credit note.
        """
        company = data_area_id.lower()
        applied = Decimal(str(amount))
        if applied <= 0:
            raise ValueError("amount must be positive")
        when = normalize_datetime(date)
        modified = normalize_datetime(self.store.now())
        with self.store.lock:
            inv = self._posted_trans(company, vendor_account, invoice_id)
            credit = self._posted_trans(company, vendor_account, credit_note_id)
            if not Decimal(inv["AmountCur"]) < 0 < Decimal(credit["AmountCur"]):
                raise ValueError(
                    f"{invoice_id} must be an invoice (AmountCur < 0) and {credit_note_id} a credit "
                    "note (AmountCur > 0)"
                )
            open_invoice, open_credit = -self._open_amount(inv), self._open_amount(credit)
            if applied > open_invoice or applied > open_credit:
                raise ValueError(
                    f"settlement {applied} exceeds the open amount (invoice {open_invoice}, credit note {open_credit})"
                )
            group = self.store._next("settlement_group")
            voucher = credit["Voucher"]  # which voucher F&O shows as SettlementVoucher here is UNCONFIRMED
            invoice_side = self._settlement_row(inv, credit, -applied, when, voucher, group, modified)
            credit_side = self._settlement_row(credit, inv, applied, when, voucher, group, modified)
            updated_invoice = self._apply_settlement(inv, -applied, when, credit, voucher, modified)
            updated_credit = self._apply_settlement(credit, applied, when, inv, voucher, modified)
            result = {
                "InvoiceSettlement": dict(invoice_side),
                "CreditNoteSettlement": dict(credit_side),
                "InvoiceVendTrans": dict(updated_invoice),
                "CreditNoteVendTrans": dict(updated_credit),
            }
            self.store.posting_log.append({"action": "settle_credit_note", **to_jsonable(result)})
            return result

    def reverse_settlement(self, data_area_id: str, settlement_source_key: int) -> dict:
        """Reverse (un-settle) a settlement as F&O's *Closed transaction editing > Reverse* does: the
        VendSettlement rows of that settlement (both sides when there are two) are deleted — no new
        row is written — and every VendTrans involved gets its SettleAmountCur back, ``Closed`` reset
        to the empty date, LastSettle* taken from its latest remaining settlement (empty when none),
        and a new SysModifiedDateTime/SysRecVersion. The payment itself stays posted, open again.

        Raises ``KeyError`` when the settlement does not exist and ``ValueError`` when it cannot be
        reversed (``CanBeReversed`` No).
        """
        company = data_area_id.lower()
        modified = normalize_datetime(self.store.now())
        with self.store.lock:
            settlements = self.store._tables["VendSettlementBiEntities"]
            row = settlements.get((_norm(company), _norm(int(settlement_source_key))))
            if row is None:
                raise KeyError(f"no settlement {settlement_source_key} in {company}")
            if row.get("CanBeReversed") == "No":
                raise ValueError(f"settlement {settlement_source_key} in {company} cannot be reversed")
            group = [
                r
                for r in settlements.values()
                if r["SettlementGroup"] == row["SettlementGroup"] and r["SettlementGroup"]
            ] or [row]
            trans_table = self.store._tables["VendTransBiEntities"]
            movements: dict[tuple, Decimal] = {}
            for part in group:  # the rows say how far each VendTrans moved (their own sign)
                key = (_norm(part["TransCompany"] or part["dataAreaId"]), _norm(part["TransRecId"]))
                movements[key] = movements.get(key, Decimal(0)) + Decimal(part["SettleAmountCur"])
            offset_key = (_norm(row["OffsetCompany"] or company), _norm(row["OffsetRecid"]))
            if offset_key not in movements:  # a payment: its own side has no row here, it moved by the opposite
                movements[offset_key] = -Decimal(row["SettleAmountCur"])
            for part in group:
                self.store._remove(
                    "VendSettlementBiEntities", self.store._key(self.store._schema("VendSettlementBiEntities"), part)
                )
            restored = []
            for key, movement in movements.items():
                trans = trans_table.get(key)
                if trans is None:
                    continue
                updated = dict(trans)
                updated["SettleAmountCur"] = Decimal(trans["SettleAmountCur"]) - movement
                updated["SettleAmountMST"] = Decimal(trans["SettleAmountMST"]) - movement
                settled = updated["SettleAmountCur"] == Decimal(updated["AmountCur"]) != 0
                updated["Closed"] = trans["Closed"] if settled else EMPTY_DATE
                remaining = sorted(
                    (
                        r
                        for r in settlements.values()
                        if r["TransRecId"] == trans["SourceKey"] and _same(r["dataAreaId"], trans["dataAreaId"])
                    ),
                    key=lambda r: (r["TransDate"], r["SourceKey"]),
                )
                last = remaining[-1] if remaining else None
                updated["LastSettleDate"] = last["TransDate"] if last else EMPTY_DATE
                updated["LastSettleVoucher"] = last["SettlementVoucher"] if last else ""
                updated["LastSettleAccountNum"] = last["OffsetAccountNum"] if last else ""
                updated["LastSettleCompany"] = last["OffsetCompany"] if last else ""
                self._touch("VendTransBiEntities", updated, modified)
                restored.append(dict(updated))
            result = {"ReversedSettlements": [dict(r) for r in group], "VendTrans": restored}
            self.store.posting_log.append({"action": "reverse_settlement", **to_jsonable(result)})
            return result
