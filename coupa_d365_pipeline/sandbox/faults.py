"""Seeded, reproducible fault injection and request logging shared by both sandboxes.

Pure ASGI middleware: every request outside ``/_sandbox/`` is logged (method, path, query,
headers, body, status) and may be delayed, answered with 429 + ``Retry-After``, answered with a
5xx, or have its connection dropped — either before the app runs (nothing happened) or after the
app has run (the write happened but the client never saw the answer; the case that makes
exactly-once hard).

Faults come from two sources:
- ``FaultConfig`` rates, drawn from ``random.Random(seed)`` so a run is reproducible;
- scripted faults (``FaultInjector.script``), consumed in order by matching requests, for tests
  that need one exact failure ("the next POST to /data/VendorInvoiceHeaders drops after commit").
  ``after=N`` lets the first N matching requests through first. A ``hold`` fault parks the request
  (already in the log, not yet run) until ``ScriptedFault.release()``: a rendezvous for tests that
  must act while a write is under way, e.g. kill the client, then let the write land.

Every logged request says which fault it got in ``LoggedRequest.injected`` (``"429"``, ``"5xx"``,
``"drop_before"``, ``"drop_after"``, ``"latency"`` for a scripted delay, ``"hold"``, the broken
answers ``"html"``, ``"empty"``, ``"html_after"``, ``"empty_after"``, ``"truncated"``; None when the
request was not faulted — a config-wide latency is not a fault), so a test can prove its faults fired.
``FaultConfig.revoke_tokens_every=N`` revokes every token the sandbox issued just before each N-th
request is handled (that request is logged with ``injected="revoke"`` and then runs normally, so it is
answered 401 unless it asks for a token): what an administrator rotating a secret or an identity
provider invalidating sessions does to clients, which must then fetch a new token. A scripted fault on
that request takes precedence (no revocation that time); like the rates, it is reproducible.
``Retry-After`` is sent as delta-seconds or, with ``retry_after_format="http-date"``, as an HTTP-date
computed from ``FaultInjector.clock``.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

FaultKind = Literal[
    "429",
    "5xx",
    "drop_before",
    "drop_after",
    "latency",
    "hold",
    "html",
    "empty",
    "html_after",
    "empty_after",
    "truncated",
    "revoke",
]
# Broken 200 answers: "html"/"empty" come from something in front of the app (a proxy or login page;
# the app never runs), "html_after"/"empty_after"/"truncated" replace or cut the app's answer after it
# ran (the write happened, the client gets no usable answer). "truncated" keeps the app's status and
# content type and sends the first half of its body with a matching Content-Length, so it reaches the
# client as a complete but unparseable message, not as a transport error.
BROKEN_ANSWERS = frozenset({"html", "empty", "html_after", "empty_after", "truncated"})
HTML_PAGE = b"<html><head><title>Sign in</title></head><body>Please sign in to continue.</body></html>"
RetryAfterFormat = Literal["seconds", "http-date"]
CONTROL_PREFIX = "/_sandbox/"
T = TypeVar("T")


@dataclass
class FaultConfig:
    """Random fault rates (0..1) and latency; the same seed gives the same fault sequence."""

    seed: int = 0
    rate_429: float = 0.0
    retry_after_s: int = 1
    retry_after_format: RetryAfterFormat = "seconds"
    rate_5xx: float = 0.0
    status_5xx: int = 503
    retry_after_on_5xx: bool = False  # 5xx answers carry Retry-After: retry_after_s (as a load balancer may)
    rate_drop: float = 0.0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    revoke_tokens_every: int = 0  # before every N-th request, revoke all issued tokens (0: never)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScriptedFault:
    kind: FaultKind
    method: str | None = None
    path_regex: str | None = None
    body_regex: str | None = None  # only requests whose body matches (e.g. the $batch of one entity set)
    times: int = 1
    retry_after_s: int = 1
    status: int = 503
    delay_ms: float = 0.0
    after: int = 0  # let this many matching requests through before firing
    retry_after_format: RetryAfterFormat = "seconds"
    max_hold_s: float = 300.0  # a "hold" releases itself after this long (a safety net)
    retry_after_on_5xx: bool = False  # a "5xx" answer carries Retry-After: retry_after_s
    _released: threading.Event = field(default_factory=threading.Event, init=False, repr=False, compare=False)

    def release(self) -> None:
        """Let the requests parked by this ``hold`` fault (and any later ones) go on."""
        self._released.set()

    def matches(self, method: str, path: str, body: str = "") -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        if self.path_regex and not re.search(self.path_regex, path):
            return False
        if self.body_regex and not re.search(self.body_regex, body):
            return False
        return True


@dataclass
class FaultDecision:
    kind: FaultKind
    retry_after_s: int = 1
    status: int = 503
    delay_ms: float = 0.0
    retry_after_format: RetryAfterFormat = "seconds"
    hold: ScriptedFault | None = None
    retry_after_on_5xx: bool = False


class FaultInjector:
    """Thread-safe source of fault decisions. ``clock`` dates HTTP-date ``Retry-After`` headers."""

    def __init__(
        self,
        config: FaultConfig | None = None,
        clock: Callable[[], float] = time.time,
        revoke_tokens: Callable[[], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self.clock = clock
        self.revoke_tokens = revoke_tokens  # the sandbox's "revoke every issued token"
        self._requests = 0  # requests decided since the last configure(), for revoke_tokens_every
        self.configure(config or FaultConfig())
        self._scripted: list[ScriptedFault] = []
        self._holds: list[ScriptedFault] = []

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)
            self._requests = 0

    def script(self, fault: ScriptedFault) -> ScriptedFault:
        with self._lock:
            self._scripted.append(fault)
            if fault.kind == "hold":
                self._holds.append(fault)
        return fault

    def pending(self) -> list[ScriptedFault]:
        """Scripted faults that have not fired (or not fired every time) yet."""
        with self._lock:
            return list(self._scripted)

    def withdraw(self, fault: ScriptedFault) -> None:
        """Drop one scripted fault that has not fired (every time) yet; release it if it is a hold."""
        with self._lock:
            self._scripted = [f for f in self._scripted if f is not fault]
        fault.release()

    def clear(self) -> None:
        """Forget scripted faults and rates; release every request a ``hold`` parked."""
        with self._lock:
            self._scripted.clear()
            for hold in self._holds:
                hold.release()
            self._holds.clear()
            self.config = FaultConfig(seed=self.config.seed)
            self._rng = random.Random(self.config.seed)
            self._requests = 0

    def decide(self, method: str, path: str, body: str = "") -> tuple[float, FaultDecision | None]:
        """Return (added latency in ms, fault or None) for one request.

        A scripted ``latency`` comes back as a ``FaultDecision`` with ``delay_ms`` (the request then
        runs normally), and so does ``revoke`` (every issued token was revoked first, see
        ``FaultConfig.revoke_tokens_every``); every other kind replaces or interrupts the normal answer."""
        with self._lock:
            self._requests += 1
            for fault in self._scripted:
                if fault.times > 0 and fault.matches(method, path, body):
                    if fault.after > 0:
                        fault.after -= 1
                        continue
                    fault.times -= 1
                    if fault.times == 0:
                        self._scripted.remove(fault)
                    decision = FaultDecision(
                        fault.kind,
                        fault.retry_after_s,
                        fault.status,
                        fault.delay_ms,
                        fault.retry_after_format,
                        fault if fault.kind == "hold" else None,
                        fault.retry_after_on_5xx,
                    )
                    return (fault.delay_ms if fault.kind == "latency" else 0.0), decision
            cfg = self.config
            if cfg.revoke_tokens_every > 0 and self._requests % cfg.revoke_tokens_every == 0 and self.revoke_tokens:
                self.revoke_tokens()
                return cfg.latency_ms, FaultDecision("revoke")
            latency = cfg.latency_ms
            if cfg.latency_jitter_ms:
                latency += self._rng.uniform(0, cfg.latency_jitter_ms)
            roll = self._rng.random()
            if roll < cfg.rate_429:
                return latency, FaultDecision(
                    "429", retry_after_s=cfg.retry_after_s, retry_after_format=cfg.retry_after_format
                )
            roll -= cfg.rate_429
            if roll < cfg.rate_5xx:
                return latency, FaultDecision(
                    "5xx",
                    status=cfg.status_5xx,
                    retry_after_s=cfg.retry_after_s,
                    retry_after_on_5xx=cfg.retry_after_on_5xx,
                )
            roll -= cfg.rate_5xx
            if roll < cfg.rate_drop:
                return latency, FaultDecision("drop_after")
            return latency, None


@dataclass
class LoggedRequest:
    seq: int
    time: float
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: str
    status: int | None = None  # None while the request is still being handled; -1 = dropped
    fault: str | None = None  # fault that changed the answer ("drop_after(status=201)" ...)
    injected: str | None = None  # kind of every injected fault, delays and holds included

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RequestLog:
    """Every API request the sandbox saw, in arrival order (thread-safe).

    An entry is added when the request arrives (before any injected delay or hold) and completed
    with its status when the answer starts; ``wait_for`` lets a test block until the log shows
    what it needs instead of sleeping."""

    def __init__(self) -> None:
        self.entries: list[LoggedRequest] = []
        self._seq = 0
        self._changed = threading.Condition()

    def add(self, entry: LoggedRequest) -> None:
        with self._changed:
            self._seq += 1
            entry.seq = self._seq  # keeps counting across clear(), so "everything after seq N" works
            self.entries.append(entry)
            self._changed.notify_all()

    def set_status(self, entry: LoggedRequest, status: int, fault: str | None = None) -> None:
        with self._changed:
            entry.status = status
            if fault is not None:
                entry.fault = fault
            self._changed.notify_all()

    def next_seq(self) -> int:
        with self._changed:
            return self._seq + 1

    def snapshot(self) -> list[LoggedRequest]:
        with self._changed:
            return list(self.entries)

    def clear(self) -> None:
        with self._changed:
            self.entries.clear()
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[LoggedRequest]], T], timeout_s: float) -> T:
        """Block until ``predicate(entries)`` is truthy and return its value; TimeoutError after
        ``timeout_s`` (a guard against a hung test, not a timing assumption)."""
        with self._changed:
            result = predicate(list(self.entries))
            deadline = time.monotonic() + timeout_s
            while not result:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the request log did not reach the awaited state in {timeout_s:g} s")
                self._changed.wait(remaining)
                result = predicate(list(self.entries))
            return result


class _ClientDisconnect(Exception):
    """Raised inside the ASGI app to make uvicorn abort the connection."""


class FaultMiddleware:
    """ASGI middleware: request log + latency + injected faults for non-control paths."""

    def __init__(self, app: Any, injector: FaultInjector, log: RequestLog) -> None:
        self.app = app
        self.injector = injector
        self.log = log

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)

        async def replay_receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        entry = LoggedRequest(
            seq=0,
            time=time.time(),
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body.decode("utf-8", errors="replace"),
        )
        latency_ms, fault = self.injector.decide(scope["method"], scope["path"], entry.body)
        answer_fault = fault if fault and fault.kind not in ("latency", "hold", "revoke") else None
        entry.injected = fault.kind if fault else None
        entry.fault = answer_fault.kind if answer_fault else None
        self.log.add(entry)
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000.0)
        if fault and fault.hold is not None:
            await _wait_released(fault.hold)

        if answer_fault and answer_fault.kind == "429":
            self.log.set_status(entry, 429)
            await _send_simple(
                send,
                429,
                b'{"error":"Too Many Requests"}',
                [(b"retry-after", self._retry_after(answer_fault).encode())],
            )
            return
        if answer_fault and answer_fault.kind == "5xx":
            self.log.set_status(entry, answer_fault.status)
            extra = (
                [(b"retry-after", self._retry_after(answer_fault).encode())] if answer_fault.retry_after_on_5xx else []
            )
            await _send_simple(
                send,
                answer_fault.status,
                b"<html><body>Service Unavailable</body></html>",
                [(b"content-type", b"text/html"), *extra],
            )
            return
        if answer_fault and answer_fault.kind in ("html", "empty"):  # answered in front of the app
            self.log.set_status(entry, 200)
            html = answer_fault.kind == "html"
            await _send_simple(
                send,
                200,
                HTML_PAGE if html else b"",
                [(b"content-type", b"text/html; charset=utf-8" if html else b"application/json")],
            )
            return
        if answer_fault and answer_fault.kind in BROKEN_ANSWERS:
            await self._run_and_break(scope, replay_receive, send, entry, answer_fault.kind)
            return
        if answer_fault and answer_fault.kind == "drop_before":
            self.log.set_status(entry, -1)
            await _abort(send)
            return

        drop_after = answer_fault is not None and answer_fault.kind == "drop_after"

        async def capture_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.log.set_status(
                    entry, message["status"], fault=f"drop_after(status={message['status']})" if drop_after else None
                )
            if drop_after:
                return
            await send(message)

        await self.app(scope, replay_receive, capture_send)
        if drop_after:
            await _abort(send)

    async def _run_and_break(self, scope: dict, receive: Any, send: Any, entry: LoggedRequest, kind: str) -> None:
        """Run the app (its write happens), then answer 200 with its answer replaced or cut short."""
        start: dict = {}
        chunks: list[bytes] = []

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        status = int(start.get("status", 200))
        body = b"".join(chunks)
        self.log.set_status(entry, status if kind == "truncated" else 200, fault=f"{kind}(status={status})")
        content_type = next(
            (v for k, v in start.get("headers", []) if k.lower() == b"content-type"), b"application/json"
        )
        if kind == "truncated":
            await _send_simple(send, status, body[: len(body) // 2], [(b"content-type", content_type)])
        elif kind == "html_after":
            await _send_simple(send, 200, HTML_PAGE, [(b"content-type", b"text/html; charset=utf-8")])
        else:
            await _send_simple(send, 200, b"", [(b"content-type", content_type)])

    def _retry_after(self, fault: FaultDecision) -> str:
        if fault.retry_after_format == "http-date":
            return email.utils.formatdate(self.injector.clock() + fault.retry_after_s, usegmt=True)
        return str(fault.retry_after_s)


async def _wait_released(hold: ScriptedFault) -> None:
    deadline = time.monotonic() + hold.max_hold_s
    while not hold._released.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


async def _send_simple(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    names = {h[0] for h in headers}
    merged = [h for h in base if h[0] not in names] + headers
    await send({"type": "http.response.start", "status": status, "headers": merged})
    await send({"type": "http.response.body", "body": body})


async def _abort(send: Any) -> None:
    """Start a response that promises a body, then fail: the server closes the socket mid-message."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"partial":', "more_body": True})
    raise _ClientDisconnect("sandbox fault injection: connection dropped")
