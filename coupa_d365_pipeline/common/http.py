"""The one place where HTTP retries, Retry-After, rate limiting and timeouts live.

Both API clients send every request through :class:`RetryingSender`. Rules:

- ``429`` is always retried (the server refused the request before running it) and waits exactly
  the ``Retry-After`` seconds — never less — before the next attempt. The wait is logged.
- ``5xx`` and ambiguous transport failures (read timeout, dropped connection) are retried only
  for idempotent requests. For a non-idempotent write the caller gets :class:`AmbiguousWriteError`
  and must verify the outcome by a lookup before trying again.
- Connection failures before anything was sent (``ConnectError``/``ConnectTimeout``) are always
  safe to retry.
- Every request has a timeout (``httpx.Timeout`` on the client) and, over all its attempts, a deadline
  (``RetryPolicy.deadline_s``): a slow system costs a bounded time per request, not attempts x timeout.
- An answer that should be JSON and is not (an HTML login/proxy page, an empty or truncated body, a
  redirect) raises :class:`UnexpectedAnswerError` naming system, method, path (never the query) and
  status. A read is retried twice first — a proxy may serve one odd page — a write is not: its
  answer was lost after the server took it (:class:`UnexpectedWriteAnswerError` is ambiguous).
- A :class:`CircuitBreaker` per system counts requests that failed for good (retries exhausted on
  5xx/transport/timeouts, or no usable answer); after ``threshold`` in a row with no success in
  between it opens and every further request raises :class:`SystemUnavailableError` without being
  sent, so a run against a system that is down stops early instead of trying document by document.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

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


class SystemUnavailableError(HTTPClientError):
    """A whole system cannot be used right now (down, or our credentials are refused): no document is
    at fault, so the sync stops, documents keep their state and the run fails with this message."""

    def __init__(self, message: str, *, system: str = "") -> None:
        super().__init__(message)
        self.system = system


class UnexpectedAnswerError(HTTPClientError):
    """An answer that is not the JSON (or multipart) we expect: HTML, empty, truncated, a redirect."""

    def __init__(self, message: str, *, system: str, method: str, path: str, status: int) -> None:
        super().__init__(message)
        self.system = system
        self.method = method
        self.path = path
        self.status = status


class UnexpectedWriteAnswerError(UnexpectedAnswerError, AmbiguousWriteError):
    """A write answered with something unreadable: the server may have applied it (settle by lookup)."""


def is_system_failure(exc: BaseException) -> bool:
    """The system failed to give a usable answer (retries exhausted, unreadable answer, outage): not
    the document's fault — never a reason to alert Coupa users about the document."""
    return isinstance(exc, (RetriesExhaustedError, UnexpectedAnswerError, SystemUnavailableError))


def describe_unexpected(
    system: str, method: str, path: str, response: httpx.Response, problem: str, hint: str, *, show_body: bool = True
) -> str:
    """``Coupa GET /api/invoices answered HTTP 200 with text/html, not JSON (first bytes: '<html>…'); hint``.
    ``path`` is the URL path only: the query (filters, ids) and bodies (secrets) never appear."""
    content_type = response.headers.get("content-type", "").split(";")[0].strip()
    body = response.content
    what = "an empty body" if not body else (content_type or "no content type")
    message = f"{system} {method} {path} answered HTTP {response.status_code} with {what}, {problem}"
    if body and show_body:
        first = body[:60].decode("utf-8", errors="replace")
        message += f" (first bytes: {first!r}{'…' if len(body) > 60 else ''})"
    return f"{message}; {hint}" if hint else message


def _json_problem(response: httpx.Response) -> str | None:
    """Why a 2xx/3xx answer that should carry JSON does not, or None when it does."""
    if 300 <= response.status_code < 400:
        return f"a redirect to {httpx.URL(response.headers.get('location', '')).path or '?'}, not JSON"
    if response.status_code == 204:
        return None
    try:
        json.loads(response.content)
    except ValueError:
        return "not JSON" if response.content[:1] not in (b"{", b"[") else "JSON that is cut short or invalid"
    return None


class CircuitBreaker:
    """Opens after ``threshold`` consecutive requests to one system failed for good; any usable
    answer closes the count again. Once open it stays open for the life of the client (one run)."""

    def __init__(self, system: str, threshold: int = 3) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.system = system
        self.threshold = threshold
        self.failures = 0
        self.reason: str | None = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self.reason is not None

    def success(self) -> None:
        with self._lock:
            if self.reason is None:
                self.failures = 0

    def failure(self, reason: str) -> bool:
        """Count one request that failed for good; True when this one opened the breaker."""
        with self._lock:
            if self.reason is not None:
                return False
            self.failures += 1
            if self.failures >= self.threshold:
                self.reason = (
                    f"{self.system} is unavailable: {self.threshold} requests in a row failed; the last: "
                    f"{reason}. The run stopped; documents keep their state and the next run retries them"
                )
                return True
            return False

    def check(self) -> None:
        if self.reason is not None:
            raise SystemUnavailableError(self.reason, system=self.system)


