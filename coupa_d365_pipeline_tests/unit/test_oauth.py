"""The one client-credentials token holder (common/oauth.py) both clients use, against a mock transport."""

import logging
import threading
import time
from urllib.parse import parse_qs

import httpx
import pytest

from coupa_d365_pipeline.common.http import RetryingSender, RetryPolicy, SystemUnavailableError
from coupa_d365_pipeline.common.oauth import TokenEndpoint, TokenHolder, renew_at_five_sixths, renew_two_minutes_early
from coupa_d365_pipeline.common.redact import redact
from coupa_d365_pipeline.coupa.client import CoupaAuthError, coupa_endpoint
from coupa_d365_pipeline.d365.auth import EntraAuthError, entra_endpoint
from coupa_d365_pipeline_tests.clients.fake_time import FakeClock

SECRET = "s3cret-for-the-oauth-unit-test"


class Refused(SystemUnavailableError):
    pass


class Provider:
    """A token endpoint plus one API path (``/api``) that accepts only the newest token."""

    def __init__(self, lifetime: int = 3600, delay_s: float = 0.0) -> None:
        self.lifetime = lifetime
        self.delay_s = delay_s
        self.minted: list[str] = []
        self.forms: list[dict[str, list[str]]] = []
        self.api_calls: list[str] = []
        self.refuse_all = False
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            time.sleep(self.delay_s)
            with self._lock:
                self.forms.append(parse_qs(request.content.decode()))
                token = f"token-number-{len(self.minted) + 1}"
                self.minted.append(token)
            return httpx.Response(200, json={"access_token": token, "expires_in": self.lifetime})
        bearer = request.headers["authorization"].removeprefix("Bearer ")
        self.api_calls.append(bearer)
        if self.refuse_all or bearer != self.minted[-1]:
            return httpx.Response(401, json={})
        return httpx.Response(200, json={"ok": True})


def make_holder(provider, clock=None, warmup_s=0.0, renew_after=renew_at_five_sixths, refused=None):
    http = httpx.Client(transport=httpx.MockTransport(provider))
    sender = RetryingSender(
        http, RetryPolicy(max_attempts=2), logging.getLogger("test.oauth"), "Test", sleep=lambda s: None
    )
    endpoint = TokenEndpoint(
        system="Test",
        url="http://idp/token",
        form={"grant_type": "client_credentials", "client_id": "me", "client_secret": SECRET},
        refused=refused or (lambda status, payload: Refused(f"refused {status} {payload}")),
        renew_after=renew_after,
        warmup_s=warmup_s,
    )
    clock = clock or FakeClock()
    return TokenHolder(endpoint, sender, clock=clock, sleep=clock.sleep)


def call_api(holder):
    def build(token: str) -> httpx.Request:
        return httpx.Request("GET", "http://api/api", headers={"Authorization": f"Bearer {token}"})

    return holder.send(build, what="GET /api", rejected=lambda: Refused("rejected twice"))


def test_renewal_rules_of_coupa_and_entra():
    assert renew_at_five_sixths(86399) == pytest.approx(86399 * 5 / 6)  # 20 h of Coupa's 24 h
    assert renew_at_five_sixths(120) == 60  # at least a minute early
    assert renew_two_minutes_early(3599) == 3599 - 120  # Entra's hour
    assert renew_two_minutes_early(300) == 250  # 5/6 of a short lifetime


def test_token_is_cached_and_renewed_by_the_endpoint_rule_on_the_injected_clock():
    provider, clock = Provider(lifetime=3600), FakeClock()
    holder = make_holder(provider, clock=clock, renew_after=renew_two_minutes_early)
    first = holder.token()
    clock.advance(3600 - 120 - 1)
    assert holder.token() == first and holder.tokens_minted == 1
    clock.advance(1)
    assert holder.token() != first and holder.tokens_minted == 2
    assert provider.forms[0] == {"grant_type": ["client_credentials"], "client_id": ["me"], "client_secret": [SECRET]}


def test_concurrent_threads_mint_once():
    provider = Provider(delay_s=0.2)
    holder = make_holder(provider)
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(holder.token())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert provider.minted == ["token-number-1"] and tokens == ["token-number-1"] * 8
    assert holder.tokens_minted == 1


