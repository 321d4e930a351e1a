"""Issue 9 item 3: a system that is down stops the run in bounded time (circuit breaker, per-request
deadline) instead of every document retrying on its own."""

import logging

import httpx
import pytest

from coupa_d365_pipeline.common.http import RetriesExhaustedError, RetryingSender, RetryPolicy, SystemUnavailableError
from coupa_d365_pipeline_tests.clients.fake_time import FakeClock


def sender_for(handler, clock, policy=None, **kwargs):
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return RetryingSender(
        http,
        policy or RetryPolicy(),
        logging.getLogger("test"),
        "D365",
        sleep=clock.sleep,
        now=clock,
        monotonic=clock,
        **kwargs,
    )


def get(sender, path="/data/VendorsV2"):
    return sender.send(lambda: httpx.Request("GET", f"http://d365{path}"))


def test_after_three_requests_failed_for_good_no_further_request_is_sent():
    clock, calls = FakeClock(), []

    def down(request):
        calls.append(request)
        return httpx.Response(503, text="<html>Service Unavailable</html>")

    sender = sender_for(down, clock, policy=RetryPolicy(max_attempts=6))
    for _ in range(2):
        with pytest.raises(RetriesExhaustedError):
            get(sender)
    with pytest.raises(SystemUnavailableError) as err:
        get(sender)
    sent = len(calls)
    assert sent == 18
    with pytest.raises(SystemUnavailableError):
        get(sender, "/data/VendorInvoiceHeaders")
    assert len(calls) == sent  # open: nothing sent any more
    message = str(err.value)
    assert message.startswith("D365 is unavailable: 3 requests in a row failed") and "HTTP 503" in message
    assert "next run" in message and err.value.system == "D365"


def test_a_success_in_between_closes_the_count():
    clock, calls = FakeClock(), []

    def flaky(request):
        calls.append(request)
        return httpx.Response(200, json={}) if request.url.path.endswith("ok") else httpx.Response(503)

    sender = sender_for(flaky, clock, policy=RetryPolicy(max_attempts=2))
    for _ in range(5):
        with pytest.raises(RetriesExhaustedError):
            get(sender)
        get(sender, "/ok")
    assert not sender.breaker.is_open


def test_a_slow_system_costs_a_bounded_time_per_request():
    clock = FakeClock()

    def slow(request):
        clock.advance(60.0)  # every attempt runs into the 60 s read timeout
        raise httpx.ReadTimeout("timed out", request=request)

    sender = sender_for(slow, clock, policy=RetryPolicy(max_attempts=6, deadline_s=150.0))
    started = clock()
    with pytest.raises(RetriesExhaustedError, match="giving up after 3 attempts"):
        get(sender)
    assert clock() - started <= 150.0 + 60.0
    with pytest.raises(RetriesExhaustedError):
        get(sender)
    with pytest.raises(SystemUnavailableError, match="ReadTimeout"):
        get(sender)
    assert clock() - started < 10 * 60  # the whole run fails in under ten minutes, not hours
