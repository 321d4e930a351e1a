import logging
import time

import httpx
import pytest

from coupa_d365_pipeline.common.http import (
    AmbiguousWriteError, RateLimiter, RetriesExhaustedError, RetryingSender, RetryPolicy, parse_retry_after,
)


def make_sender(handler, sleeps, policy=RetryPolicy(max_attempts=4)):
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return RetryingSender(http, policy, logging.getLogger("test"), "Test", sleep=sleeps.append)


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=now) == pytest.approx(10.0)


def test_429_waits_exactly_retry_after_then_succeeds(caplog):
    calls, sleeps = [], []

    def handler(request):
        calls.append(request)
        if len(calls) < 3:
            return httpx.Response(429, headers={"Retry-After": "2"})
        return httpx.Response(200, json={"ok": True})

    sender = make_sender(handler, sleeps)
    with caplog.at_level(logging.WARNING):
        response = sender.send(lambda: httpx.Request("POST", "http://x/data/Things"), idempotent=False)
    assert response.status_code == 200
    assert sleeps == [2.0, 2.0]  # exactly Retry-After, even for a non-idempotent POST (429 = not executed)
    assert sender.retry_wait_s == 4.0
    assert "Retry-After 2 s" in caplog.text and "waiting 2.00 s" in caplog.text


def test_retry_after_above_limit_gives_up_with_clear_error():
    sender = make_sender(lambda r: httpx.Response(429, headers={"Retry-After": "9999"}), [])
    with pytest.raises(RetriesExhaustedError, match="above the 300 s limit"):
        sender.send(lambda: httpx.Request("GET", "http://x/a"))


def test_5xx_retried_for_get_with_backoff_but_not_for_post():
    sleeps = []
    statuses = iter([503, 502, 200])
    sender = make_sender(lambda r: httpx.Response(next(statuses)), sleeps)
    assert sender.send(lambda: httpx.Request("GET", "http://x/a")).status_code == 200
    assert len(sleeps) == 2 and all(0 < s <= 30 for s in sleeps)

    posts = []
    sender = make_sender(lambda r: posts.append(r) or httpx.Response(503), [])
    with pytest.raises(AmbiguousWriteError, match="may or may not"):
        sender.send(lambda: httpx.Request("POST", "http://x/a"))
    assert len(posts) == 1


def test_dropped_connection_is_ambiguous_for_post_and_retried_for_get():
    attempts = []

    def handler(request):
        attempts.append(request.method)
        raise httpx.RemoteProtocolError("peer closed connection", request=request)

    sender = make_sender(handler, [])
    with pytest.raises(AmbiguousWriteError):
        sender.send(lambda: httpx.Request("POST", "http://x/a"))
    assert attempts == ["POST"]
    attempts.clear()
    with pytest.raises(RetriesExhaustedError, match="giving up after 4 attempts"):
        sender.send(lambda: httpx.Request("GET", "http://x/a"))
    assert attempts == ["GET"] * 4


def test_connect_error_is_always_retried():
    attempts = []

    def handler(request):
        attempts.append(1)
        if len(attempts) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(201)

    sender = make_sender(handler, [])
    assert sender.send(lambda: httpx.Request("POST", "http://x/a")).status_code == 201
    assert len(attempts) == 2


def test_rate_limiter_caps_requests_per_second():
    limiter = RateLimiter(20, burst=20)
    started = time.monotonic()
    for _ in range(60):
        limiter.acquire()
    elapsed = time.monotonic() - started
    # 20 burst tokens, then 40 more at 20/s -> at least 2 s
    assert elapsed >= 1.9
