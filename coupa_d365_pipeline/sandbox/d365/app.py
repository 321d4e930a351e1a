"""A faithful, in-memory Dynamics 365 Finance & Operations sandbox (Entra token endpoint + OData /data).

What it emulates (see /work/shared/reference/d365-fo-api.md; one module per seam):

- Entra ID client-credentials tokens (v2 ``/{tenant}/oauth2/v2.0/token`` with ``scope`` and v1
  ``/{tenant}/oauth2/token`` with ``resource``), JWT-looking tokens with ``aud``/``tid``/``exp``,
  F&O answering 401 for unknown, revoked, expired or foreign-audience tokens.
- A generic OData engine over every entity set of ``d365/entities.json``: ``$filter`` (see
  :mod:`.odata_filter`), ``$select``, ``$top``, ``$skip``, ``$count``, ``$orderby``, server-driven
  paging with ``@odata.nextLink``, ``cross-company=true`` (reads of company-scoped sets see only
  ``default_company`` without it; by-key access to another company needs it too, else 404),
  by-key addressing, POST/PATCH/PUT/DELETE with F&O's status codes and error bodies
  (unknown property → 400 ODataException, duplicate key / foreign-key failure → 500
  AxODataWriteException with the Infolog text), number sequences for a few keys, cascade deletes.
- ``$batch`` with atomic changesets (rolled back on the first failing request; the outer response
  is always 200; the failed changeset is answered by a single ``application/http`` part carrying the
  failing request's Content-ID, as ASP.NET OData does).
- Service protection: with ``request_budget`` set, more than N ``/data`` operations per sliding
  window → 429 with ``Retry-After``. A ``$batch`` counts as one operation per inner request and is
  throttled as a whole (outer 429) when the budget cannot take all of them.
- Test hooks that stand in for an AP user: posting a pending invoice (→ ``VendInvoiceJourBiEntities``
  + ``VendTransBiEntities``; ``created_on`` back-dates ``CreatedOn`` like a long batch posting that
  commits late), settling a payment (→ ``VendSettlementBiEntities`` + payment VendTrans), settling a
  credit note against an invoice (one VendSettlement row per side, no payment), and reversing a
  settlement as *Closed transaction editing > Reverse* does (the VendSettlement rows are deleted, no
  row is added; the VendTrans get SettleAmountCur, ``Closed`` and LastSettle* back). Every VendTrans
  insert or update stamps ``SysModifiedDateTime`` and bumps ``SysRecVersion``, so a reader can notice
  a reversal that leaves no row behind. Signs are F&O's vendor signs (invoice AmountCur < 0, credit
  note and payment > 0; a settlement row has the sign of the VendTrans it settles). Routes:
  ``POST /_sandbox/d365/{post_invoice,settle,settle_credit_note,reverse_settlement}``.
- The DMF package API (``DataManagementDefinitionGroups`` actions) with blob storage hosted on the
  sandbox and asynchronous imports through the same OData write rules, described in :mod:`.dmf`.
- Purchase-order lifecycle (``PurchaseOrderHeadersV2``/``PurchaseOrderLinesV2``; the V1 sets
  ``PurchaseOrderHeaders``/``PurchaseOrderLines`` follow the same rules, each paired with its own header
  set), described in :mod:`.purchase_orders`.

Where each part lives: this module holds :class:`D365Sandbox` (the Starlette app, ``/data`` dispatch,
service protection) and composes the others: :mod:`.entra` (tokens), :mod:`.query` (query options,
keys, ``$metadata``), :mod:`.batch` (``$batch``), :mod:`.state` (the data and its OData writes, built on
:mod:`.store`, :mod:`.validation` and :mod:`.purchase_orders`), :mod:`.ap_user` (the AP-user hooks) and
:mod:`.hooks` (their control routes).

Invariants: every ``/data`` request needs an acceptable bearer token (else 401 with ``WWW-Authenticate``)
and passes the request budget (else 429 with ``Retry-After``); plain requests and ``$batch`` parts go
through the same :meth:`D365Sandbox.handle`, so they behave identically; every failure is answered in
F&O's error shape (:class:`.odata.ODataError`), never as a traceback.

Thread safety: one ``RLock`` (``D365State.lock``) guards all state; changesets run under it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..control import control_routes
from ..faults import FaultInjector, FaultMiddleware, RequestLog
from . import batch
from .config import D365SandboxConfig
from .dmf import DmfService, dmf_action
from .entities import ENTITY_INFO
from .entra import EntraTokens
from .hooks import hook_routes
from .odata import (
    THROTTLE_MESSAGE,
    ODataError,
    Resp,
    _bad_request,
    _format_key_value,
    _not_found_segment,
    _query_error,
    split_display_value,
)
from .odata_filter import ODataFilterError
from .query import (
    _SYSTEM_QUERY_OPTIONS,
    _matching_paren,
    filtered_rows,
    get_collection,
    metadata_xml,
    parse_key_predicate,
    parse_select,
    shape,
)
from .schema import D365Schema, EntitySchema, load_schema
from .state import D365State


class D365Sandbox:
    """The sandbox: state + Entra token endpoint + OData service, wrapped in FaultMiddleware."""

    def __init__(
        self,
        config: D365SandboxConfig,
        master_data: dict[str, list[dict]] | None = None,
        schema: D365Schema | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.schema = schema or load_schema()
        self.env_url = config.environment_url.rstrip("/")
        self.state = D365State(
            self.schema,
            master_data,
            default_company=config.default_company,
            dimension_format=config.dimension_format,
            dimension_delimiter=config.dimension_delimiter,
            number_sequences=config.number_sequences,
            clock=clock,
        )
        self.log = RequestLog()
        self.injector = FaultInjector(config.fault, clock=clock, revoke_tokens=lambda: self.revoke_tokens())
        self.tokens = EntraTokens(
            config, clock, self.state.now, mint=lambda client_id, audience: self.issue_token(client_id, audience)
        )
        self.dmf = DmfService(
            self.state,
            self.env_url,
            data_projects=config.dmf_data_projects,
            execution_s=config.dmf_execution_s,
            status_hidden_s=config.dmf_status_hidden_s,
            error_keys_pending_calls=config.dmf_error_keys_pending_calls,
            clock=clock,
        )
        self._budget: deque[float] = deque()
        self._budget_lock = threading.Lock()
        self.throttled_count = 0
        self.app = FaultMiddleware(self._build_app(), self.injector, self.log)

    # ---- tokens (see :mod:`.entra`) -------------------------------------------------------------
    def revoke_tokens(self) -> None:
        self.tokens.revoke_tokens()

    def issue_token(self, client_id: str, audience: str) -> tuple[str, int]:
        return self.tokens.issue_token(client_id, audience)

    # ---- throttling ----------------------------------------------------------------------------
    def _consume_budget(self, operations: int = 1) -> bool:
        budget = self.config.request_budget
        if budget is None:
            return True
        now = time.monotonic()
        with self._budget_lock:
            while self._budget and now - self._budget[0] >= self.config.budget_window_s:
                self._budget.popleft()
            if len(self._budget) + operations > budget:
                self.throttled_count += 1
                return False
            self._budget.extend([now] * operations)
            return True

    def reset_budget(self) -> None:
        with self._budget_lock:
            self._budget.clear()

    def _throttled(self) -> Resp:
        err = ODataError(
            429,
            THROTTLE_MESSAGE,
            outer_message=THROTTLE_MESSAGE,
            headers={"Retry-After": str(self.config.budget_retry_after_s)},
        )
        return Resp.error(err)

    # ---- OData dispatch (shared by plain requests and $batch parts) ----------------------------
    def handle(self, method: str, subpath: str, query: str, headers: dict[str, str], body: bytes) -> Resp:
        """Serve one OData request. ``subpath`` is the decoded path after ``/data/``."""
        try:
            return self._dispatch(method.upper(), subpath, query, {k.lower(): v for k, v in headers.items()}, body)
        except ODataError as err:
            return Resp.error(err)
        except ODataFilterError as err:
            return Resp.error(_query_error(str(err)))

    def _dispatch(self, method: str, subpath: str, query: str, headers: dict[str, str], body: bytes) -> Resp:
        subpath = subpath.strip("/")
        if subpath == "":
            if method != "GET":
                raise ODataError(405, "The requested resource does not support this HTTP method.")
            return Resp.json(
                200,
                {
                    "@odata.context": f"{self.env_url}/data/$metadata",
                    "value": [{"name": n, "kind": "EntitySet", "url": n} for n in self.schema.entity_sets],
                },
            )
        if subpath == "$metadata":
            return Resp(
                200, metadata_xml(self.schema).encode(), {"Content-Type": "application/xml", "OData-Version": "4.0"}
            )
        name, key_text, rest = subpath, None, ""
        cut = min([i for i in (subpath.find("("), subpath.find("/")) if i >= 0], default=-1)
        if cut >= 0:
            name = subpath[:cut]
            tail = subpath[cut:]
            if tail.startswith("("):
                close = _matching_paren(tail)
                if close < 0:
                    raise _bad_request(f"Bad Request - Error in query syntax: unbalanced parentheses in '{subpath}'.")
                key_text, rest = tail[1:close], tail[close + 1 :]
            else:
                rest = tail
        sch = self.schema.get(name)
        if sch is None:
            raise _not_found_segment(name)
        params = parse_qsl(query, keep_blank_values=True)
        options = dict(params)
        for opt in options:
            if opt.startswith("$") and opt not in _SYSTEM_QUERY_OPTIONS:
                if opt in ("$expand", "$apply", "$search", "$skiptoken", "$levels", "$compute"):
                    raise _query_error(f"The query option '{opt}' is not supported by the sandbox.")
                raise _query_error(f"The query parameter '{opt}' is not supported.")
        cross = options.get("cross-company", "").strip().lower() == "true"
        if rest and rest != "/$count":
            raise _not_found_segment(rest.strip("/").split("/")[0])
        if rest == "/$count":
            if key_text is not None or method != "GET":
                raise _not_found_segment("$count")
            rows = filtered_rows(self.state, sch, options, cross)
            return Resp(200, str(len(rows)).encode(), {"Content-Type": "text/plain", "OData-Version": "4.0"})
        if key_text is None:
            if method == "GET":
                return get_collection(
                    self.state, sch, params, options, cross, env_url=self.env_url, page_size=self.config.page_size
                )
            if method == "POST":
                return self._post(sch, headers, body)
            raise ODataError(
                405,
                f"The HTTP method '{method}' is not allowed on the entity set '{name}'; address a "
                "single entity by its full key.",
            )
        key_values = parse_key_predicate(key_text, sch)
        if method == "GET":
            rec = self.state.get(name, key_values, cross)
            if rec is None:
                raise _not_found_segment(f"{name}({key_text})")
            select = parse_select(sch, options.get("$select"))
            ctx = f"{self.env_url}/data/$metadata#{name}/$entity"
            etag = self.state.etag_of(name, rec)
            return Resp.json(200, {"@odata.context": ctx, **shape(sch, rec, select, etag)}, {"ETag": etag})
        if method in ("PATCH", "PUT", "MERGE"):
            payload = self._json_body(body)
            try:
                etag = self.state.update(
                    name,
                    key_values,
                    payload,
                    cross_company=cross,
                    replace=(method == "PUT"),
                    if_match=headers.get("if-match"),
                )
            except ODataError as err:
                if err.status == 404:
                    raise _not_found_segment(f"{name}({key_text})") from None
                raise
            return Resp(204, b"", {"OData-Version": "4.0", "ETag": etag})
        if method == "DELETE":
            try:
                self.state.delete(name, key_values, cross_company=cross, if_match=headers.get("if-match"))
            except ODataError as err:
                if err.status == 404:
                    raise _not_found_segment(f"{name}({key_text})") from None
                raise
            return Resp(204, b"", {"OData-Version": "4.0"})
        raise ODataError(405, f"The HTTP method '{method}' is not allowed on a single entity.")

    @staticmethod
    def _json_body(body: bytes) -> Any:
        try:
            return json.loads(body.decode("utf-8") or "null", parse_float=Decimal)
        except (UnicodeDecodeError, ValueError) as exc:
            raise _bad_request(f"The request body is not valid JSON: {exc}.") from None

    def _location(self, sch: EntitySchema, rec: dict[str, Any]) -> str:
        key = ",".join(f"{k}={_format_key_value(rec[k])}" for k in sch.keys)
        return f"{self.env_url}/data/{sch.name}(" + quote(key, safe="=',()-_.~!*:@$") + ")"

    def _post(self, sch: EntitySchema, headers: dict[str, str], body: bytes) -> Resp:
        payload = self._json_body(body)
        rec, etag = self.state.create(sch.name, payload)
        location = self._location(sch, rec)
        out_headers = {"Location": location, "ETag": etag, "OData-EntityId": location}
        if "return=minimal" in headers.get("prefer", ""):
            return Resp(204, b"", {"OData-Version": "4.0", "Preference-Applied": "return=minimal", **out_headers})
        return Resp.json(
            201,
            {"@odata.context": f"{self.env_url}/data/$metadata#{sch.name}/$entity", **shape(sch, rec, None, etag)},
            out_headers,
        )

    # ---- $batch (see :mod:`.batch`) --------------------------------------------------------------
    def handle_batch(self, content_type: str, body: bytes) -> Resp:
        return batch.handle_batch(
            content_type,
            body,
            state=self.state,
            handle=self.handle,
            consume_budget=self._consume_budget,
            throttled=self._throttled,
        )

    # ---- Starlette app -------------------------------------------------------------------------
    def _build_app(self) -> Starlette:
        async def data_endpoint(request: Request) -> Response:
            reason = self.tokens.authenticate(request.headers.get("authorization"))
            if reason is not None:
                www = "Bearer" if reason == "" else f'Bearer error="invalid_token", error_description="{reason}"'
                return Response(status_code=401, headers={"WWW-Authenticate": www})
            subpath = request.scope["path"][len("/data") :]
            body = await request.body()
            if subpath.strip("/") == "$batch":
                if request.method != "POST":
                    return _to_starlette(Resp.error(ODataError(405, "$batch requires POST.")))
                return _to_starlette(self.handle_batch(request.headers.get("content-type", ""), body))
            if not self._consume_budget(1):
                return _to_starlette(self._throttled())
            action = dmf_action(subpath)
            if action is not None:
                return _to_starlette(self.dmf.handle_action(request.method, action, body))
            query = request.scope.get("query_string", b"").decode("utf-8", errors="replace")
            return _to_starlette(self.handle(request.method, subpath, query, dict(request.headers), body))

        async def token_v2(request: Request) -> Response:
            return await self.tokens.token_endpoint(request, 2)

        async def token_v1(request: Request) -> Response:
            return await self.tokens.token_endpoint(request, 1)

        async def revoke(request: Request) -> Response:
            self.revoke_tokens()
            return Response(status_code=204)

        methods = ["GET", "POST", "PATCH", "PUT", "DELETE", "MERGE"]
        routes = [
            Route("/data", data_endpoint, methods=methods),
            Route("/data/{rest:path}", data_endpoint, methods=methods),
            Route("/{tenant}/oauth2/v2.0/token", token_v2, methods=["POST"]),
            Route("/{tenant}/oauth2/token", token_v1, methods=["POST"]),
            *control_routes(self.log, self.injector),
            Route("/_sandbox/tokens/revoke", revoke, methods=["POST"]),
            *hook_routes(self.state, self.schema, self.config.default_company),
            *self.dmf.routes(),
        ]
        return Starlette(routes=routes)


def _to_starlette(resp: Resp) -> Response:
    return Response(resp.body, status_code=resp.status, headers=resp.headers)


__all__ = [
    "D365Sandbox",
    "D365SandboxConfig",
    "D365State",
    "ODataError",
    "Resp",
    "parse_key_predicate",
    "split_display_value",
    "ENTITY_INFO",
    "THROTTLE_MESSAGE",
]