class _Retryable(Exception):
    def __init__(
        self,
        reason: str,
        retry_after_s: float | None = None,
        status: int | None = None,
        unexpected: UnexpectedAnswerError | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.status = status
        self.unexpected = unexpected  # a read answered with something that is not JSON


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
    max_retry_after_s: float = 300.0  # a server asking for longer than this makes us give up
    deadline_s: float | None = 150.0  # no new attempt starts this long after the first (None: no deadline)
    unexpected_answer_attempts: int = 3  # a read answered with non-JSON is tried this often in all


class RateLimiter:
    """Token bucket shared by all threads using one client: at most ``rate`` requests per second.

    ``monotonic`` and ``sleep`` are injectable together (a fake clock whose sleep advances it)."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
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
    a wait; ``monotonic`` measures the per-request deadline. All are injectable so tests can assert the
    exact waits without waiting. ``breaker`` (default: one per sender) stops a run against a system
    that is down."""

    def __init__(
        self,
        http: httpx.Client,
        policy: RetryPolicy,
        logger: logging.Logger,
        system: str,
        rate_limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
        breaker: CircuitBreaker | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = http
        self.policy = policy
        self.logger = logger
        self.system = system
        self.rate_limiter = rate_limiter
        self.sleep = sleep
        self.now = now
        self.monotonic = monotonic
        self.breaker = breaker or CircuitBreaker(system)
        self.request_count = 0
        self.retry_wait_s = 0.0
        self._count_lock = threading.Lock()

    def send(
        self,
        build: Callable[[], httpx.Request],
        *,
        idempotent: bool | None = None,
        is_retryable_response: Callable[[httpx.Response], bool] | None = None,
        expect_json: bool = False,
        hint: str = "",
        show_body: bool = True,
    ) -> httpx.Response:
        """Send with retries. ``build`` is called per attempt (fresh auth header each time).

        ``expect_json``: a 2xx/3xx answer must be JSON (``hint`` tells the operator what to check;
        ``show_body=False`` keeps the body out of the message, e.g. a token endpoint's)."""
        self.breaker.check()
        policy = self.policy
        started = self.monotonic()

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            with self._count_lock:
                self.retry_wait_s += wait
            reason = exc.reason if isinstance(exc, _Retryable) else repr(exc)
            self.logger.warning(
                "%s: %s; waiting %.2f s before attempt %d/%d",
                self.system,
                reason,
                wait,
                state.attempt_number + 1,
                policy.max_attempts,
            )

        def stop(state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Retryable) and exc.unexpected is not None:
                return state.attempt_number >= min(policy.unexpected_answer_attempts, policy.max_attempts)
            if state.attempt_number >= policy.max_attempts:
                return True
            upcoming = state.upcoming_sleep or 0.0
            return policy.deadline_s is not None and self.monotonic() - started + upcoming > policy.deadline_s

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            wait=_WaitRetryAfter(policy),
            stop=stop,
            before_sleep=before_sleep,
            sleep=self.sleep,
            reraise=True,
        )
        attempts = 0
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    response = self._attempt(build, idempotent, is_retryable_response, expect_json, hint, show_body)
                    self.breaker.success()
                    return response
        except _Retryable as exc:
            if exc.unexpected is not None:
                self._failed_for_good(str(exc.unexpected))
                raise exc.unexpected from None
            error = RetriesExhaustedError(
                f"{self.system}: giving up after {attempts} attempts in {self.monotonic() - started:.0f} s: "
                f"{exc.reason}",
                last_status=exc.status,
            )
            self._failed_for_good(str(error))
            raise error from None
        except UnexpectedAnswerError as exc:  # a write's unreadable answer: one of them is no outage
            self.breaker.success()
            raise exc from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _failed_for_good(self, reason: str) -> None:
        if self.breaker.failure(reason):
            self.logger.error("%s", self.breaker.reason)
        self.breaker.check()

    def _attempt(
        self,
        build: Callable[[], httpx.Request],
        idempotent: bool | None,
        is_retryable_response: Callable[[httpx.Response], bool] | None,
        expect_json: bool = False,
        hint: str = "",
        show_body: bool = True,
    ) -> httpx.Response:
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
                "the server may or may not have applied it"
            ) from None
        if response.status_code == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"), now=self.now())
            if retry_after is not None and retry_after > self.policy.max_retry_after_s:
                raise RetriesExhaustedError(
                    f"{self.system}: {target} throttled with Retry-After {retry_after:.0f} s, above the "
                    f"{self.policy.max_retry_after_s:.0f} s limit",
                    last_status=429,
                )
            response.read()
            response.close()
            shown = f"Retry-After {retry_after:g} s" if retry_after is not None else "no Retry-After"
            raise _Retryable(f"{target} throttled (429, {shown})", retry_after_s=retry_after, status=429)
        retryable = (
            is_retryable_response(response)
            if is_retryable_response is not None
            else response.status_code in RETRYABLE_STATUS
        )
        if retryable:
            response.read()
            response.close()
            if safe:
                raise _Retryable(
                    f"{target} answered HTTP {response.status_code}",
                    status=response.status_code,
                    retry_after_s=parse_retry_after(response.headers.get("retry-after"), now=self.now()),
                )
            raise AmbiguousWriteError(
                f"{self.system}: {target} answered HTTP {response.status_code}; the write may or may not "
                "have been applied"
            )
        if expect_json and response.status_code < 400:
            response.read()
            problem = _json_problem(response)
            if problem is not None:
                message = describe_unexpected(
                    self.system, request.method, request.url.path, response, problem, hint, show_body=show_body
                )
                system, method, path, status = self.system, request.method, request.url.path, response.status_code
                if not safe:
                    raise UnexpectedWriteAnswerError(
                        message + "; the write may or may not have been applied",
                        system=system,
                        method=method,
                        path=path,
                        status=status,
                    )
                raise _Retryable(
                    message,
                    status=status,
                    unexpected=UnexpectedAnswerError(message, system=system, method=method, path=path, status=status),
                )
        return response
