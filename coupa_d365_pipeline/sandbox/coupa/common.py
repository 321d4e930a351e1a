"""Shared vocabulary of the Coupa sandbox: resources, scopes, Coupa's error shape, timestamps.

Invariants: :class:`ApiError` answers in Coupa's JSON error shape (``{"errors": {attr: [message]}}`` or an
OAuth ``{"error": ...}`` body); attribute names are hyphenated (``_norm`` turns ``_`` into ``-``); every
timestamp the sandbox writes is UTC ISO 8601 with ``Z`` and whole seconds.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

from starlette.responses import JSONResponse, Response

KNOWN_SCOPES = frozenset(
    {
        "core.invoice.read",
        "core.invoice.write",
        "core.invoice.create",
        "core.invoice.delete",
        "core.invoice.approval.write",
        "core.invoice.approval.bypass",
        "core.purchase_order.read",
        "core.purchase_order.write",
        "core.supplier.read",
        "core.supplier.write",
        "core.integration.read",
        "core.integration.write",
        "core.common.read",
        "core.common.write",
        "core.accounting.read",
        "core.accounting.write",
        "core.requisition.read",
        "core.requisition.write",
        "core.user.read",
        "core.user.write",
        "core.payables.invoice.read",
        "core.payables.invoice.write",
        "openid",
        "email",
        "profile",
        "login",
        "offline_access",
    }
)

RESOURCES = ("suppliers", "purchase_orders", "invoices", "integration_history_records")
SCOPES = {  # resource -> (read scope, write scope)
    "suppliers": ("core.supplier.read", "core.supplier.write"),
    "purchase_orders": ("core.purchase_order.read", "core.purchase_order.write"),
    "invoices": ("core.invoice.read", "core.invoice.write"),
    "integration_history_records": ("core.integration.read", "core.integration.write"),
}
# attributes filterable even when no record carries them yet
BASE_ATTRS = {
    "suppliers": {
        "id",
        "name",
        "display-name",
        "number",
        "status",
        "created-at",
        "updated-at",
        "tax-id",
        "payment-term",
        "primary-address",
        "primary-contact",
        "po-email",
        "on-hold",
        "exported",
    },
    "purchase_orders": {
        "id",
        "po-number",
        "status",
        "version",
        "supplier",
        "currency",
        "created-at",
        "updated-at",
        "exported",
        "last-exported-at",
        "order-lines",
        "payment-term",
        "ship-to-address",
    },
    "invoices": {
        "id",
        "invoice-number",
        "invoice-date",
        "status",
        "document-type",
        "is-credit-note",
        "currency",
        "supplier",
        "account-type",
        "payment-term",
        "exported",
        "last-exported-at",
        "paid",
        "payment-date",
        "created-at",
        "updated-at",
        "invoice-lines",
        "gross-total",
        "total-with-taxes",
        "amount-due",
    },
    "integration_history_records": {
        "id",
        "document-type",
        "document-id",
        "document-status",
        "status",
        "resolved",
        "contact-alert-type",
        "external-id",
        "integration",
        "created-at",
        "updated-at",
        "responses",
        "alert",
    },
}
HISTORY_DOC_TYPES = {
    "OrderHeader",
    "ExternalOrderHeader",
    "InvoiceHeader",
    "Supplier",
    "Payment",
    "RemitToAddress",
    "Account",
    "ExpenseReport",
    "Requisition",
    "User",
    "Contract",
    "InventoryTransaction",
    "ReceiptTransaction",
}
HISTORY_WRITABLE = {
    "document-type",
    "document-id",
    "document-status",
    "document-revision",
    "status",
    "contact-alert-type",
    "integration",
    "integration-run",
    "integration-run-id",
    "responses",
    "external-id",
    "integration-filename",
    "creation-method",
}
INVOICE_WRITABLE = {"paid", "payment-date", "payment-notes", "payments", "custom-fields"}
PAYMENT_TEXT_MAX = 255  # R39 Payment.notes and check-number: string(255)
# Custom fields an admin made API-editable on invoices (real Coupa rejects others).
INVOICE_CUSTOM_FIELDS = {"cf-erp-invoice-number", "cf-erp-voucher", "cf-integration-status"}
MAX_PAGE = 50


class ApiError(Exception):
    def __init__(self, status: int, errors: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(errors))
        self.status = status
        self.errors = errors
        self.headers = headers or {}

    def response(self) -> Response:
        body = (
            self.errors
            if isinstance(self.errors, dict) and ("error" in self.errors or "errors" in self.errors)
            else {"errors": self.errors if isinstance(self.errors, dict) else {"base": [str(self.errors)]}}
        )
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _bad(msg: str, key: str = "base", status: int = 400) -> ApiError:
    return ApiError(status, {"errors": {key: [msg]}})


def iso_z(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_dt(value: Any) -> datetime | None:
    """ISO 8601 (Z or offset, or a bare date = midnight UTC) -> aware datetime; None if unparseable."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    s = str(value).strip()
    if not s:
        return None
    try:
        if len(s) == 10:
            d = date.fromisoformat(s)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        dt = datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _norm(name: str) -> str:
    return name.replace("_", "-")


def _is_dt_attr(name: str) -> bool:
    return name.endswith("-at") or name.endswith("-date")


def _copy(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _fmt_dt(value: Any) -> str | None:
    dt = parse_dt(value)
    return None if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
