"""The one OAuth2 client-credentials token holder both API clients use (plain Python; no Dagster imports).

A :class:`TokenEndpoint` says how one identity provider is asked for a token (URL, form, headers)
and what is particular to it: the renewal rule, the warm-up wait after minting, the error to raise
when it refuses. A :class:`TokenHolder` does everything else, the same way for Coupa and Entra:

- the token is cached and renewed early, at ``endpoint.renew_after(lifetime)`` seconds after it
  was minted (:func:`renew_at_five_sixths` for Coupa, :func:`renew_two_minutes_early` for Entra);
- a lock makes concurrent threads mint once, not once each;
- the client secret and every minted token are registered with :mod:`common.redact`, and neither
  ever appears in a message or a ``repr``;
- a refused token request raises the endpoint's own auth error (a :class:`SystemUnavailableError`)
  whose text says what to check; an answer that is not JSON names the endpoint, never its body;
- :meth:`TokenHolder.send` is the one place that, on a 401, drops the token, mints a new one and
  resends once; a second 401 raises the caller's auth error (the run stops, documents keep state);
- ``clock`` (epoch seconds) decides renewal and warm-up, ``sleep`` waits out the warm-up; both are
  injectable so tests need no wall-clock waits. Token requests go through the client's own
  :class:`RetryingSender` (retries, rate limit, circuit breaker).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from .http import RetryingSender
from .redact import register_secret


def renew_at_five_sixths(lifetime_s: float) -> float:
    """Coupa: renew at 5/6 of the lifetime (20 h of a 24 h token), and at least a minute early."""
    return min(lifetime_s * 5 / 6, max(lifetime_s - 60, 1.0))


def renew_two_minutes_early(lifetime_s: float) -> float:
    """Entra: renew two minutes before expiry, or at 5/6 of a lifetime too short for that."""
    return min(max(lifetime_s - 120, lifetime_s * 5 / 6), lifetime_s)


@dataclass(frozen=True)
class TokenEndpoint:
    """How to ask one identity provider for a client-credentials token, and what is particular to it.

    ``refused(status, payload)`` builds the error for a refused request (``payload`` is the JSON
    object of the answer, ``{}`` when there is none); it is also called with status 200 when the
    answer carries no ``access_token``. ``form`` holds the client secret and is kept out of ``repr``."""

    system: str  # "Coupa" / "D365": the log prefix
    url: str
    form: Mapping[str, str] = field(repr=False)  # grant_type, client_id, client_secret, scope
    refused: Callable[[int, Mapping[str, Any]], Exception] = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=lambda: {"Accept": "application/json"})
    hint: str = ""  # what to check when the answer is not JSON
    renew_after: Callable[[float], float] = field(default=renew_at_five_sixths, repr=False)
    default_lifetime_s: float = 3599.0  # when the answer has no expires_in
    warmup_s: float = 0.0  # wait this long between minting and first use
    minted_what: str = "an access token"  # "minted <this> (expires in N s)"
    renewing_what: str = "token"  # "401 ...; renewing the <this> and retrying once"


class TokenHolder:
    """Caches one client-credentials token for ``endpoint`` and sends requests with it."""

    def __init__(
        self,
        endpoint: TokenEndpoint,
        sender: RetryingSender,
        *,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint
        self.sender = sender
        self.logger = logger or sender.logger
        self.clock = clock
        self.sleep = sleep
        register_secret(endpoint.form.get("client_secret"))
        self._token: str | None = None
        self._minted_at = 0.0
        self._renew_at = 0.0
        self._lock = threading.Lock()
        self.tokens_minted = 0

    def __repr__(self) -> str:
        return f"TokenHolder({self.endpoint.system}, url={self.endpoint.url!r})"

    def token(self) -> str:
        """The cached token, minted first when there is none or it is due for renewal; waits out
        the endpoint's warm-up when the token is younger than that."""
        with self._lock:
            if self._token is None or self.clock() >= self._renew_at:
                self._mint()
            token, minted_at = self._token, self._minted_at
        assert token is not None
        age = self.clock() - minted_at
        if age < self.endpoint.warmup_s:
            self.sleep(self.endpoint.warmup_s - age)
        return token

    def invalidate(self) -> None:
        """Forget the token: the next :meth:`token` mints a new one."""
        with self._lock:
            self._token = None

    def _mint(self) -> None:
        endpoint = self.endpoint
        response = self.sender.send(
            lambda: self.sender.http.build_request(
                "POST", endpoint.url, data=dict(endpoint.form), headers=dict(endpoint.headers)
            ),
            idempotent=True,
            expect_json=True,
            show_body=False,
            hint=endpoint.hint,
        )
        payload = _json_object(response)
        token = payload.get("access_token")
        if response.status_code != 200 or not token:
            raise endpoint.refused(response.status_code, payload)
        lifetime = float(payload.get("expires_in") or endpoint.default_lifetime_s)
        self._token = str(token)
        register_secret(self._token)
        self._minted_at = self.clock()
        self._renew_at = self._minted_at + endpoint.renew_after(lifetime)
        self.tokens_minted += 1
        self.logger.info("%s: minted %s (expires in %.0f s)", endpoint.system, endpoint.minted_what, lifetime)

    def send(
        self,
        build: Callable[[str], httpx.Request],
        *,
        what: str,
        rejected: Callable[[], Exception],
        **send_options: Any,
    ) -> httpx.Response:
        """Send the request ``build(token)`` makes through the sender (``send_options`` go to
        :meth:`RetryingSender.send`). A 401 drops the token, mints a new one and resends once; a
        second 401 raises ``rejected()``. ``what`` (``"GET /api/x"``, no query) names it in the log."""
        for auth_attempt in (1, 2):
            response = self.sender.send(lambda: build(self.token()), **send_options)
            if response.status_code != 401:
                return response
            if auth_attempt == 1:
                self.logger.info(
                    "%s: 401 on %s; renewing the %s and retrying once",
                    self.endpoint.system,
                    what,
                    self.endpoint.renewing_what,
                )
                self.invalidate()
        raise rejected()


def _json_object(response: httpx.Response) -> Mapping[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
