"""OAuth 2.0 client credentials of the Coupa sandbox (``POST /oauth2/token``) and the checks of ``/api/*``.

Invariants: a token is issued only for a configured client id and secret (form body or HTTP Basic); no
``scope`` requested means every known scope; tokens live only in this process (revocable at once) and expire
server-side; an ``/api/*`` request needs a valid bearer token (else 401 + ``WWW-Authenticate``),
``Accept: application/json`` (else 406) and the token's scope for the resource (else 403).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..faults import FaultConfig
from .common import KNOWN_SCOPES, SCOPES, ApiError


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


class CoupaTokens:
    """The token endpoint and token registry of one Coupa sandbox."""

    def __init__(
        self,
        config: CoupaSandboxConfig,
        clock: Callable[[], float],
        mint: Callable[[str, frozenset[str]], tuple[str, _Token]] | None = None,
    ) -> None:
        self.config = config
        # what the token endpoint calls to issue a token; the sandbox routes it through its own issue_token
        # so a test can wrap that one method to see every token issued
        self.mint = mint or self.issue_token
        self.clock = clock
        self._tokens: dict[str, _Token] = {}
        self._tokens_lock = threading.Lock()

    def revoke_tokens(self) -> None:
        with self._tokens_lock:
            self._tokens.clear()

    def issue_token(self, client_id: str, scopes: frozenset[str]) -> tuple[str, _Token]:
        now = self.clock()
        header = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "sandbox"}).encode())
        payload = _b64(
            json.dumps(
                {
                    "iss": "coupa-sandbox",
                    "sub": client_id,
                    "client_id": client_id,
                    "scope": " ".join(sorted(scopes)),
                    "iat": int(now),
                    "exp": int(now + self.config.token_lifetime_s),
                    "jti": secrets.token_hex(16),
                }
            ).encode()
        )
        token = f"{header}.{payload}.{_b64(secrets.token_bytes(64))}"
        tok = _Token(client_id, scopes, now + self.config.token_lifetime_s)
        with self._tokens_lock:
            self._tokens[token] = tok
        return token, tok

    def authorize(self, request: Request, resource: str, write: bool) -> None:
        """Raise the ApiError Coupa answers when ``request`` may not read/write ``resource``."""
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise ApiError(
                401,
                {"errors": {"base": ["Unauthorized: missing bearer access token"]}},
                {"WWW-Authenticate": 'Bearer realm="coupa"'},
            )
        with self._tokens_lock:
            tok = self._tokens.get(auth[7:].strip())
        if tok is None or tok.expires_at <= self.clock():
            raise ApiError(
                401,
                {"errors": {"base": ["Unauthorized: invalid or expired access token"]}},
                {"WWW-Authenticate": 'Bearer realm="coupa", error="invalid_token"'},
            )
        accept = request.headers.get("accept", "")
        if "application/json" not in accept.lower():
            raise ApiError(
                406,
                {
                    "errors": {
                        "base": [
                            f"Not Acceptable: this sandbox only serves JSON; "
                            f"send 'Accept: application/json' (got {accept!r})"
                        ]
                    }
                },
            )
        scope = SCOPES[resource][1 if write else 0]
        if scope not in tok.scopes:
            raise ApiError(403, {"errors": {"base": [f"Forbidden: access token lacks scope {scope}"]}})

    async def token_endpoint(self, request: Request) -> Response:
        ctype = request.headers.get("content-type", "")
        if "application/x-www-form-urlencoded" not in ctype.lower():
            return JSONResponse(
                {
                    "error": "invalid_request",
                    "error_description": "Content-Type must be application/x-www-form-urlencoded",
                },
                status_code=400,
            )
        # parsed by hand: starlette's request.form() needs python-multipart, which is not a dependency
        form = {
            k: v[-1]
            for k, v in parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True).items()
        }
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:].strip()).decode()
                client_id, _, secret = decoded.partition(":")
            except Exception:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
        if not client_id or self.config.clients.get(str(client_id)) != secret or secret is None:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Client authentication failed"}, status_code=401
            )
        if form.get("grant_type") != "client_credentials":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "Only client_credentials is supported"},
                status_code=400,
            )
        requested = str(form.get("scope") or "").split()
        unknown = [s for s in requested if s not in KNOWN_SCOPES]
        if unknown:
            return JSONResponse(
                {"error": "invalid_scope", "error_description": f"Unknown scope(s): {' '.join(unknown)}"},
                status_code=400,
            )
        scopes = frozenset(requested) if requested else KNOWN_SCOPES
        token, tok = self.mint(str(client_id), scopes)
        return JSONResponse(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": self.config.token_lifetime_s,
                "scope": " ".join(sorted(scopes)),
            },
            headers={"Cache-Control": "no-store"},
        )
