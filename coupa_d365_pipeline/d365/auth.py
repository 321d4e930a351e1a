"""Microsoft Entra ID client-credentials tokens for F&O (v2 endpoint, plain httpx).

``scope`` is ``<environment URL>/.default`` (lowercase host, no trailing slash); the authority is
configurable for sovereign clouds (``D365_AUTHORITY_URL``). Caching, the lock, redaction and the
401 resend live in :class:`common.oauth.TokenHolder`; this module says what is Entra's own: the
token request, the renewal rule (two minutes before expiry, or at 5/6 of a short lifetime) and
the error hints for Entra's error codes. ``invalidate()`` forces a new token after a 401.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..common.http import RetryingSender, SystemUnavailableError
from ..common.oauth import TokenEndpoint, TokenHolder, renew_two_minutes_early


class EntraAuthError(SystemUnavailableError):
    """Entra refused the token request: no D365 call can succeed, so the run stops."""

    def __init__(self, message: str, status: int | None = None, error: str | None = None) -> None:
        super().__init__(message, system="D365")
        self.status = status
        self.error = error


_HINTS = {
    "invalid_client": "check D365_CLIENT_ID and D365_CLIENT_SECRET (expired secret?)",
    "unauthorized_client": "the app registration is not enabled for client credentials in this tenant",
    "invalid_scope": "D365_BASE_URL must be the environment root, e.g. https://contoso.operations.dynamics.com",
    "invalid_request": "check D365_TENANT_ID and D365_AUTHORITY_URL",
}
TOKEN_HINT = "check D365_AUTHORITY_URL and D365_TENANT_ID point at the Entra token endpoint"


def entra_refused(status: int, payload: Mapping[str, Any]) -> EntraAuthError:
    """The error for a refused Entra token request: code, the first line of the AADSTS description
    (never the trace/correlation ids) and what to check."""
    error = payload.get("error")
    description = str(payload.get("error_description", "")).split("\r\n")[0][:200]
    hint = _HINTS.get(error or "", "check the Entra app registration")
    return EntraAuthError(
        f"Entra token request failed: HTTP {status} {error or ''} {description}; {hint}", status=status, error=error
    )


def entra_endpoint(
    *, authority_url: str, tenant_id: str, client_id: str, client_secret: str, resource: str
) -> TokenEndpoint:
    """The v2 token request for ``resource`` (the F&O environment root)."""
    scope = f"{resource.rstrip('/')}/.default"
    return TokenEndpoint(
        system="D365",
        url=f"{authority_url.rstrip('/')}/{tenant_id}/oauth2/v2.0/token",
        form={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
            "scope": scope,
        },
        refused=entra_refused,
        hint=TOKEN_HINT,
        renew_after=renew_two_minutes_early,
        default_lifetime_s=3599.0,
        minted_what=f"an Entra token for {scope}",
        renewing_what="Entra token",
    )


class EntraTokenProvider(TokenHolder):
    """The :class:`TokenHolder` for one F&O environment; ``clock`` (epoch seconds) decides renewal."""

    def __init__(
        self,
        *,
        authority_url: str,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        resource: str,
        sender: RetryingSender,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        endpoint = entra_endpoint(
            authority_url=authority_url,
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            resource=resource,
        )
        super().__init__(
            endpoint, sender, logger=logger or logging.getLogger("coupa_d365_pipeline.d365"), clock=clock, sleep=sleep
        )
        self.token_url = endpoint.url
        self.client_id = client_id
        self.scope = endpoint.form["scope"]
