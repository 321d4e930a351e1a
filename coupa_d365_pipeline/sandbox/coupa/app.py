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
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..control import control_routes
from ..faults import FaultConfig, FaultInjector, FaultMiddleware, RequestLog
from ..seed import SeedData

__all__ = ["CoupaSandboxConfig", "CoupaState", "CoupaSandbox", "create_coupa_app", "KNOWN_SCOPES",
           "RESOURCES", "ApiError"]

KNOWN_SCOPES = frozenset({
    "core.invoice.read", "core.invoice.write", "core.invoice.create", "core.invoice.delete",
    "core.invoice.approval.write", "core.invoice.approval.bypass",
    "core.purchase_order.read", "core.purchase_order.write",
    "core.supplier.read", "core.supplier.write",
    "core.integration.read", "core.integration.write",
    "core.common.read", "core.common.write",
    "core.accounting.read", "core.accounting.write",
    "core.requisition.read", "core.requisition.write",
    "core.user.read", "core.user.write",
    "core.payables.invoice.read", "core.payables.invoice.write",
    "openid", "email", "profile", "login", "offline_access",
})

RESOURCES = ("suppliers", "purchase_orders", "invoices", "integration_history_records")
SCOPES = {  # resource -> (read scope, write scope)
    "suppliers": ("core.supplier.read", "core.supplier.write"),
    "purchase_orders": ("core.purchase_order.read", "core.purchase_order.write"),
    "invoices": ("core.invoice.read", "core.invoice.write"),
    "integration_history_records": ("core.integration.read", "core.integration.write"),
}
# attributes filterable even when no record carries them yet
BASE_ATTRS = {
    "suppliers": {"id", "name", "display-name", "number", "status", "created-at", "updated-at", "tax-id",
                  "payment-term", "primary-address", "primary-contact", "po-email", "on-hold", "exported"},
    "purchase_orders": {"id", "po-number", "status", "version", "supplier", "currency", "created-at", "updated-at",
                        "exported", "last-exported-at", "order-lines", "payment-term", "ship-to-address"},
    "invoices": {"id", "invoice-number", "invoice-date", "status", "document-type", "is-credit-note", "currency",
                 "supplier", "account-type", "payment-term", "exported", "last-exported-at", "paid",
                 "payment-date", "created-at", "updated-at", "invoice-lines", "gross-total", "total-with-taxes",
                 "amount-due"},
    "integration_history_records": {"id", "document-type", "document-id", "document-status", "status",
                                    "resolved", "contact-alert-type", "external-id", "integration",
                                    "created-at", "updated-at", "responses", "alert"},
}
OPS = {"gt", "lt", "gt_or_eq", "lt_or_eq", "not_eq", "in", "not_in", "contains", "starts_with", "ends_with",
       "blank"}
IGNORED_PARAMS = {"fields", "return_object", "filter", "show_deleted_lines", "limit", "offset", "order_by", "dir"}
HISTORY_DOC_TYPES = {"OrderHeader", "ExternalOrderHeader", "InvoiceHeader", "Supplier", "Payment",
                     "RemitToAddress", "Account", "ExpenseReport", "Requisition", "User", "Contract",
                     "InventoryTransaction", "ReceiptTransaction"}
