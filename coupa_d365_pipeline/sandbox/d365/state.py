"""The D365 sandbox's data, as tests and the OData layer see it: :class:`D365State`.

:class:`D365State` is the entity store with validation and the purchase-order lifecycle mixed in, plus OData's
create/update/delete semantics (POST/PATCH/PUT/DELETE, ``If-Match``, cascade deletes, number sequences) and the
AP-user test hooks (delegated to :class:`.ap_user.SimulatedAPUser`).

Invariants: create/update/delete are the only OData write paths and plain requests and ``$batch`` changeset
parts share them, so every rule (validation, PO rules) applies to both and a rule failing inside a changeset
rolls the whole changeset back; a failed write leaves no trace (not even a consumed number-sequence value);
key properties never change after create. Thread safety: one ``RLock`` (``lock``) guards all state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from .ap_user import SimulatedAPUser
from .entities import FIELD_LABELS, PO_HEADER_TO_LINE, PO_LINE_TO_HEADER
from .odata import ODATA_EXCEPTION, ODataError, _bad_request, _etag, _format_key_value, _not_found_segment, _same
from .purchase_orders import PurchaseOrderRules
from .schema import D365Schema, EntitySchema
from .validation import ValidatingStore


class D365State(ValidatingStore, PurchaseOrderRules):
    """All F&O data of the sandbox. Thread-safe (one RLock); usable directly from tests.

    Records are stored with coerced Python values (``Decimal`` for Edm.Decimal, ISO strings for
    dates, member names for enums) and every property filled with its F&O default.
    """

    def __init__(
        self,
        schema: D365Schema | None = None,
        master_data: dict[str, list[dict]] | None = None,
        *,
        default_company: str = "dat",
        dimension_format: list[str] | None = None,
        dimension_delimiter: str = "-",
        number_sequences: dict[str, tuple[str, str]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            schema,
            default_company=default_company,
            dimension_format=dimension_format,
            dimension_delimiter=dimension_delimiter,
            number_sequences=number_sequences,
            clock=clock,
        )
        self.ap_user = SimulatedAPUser(self)
        for entity_set, records in (master_data or {}).items():
            self.load(entity_set, records)

    def load(self, entity_set: str, records: list[dict]) -> None:
        """Bulk-load master data (upsert by key), validated and coerced against the schema."""
        sch = self._schema(entity_set)
        with self.lock:
            for raw in records:
                data = {k: v for k, v in raw.items() if not k.startswith("@")}
                if sch.company_scoped:
                    data["dataAreaId"] = str(data.get("dataAreaId") or self.default_company).lower()
                rec = sch.full_record(data)
                self._apply_po_defaults(entity_set, rec, set(data))
                self._put(entity_set, self._key(sch, rec), rec)

    # ---- OData writes -------------------------------------------------------------------------
    def create(self, entity_set: str, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """OData POST semantics; raises :class:`ODataError`. Returns (record, etag).

        A failed insert leaves no trace (not even a consumed number-sequence value).
        """
        with self.lock:
            if self._journal is not None:
                return self._create(entity_set, body)
            self.begin()
            try:
                result = self._create(entity_set, body)
            except BaseException:
                self.rollback()
                raise
            self.commit()
            return result

    def _create(self, entity_set: str, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        sch = self._schema(entity_set)
        with self.lock:
            data = self.coerce_body(sch, body)
            if sch.company_scoped:
                company = str(data.get("dataAreaId") or self.default_company)
                if company.casefold() not in self.companies():
                    raise self._write_failed(sch, [f"Error: Company '{company}' does not exist."])
                data["dataAreaId"] = company.lower()
            auto = self.number_sequences.get(entity_set)
            missing = [
                k
                for k in sch.keys
                if k != "dataAreaId" and (k not in data or data[k] == "") and not (auto and auto[0] == k)
            ]
            if missing:
                raise self._write_failed(sch, [self._must_fill(k) for k in missing])
            rec = sch.defaults()
            rec.update(data)
            self._apply_po_defaults(entity_set, rec, set(data))
            if auto and not rec.get(auto[0]):
                while True:
                    n = self._next(f"seq:{entity_set}:{rec.get('dataAreaId', '')}")
                    rec[auto[0]] = auto[1].format(n=n)
                    if self._key(sch, rec) not in self._tables[entity_set]:
                        break
            infolog = self._validate(sch, rec, None)
            if infolog:
                raise self._write_failed(sch, infolog)
            key = self._key(sch, rec)
            if key in self._tables[entity_set]:
                _, table_label = self._aot(sch)
                non_area = [k for k in sch.keys if k != "dataAreaId"] or sch.keys
                values = ", ".join(_format_key_value(rec[k]).strip("'") for k in non_area)
                raise self._write_failed(
                    sch,
                    [
                        f"Info: Cannot create a record in {table_label}. {FIELD_LABELS.get(non_area[0], non_area[0])}: "
                        f"{values}.\nThe record already exists.."
                    ],
                )
            version = self._put(entity_set, key, rec)
            if entity_set in PO_LINE_TO_HEADER:
                self._refresh_po_status(entity_set, rec["dataAreaId"], rec["PurchaseOrderNumber"])
            return dict(rec), _etag(version)

    def _locate(self, sch: EntitySchema, key_values: dict[str, Any], cross_company: bool) -> tuple[tuple, dict]:
        rec = self.get(sch.name, key_values, cross_company)
        if rec is None:
            raise _not_found_segment(
                sch.name + "(" + ",".join(f"{k}={_format_key_value(key_values[k])}" for k in sch.keys) + ")"
            )
        return self._key(sch, rec), rec

    def _check_if_match(self, sch: EntitySchema, key: tuple, if_match: str | None) -> None:
        if if_match and if_match.strip() != "*":
            current = _etag(self._versions.get((sch.name, key), 0))
            if if_match.strip() != current:
                raise ODataError(
                    412,
                    "The etag value in the request header does not match with the current etag value of the object.",
                    ODATA_EXCEPTION,
                )

    def update(
        self,
        entity_set: str,
        key_values: dict[str, Any],
        body: dict[str, Any],
        *,
        cross_company: bool = True,
        replace: bool = False,
        if_match: str | None = None,
    ) -> str:
        """OData PATCH (merge) / PUT (replace); key fields cannot change. Returns the new etag."""
        sch = self._schema(entity_set)
        with self.lock:
            key, current = self._locate(sch, key_values, cross_company)
            self._check_if_match(sch, key, if_match)
            data = self.coerce_body(sch, body)
            for k in sch.keys:
                if k in data and not _same(data[k], current[k]):
                    raise _bad_request(
                        f"The key property '{k}' cannot be modified. Key properties are read-only "
                        f"once the entity '{sch.full_type_name}' is created."
                    )
            rec = sch.defaults() if replace else dict(current)
            for k in sch.keys:
                rec[k] = current[k]
            rec.update({k: v for k, v in data.items() if k not in sch.keys})
            if entity_set in PO_LINE_TO_HEADER or entity_set in PO_HEADER_TO_LINE:
                self._guard_po_update(sch, current, rec, data, replace)
            infolog = self._validate(sch, rec, None if replace else set(data) - set(sch.keys))
            if infolog:
                raise self._write_failed(sch, infolog)
            etag = _etag(self._put(entity_set, key, rec))
            if entity_set in PO_LINE_TO_HEADER:
                self._refresh_po_status(entity_set, rec["dataAreaId"], rec["PurchaseOrderNumber"])
            return etag

    def delete(
        self, entity_set: str, key_values: dict[str, Any], *, cross_company: bool = True, if_match: str | None = None
    ) -> None:
        sch = self._schema(entity_set)
        with self.lock:
            key, rec = self._locate(sch, key_values, cross_company)
            self._check_if_match(sch, key, if_match)
            if entity_set in PO_LINE_TO_HEADER or entity_set in PO_HEADER_TO_LINE:
                self._guard_po_delete(sch, rec)
            self._delete_cascade(entity_set, rec)
            self._remove(entity_set, key)
            if entity_set in PO_LINE_TO_HEADER:
                self._refresh_po_status(entity_set, rec["dataAreaId"], rec["PurchaseOrderNumber"])

    # ---- test hooks of the simulated AP user (see :mod:`.ap_user`) ----------------------------
    def post_invoice(
        self, data_area_id: str, header_reference: str, *, created_on: str | datetime | None = None
    ) -> dict:
        """Post a pending invoice as an AP user would (:meth:`.ap_user.SimulatedAPUser.post_invoice`)."""
        return self.ap_user.post_invoice(data_area_id, header_reference, created_on=created_on)

    def is_posted(self, data_area_id: str, header_reference: str) -> bool:
        return self.ap_user.is_posted(data_area_id, header_reference)

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
        """Pay (part of) a posted invoice (:meth:`.ap_user.SimulatedAPUser.settle_invoice`)."""
        return self.ap_user.settle_invoice(
            data_area_id, invoice_id, vendor_account, amount, date, payment_reference, created_on=created_on
        )

    def settle_credit_note(
        self,
        data_area_id: str,
        invoice_id: str,
        credit_note_id: str,
        vendor_account: str,
        amount: Decimal | float,
        date: str,
    ) -> dict:
        """Settle a credit note against an invoice (:meth:`.ap_user.SimulatedAPUser.settle_credit_note`)."""
        return self.ap_user.settle_credit_note(data_area_id, invoice_id, credit_note_id, vendor_account, amount, date)

    def reverse_settlement(self, data_area_id: str, settlement_source_key: int) -> dict:
        """Reverse a settlement (:meth:`.ap_user.SimulatedAPUser.reverse_settlement`)."""
        return self.ap_user.reverse_settlement(data_area_id, settlement_source_key)
