"""Microsoft Entra ID client-credentials tokens for F&O (v2 endpoint, plain httpx).

``scope`` is ``<environment URL>/.default`` (lowercase host, no trailing slash); the authority is
configurable for sovereign clouds (``D365_AUTHORITY_URL``). Tokens are cached and renewed two
minutes before expiry (or at 5/6 of a short lifetime); ``invalidate()`` forces a new one after a 401.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..common.http import RetryingSender, SystemUnavailableError
from ..common.redact import register_secret


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


class EntraTokenProvider:
    """``clock`` (epoch seconds) decides when the cached token is renewed; injectable for tests."""

    def __init__(self, *, authority_url: str, tenant_id: str, client_id: str, client_secret: str,
                 resource: str, sender: RetryingSender, logger: logging.Logger | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.token_url = f"{authority_url.rstrip('/')}/{tenant_id}/oauth2/v2.0/token"
        self.client_id = client_id
        self._client_secret = client_secret
        register_secret(client_secret)
        self.scope = f"{resource.rstrip('/')}/.default"
        self.sender = sender
        self.logger = logger or logging.getLogger("coupa_d365_pipeline.d365")
        self.clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = threading.Lock()
        self.tokens_minted = 0

    def token(self) -> str:
        with self._lock:
            if self._token is None or self.clock() >= self._renew_at:
                self._mint()
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _mint(self) -> None:
        form = {"grant_type": "client_credentials", "client_id": self.client_id,
                "client_secret": self._client_secret, "scope": self.scope}
        response = self.sender.send(
            lambda: self.sender.http.build_request("POST", self.token_url, data=form,
                                                   headers={"Accept": "application/json"}),
            idempotent=True, expect_json=True, show_body=False,
            hint="check D365_AUTHORITY_URL and D365_TENANT_ID point at the Entra token endpoint")
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code != 200 or "access_token" not in payload:
            error = payload.get("error") if isinstance(payload, dict) else None
            description = str(payload.get("error_description", "")).split("\r\n")[0][:200] if isinstance(payload, dict) else ""
            hint = _HINTS.get(error or "", "check the Entra app registration")
            raise EntraAuthError(f"Entra token request failed: HTTP {response.status_code} {error or ''} "
                                 f"{description}; {hint}", status=response.status_code, error=error)
        lifetime = float(payload.get("expires_in") or 3599)
        self._token = str(payload["access_token"])
        register_secret(self._token)
        now = self.clock()
        self._renew_at = now + min(max(lifetime - 120, lifetime * 5 / 6), lifetime)
        self.tokens_minted += 1
        self.logger.info("D365: minted an Entra token for %s (expires in %.0f s)", self.scope, lifetime)