HISTORY_WRITABLE = {"document-type", "document-id", "document-status", "document-revision", "status",
                    "contact-alert-type", "integration", "integration-run", "integration-run-id", "responses",
                    "external-id", "integration-filename", "creation-method"}
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
        body = self.errors if isinstance(self.errors, dict) and ("error" in self.errors or "errors" in self.errors) \
            else {"errors": self.errors if isinstance(self.errors, dict) else {"base": [str(self.errors)]}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _bad(msg: str, key: str = "base", status: int = 400) -> ApiError:
    return ApiError(status, {"errors": {key: [msg]}})


def iso_z(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_dt(value: Any) -> datetime | None:
    """ISO 8601 (Z or offset, or a bare date = midnight UTC) -> aware datetime; None if unparseable."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    s = str(value).strip()
    if not s:
        return None
    try:
        if len(s) == 10:
            d = date.fromisoformat(s)
            return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
        dt = datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _norm(name: str) -> str:
    return name.replace("_", "-")


def _is_dt_attr(name: str) -> bool:
    return name.endswith("-at") or name.endswith("-date")


def _copy(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


# --------------------------------------------------------------------------------------------- state
class CoupaState:
    """Thread-safe in-memory store; every method can be used directly from tests."""

    def __init__(self, seed: SeedData | None = None, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.suppliers: dict[int, dict] = {}
        self.purchase_orders: dict[int, dict] = {}
        self.invoices: dict[int, dict] = {}
        self.integration_history_records: list[dict] = []
        self._attrs: dict[str, set[str]] = {r: set(BASE_ATTRS[r]) for r in RESOURCES}
        self._next_payment_id = 1
        self._max_updated = 0.0
        if seed is not None:
            for resource, records in (("suppliers", seed.coupa_suppliers),
                                      ("purchase_orders", seed.coupa_purchase_orders),
                                      ("invoices", seed.coupa_invoices)):
                store = self._store(resource)
                for rec in _copy(records):
                    store[int(rec["id"])] = rec
                    self._note(resource, rec)
            for inv in self.invoices.values():
                for p in inv.get("payments") or []:
                    self._next_payment_id = max(self._next_payment_id, int(p.get("id", 0)) + 1)

    # -- helpers
    def _store(self, resource: str) -> dict[int, dict]:
        if resource not in ("suppliers", "purchase_orders", "invoices"):
            raise KeyError(f"unknown resource {resource!r}")
        return getattr(self, resource)

    def _note(self, resource: str, rec: dict) -> None:
        self._attrs[resource].update(rec.keys())
        upd = parse_dt(rec.get("updated-at"))
        if upd is not None:
            self._max_updated = max(self._max_updated, upd.timestamp())

    def now_iso(self) -> str:
        """A fresh updated-at: wall clock, but strictly after every updated-at already stored."""
        with self.lock:
            ts = max(float(int(self.clock())), self._max_updated + 1)
            self._max_updated = ts
            return iso_z(ts)

    def attrs(self, resource: str) -> set[str]:
        return self._attrs[resource]

    def records(self, resource: str) -> list[dict]:
        with self.lock:
            if resource == "integration_history_records":
                return list(self.integration_history_records)
            return list(self._store(resource).values())

    def get(self, resource: str, id: int) -> dict | None:
        with self.lock:
            if resource == "integration_history_records":
                return next((r for r in self.integration_history_records if r["id"] == id), None)
            return self._store(resource).get(id)

    # -- public mutation API
    def touch(self, resource: str, id: int, **changes: Any) -> dict:
        """Apply changes (keys with ``_`` become ``-``) and bump updated-at; returns the record."""
        with self.lock:
            rec = self.get(resource, int(id))
            if rec is None:
                raise KeyError(f"{resource}/{id} not found")
            for key, value in changes.items():
                rec[_norm(key)] = value
            rec["updated-at"] = self.now_iso()
            if resource != "integration_history_records":
                self._note(resource, rec)
            return rec

    def add(self, resource: str, record: dict) -> dict:
        """Insert a record (hyphenated keys); assigns ``id`` and timestamps when missing."""
        with self.lock:
            rec = {_norm(k): v for k, v in _copy(record).items()}
            if resource == "integration_history_records":
                store_ids = [r["id"] for r in self.integration_history_records]
            else:
                store_ids = list(self._store(resource).keys())
            if rec.get("id") is None:
                rec["id"] = max(store_ids, default=0) + 1
            rec["id"] = int(rec["id"])
            if rec["id"] in store_ids:
                raise ValueError(f"{resource}/{rec['id']} already exists")
            now = self.now_iso()
            rec.setdefault("created-at", now)
            rec.setdefault("updated-at", now)
            if resource in ("purchase_orders", "invoices"):
                rec.setdefault("exported", False)
                rec.setdefault("last-exported-at", None)
            if resource == "invoices":
                rec.setdefault("payments", [])
            if resource == "integration_history_records":
                rec.setdefault("resolved", False)
                self.integration_history_records.append(rec)
            else:
                self._store(resource)[rec["id"]] = rec
                self._note(resource, rec)
            return rec

    def set_exported(self, resource: str, id: int, exported: bool) -> dict:
        with self.lock:
            rec = self.get(resource, id)
            if rec is None:
                raise KeyError(id)
            rec["exported"] = exported
            rec["last-exported-at"] = iso_z(self.clock()) if exported else None
            return rec

    def add_payments(self, invoice_id: int, header: dict, payments: list[dict]) -> dict:
        with self.lock:
            inv = self.invoices[invoice_id]
            now = self.now_iso()
            for key in ("paid", "payment-date", "payment-notes"):
                if key in header:
                    inv[key] = header[key]
            if "custom-fields" in header:
                inv["custom-fields"] = {**(inv.get("custom-fields") or {}), **header["custom-fields"]}
            rows = inv.setdefault("payments", [])
            for p in payments:
                row = {"id": self._next_payment_id, **p, "payable-type": "InvoiceHeader",
                       "payable-id": invoice_id, "created-at": now, "updated-at": now}
                self._next_payment_id += 1
                rows.append(row)
            inv["updated-at"] = now
            return inv


# --------------------------------------------------------------------------------------------- filters
_PARAM_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def parse_filter_key(key: str) -> tuple[list[str], str]:
    m = _PARAM_RE.match(key)
    if not m:
        raise _bad(f"Malformed query parameter '{key}'")
    parts = [m.group(1)] + re.findall(r"\[([^\[\]]*)\]", m.group(2))
    op = "eq"
    if len(parts) > 1 and parts[-1].replace("-", "_") in OPS:
        op = parts.pop().replace("-", "_")
    if any(p == "" for p in parts):
        raise _bad(f"Malformed query parameter '{key}'")
    return [_norm(p) for p in parts], op


def _values(obj: Any, path: list[str]) -> list[Any]:
    """All values at path (lists fan out: order-lines[account][code] matches any line)."""
    cur = [obj]
    for name in path:
        nxt = []
        for o in cur:
            if isinstance(o, list):
                o_list = o
            else:
                o_list = [o]
            for item in o_list:
                if isinstance(item, dict):
                    v = item.get(name)
                    if isinstance(v, list) and name != path[-1]:
                        nxt.extend(v)
                    else:
                        nxt.append(v)
        cur = nxt
    out: list[Any] = []
    for v in cur:
        out.extend(v if isinstance(v, list) else [v])
    return out or [None]


def _coerce_pair(actual: Any, raw: str, attr: str, ordered: bool = False) -> tuple[Any, Any] | None:
    """Return comparable (actual, wanted); None when actual is null."""
    if actual is None:
        return None
    if isinstance(actual, bool):
        low = raw.strip().lower()
        if low not in ("true", "false", "1", "0"):
            raise _bad(f"'{raw}' is not a boolean for {attr}")
        return actual, low in ("true", "1")
    if isinstance(actual, (int, float)) and not isinstance(actual, bool):
        try:
            return Decimal(str(actual)), Decimal(raw)
        except InvalidOperation:
            raise _bad(f"'{raw}' is not a number for {attr}") from None
    if isinstance(actual, dict):
        return None
    if _is_dt_attr(attr):
        want = parse_dt(raw)
        if want is None:
            raise _bad(f"'{raw}' is not a valid ISO 8601 date/time for {attr} (encode '+' as %2B)")
        have = parse_dt(actual)
        return (have, want) if have is not None else None
    sval = str(actual)
    # decimal strings ("989.00") compare numerically for gt/lt/...; equality stays textual
    if ordered and _NUM_RE.fullmatch(sval) and _NUM_RE.fullmatch(raw.strip()):
        return Decimal(sval), Decimal(raw.strip())
    return sval, raw


_NUM_RE = re.compile(r"-?\d+(\.\d+)?")


def _match_one(actual: Any, op: str, raw: str, attr: str) -> bool:
    if op == "blank":
        want_blank = raw.strip().lower() in ("true", "1", "")
        is_blank = actual is None or actual == "" or actual == [] or actual == {}
        return is_blank == want_blank
    if op in ("in", "not_in"):
        options = [o for o in raw.split(",")]
        hit = False
        for o in options:
            pair = _coerce_pair(actual, o, attr)
            if pair is not None and pair[0] == pair[1]:
                hit = True
                break
        if actual is None:
            hit = False
        return hit if op == "in" else not hit
    if op in ("contains", "starts_with", "ends_with"):
        if actual is None or isinstance(actual, (dict, list)):
            return False
        a, w = str(actual).lower(), raw.lower()
        return (w in a) if op == "contains" else a.startswith(w) if op == "starts_with" else a.endswith(w)
    pair = _coerce_pair(actual, raw, attr, ordered=op in ("gt", "lt", "gt_or_eq", "lt_or_eq"))
    if pair is None:
        if op == "eq":
            return raw.lower() in ("null", "nil")
        return op == "not_eq"
    a, w = pair
    try:
        if op == "eq":
            return a == w
        if op == "not_eq":
            return a != w
        if op == "gt":
            return a > w
        if op == "lt":
            return a < w
        if op == "gt_or_eq":
            return a >= w
        if op == "lt_or_eq":
            return a <= w
    except TypeError:
        return False
    raise _bad(f"Unknown operator '{op}'")


def build_filters(resource: str, params: list[tuple[str, str]], known: set[str]) -> list[Callable[[dict], bool]]:
    preds: list[Callable[[dict], bool]] = []
    for key, raw in params:
        if key in IGNORED_PARAMS:
            continue
        path, op = parse_filter_key(key)
        top = path[0]
        if top not in known:
            # supplier_id=4 style: "<assoc>-id" == assoc[id]
            if top.endswith("-id") and top[:-3] in known and len(path) == 1:
                path = [top[:-3], "id"]
            else:
                raise _bad(f"Unknown attribute '{key}' for {resource}; filterable attributes: "
                           + ", ".join(sorted(known)))
        attr = path[-1]

        def pred(rec: dict, path=path, op=op, raw=raw, attr=attr) -> bool:
            vals = _values(rec, path)
            if op == "not_in" or op == "not_eq":
                return all(_match_one(v, op, raw, attr) for v in vals)
            return any(_match_one(v, op, raw, attr) for v in vals)

        preds.append(pred)
    return preds


def _validate_filter_values(preds: list[Callable[[dict], bool]], sample: dict | None) -> None:
    """Force value-format errors (bad dates, booleans) even when the store is empty."""
    if sample is not None:
        for p in preds:
            p(sample)


# --------------------------------------------------------------------------------------------- app
@dataclass
class CoupaSandboxConfig:
    clients: dict[str, str] = field(default_factory=lambda: {"sandbox-client": "sandbox-secret"})
    token_lifetime_s: int = 86399
    fault: FaultConfig = field(default_factory=FaultConfig)


@dataclass
class _Token:
    client_id: str
    scopes: frozenset[str]
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class CoupaSandbox:
    """One Coupa instance: ``state``, ``log``, ``injector``, ``app`` (FaultMiddleware-wrapped ASGI app)."""

    def __init__(self, config: CoupaSandboxConfig | None = None, seed: SeedData | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config or CoupaSandboxConfig()
        self.clock = clock
        self.state = CoupaState(seed, clock=clock)
        self.log = RequestLog()
        self.injector = FaultInjector(self.config.fault, clock=clock)
        self._tokens: dict[str, _Token] = {}
        self._tokens_lock = threading.Lock()
        self.starlette = Starlette(routes=self._routes())
        self.app = FaultMiddleware(self.starlette, self.injector, self.log)

    # -- tokens
    def revoke_tokens(self) -> None:
        with self._tokens_lock:
            self._tokens.clear()

    def issue_token(self, client_id: str, scopes: frozenset[str]) -> tuple[str, _Token]:
        now = self.clock()
        header = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "sandbox"}).encode())
        payload = _b64(json.dumps({"iss": "coupa-sandbox", "sub": client_id, "client_id": client_id,
                                   "scope": " ".join(sorted(scopes)), "iat": int(now),
                                   "exp": int(now + self.config.token_lifetime_s),
                                   "jti": secrets.token_hex(16)}).encode())
        token = f"{header}.{payload}.{_b64(secrets.token_bytes(64))}"
        tok = _Token(client_id, scopes, now + self.config.token_lifetime_s)
        with self._tokens_lock:
            self._tokens[token] = tok
        return token, tok

    def _auth(self, request: Request, resource: str, write: bool) -> None:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise ApiError(401, {"errors": {"base": ["Unauthorized: missing bearer access token"]}},
                           {"WWW-Authenticate": 'Bearer realm="coupa"'})
        with self._tokens_lock:
            tok = self._tokens.get(auth[7:].strip())
        if tok is None or tok.expires_at <= self.clock():
            raise ApiError(401, {"errors": {"base": ["Unauthorized: invalid or expired access token"]}},
                           {"WWW-Authenticate": 'Bearer realm="coupa", error="invalid_token"'})
        accept = request.headers.get("accept", "")
        if "application/json" not in accept.lower():
            raise ApiError(406, {"errors": {"base": [
                f"Not Acceptable: this sandbox only serves JSON; send 'Accept: application/json' (got {accept!r})"]}})
        scope = SCOPES[resource][1 if write else 0]
        if scope not in tok.scopes:
            raise ApiError(403, {"errors": {"base": [f"Forbidden: access token lacks scope {scope}"]}})

    async def _json_body(self, request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            return None
        ctype = request.headers.get("content-type", "")
        if "application/json" not in ctype.lower():
            raise _bad(f"Unsupported Content-Type {ctype!r}: send 'Content-Type: application/json' "
                       "(Coupa requires Content-Type to match Accept)", status=415)
        try:
            return json.loads(raw)
        except ValueError:
            raise _bad("Request body is not valid JSON") from None

    # -- routes
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
            Route("/oauth2/token", wrap(self._token), methods=["POST"]),
            Route("/api/integration_history_records", wrap(self._ihr_create), methods=["POST"]),
            Route("/api/integration_history_records/create_alert", wrap(self._ihr_alert), methods=["POST"]),
            Route("/api/integration_history_records/{id}/resolve", wrap(self._ihr_resolve), methods=["PUT"]),
            Route("/api/integration_history_records/{id}/unresolve", wrap(self._ihr_unresolve), methods=["PUT"]),
            Route("/api/{resource}", wrap(self._list), methods=["GET"]),
            Route("/api/{resource}/{id}", wrap(self._show), methods=["GET"]),
            Route("/api/{resource}/{id}", wrap(self._update), methods=["PUT", "PATCH"]),
        ]
        return routes

    async def _token(self, request: Request) -> Response:
        ctype = request.headers.get("content-type", "")
        if "application/x-www-form-urlencoded" not in ctype.lower():
            return JSONResponse({"error": "invalid_request",
                                 "error_description": "Content-Type must be application/x-www-form-urlencoded"},
                                status_code=400)
        # parsed by hand: starlette's request.form() needs python-multipart, which is not a dependency
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace"),
                                               keep_blank_values=True).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:].strip()).decode()
                client_id, _, secret = decoded.partition(":")
            except Exception:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
        if not client_id or self.config.clients.get(str(client_id)) != secret or secret is None:
            return JSONResponse({"error": "invalid_client", "error_description": "Client authentication failed"},
                                status_code=401)
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type",
                                 "error_description": "Only client_credentials is supported"}, status_code=400)
        requested = str(form.get("scope") or "").split()
        unknown = [s for s in requested if s not in KNOWN_SCOPES]
        if unknown:
            return JSONResponse({"error": "invalid_scope",
                                 "error_description": f"Unknown scope(s): {' '.join(unknown)}"}, status_code=400)
        scopes = frozenset(requested) if requested else KNOWN_SCOPES
        token, tok = self.issue_token(str(client_id), scopes)
        return JSONResponse({"access_token": token, "token_type": "bearer",
                             "expires_in": self.config.token_lifetime_s, "scope": " ".join(sorted(scopes))},
                            headers={"Cache-Control": "no-store"})

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
        self._auth(request, resource, write=False)
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
            page = _copy(hits[offset:offset + limit])
        return JSONResponse(page)

    async def _show(self, request: Request) -> Response:
        resource = self._resource(request)
        self._auth(request, resource, write=False)
        rid = self._int_id(request.path_params["id"], resource)
        with self.state.lock:
            rec = self.state.get(resource, rid)
            if rec is None:
                raise _bad(f"Couldn't find {resource} with 'id'={rid}", status=404)
            return JSONResponse(_copy(rec))

    async def _update(self, request: Request) -> Response:
        resource = self._resource(request)
        self._auth(request, resource, write=True)
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
                errors[key] = ["is read-only or not writable through this API" if key in
                               self.state.attrs("invoices") else "is not a valid attribute"]
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
                    errors["custom-fields"] = [f"{', '.join(unknown)} is not an API-editable custom field "
                                               f"(editable: {', '.join(sorted(INVOICE_CUSTOM_FIELDS))})"]
                else:
                    header["custom-fields"] = {k: None if v is None else str(v) for k, v in fields.items()}
        payments: list[dict] = []
        if "payments" in body:
            raw = body["payments"]
            if isinstance(raw, dict) and set(raw) == {"payment"}:
                raw = raw["payment"]
                raw = [raw] if isinstance(raw, dict) else raw
            if not isinstance(raw, list):
                errors["payments"] = ["must be an array of payments or {\"payment\": [...]}"]
                raw = []
            for n, p in enumerate(raw):
                if not isinstance(p, dict):
                    errors[f"payments[{n}]"] = ["must be an object"]
                    continue
                p = {_norm(k): v for k, v in p.items()}
                bad = set(p) - {"amount-paid", "notes", "check-number", "payment-date", "payable-type",
                                "payable-id"}
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
                if too_long:   # R39 Payment: notes / check-number are string(255)
                    errors[f"payments[{n}].{too_long[0]}"] = [f"is too long (maximum is {PAYMENT_TEXT_MAX} characters)"]
                    continue
                payments.append({
                    "amount-paid": str(amount.quantize(Decimal("0.01"))),
                    "notes": p.get("notes", p.get("check-number")),
                    "check-number": p.get("check-number"),
                    "payment-date": _fmt_dt(p.get("payment-date")),
                })
        if errors:
            raise ApiError(400, {"errors": errors})
        inv = self.state.add_payments(rid, header, payments)
        return JSONResponse(_copy(inv))

    # -- integration history records
    async def _ihr_create(self, request: Request, alert: bool = False) -> Response:
        self._auth(request, "integration_history_records", write=True)
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
                target = {"InvoiceHeader": "invoices", "OrderHeader": "purchase_orders",
                          "Supplier": "suppliers"}.get(dtype)
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
            errors["integration"] = ["must be {\"code\": ...}"]
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
        self._auth(request, "integration_history_records", write=True)
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


def _fmt_dt(value: Any) -> str | None:
    dt = parse_dt(value)
    return None if dt is None else dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def create_coupa_app(config: CoupaSandboxConfig | None = None, seed: SeedData | None = None) -> Any:
    """ASGI app for ``uvicorn coupa_d365_pipeline.sandbox.coupa:create_coupa_app --factory``."""
    if seed is None:
        from .seed import generate_seed
        seed = generate_seed()
    return CoupaSandbox(config, seed).app
