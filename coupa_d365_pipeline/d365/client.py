"""Dynamics 365 F&O OData client (plain Python; no Dagster imports).

Rules this client enforces for every call:
- reads use ``cross-company=true`` and, for company-scoped entity sets, ``dataAreaId eq '<le>'``
  in ``$filter`` (or in the key) — never the token user's default company by accident;
- writes carry ``dataAreaId`` in the body (company-scoped sets) and only real property names
  (checked against the F&O schema before sending);
- a 401 drops the Entra token, fetches a new one and retries the call once
  (:meth:`common.oauth.TokenHolder.send`, the same code the Coupa client uses);
- 429 waits exactly ``Retry-After`` seconds (see :mod:`common.http`), and the wait is logged;
- PATCH/DELETE/GET are retried on transient failures; a POST is retried only after a lookup
  (``verify``) proves the first attempt did not land — D365 OData has no idempotency key;
- business errors (HTTP 500 with an ``AxODataWriteException``, 400, 404) are never retried and
  raise :class:`D365Error` with the Infolog text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ..common.http import (
    AmbiguousWriteError,
    HTTPClientError,
    RetryingSender,
    RetryPolicy,
    SystemUnavailableError,
    UnexpectedWriteAnswerError,
    describe_unexpected,
)
from . import odata
from .auth import EntraTokenProvider
from .batch import BatchPartResult, Changeset, encode_batch, parse_batch_response
from .schema import entity_set as schema_for

ODATA_HEADERS = {"Accept": "application/json;odata.metadata=minimal", "OData-Version": "4.0", "OData-MaxVersion": "4.0"}
BUSINESS_ERROR_TYPES = ("AxODataWriteException", "ODataException", "AxODataDeleteException")
API_HINT = "check D365_BASE_URL is the F&O environment root (not a login or proxy page)"


class D365Error(HTTPClientError):
    def __init__(self, message: str, *, status: int, detail: str = "", error_type: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.error_type = error_type

    @property
    def is_duplicate(self) -> bool:
        return "The record already exists" in self.detail

    @property
    def is_validation(self) -> bool:
        return any(
            t in self.detail for t in ("is not found in the related table", "validateField failed", "must be filled in")
        )

    @property
    def is_not_found(self) -> bool:
        return self.status == 404


class D365AuthError(D365Error, SystemUnavailableError):
    """F&O refused a freshly minted token: no call can succeed, so the run stops."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=401, detail=message)
        self.system = "D365"


