"""Coupa Core REST API client (plain Python; no Dagster imports).

- OAuth2 client credentials against ``/oauth2/token``; the token is cached, renewed before it
  expires (at 5/6 of its lifetime — 20 h for Coupa's 24 h tokens), first used >= 5 s after it was
  minted and re-minted once on a 401 — all by :class:`common.oauth.TokenHolder`, which the D365
  client shares; this module only says how Coupa is asked and what its refusals mean.
- Every request carries ``Accept``/``Content-Type: application/json`` and the pinned
  ``X-COUPA-API-VERSION`` header.
- Lists are paged 50 at a time in ``id`` order with an ``id[gt]`` cursor and ``offset=0``: a page
  boundary is a record id, not a position, so records that leave or join the filtered set while
  we page (e.g. invoices being marked exported) never shift later pages — nothing is skipped or
  read twice (the offset pitfall in coupa-api.md §3.3).
- A client-side limiter spaces calls evenly at <= 20 requests/s (Coupa: 25/s, burst 20).
- Retries and Retry-After handling come from :mod:`coupa_d365_pipeline.common.http`.
- ``clock`` (epoch seconds) decides token renewal and warm-up and dates an HTTP-date Retry-After;
  ``sleep`` does the waiting. Both are injectable so tests need no wall-clock waits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx

from ..common.http import HTTPClientError, RateLimiter, RetryingSender, RetryPolicy, SystemUnavailableError
from ..common.oauth import TokenEndpoint, TokenHolder, renew_at_five_sixths
from ..settings import DEFAULT_COUPA_API_VERSION, DEFAULT_COUPA_SCOPES

PAGE_SIZE = 50
API_HINT = "check COUPA_BASE_URL points at the Coupa API host (not a login, SSO or proxy page)"
RESOURCES = ("invoices", "purchase_orders", "suppliers", "integration_history_records")


class CoupaError(HTTPClientError):
    def __init__(self, message: str, status: int | None = None, errors: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors


class CoupaAuthError(CoupaError, SystemUnavailableError):
    """The token endpoint refused our credentials or scopes, or Coupa refused a fresh token: no
    document can be synced, so the run stops (a :class:`SystemUnavailableError`)."""

    def __init__(self, message: str, status: int | None = None, errors: Any = None) -> None:
        super().__init__(message, status=status, errors=errors)
        self.system = "Coupa"


def coupa_endpoint(
    base_url: str, client_id: str, client_secret: str, scopes: str, api_version: str, warmup_s: float
) -> TokenEndpoint:
    """The client-credentials request to ``<base_url>/oauth2/token`` for ``scopes``."""

    def refused(status: int, payload: Mapping[str, Any]) -> CoupaAuthError:
        if status == 200:
            return CoupaAuthError("Coupa token response has no access_token")
        code = payload.get("error")
        hint = {
            "invalid_client": "check COUPA_CLIENT_ID and COUPA_CLIENT_SECRET",
            "invalid_scope": f"the OAuth client is not granted these scopes; check COUPA_SCOPES ({scopes})",
            "unauthorized_client": "enable the client credentials grant on the Coupa OAuth client",
        }.get(code or "", "check the Coupa OAuth client setup")
        return CoupaAuthError(f"Coupa token request failed: HTTP {status} {code or 'error'}; {hint}", status=status)

    return TokenEndpoint(
        system="Coupa",
        url=f"{base_url}/oauth2/token",
        form={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
            "scope": scopes,
        },
        headers={"Accept": "application/json", "X-COUPA-API-VERSION": api_version},
        refused=refused,
        hint=API_HINT,
        renew_after=renew_at_five_sixths,
        default_lifetime_s=86399.0,
        warmup_s=warmup_s,
    )


class CoupaClient:
    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        scopes: str = DEFAULT_COUPA_SCOPES,
        api_version: str = DEFAULT_COUPA_API_VERSION,
        timeout_s: float = 30.0,
        max_requests_per_second: float = 20.0,
        token_warmup_s: float = 5.0,
        retry_policy: RetryPolicy | None = None,
        http: httpx.Client | None = None,
        logger: logging.Logger | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.scopes = " ".join(scopes.split())
        self.api_version = api_version
        self.token_warmup_s = token_warmup_s
        self.logger = logger or logging.getLogger("coupa_d365_pipeline.coupa")
        self._owns_http = http is None
        self.http = http or httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0))
        # capacity 1: calls are spaced evenly, so no 1-second window ever holds more than
        # max_requests_per_second of them
        limiter = rate_limiter or RateLimiter(max_requests_per_second, burst=1)
        self.sender = RetryingSender(
            self.http, retry_policy or RetryPolicy(), self.logger, "Coupa", rate_limiter=limiter, sleep=sleep, now=clock
        )
        self.auth = TokenHolder(
            coupa_endpoint(self.base_url, client_id, client_secret, self.scopes, api_version, token_warmup_s),
            self.sender,
            logger=self.logger,
            clock=clock,
            sleep=sleep,
        )

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> CoupaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def request_count(self) -> int:
        return self.sender.request_count

    def __repr__(self) -> str:
        return f"CoupaClient(base_url={self.base_url!r}, client_id={self.client_id!r})"

    # -- auth ------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "X-COUPA-API-VERSION": self.api_version,
        }

    @property
    def tokens_minted(self) -> int:
        return self.auth.tokens_minted

    def invalidate_token(self) -> None:
        self.auth.invalidate()

    # -- requests --------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send one API request (auth, headers, retries); raise CoupaError on a non-2xx answer."""
        url = f"{self.base_url}{path}"

        def build(token: str) -> httpx.Request:
            headers = self._headers() | {"Authorization": f"Bearer {token}"}
            return self.http.build_request(method, url, params=params, json=json, headers=headers)

        def rejected() -> CoupaAuthError:
            return CoupaAuthError(
                f"Coupa {method} {path} answered HTTP 401 with a freshly minted token; check that "
                "the OAuth client (COUPA_CLIENT_ID) is active and granted COUPA_SCOPES",
                status=401,
            )

        response = self.auth.send(
            build, what=f"{method} {path}", rejected=rejected, idempotent=idempotent, expect_json=True, hint=API_HINT
        )
        if response.status_code >= 400:
            body = _json_or_none(response)
            errors = body.get("errors") if isinstance(body, dict) else None
            detail = errors if errors is not None else response.text[:300]
            raise CoupaError(
                f"Coupa {method} {path} failed: HTTP {response.status_code}: {detail}",
                status=response.status_code,
                errors=errors,
            )
        return response

    def iter_records(
        self, resource: str, filters: Mapping[str, Any] | None = None, page_size: int = PAGE_SIZE
    ) -> Iterator[dict[str, Any]]:
        """Yield every record of ``resource`` matching ``filters`` exactly once, in id order."""
        if resource not in RESOURCES:
            raise ValueError(f"unknown Coupa resource {resource!r}; expected one of {RESOURCES}")
        page_size = min(page_size, PAGE_SIZE)
        base = {k: v for k, v in (filters or {}).items() if k not in ("offset", "limit", "order_by", "dir")}
        floor = base.pop("id[gt]", None)
        last_id: int | None = int(floor) if floor is not None else None
        offset_mode = False
        offset = 0
        seen: set[int] = set()
        while True:
            params = dict(base, order_by="id", dir="asc", limit=page_size)
            if offset_mode:
                params["offset"] = offset
                if floor is not None:
                    params["id[gt]"] = floor
            else:
                params["offset"] = 0
                if last_id is not None:
                    params["id[gt]"] = last_id
            page = self.request("GET", f"/api/{resource}", params=params).json()
            if not isinstance(page, list):
                raise CoupaError(f"Coupa GET /api/{resource} returned {type(page).__name__}, expected a JSON array")
            ids = [int(r["id"]) for r in page]
            if not offset_mode and last_id is not None and any(i <= last_id for i in ids):
                # The server ignored the id[gt] cursor: fall back to offsets and de-duplicate.
                self.logger.warning("Coupa ignored id[gt] on /api/%s; falling back to offset paging", resource)
                offset_mode = True
                offset = len(seen)
                continue
            for record, record_id in zip(page, ids, strict=True):
                if record_id in seen:
                    continue
                seen.add(record_id)
                yield record
            if len(page) < page_size:
                return
            if offset_mode:
                offset += len(page)
            else:
                last_id = max(ids)

    def get(self, resource: str, record_id: int) -> dict[str, Any]:
        return self.request("GET", f"/api/{resource}/{int(record_id)}").json()

    def mark_exported(self, resource: str, record_id: int) -> dict[str, Any]:
        """``PUT /api/{resource}/{id}?exported=true`` — its own request, no body (idempotent)."""
        if resource not in ("invoices", "purchase_orders"):
            raise ValueError("only invoices and purchase orders carry an export flag")
        return self.request("PUT", f"/api/{resource}/{int(record_id)}", params={"exported": "true"}).json()

    def update_invoice(self, invoice_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        """``PUT /api/invoices/{id}`` with payment fields. Not idempotent when it adds payments:
        the caller must read the invoice's payments first (coupa-api.md §4.5)."""
        idempotent = "payments" not in changes
        return self.request("PUT", f"/api/invoices/{int(invoice_id)}", json=dict(changes), idempotent=idempotent).json()

    def create_integration_history_record(self, record: Mapping[str, Any], *, alert: bool = False) -> dict[str, Any]:
        path = "/api/integration_history_records" + ("/create_alert" if alert else "")
        return self.request("POST", path, json=dict(record), idempotent=False).json()

    def ping(self) -> dict[str, Any]:
        """Token plus one cheap read; returns facts for the operator."""
        self.auth.invalidate()
        self.auth.token()
        page = self.request("GET", "/api/suppliers", params={"limit": 1, "order_by": "id", "dir": "asc"}).json()
        return {"token": "ok", "suppliers_readable": isinstance(page, list), "api_version": self.api_version}


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
