"""Pydantic models for the Coupa JSON we read (hyphenated keys via aliases).

Only the fields the connector uses are typed; everything else is kept (``extra="allow"``) so the
raw document can be audited and replayed. Shapes follow Coupa's R39 OpenAPI definitions.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field


def _hyphenate(name: str) -> str:
    return name.replace("_", "-")


class CoupaModel(BaseModel):
    model_config = ConfigDict(alias_generator=_hyphenate, populate_by_name=True, extra="allow")


class Ref(CoupaModel):
    id: int | None = None
    name: str | None = None
    code: str | None = None


class SupplierRef(CoupaModel):
    id: int
    name: str | None = None
    number: str | None = None
    display_name: str | None = None


class Account(CoupaModel):
    id: int | None = None
    name: str | None = None
    code: str | None = None
    active: bool | None = None
    account_type: Ref | None = None

    def segment(self, n: int) -> str | None:
        value = (self.model_extra or {}).get(f"segment-{n}")
        return None if value is None else str(value)


class Item(CoupaModel):
    id: int | None = None
    name: str | None = None
    item_number: str | None = None


class _Line(CoupaModel):
    """Fields invoice lines and order lines share."""

    id: int
    description: str | None = None
    type: str | None = None
    quantity: Decimal | None = None
    price: Decimal | None = None
    total: Decimal | None = None
    uom: Ref | None = None
    item: Item | None = None
    commodity: Ref | None = None
    account: Account | None = None


class InvoiceLine(_Line):
    line_num: int | None = None
    order_line_id: int | None = None
    order_line_num: str | None = None
    order_header_num: str | None = None
    po_number: str | None = None


class Payment(CoupaModel):
    id: int | None = None
    amount_paid: Decimal | None = None
    notes: str | None = Field(default=None, validation_alias=AliasChoices("notes", "check-number"))
    payment_date: str | None = None


class Invoice(CoupaModel):
    id: int
    invoice_number: str
    invoice_date: str | None = None
    status: str
    document_type: str | None = None
    is_credit_note: bool | None = None
    currency: Ref | None = None
    supplier: SupplierRef | None = None
    account_type: Ref | None = None
    payment_term: Ref | None = None
    gross_total: Decimal | None = None
    exported: bool = False
    paid: bool | None = None
    payments: list[Payment] = Field(default_factory=list)
    invoice_lines: list[InvoiceLine] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime


class OrderLine(_Line):
    line_num: str | int | None = None
    need_by_date: str | None = None
    received: Decimal | str | None = None


class PurchaseOrder(CoupaModel):
    id: int
    po_number: str
    status: str
    version: int | None = None
    currency: Ref | None = None
    supplier: SupplierRef | None = None
    payment_term: Ref | None = None
    exported: bool = False
    order_lines: list[OrderLine] = Field(default_factory=list)
    updated_at: datetime


class Supplier(CoupaModel):
    id: int
    name: str
    display_name: str | None = None
    number: str | None = None
    status: str | None = None
    on_hold: bool | None = None
    payment_term: Ref | None = None
    primary_address: dict[str, Any] | None = None
    updated_at: datetime
