"""Entra ID (Azure AD) client-credentials tokens for the D365 sandbox, and the bearer check of ``/data``.

Serves the v2 ``/{tenant}/oauth2/v2.0/token`` (``scope``) and v1 ``/{tenant}/oauth2/token`` (``resource``)
endpoints with Entra's AADSTS error bodies, and issues JWT-looking tokens with ``aud``/``tid``/``exp``.

Invariants: only ``client_credentials`` for a configured client id and secret (compared in constant time)
gets a token; tokens live only in this process (revocable at once); ``/data`` accepts a token only while it
is unexpired, for this tenant and for the environment URL as audience (a Graph token or a trailing-slash
resource gets a token that F&O then answers 401).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .config import D365SandboxConfig

GRAPH_RESOURCE = "https://graph.microsoft.com"


class EntraTokens:
    """The token endpoint and the token registry of one D365 sandbox."""

    def __init__(
        self,
        config: D365SandboxConfig,
        clock: Callable[[], float],
        now: Callable[[], datetime],
        mint: Callable[[str, str], tuple[str, int]] | None = None,
    ) -> None:
        self.config = config
        # what the token endpoint calls to issue a token; the sandbox routes it through its own issue_token
        # so a test can wrap that one method to see every token issued
        self.mint = mint or self.issue_token
        self.clock = clock
        self.now = now
        self.env_url = config.environment_url.rstrip("/")
        self._tokens: dict[str, dict[str, Any]] = {}
        self._tokens_lock = threading.Lock()

    def revoke_tokens(self) -> None:
        with self._tokens_lock:
            self._tokens.clear()

    def issue_token(self, client_id: str, audience: str) -> tuple[str, int]:
        now = self.clock()
        lifetime = int(self.config.token_lifetime_s)
        claims = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{self.config.tenant_id}/",
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now) + lifetime,
            "appid": client_id,
            "appidacr": "1",
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-sp:{client_id}")),
            "tid": self.config.tenant_id,
            "ver": "1.0",
            "idtyp": "app",
            "jti": uuid.uuid4().hex,
        }

        def b64(obj: Any) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode().rstrip("=")

        token = ".".join(
            [
                b64({"typ": "JWT", "alg": "RS256", "kid": "sandbox"}),
                b64(claims),
                base64.urlsafe_b64encode(secrets.token_bytes(64)).decode().rstrip("="),
            ]
        )
        with self._tokens_lock:
            self._tokens[token] = {**claims, "_exp": now + lifetime}
        return token, lifetime

    def _token_error(self, status: int, error: str, code: int, description: str) -> JSONResponse:
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = self.now().strftime("%Y-%m-%d %H:%M:%SZ")
        return JSONResponse(
            {
                "error": error,
                "error_description": f"AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\n"
                f"Timestamp: {stamp}",
                "error_codes": [code],
                "timestamp": stamp,
                "trace_id": trace,
                "correlation_id": corr,
                "error_uri": f"https://login.microsoftonline.com/error?code={code}",
            },
            status_code=status,
        )

    async def token_endpoint(self, request: Request, version: int) -> Response:
        tenant = request.path_params["tenant"]
        raw = (await request.body()).decode("utf-8", errors="replace")
        form = dict(parse_qsl(raw, keep_blank_values=True))
        if tenant.casefold() != self.config.tenant_id.casefold():
            return self._token_error(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud.",
            )
        if form.get("grant_type") != "client_credentials":
            if not form.get("grant_type"):
                return self._token_error(
                    400,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'grant_type'.",
                )
            return self._token_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type "
                f"'{form.get('grant_type')}'. (The sandbox only supports client_credentials.)",
            )
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, pwd = base64.b64decode(auth[6:].strip()).decode().partition(":")
                client_id, secret = unquote(user) or client_id, unquote(pwd)
            except Exception:
                return self._token_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        if version == 2:
            scope = form.get("scope", "").strip()
            if scope.casefold() == f"{self.env_url}/.default".casefold():
                audience = self.env_url.lower()
            elif scope.casefold() == f"{GRAPH_RESOURCE}/.default":
                audience = GRAPH_RESOURCE
            else:
                return self._token_error(
                    400,
                    "invalid_scope",
                    70011,
                    f"The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid.",
                )
        else:
            resource = form.get("resource", "").strip()
            if not resource:
                return self._token_error(
                    400, "invalid_request", 900144, "The request body must contain the following parameter: 'resource'."
                )
            if resource.casefold() == self.env_url.casefold():
                audience = self.env_url.lower()
            elif resource.casefold() == (self.env_url + "/").casefold():
                audience = resource.lower()  # trailing slash: token issued, F&O answers 401 (MS-SVC note)
            elif resource.casefold().rstrip("/") == GRAPH_RESOURCE:
                audience = GRAPH_RESOURCE
            else:
                return self._token_error(
                    400,
                    "invalid_resource",
                    500011,
                    f"The resource principal named {resource} was not found in the tenant named "
                    f"{self.config.tenant_id}.",
                )
        if client_id not in self.config.clients:
            return self._token_error(
                401,
                "invalid_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{self.config.tenant_id}'.",
            )
        if not secret or not secrets.compare_digest(secret, self.config.clients[client_id]):
            return self._token_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                f"the client secret value, not the client secret ID, for a secret added to app "
                f"'{client_id}'.",
            )
        token, lifetime = self.mint(client_id, audience)
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }
        if version == 1:
            now = int(self.clock())
            body = {
                "token_type": "Bearer",
                "expires_in": str(lifetime),
                "ext_expires_in": str(lifetime),
                "expires_on": str(now + lifetime),
                "not_before": str(now),
                "resource": audience,
                "access_token": token,
            }
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def authenticate(self, authorization: str | None) -> str | None:
        """None if the bearer token is acceptable, else the reason (for WWW-Authenticate)."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return ""
        token = authorization[7:].strip()
        with self._tokens_lock:
            claims = self._tokens.get(token)
        if claims is None:
            return "invalid_token"
        if self.clock() >= claims["_exp"]:
            return "token_expired"
        if claims["aud"] != self.config.audience or claims["tid"] != self.config.tenant_id or not claims.get("oid"):
            return "invalid_audience"
        return None
