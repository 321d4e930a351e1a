"""Control routes of the D365 sandbox that stand in for F&O users: ``POST /_sandbox/d365/...``.

``post_invoice``, ``settle``, ``settle_credit_note`` and ``reverse_settlement`` play the AP user
(:mod:`.ap_user`), ``receive`` a warehouse user posting a product receipt (:mod:`.purchase_orders`), and
``/_sandbox/d365/{entity_set}`` reads or bulk-loads raw rows.

Invariants: no authentication and no request log (like every ``/_sandbox/`` route); the body is a JSON object
whose fields may be spelled PascalCase or snake_case; an unknown record answers 404, a request F&O's rules
refuse answers 400, otherwise the hook's result as JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .odata import dumps
from .schema import D365Schema, ValueConversionError
from .state import D365State


def hook_routes(state: D365State, schema: D365Schema, default_company: str) -> list[Route]:
    """The test-hook routes of one sandbox, in the order they must be matched (the raw set route last)."""

    async def post_invoice(request: Request) -> Response:
        body = await _hook_body(request)
        if isinstance(body, Response):
            return body
        return _hook_result(
            lambda: state.post_invoice(
                _pick(body, "dataAreaId", "data_area_id", default=default_company),
                _pick(body, "HeaderReference", "header_reference"),
                created_on=_pick(body, "CreatedOn", "created_on"),
            )
        )

    async def settle(request: Request) -> Response:
        body = await _hook_body(request)
        if isinstance(body, Response):
            return body
        return _hook_result(
            lambda: state.settle_invoice(
                _pick(body, "dataAreaId", "data_area_id", default=default_company),
                _pick(body, "InvoiceId", "invoice_id", "Invoice"),
                _pick(body, "VendorAccount", "vendor_account", "AccountNum"),
                Decimal(str(_pick(body, "Amount", "amount"))),
                _pick(body, "Date", "date", default=state.now().date().isoformat()),
                _pick(body, "PaymentReference", "payment_reference", default=""),
                created_on=_pick(body, "CreatedOn", "created_on"),
            )
        )

    async def settle_credit_note(request: Request) -> Response:
        body = await _hook_body(request)
        if isinstance(body, Response):
            return body
        invoice, credit = _pick(body, "InvoiceId", "invoice_id"), _pick(body, "CreditNoteId", "credit_note_id")
        vendor = _pick(body, "VendorAccount", "vendor_account", "AccountNum")
        amount = _pick(body, "Amount", "amount")
        if None in (invoice, credit, vendor, amount):
            return JSONResponse(
                {"error": "InvoiceId, CreditNoteId, VendorAccount and Amount are required"}, status_code=400
            )
        return _hook_result(
            lambda: state.settle_credit_note(
                _pick(body, "dataAreaId", "data_area_id", default=default_company),
                str(invoice),
                str(credit),
                str(vendor),
                Decimal(str(amount)),
                _pick(body, "Date", "date", default=state.now().date().isoformat()),
            )
        )

    async def reverse_settlement(request: Request) -> Response:
        body = await _hook_body(request)
        if isinstance(body, Response):
            return body
        if _pick(body, "SourceKey") is None:
            return JSONResponse({"error": "SourceKey (the VendSettlement row) is required"}, status_code=400)
        return _hook_result(
            lambda: state.reverse_settlement(
                str(_pick(body, "dataAreaId", default=default_company)), int(body["SourceKey"])
            )
        )

    async def receive(request: Request) -> Response:
        body = await _hook_body(request)
        if isinstance(body, Response):
            return body
        po = _pick(body, "PurchaseOrderNumber", "purchase_order_number")
        line_number = _pick(body, "LineNumber", "line_number", "PurchaseOrderLineNumber")
        quantity = _pick(body, "Quantity", "quantity", "ReceivedPurchaseQuantity")
        if po is None or line_number is None or quantity is None:
            return JSONResponse({"error": "PurchaseOrderNumber, LineNumber and Quantity are required"}, status_code=400)
        return _hook_result(
            lambda: state.receive_po_line(
                str(_pick(body, "dataAreaId", "data_area_id", default=default_company)),
                str(po),
                line_number,
                quantity,
                str(_pick(body, "Date", "date", "ProductReceiptDate", default="2026-11-20T12:00:00Z")),
            )
        )

    async def raw_set(request: Request) -> Response:
        name = request.path_params["entity_set"]
        if name not in schema:
            return JSONResponse({"error": f"unknown entity set {name}"}, status_code=404)
        if request.method == "POST":
            records = await request.json()
            try:
                state.load(name, records if isinstance(records, list) else [records])
            except ValueConversionError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return Response(status_code=204)
        return Response(dumps(state.records(name)), media_type="application/json")

    return [
        Route("/_sandbox/d365/post_invoice", post_invoice, methods=["POST"]),
        Route("/_sandbox/d365/settle", settle, methods=["POST"]),
        Route("/_sandbox/d365/settle_credit_note", settle_credit_note, methods=["POST"]),
        Route("/_sandbox/d365/reverse_settlement", reverse_settlement, methods=["POST"]),
        Route("/_sandbox/d365/receive", receive, methods=["POST"]),
        Route("/_sandbox/d365/{entity_set}", raw_set, methods=["GET", "POST"]),
    ]


def _pick(body: dict[str, Any], *names: str, default: Any = None) -> Any:
    """The first of ``names`` the control body gives a value for (PascalCase or snake_case)."""
    for name in names:
        if body.get(name) not in (None, ""):
            return body[name]
    return default


async def _hook_body(request: Request) -> dict[str, Any] | Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
    return body


def _hook_result(call: Callable[[], Any]) -> Response:
    """Run a test hook: unknown record -> 404, refused by F&O rules -> 400, else the result as JSON."""
    try:
        result = call()
    except KeyError as exc:
        return JSONResponse({"error": str(exc.args[0])}, status_code=404)
    except (ValueError, ArithmeticError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return Response(dumps(result), media_type="application/json")