def test_warmup_waits_once_per_new_token():
    clock = FakeClock()
    holder = make_holder(Provider(), clock=clock, warmup_s=5.0)
    holder.token()
    holder.token()
    assert clock.sleeps == [5.0]
    holder.invalidate()
    clock.advance(1.0)
    holder.token()
    assert clock.sleeps == [5.0, 5.0]


def test_secret_and_tokens_are_redacted_and_never_in_repr():
    holder = make_holder(Provider())
    token = holder.token()
    assert redact(f"secret {SECRET} token {token}") == "secret *** token ***"
    assert SECRET not in repr(holder) and SECRET not in repr(holder.endpoint)


def test_a_401_renews_and_resends_once_then_the_callers_error(caplog):
    provider = Provider()
    holder = make_holder(provider)
    assert call_api(holder).status_code == 200
    provider.minted.append("revoked-all-earlier-tokens")  # the cached token is no longer accepted
    with caplog.at_level(logging.INFO, logger="test.oauth"):
        assert call_api(holder).status_code == 200
    assert holder.tokens_minted == 2
    assert provider.api_calls == ["token-number-1", "token-number-1", "token-number-3"]
    assert "Test: 401 on GET /api; renewing the token and retrying once" in caplog.text
    provider.refuse_all = True
    with pytest.raises(Refused, match="rejected twice"):
        call_api(holder)
    assert holder.tokens_minted == 3 and provider.api_calls[-2:] == ["token-number-3", "token-number-4"]


def test_a_refused_or_tokenless_answer_raises_the_endpoints_error():
    def refusing(request):
        return httpx.Response(400, json={"error": "invalid_client"})

    with pytest.raises(Refused, match="refused 400 {'error': 'invalid_client'}"):
        make_holder(refusing).token()
    with pytest.raises(Refused, match="refused 200 {}"):
        make_holder(lambda request: httpx.Response(200, json=["not", "an", "object"])).token()
    with pytest.raises(Refused, match="refused 200 {'expires_in': 5}"):
        make_holder(lambda request: httpx.Response(200, json={"expires_in": 5})).token()


def test_coupa_and_entra_endpoints_differ_only_in_their_request_and_rules():
    coupa = coupa_endpoint("https://acme.coupahost.com", "cid", SECRET, "core.invoice.read", "R39", 5.0)
    assert coupa.url == "https://acme.coupahost.com/oauth2/token"
    assert coupa.form == {
        "grant_type": "client_credentials",
        "client_id": "cid",
        "client_secret": SECRET,
        "scope": "core.invoice.read",
    }
    assert coupa.headers["X-COUPA-API-VERSION"] == "R39" and coupa.warmup_s == 5.0
    assert coupa.renew_after is renew_at_five_sixths and coupa.default_lifetime_s == 86399
    error = coupa.refused(401, {"error": "invalid_client"})
    assert isinstance(error, CoupaAuthError) and isinstance(error, SystemUnavailableError)
    assert str(error) == (
        "Coupa token request failed: HTTP 401 invalid_client; check COUPA_CLIENT_ID and COUPA_CLIENT_SECRET"
    )
    assert str(coupa.refused(200, {})) == "Coupa token response has no access_token"

    entra = entra_endpoint(
        authority_url="https://login.microsoftonline.com/",
        tenant_id="t1",
        client_id="cid",
        client_secret=SECRET,
        resource="https://contoso.operations.dynamics.com/",
    )
    assert entra.url == "https://login.microsoftonline.com/t1/oauth2/v2.0/token"
    assert entra.form["scope"] == "https://contoso.operations.dynamics.com/.default"
    assert entra.renew_after is renew_two_minutes_early and entra.warmup_s == 0.0
    error = entra.refused(
        400, {"error": "invalid_request", "error_description": "AADSTS90002: Tenant 't1' not found.\r\nTrace ID: abc"}
    )
    assert isinstance(error, EntraAuthError) and error.system == "D365" and "Trace ID" not in str(error)
    assert str(error) == (
        "Entra token request failed: HTTP 400 invalid_request AADSTS90002: Tenant 't1' not found.; "
        "check D365_TENANT_ID and D365_AUTHORITY_URL"
    )
    assert SECRET not in repr(coupa) + repr(entra)
