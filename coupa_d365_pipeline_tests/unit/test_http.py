import email.utils
import logging

import httpx
import pytest

from coupa_d365_pipeline.common.http import (
    AmbiguousWriteError,
    RateLimiter,
    RetriesExhaustedError,
    RetryingSender,
    RetryPolicy,
    parse_retry_after,
)
from coupa_d365_pipeline_tests.clients.fake_time import FakeClock


def make_sender(handler, sleeps, policy=None, now=None):
    http = httpx.Client(transport=httpx.MockTransport(handler))
    kwargs = {"now": now} if now is not None else {}
    policy = policy or RetryPolicy(max_attempts=4)
    return RetryingSender(http, policy, logging.getLogger("test"), "Test", sleep=sleeps.append, **kwargs)


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=now) == 10.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:10 GMT", now=now) == 0.0  # a date in the past: go now


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


def test_429_with_http_date_retry_after_waits_until_that_date_by_the_injected_now():
    clock = FakeClock()
    retry_at = email.utils.formatdate(clock() + 12, usegmt=True)  # "Fri, 15 Jan 2027 08:00:12 GMT"
    # the same header read 5 s later means a 5 s shorter wait: the date, not a duration, is what counts
    for seconds_later, expected_wait in ((0.0, 12.0), (5.0, 7.0)):
        answers = iter([httpx.Response(429, headers={"Retry-After": retry_at}), httpx.Response(200)])
        sleeps: list[float] = []
        sender = make_sender(
            lambda request, answers=answers: next(answers),
            sleeps,
            now=lambda seconds_later=seconds_later: clock() + seconds_later,
        )
        assert sender.send(lambda: httpx.Request("GET", "http://x/a")).status_code == 200
        assert sleeps == [expected_wait] and sender.retry_wait_s == expected_wait


def test_retry_after_above_limit_gives_up_with_clear_error():
    sender = make_sender(lambda r: httpx.Response(429, headers={"Retry-After": "9999"}), [])
    with pytest.raises(RetriesExhaustedError, match="above the 300 s limit"):
        sender.send(lambda: httpx.Request("GET", "http://x/a"))


def test_5xx_retried_for_get_with_backoff_but_not_for_post():
    sleeps = []
    statuses = iter([503, 502, 200])
    sender = make_sender(lambda r: httpx.Response(next(statuses)), sleeps)
    assert sender.send(lambda: httpx.Request("GET", "http://x/a")).status_code == 200
    # backoff with jitter: attempt n waits 0.5 * 2**(n-1) s times a factor in [0.5, 1]
    assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0

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
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(20, burst=20, monotonic=clock, sleep=clock.sleep)
    released_at = []
    for _ in range(60):
        limiter.acquire()
        released_at.append(clock())
    # 20 burst tokens at once, then one every 1/20 s: 40 more take exactly 2 s
    assert released_at[:20] == [0.0] * 20
    assert len(clock.sleeps) == 40 and all(s == pytest.approx(0.05) for s in clock.sleeps)
    assert released_at[-1] == pytest.approx(2.0)
    # token bucket bound: any span of t seconds releases at most burst + rate * t requests
    assert all(j - i + 1 <= 20 + 20 * (released_at[j] - released_at[i]) + 1e-6 for i in range(60) for j in range(i, 60))


def test_rate_limiter_refills_while_idle_but_never_beyond_its_burst():
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(10, burst=2, monotonic=clock, sleep=clock.sleep)
    assert [limiter.acquire() for _ in range(3)] == [0.0, 0.0, pytest.approx(0.1)]
    clock.advance(60.0)  # a long pause refills 2 tokens, not 600
    assert [limiter.acquire() for _ in range(3)] == [0.0, 0.0, pytest.approx(0.1)]
