"""Coupa Core API emulator (starlette, no Dagster imports).

Emulates, faithfully to ``coupa-api.md`` and the R39 OpenAPI specs:

* ``POST /oauth2/token`` – OAuth 2.0 client credentials (form body or HTTP Basic client auth),
  JWT-looking tokens with server-side expiry, ``invalid_client`` / ``unsupported_grant_type`` /
  ``invalid_scope`` errors. No ``scope`` requested = every known scope (PostHog's observation).
* ``GET /api/{suppliers,purchase_orders,invoices}[/{id}]`` – bare JSON arrays, hyphenated keys,
  at most 50 rows per page (``limit`` capped at 50), ``offset`` = rows skipped, ``order_by``/``dir``,
  ``attr=value`` and ``attr[op]=value`` filters (hyphen or underscore spelling), one-level (or
  deeper) nested filters such as ``supplier[number]=…`` and ``invoice-lines[po-number]=…``.
* ``PUT /api/{invoices,purchase_orders}/{id}?exported=true|false`` – export flag in its own request
  (body ignored). **Design choice:** marking exported does NOT bump ``updated-at`` (so an
  ``updated-at`` watermark does not re-read every exported record); real Coupa's behaviour is
  UNCONFIRMED.
* ``PUT /api/invoices/{id}`` – payment write-back (``paid``, ``payment-date``, ``payment-notes``,
  ``payments`` as a plain array or as ``{"payment": [...]}``). Each payment is **appended** (the
  documented worst case: repeating the same PUT duplicates payments – read before writing); a
  payment's ``notes``/``check-number`` longer than 255 characters (R39 ``string(255)``) -> 400.
  Any other body key (e.g. ``exported``, ``status``) -> 400 ``{"errors": {key: [...]}}``.
* ``/api/integration_history_records`` – create, ``/create_alert``, list/filter, show,
  ``PUT /{id}/resolve`` and ``/{id}/unresolve``.

Strictness: every ``/api/*`` request needs ``Authorization: Bearer <valid token>`` (else 401 JSON
``{"errors": {"base": [...]}}`` + ``WWW-Authenticate``), ``Accept: application/json`` (else 406:
the sandbox is JSON-only; ``*/*`` is refused too), a JSON ``Content-Type`` when a body is sent
(else 415), and the token's scope for the resource (else 403). Unknown filter attributes,
operators, ``order_by`` values and malformed dates -> 400.

Not emulated: XML, ``fields``/``return_object``/``filter`` trimming (accepted and ignored),
``show_deleted_lines`` (ignored), PO versioning resetting ``exported``, other resources
(requisitions, accounts, lookups...), state-change actions (void, submit...) except through the
control API, GraphQL, the real rate limiter (use fault injection), API-key auth.

Control API (no auth, not logged) under ``/_sandbox/``: the shared ``control_routes`` (request log,
faults) plus ``POST /_sandbox/tokens/revoke``, ``GET|PATCH /_sandbox/coupa/{resource}/{id}`` and
``POST /_sandbox/coupa/{resource}``.

Where each part lives: this module holds :class:`CoupaSandbox` (routes, listing, payment write-back,
integration history records, control routes); :mod:`.auth` the tokens and the per-request checks,
:mod:`.filters` the query filters, :mod:`.state` the data (:class:`CoupaState`), :mod:`.common` the shared
vocabulary. Nothing here imports the connector code or Dagster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..control import control_routes
from ..faults import FaultInjector, FaultMiddleware, RequestLog
from ..seed import SeedData
from .auth import CoupaSandboxConfig, CoupaTokens, _Token
from .common import (
    HISTORY_DOC_TYPES,
    HISTORY_WRITABLE,
    INVOICE_CUSTOM_FIELDS,
    INVOICE_WRITABLE,
    KNOWN_SCOPES,
    MAX_PAGE,
    PAYMENT_TEXT_MAX,
    RESOURCES,
    ApiError,
    _bad,
    _copy,
    _fmt_dt,
    _is_dt_attr,
    _norm,
    parse_dt,
)
from .filters import _validate_filter_values, build_filters
from .state import CoupaState

__all__ = [
    "CoupaSandboxConfig",
    "CoupaState",
    "CoupaSandbox",
    "create_coupa_app",
    "KNOWN_SCOPES",
    "RESOURCES",
    "ApiError",
]


class CoupaSandbox:
    """One Coupa instance: ``state``, ``log``, ``injector``, ``app`` (FaultMiddleware-wrapped ASGI app)."""

    def __init__(
        self,
        config: CoupaSandboxConfig | None = None,
        seed: SeedData | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or CoupaSandboxConfig()
        self.clock = clock
        self.state = CoupaState(seed, clock=clock)
        self.log = RequestLog()
        self.injector = FaultInjector(self.config.fault, clock=clock, revoke_tokens=lambda: self.revoke_tokens())
        self.tokens = CoupaTokens(
            self.config, clock, mint=lambda client_id, scopes: self.issue_token(client_id, scopes)
        )
        self.starlette = Starlette(routes=self._routes())
        self.app = FaultMiddleware(self.starlette, self.injector, self.log)

    # -- tokens (see :mod:`.auth`)
    def revoke_tokens(self) -> None:
        self.tokens.revoke_tokens()

    def issue_token(self, client_id: str, scopes: frozenset[str]) -> tuple[str, _Token]:
        return self.tokens.issue_token(client_id, scopes)

    # -- routes

    async def _json_body(self, request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            return None
        ctype = request.headers.get("content-type", "")
        if "application/json" not in ctype.lower():
            raise _bad(
                f"Unsupported Content-Type {ctype!r}: send 'Content-Type: application/json' "
                "(Coupa requires Content-Type to match Accept)",
                status=415,
            )
        try:
            return json.loads(raw)
        except ValueError:
            raise _bad("Request body is not valid JSON") from None

    def _routes(self) -> list[Route]:
        def wrap(fn):
            async def endpoint(request: Request) -> Response:
                try:
                    return await fn(request)
                except ApiError as exc:
                    return exc.response()

            return endpoint

        routes = control_routes(self.log, self.injector) + [
            Route("/_sandbox/tokens/revoke", wrap(self._ctl_revoke), methods=["POST"]),
            Route("/_sandbox/coupa/{resource}", wrap(self._ctl_add), methods=["POST"]),
            Route("/_sandbox/coupa/{resource}", wrap(self._ctl_list), methods=["GET"]),
            Route("/_sandbox/coupa/{resource}/{id}", wrap(self._ctl_get), methods=["GET"]),
            Route("/_sandbox/coupa/{resource}/{id}", wrap(self._ctl_patch), methods=["PATCH"]),
            Route("/oauth2/token", wrap(self.tokens.token_endpoint), methods=["POST"]),
            Route("/api/integration_history_records", wrap(self._ihr_create), methods=["POST"]),
            Route("/api/integration_history_records/create_alert", wrap(self._ihr_alert), methods=["POST"]),
            Route("/api/integration_history_records/{id}/resolve", wrap(self._ihr_resolve), methods=["PUT"]),
            Route("/api/integration_history_records/{id}/unresolve", wrap(self._ihr_unresolve), methods=["PUT"]),
            Route("/api/{resource}", wrap(self._list), methods=["GET"]),
            Route("/api/{resource}/{id}", wrap(self._show), methods=["GET"]),
            Route("/api/{resource}/{id}", wrap(self._update), methods=["PUT", "PATCH"]),
        ]
        return routes

    @staticmethod
    def _resource(request: Request) -> str:
        resource = request.path_params["resource"]
        if resource not in RESOURCES:
            raise _bad(f"No route matches /api/{resource}", status=404)
        return resource

    @staticmethod
    def _int_id(raw: str, resource: str) -> int:
        try:
            return int(raw)
        except ValueError:
            raise _bad(f"Couldn't find {resource} with 'id'={raw}", status=404) from None

    async def _list(self, request: Request) -> Response:
        resource = self._resource(request)
        self.tokens.authorize(request, resource, write=False)
        q = request.query_params
        try:
            limit = int(q.get("limit", MAX_PAGE))
            offset = int(q.get("offset", 0))
        except ValueError:
            raise _bad("limit and offset must be integers") from None
        if limit <= 0 or limit > MAX_PAGE:
            limit = MAX_PAGE
        offset = max(0, offset)
        order_by = _norm(q.get("order_by", "id"))
        direction = q.get("dir", "asc").lower()
        if direction not in ("asc", "desc"):
            raise _bad(f"dir must be asc or desc, got '{direction}'")
        state = self.state
        with state.lock:
            known = state.attrs(resource)
            if order_by not in known:
                raise _bad(f"Invalid order_by '{q.get('order_by')}'")
            preds = build_filters(resource, q.multi_items(), known)
            records = state.records(resource)
            _validate_filter_values(preds, records[0] if records else None)
            hits = [r for r in records if all(p(r) for p in preds)]
            if order_by == "id":
                hits.sort(key=lambda r: r["id"], reverse=direction == "desc")
            else:

                def key(r: dict) -> tuple:
                    v = r.get(order_by)
                    if _is_dt_attr(order_by):
                        v = parse_dt(v)
                        v = v.timestamp() if v else float("-inf")
                    return (v is None, v if v is not None else 0, r["id"])

                try:
                    hits.sort(key=key, reverse=direction == "desc")
                except TypeError:
                    raise _bad(f"Cannot order by '{order_by}'") from None
            page = _copy(hits[offset : offset + limit])
        return JSONResponse(page)

    async def _show(self, request: Request) -> Response:
        resource = self._resource(request)
        self.tokens.authorize(request, resource, write=False)
        rid = self._int_id(request.path_params["id"], resource)
        with self.state.lock:
            rec = self.state.get(resource, rid)
            if rec is None:
                raise _bad(f"Couldn't find {resource} with 'id'={rid}", status=404)
            return JSONResponse(_copy(rec))

    async def _update(self, request: Request) -> Response:
        resource = self._resource(request)
        self.tokens.authorize(request, resource, write=True)
        rid = self._int_id(request.path_params["id"], resource)
        if self.state.get(resource, rid) is None:
            raise _bad(f"Couldn't find {resource} with 'id'={rid}", status=404)
        exported = request.query_params.get("exported")
        if exported is not None:
            if resource not in ("invoices", "purchase_orders"):
                raise _bad(f"{resource} have no exported flag", key="exported")
            if exported.lower() not in ("true", "false"):
                raise _bad("exported must be true or false", key="exported")
            await request.body()  # ignored: "Marking an object as exported requires its own request"
            rec = self.state.set_exported(resource, rid, exported.lower() == "true")
            return JSONResponse(_copy(rec))
        if resource != "invoices":
            raise _bad(f"The sandbox only supports PUT /api/{resource}/{{id}}?exported=true|false", status=400)
        body = await self._json_body(request)
        if not isinstance(body, dict) or not body:
            raise _bad("Request body must be a non-empty JSON object")
        body = {_norm(k): v for k, v in body.items()}
        errors: dict[str, list[str]] = {}
        for key in body:
            if key not in INVOICE_WRITABLE:
                errors[key] = [
                    "is read-only or not writable through this API"
                    if key in self.state.attrs("invoices")
                    else "is not a valid attribute"
                ]
        header: dict[str, Any] = {}
        if "paid" in body:
            v = body["paid"]
            if isinstance(v, str) and v.lower() in ("true", "false"):
                v = v.lower() == "true"
            if not isinstance(v, bool):
                errors["paid"] = ["must be true or false"]
            header["paid"] = v
        if "payment-date" in body:
            if body["payment-date"] is not None and parse_dt(body["payment-date"]) is None:
                errors["payment-date"] = ["is not a valid date"]
            header["payment-date"] = _fmt_dt(body["payment-date"])
        if "payment-notes" in body:
            header["payment-notes"] = None if body["payment-notes"] is None else str(body["payment-notes"])
        if "custom-fields" in body:
            fields = body["custom-fields"]
            if not isinstance(fields, dict):
                errors["custom-fields"] = ["must be an object of custom field name -> value"]
            else:
                unknown = sorted(set(fields) - INVOICE_CUSTOM_FIELDS)
                if unknown:
                    errors["custom-fields"] = [
                        f"{', '.join(unknown)} is not an API-editable custom field "
                        f"(editable: {', '.join(sorted(INVOICE_CUSTOM_FIELDS))})"
                    ]
                else:
                    header["custom-fields"] = {k: None if v is None else str(v) for k, v in fields.items()}
        payments: list[dict] = []
        if "payments" in body:
            raw = body["payments"]
            if isinstance(raw, dict) and set(raw) == {"payment"}:
                raw = raw["payment"]
                raw = [raw] if isinstance(raw, dict) else raw
            if not isinstance(raw, list):
                errors["payments"] = ['must be an array of payments or {"payment": [...]}']
                raw = []
            for n, p in enumerate(raw):
                if not isinstance(p, dict):
                    errors[f"payments[{n}]"] = ["must be an object"]
                    continue
                p = {_norm(k): v for k, v in p.items()}
                bad = set(p) - {"amount-paid", "notes", "check-number", "payment-date", "payable-type", "payable-id"}
                if bad:
                    errors[f"payments[{n}]"] = [f"unknown attribute(s): {', '.join(sorted(bad))}"]
                    continue
                try:
                    amount = Decimal(str(p.get("amount-paid")))
                    if not amount.is_finite():
                        raise InvalidOperation
                except (InvalidOperation, ValueError):
                    errors[f"payments[{n}].amount-paid"] = ["is not a number"]
                    continue
                if p.get("payable-id") not in (None, "", rid, str(rid)):
                    errors[f"payments[{n}].payable-id"] = ["does not match the invoice id"]
                    continue
                if p.get("payment-date") is not None and parse_dt(p["payment-date"]) is None:
                    errors[f"payments[{n}].payment-date"] = ["is not a valid date"]
                    continue
                too_long = [k for k in ("notes", "check-number") if len(str(p.get(k) or "")) > PAYMENT_TEXT_MAX]
                if too_long:  # R39 Payment: notes / check-number are string(255)
                    errors[f"payments[{n}].{too_long[0]}"] = [f"is too long (maximum is {PAYMENT_TEXT_MAX} characters)"]
                    continue
                payments.append(
                    {
                        "amount-paid": str(amount.quantize(Decimal("0.01"))),
                        "notes": p.get("notes", p.get("check-number")),
                        "check-number": p.get("check-number"),
                        "payment-date": _fmt_dt(p.get("payment-date")),
                    }
                )
        if errors:
            raise ApiError(400, {"errors": errors})
        inv = self.state.add_payments(rid, header, payments)
        return JSONResponse(_copy(inv))

    # -- integration history records
    async def _ihr_create(self, request: Request, alert: bool = False) -> Response:
        self.tokens.authorize(request, "integration_history_records", write=True)
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise _bad("Request body must be a JSON object")
        body = {_norm(k): v for k, v in body.items()}
        errors: dict[str, list[str]] = {}
        for key in body:
            if key not in HISTORY_WRITABLE:
                errors[key] = ["is not a writable attribute"]
        dtype = body.get("document-type")
        if not dtype:
            errors["document-type"] = ["can't be blank"]
        elif dtype not in HISTORY_DOC_TYPES:
            errors["document-type"] = [f"is not included in the list ({', '.join(sorted(HISTORY_DOC_TYPES))})"]
        doc_id = body.get("document-id")
        if doc_id in (None, ""):
            errors["document-id"] = ["can't be blank"]
        else:
            try:
                doc_id = int(doc_id)
            except (TypeError, ValueError):
                errors["document-id"] = ["is not a number"]
            else:
                target = {"InvoiceHeader": "invoices", "OrderHeader": "purchase_orders", "Supplier": "suppliers"}.get(
                    str(dtype)
                )
                if target and self.state.get(target, doc_id) is None:
                    errors["document-id"] = [f"{dtype} {doc_id} can't be found"]
        cat = body.get("contact-alert-type")
        if cat is not None and cat not in ("Functional", "Technical", "Both"):
            errors["contact-alert-type"] = ["must be Functional, Technical or Both"]
        responses = body.get("responses", [])
        if isinstance(responses, dict) and "response" in responses:
            responses = responses["response"]
            responses = [responses] if isinstance(responses, dict) else responses
        if not isinstance(responses, list) or not all(isinstance(r, dict) for r in responses):
            errors["responses"] = ["must be an array of {response-code, response-message}"]
            responses = []
        integ = body.get("integration")
        if integ is not None and not (isinstance(integ, dict) and integ.get("code")):
            errors["integration"] = ['must be {"code": ...}']
        if errors:
            raise ApiError(400, {"errors": errors})
        rec = dict(body)
        rec["document-id"] = doc_id
        rec["responses"] = [{_norm(k): v for k, v in r.items()} for r in responses]
        rec.pop("id", None)
        if alert:
            rec.setdefault("status", "Error")
            rec.setdefault("contact-alert-type", "Both")
        rec["alert"] = alert
        rec["resolved"] = False
        rec.setdefault("creation-method", "api")
        rec = self.state.add("integration_history_records", rec)
        return JSONResponse(_copy(rec), status_code=201)

    async def _ihr_alert(self, request: Request) -> Response:
        return await self._ihr_create(request, alert=True)

    async def _ihr_set_resolved(self, request: Request, resolved: bool) -> Response:
        self.tokens.authorize(request, "integration_history_records", write=True)
        rid = self._int_id(request.path_params["id"], "integration_history_records")
        with self.state.lock:
            if self.state.get("integration_history_records", rid) is None:
                raise _bad(f"Couldn't find integration_history_records with 'id'={rid}", status=404)
            rec = self.state.touch("integration_history_records", rid, resolved=resolved)
            return JSONResponse(_copy(rec))

    async def _ihr_resolve(self, request: Request) -> Response:
        return await self._ihr_set_resolved(request, True)

    async def _ihr_unresolve(self, request: Request) -> Response:
        return await self._ihr_set_resolved(request, False)

    # -- control
    async def _ctl_revoke(self, request: Request) -> Response:
        self.revoke_tokens()
        return Response(status_code=204)

    def _ctl_resource(self, request: Request) -> str:
        resource = request.path_params["resource"]
        if resource not in RESOURCES:
            raise _bad(f"unknown resource {resource}", status=404)
        return resource

    async def _ctl_get(self, request: Request) -> Response:
        resource = self._ctl_resource(request)
        rec = self.state.get(resource, self._int_id(request.path_params["id"], resource))
        if rec is None:
            raise _bad("not found", status=404)
        with self.state.lock:
            return JSONResponse(_copy(rec))

    async def _ctl_list(self, request: Request) -> Response:
        resource = self._ctl_resource(request)
        with self.state.lock:
            return JSONResponse(_copy(self.state.records(resource)))

    async def _ctl_patch(self, request: Request) -> Response:
        resource = self._ctl_resource(request)
        changes = await request.json()
        try:
            rec = self.state.touch(resource, self._int_id(request.path_params["id"], resource), **changes)
        except KeyError:
            raise _bad("not found", status=404) from None
        with self.state.lock:
            return JSONResponse(_copy(rec))

    async def _ctl_add(self, request: Request) -> Response:
        resource = self._ctl_resource(request)
        try:
            rec = self.state.add(resource, await request.json())
        except ValueError as exc:
            raise _bad(str(exc), status=409) from None
        with self.state.lock:
            return JSONResponse(_copy(rec), status_code=201)


def create_coupa_app(config: CoupaSandboxConfig | None = None, seed: SeedData | None = None) -> Any:
    """ASGI app for ``uvicorn coupa_d365_pipeline.sandbox.coupa:create_coupa_app --factory``."""
    if seed is None:
        from ..seed import generate_seed

        seed = generate_seed()
    return CoupaSandbox(config, seed).app