def error_detail(response: httpx.Response) -> tuple[str, str]:
    """(innererror message or message, error type) from an F&O error body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500], ""
    error = body.get("error", {}) if isinstance(body, dict) else {}
    inner = error.get("innererror") or {}
    return str(inner.get("message") or error.get("message") or "")[:2000], str(inner.get("type") or "")


def _is_transient(response: httpx.Response) -> bool:
    if response.status_code in (502, 503, 504):
        return True
    if response.status_code == 500:
        _, error_type = error_detail(response)
        return not any(t in error_type for t in BUSINESS_ERROR_TYPES)
    return False


@dataclass
class ChangesetResult:
    ok: bool
    parts: list[BatchPartResult]
    error: D365Error | None = None


class D365Client:
    def __init__(
        self,
        base_url: str,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        *,
        authority_url: str = "https://login.microsoftonline.com",
        timeout_s: float = 60.0,
        retry_policy: RetryPolicy | None = None,
        http: httpx.Client | None = None,
        logger: logging.Logger | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``sleep`` waits between retries; ``clock`` (epoch seconds) decides Entra token renewal and
        dates an HTTP-date Retry-After. Both are injectable so tests need no wall-clock waits."""
        self.base_url = base_url.rstrip("/")
        self.logger = logger or logging.getLogger("coupa_d365_pipeline.d365")
        self._owns_http = http is None
        self.http = http or httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0))
        self.sender = RetryingSender(
            self.http, retry_policy or RetryPolicy(), self.logger, "D365", sleep=sleep or time.sleep, now=clock
        )
        self.auth = EntraTokenProvider(
            authority_url=authority_url,
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            resource=self.base_url,
            sender=self.sender,
            logger=self.logger,
            clock=clock,
            sleep=sleep or time.sleep,
        )

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> D365Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"D365Client(base_url={self.base_url!r})"

    @property
    def request_count(self) -> int:
        return self.sender.request_count

    # -- transport -------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        expect_json: bool = True,
    ) -> httpx.Response:
        path = httpx.URL(url).path

        def build(token: str) -> httpx.Request:
            all_headers = dict(ODATA_HEADERS) | dict(headers or {}) | {"Authorization": f"Bearer {token}"}
            if json is not None:
                all_headers.setdefault("Content-Type", "application/json;odata.metadata=minimal")
            body = odata.dumps(json) if json is not None else content  # exact decimals, never floats
            return self.http.build_request(method, url, params=params, content=body, headers=all_headers)

        def rejected() -> D365AuthError:
            return D365AuthError(
                f"D365 {method} {path} answered HTTP 401 with a freshly minted token; check that "
                "the Entra app (D365_CLIENT_ID) is registered in F&O (System administration > "
                "Setup > Microsoft Entra applications) and enabled"
            )

        return self.auth.send(
            build,
            what=f"{method} {path}",
            rejected=rejected,
            idempotent=idempotent,
            is_retryable_response=_is_transient,
            expect_json=expect_json,
            hint=API_HINT,
        )

    def _raise_for(self, response: httpx.Response, what: str) -> None:
        if response.status_code < 400:
            return
        detail, error_type = error_detail(response)
        if response.status_code == 401:
            detail = (
                "unauthorized: the token was rejected twice; check that the Entra app is registered in "
                "F&O (System administration > Setup > Microsoft Entra applications)"
            )
        raise D365Error(
            f"D365 {what} failed: HTTP {response.status_code}: {detail}",
            status=response.status_code,
            detail=detail,
            error_type=error_type,
        )

    def _url(self, path: str) -> str:
        return f"{self.base_url}/data/{path}"

    # -- reads -----------------------------------------------------------------------------
    def query(
        self,
        entity_set: str,
        *,
        legal_entity: str | Sequence[str] | None = None,
        filter: str | None = None,
        select: Sequence[str] | None = None,
        top: int | None = None,
        orderby: str | None = None,
        exact: Mapping[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield rows of ``entity_set`` (cross-company, scoped to ``legal_entity`` — or to several legal
        entities at once when given a list: one query instead of one per company), following nextLink.

        ``exact`` (field -> value) selects rows whose fields *equal* the values. F&O reads ``*`` in an
        ``eq`` literal as a wildcard (no escape exists), so those ``eq`` clauses are only a superset on
        the server; rows are kept here if they really equal the values (case-insensitively, as F&O's
        collation compares), and ``top`` counts kept rows only."""
        schema = schema_for(entity_set)
        if exact:
            filter = odata.and_(odata.all_eq(exact), filter)
            if select:
                select = [*select, *(name for name in exact if name not in select)]
        if schema.company_scoped:
            if not legal_entity:
                raise ValueError(f"{entity_set} is company-scoped: pass legal_entity (dataAreaId)")
            companies = [legal_entity] if isinstance(legal_entity, str) else sorted({le.lower() for le in legal_entity})
            scope = [odata.eq("dataAreaId", le.lower()) for le in companies]
            filter = odata.and_(scope[0] if len(scope) == 1 else odata.or_(*scope), filter)
        params: dict[str, Any] | None = {"cross-company": "true"}
        assert params is not None
        if filter:
            params["$filter"] = filter
        if select:
            unknown = [s for s in select if s not in schema.properties]
            if unknown:
                raise ValueError(f"{entity_set} has no properties {unknown}")
            params["$select"] = ",".join(select)
        wildcard = bool(exact) and any(odata.WILDCARD in str(v) for v in (exact or {}).values())
        if top is not None and not wildcard:  # a server-side $top would count rows the wildcard matched
            params["$top"] = int(top)
        if orderby:
            params["$orderby"] = orderby
        url: str | None = self._url(entity_set)
        remaining = top
        while url:
            response = self._send("GET", url, params=params)
            self._raise_for(response, f"GET {entity_set}")
            payload = response.json()
            for row in payload.get("value", []):
                if exact and not odata.equal(row, exact):
                    continue
                yield row
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        return
            url = payload.get("@odata.nextLink")
            params = None  # the next link carries every query option

    def get(self, entity_set: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        self._check_key(entity_set, key)
        response = self._send("GET", self._url(entity_set + odata.key_predicate(key)), params={"cross-company": "true"})
        if response.status_code == 404:
            return None
        self._raise_for(response, f"GET {entity_set}")
        return response.json()

    # -- writes ----------------------------------------------------------------------------
    def create(
        self, entity_set: str, record: Mapping[str, Any], *, verify: Callable[[], dict[str, Any] | None] | None = None
    ) -> dict[str, Any]:
        """POST a new record. If the outcome is ambiguous (timeout, dropped connection, 5xx) and
        ``verify`` is given, look the record up: found -> return it; absent -> send again."""
        self._check_record(entity_set, record)
        for attempt in (1, 2, 3):
            try:
                response = self._send("POST", self._url(entity_set), json=dict(record), idempotent=False)
            except AmbiguousWriteError as exc:
                if verify is None:
                    raise
                found = verify()
                if found is not None:
                    self.logger.warning("D365: %s; lookup shows the record was created, not sending again", exc)
                    return found
                self.logger.warning("D365: %s; lookup shows nothing was created, sending again (%d/3)", exc, attempt)
                continue
            self._raise_for(response, f"POST {entity_set}")
            return response.json()
        raise AmbiguousWriteError(f"D365 POST {entity_set}: outcome still unknown after 3 verified attempts")

    def update(self, entity_set: str, key: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        """PATCH (idempotent: sets fields to values)."""
        self._check_key(entity_set, key)
        self._check_record(entity_set, changes, require_company=False)
        response = self._send(
            "PATCH",
            self._url(entity_set + odata.key_predicate(key)),
            params={"cross-company": "true"},
            json=dict(changes),
            idempotent=True,
        )
        self._raise_for(response, f"PATCH {entity_set}")

    def delete(self, entity_set: str, key: Mapping[str, Any]) -> bool:
        """DELETE by key; returns False when the record was already gone."""
        self._check_key(entity_set, key)
        response = self._send(
            "DELETE",
            self._url(entity_set + odata.key_predicate(key)),
            params={"cross-company": "true"},
            idempotent=True,
        )
        if response.status_code == 404:
            return False
        self._raise_for(response, f"DELETE {entity_set}")
        return True

    def batch(self, changesets: Sequence[Changeset]) -> list[ChangesetResult]:
        """Send changesets in one ``$batch``; read every part's status (the outer answer is 200
        even when a part failed). Not retried on ambiguous failures: callers verify by lookup."""
        for changeset in changesets:
            for op in changeset.operations:
                entity = op.path.split("(", 1)[0]
                if op.method == "POST" and op.body is not None:
                    self._check_record(entity, op.body)
        content_type, body = encode_batch(self.base_url, list(changesets))
        response = self._send(
            "POST",
            self._url("$batch"),
            content=body,
            idempotent=False,
            expect_json=False,
            headers={"Content-Type": content_type, "Accept": "multipart/mixed"},
        )
        self._raise_for(response, "POST $batch")
        try:
            parts = parse_batch_response(response.headers.get("content-type", ""), response.content)
        except ValueError:
            parts = []
        by_id = {p.content_id: p for p in parts}
        results: list[ChangesetResult] = []
        for changeset in changesets:
            mine = [by_id[op.content_id] for op in changeset.operations if op.content_id in by_id]
            failed = [p for p in mine if not p.ok]
            if len(mine) < len(changeset.operations) and not failed:
                # no rejection in the answer, and no complete answer either: D365 may have applied it
                # (the answer was lost or cut short after the commit) — only a lookup can tell
                path = httpx.URL(self._url("$batch")).path
                raise UnexpectedWriteAnswerError(
                    describe_unexpected(
                        "D365",
                        "POST",
                        path,
                        response,
                        f"not a complete $batch answer "
                        f"({len(mine)} of {len(changeset.operations)} parts of a changeset)",
                        "D365 may have applied the changeset: look it up before sending it again",
                    ),
                    system="D365",
                    method="POST",
                    path=path,
                    status=response.status_code,
                )
            error = None
            if failed:
                part = failed[0]
                inner = (part.body or {}).get("error", {}) if isinstance(part.body, dict) else {}
                detail = str((inner.get("innererror") or {}).get("message") or inner.get("message") or part.body)
                error = D365Error(
                    f"D365 $batch changeset failed: HTTP {part.status}: {detail}", status=part.status, detail=detail
                )
            results.append(ChangesetResult(ok=not failed, parts=mine, error=error))
        return results

    # -- bound actions and blob storage (used by :mod:`.dmf`) ------------------------------------
    def action(self, bound_to: str, name: str, body: Mapping[str, Any], *, idempotent: bool) -> httpx.Response:
        """POST ``/data/<bound_to>/Microsoft.Dynamics.DataEntities.<name>`` with a JSON body, through the
        same token and retry rules as every other call. ``idempotent=False`` (an action that starts work,
        e.g. ``ImportFromPackage``) is never re-sent after an ambiguous failure: the caller settles it."""
        return self._send(
            "POST",
            self._url(f"{bound_to}/Microsoft.Dynamics.DataEntities.{name}"),
            json=dict(body),
            idempotent=idempotent,
        )

    def raise_for(self, response: httpx.Response, what: str) -> None:
        """Raise :class:`D365Error` (with the Infolog text) for an answer of HTTP 400 or above."""
        self._raise_for(response, what)

    def storage(
        self, method: str, url: str, *, content: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        """A request to a SAS blob URL F&O handed out: no bearer token (the SAS signs it), same retry
        rules (PUT/GET are idempotent). Logs and errors name the path only, never the SAS query."""
        return self.sender.send(
            lambda: self.http.build_request(method, url, content=content, headers=dict(headers or {})),
            idempotent=method in ("GET", "PUT"),
        )

    # -- checks ----------------------------------------------------------------------------
    def _check_record(self, entity_set: str, record: Mapping[str, Any], require_company: bool = True) -> None:
        schema = schema_for(entity_set)
        unknown = schema.unknown_properties(record)
        if unknown:
            raise ValueError(f"{entity_set} has no properties {unknown}; fix the mapping (names are case-sensitive)")
        if require_company and schema.company_scoped and not record.get("dataAreaId"):
            raise ValueError(f"a write to {entity_set} must carry dataAreaId (the legal entity)")

    def _check_key(self, entity_set: str, key: Mapping[str, Any]) -> None:
        schema = schema_for(entity_set)
        if set(key) != set(schema.keys):
            raise ValueError(f"{entity_set} is addressed by {list(schema.keys)}, got {list(key)}")

    def ping(self, legal_entity: str) -> dict[str, Any]:
        """Fresh token + one cheap read: does the legal entity exist?"""
        self.auth.invalidate()
        self.auth.token()
        rows = list(
            self.query(
                "LegalEntities",
                filter=odata.eq("LegalEntityId", legal_entity.upper()),
                select=["LegalEntityId", "Name"],
                top=1,
            )
        )
        if not rows:
            rows = list(
                self.query(
                    "LegalEntities",
                    filter=odata.eq("LegalEntityId", legal_entity.lower()),
                    select=["LegalEntityId", "Name"],
                    top=1,
                )
            )
        return {
            "token": "ok",
            "legal_entity": legal_entity,
            "legal_entity_exists": bool(rows),
            "legal_entity_name": rows[0].get("Name") if rows else None,
        }
