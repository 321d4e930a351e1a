"""The one place where HTTP retries, Retry-After, rate limiting and timeouts live.

Both API clients send every request through :class:`RetryingSender`. Rules:

- ``429`` is always retried (the server refused the request before running it) and waits exactly
  the ``Retry-After`` seconds — never less — before the next attempt. The wait is logged.
- ``5xx`` and ambiguous transport failures (read timeout, dropped connection) are retried only
  for idempotent requests. For a non-idempotent write the caller gets :class:`AmbiguousWriteError`
  and must verify the outcome by a lookup before trying again.
- Connection failures before anything was sent (``ConnectError``/``ConnectTimeout``) are always
  safe to retry.
- Every request has a timeout (``httpx.Timeout`` on the client).
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable

import httpx
import tenacity

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})
RETRYABLE_STATUS = frozenset({500, 502, 503, 504})


class HTTPClientError(Exception):
    """Base class for errors raised by the connector's HTTP clients (messages never hold secrets)."""


class RetriesExhaustedError(HTTPClientError):
    def __init__(self, message: str, last_status: int | None = None) -> None:
        super().__init__(message)
        self.last_status = last_status


class AmbiguousWriteError(HTTPClientError):
    """A non-idempotent request failed in a way that leaves its outcome unknown."""


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.status = status


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 300.0   # a server asking for longer than this makes us give up


class RateLimiter:
    """Token bucket shared by all threads using one client: at most ``rate`` requests per second.

    ``monotonic`` and ``sleep`` are injectable together (a fake clock whose sleep advances it)."""

    def __init__(self, rate_per_s: float, burst: int | None = None, *,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate = rate_per_s
        self.capacity = float(burst if burst is not None else max(1, int(rate_per_s)))
        self._monotonic = monotonic
        self._sleep = sleep
        self._tokens = self.capacity
        self._updated = monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until a request may be sent; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1.0 - 1e-9:  # tolerance: float rounding must not cause a 1e-17 s wait
                    self._tokens = max(0.0, self._tokens - 1.0)
                    return waited
                delay = (1.0 - self._tokens) / self.rate
            self._sleep(delay)
            waited += delay


class _WaitRetryAfter(tenacity.wait.wait_base):
    """Wait exactly Retry-After when the server sent one; exponential backoff with jitter otherwise."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after_s is not None:
            return exc.retry_after_s
        attempt = retry_state.attempt_number
        backoff = min(self.policy.backoff_max_s, self.policy.backoff_initial_s * (2 ** (attempt - 1)))
        return backoff * (0.5 + random.random() / 2)


class RetryingSender:
    """Sends requests built by a callable, retrying per the module rules.

    ``sleep`` waits between attempts; ``now`` (epoch seconds) turns an HTTP-date ``Retry-After`` into
    a wait. Both are injectable so tests can assert the exact waits without waiting."""

    def __init__(self, http: httpx.Client, policy: RetryPolicy, logger: logging.Logger,
                 system: str, rate_limiter: RateLimiter | None = None,
                 sleep: Callable[[float], None] = time.sleep, now: Callable[[], float] = time.time) -> None:
        self.http = http
        self.policy = policy
        self.logger = logger
        self.system = system
        self.rate_limiter = rate_limiter
        self.sleep = sleep
        self.now = now
        self.request_count = 0
        self.retry_wait_s = 0.0
        self._count_lock = threading.Lock()

    def send(self, build: Callable[[], httpx.Request], *, idempotent: bool | None = None,
             is_retryable_response: Callable[[httpx.Response], bool] | None = None) -> httpx.Response:
        """Send with retries. ``build`` is called per attempt (fresh auth header each time)."""

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            with self._count_lock:
                self.retry_wait_s += wait
            reason = exc.reason if isinstance(exc, _Retryable) else repr(exc)
            self.logger.warning("%s: %s; waiting %.2f s before attempt %d/%d", self.system, reason, wait,
                                state.attempt_number + 1, self.policy.max_attempts)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            wait=_WaitRetryAfter(self.policy),
            stop=tenacity.stop_after_attempt(self.policy.max_attempts),
            before_sleep=before_sleep,
            sleep=self.sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(build, idempotent, is_retryable_response)
        except _Retryable as exc:
            raise RetriesExhaustedError(
                f"{self.system}: giving up after {self.policy.max_attempts} attempts: {exc.reason}",
                last_status=exc.status) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, build: Callable[[], httpx.Request], idempotent: bool | None,
                 is_retryable_response: Callable[[httpx.Response], bool] | None) -> httpx.Response:
        request = build()
        safe = idempotent if idempotent is not None else request.method in IDEMPOTENT_METHODS
        if self.rate_limiter is not None:
            self.rate_limiter.acquire()
        with self._count_lock:
            self.request_count += 1
        target = f"{request.method} {request.url.path}"
        try:
            response = self.http.send(request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _Retryable(f"{target} could not connect ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            if safe:
                raise _Retryable(f"{target} failed in transit ({type(exc).__name__})") from None
            raise AmbiguousWriteError(
                f"{self.system}: {target} failed after it was sent ({type(exc).__name__}); "
                "the server may or may not have applied it") from None
        if response.status_code == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"), now=self.now())
            if retry_after is not None and retry_after > self.policy.max_retry_after_s:
                raise RetriesExhaustedError(
                    f"{self.system}: {target} throttled with Retry-After {retry_after:.0f} s, above the "
                    f"{self.policy.max_retry_after_s:.0f} s limit", last_status=429)
            response.read()
            response.close()
            shown = f"Retry-After {retry_after:g} s" if retry_after is not None else "no Retry-After"
            raise _Retryable(f"{target} throttled (429, {shown})", retry_after_s=retry_after, status=429)
        retryable = (is_retryable_response(response) if is_retryable_response is not None
                     else response.status_code in RETRYABLE_STATUS)
        if retryable:
            response.read()
            response.close()
            if safe:
                raise _Retryable(f"{target} answered HTTP {response.status_code}", status=response.status_code,
                                 retry_after_s=parse_retry_after(response.headers.get("retry-after"), now=self.now()))
            raise AmbiguousWriteError(
                f"{self.system}: {target} answered HTTP {response.status_code}; the write may or may not "
                "have been applied")
        return response
