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
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from dataclasses import dataclass, field, asdict
from typing import Any, Literal

FaultKind = Literal["429", "5xx", "drop_before", "drop_after", "latency"]
CONTROL_PREFIX = "/_sandbox/"


@dataclass
class FaultConfig:
    """Random fault rates (0..1) and latency; the same seed gives the same fault sequence."""

    seed: int = 0
    rate_429: float = 0.0
    retry_after_s: int = 1
    rate_5xx: float = 0.0
    status_5xx: int = 503
    rate_drop: float = 0.0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScriptedFault:
    kind: FaultKind
    method: str | None = None
    path_regex: str | None = None
    times: int = 1
    retry_after_s: int = 1
    status: int = 503
    delay_ms: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        if self.path_regex and not re.search(self.path_regex, path):
            return False
        return True


@dataclass
class FaultDecision:
    kind: FaultKind
    retry_after_s: int = 1
    status: int = 503
    delay_ms: float = 0.0


class FaultInjector:
    """Thread-safe source of fault decisions."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self.configure(config or FaultConfig())
        self._scripted: list[ScriptedFault] = []

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)

    def script(self, fault: ScriptedFault) -> None:
        with self._lock:
            self._scripted.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._scripted.clear()
            self.config = FaultConfig(seed=self.config.seed)
            self._rng = random.Random(self.config.seed)

    def decide(self, method: str, path: str) -> tuple[float, FaultDecision | None]:
        """Return (added latency in ms, fault or None) for one request."""
        with self._lock:
            for fault in self._scripted:
                if fault.times > 0 and fault.matches(method, path):
                    fault.times -= 1
                    if fault.times == 0:
                        self._scripted.remove(fault)
                    decision = FaultDecision(fault.kind, fault.retry_after_s, fault.status, fault.delay_ms)
                    if fault.kind == "latency":
                        return fault.delay_ms, None
                    return 0.0, decision
            cfg = self.config
            latency = cfg.latency_ms
            if cfg.latency_jitter_ms:
                latency += self._rng.uniform(0, cfg.latency_jitter_ms)
            roll = self._rng.random()
            if roll < cfg.rate_429:
                return latency, FaultDecision("429", retry_after_s=cfg.retry_after_s)
            roll -= cfg.rate_429
            if roll < cfg.rate_5xx:
                return latency, FaultDecision("5xx", status=cfg.status_5xx)
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
    status: int | None = None
    fault: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RequestLog:
    """Every API request the sandbox saw, in arrival order (thread-safe)."""

    entries: list[LoggedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._seq = getattr(self, "_seq", 0) + 1
            entry.seq = self._seq  # keeps counting across clear(), so "everything after seq N" works
            self.entries.append(entry)

    def next_seq(self) -> int:
        with self._lock:
            return len(self.entries) + 1

    def snapshot(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self.entries)

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()


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
        latency_ms, fault = self.injector.decide(scope["method"], scope["path"])
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000.0)
        entry.fault = fault.kind if fault else None
        self.log.add(entry)

        if fault and fault.kind == "429":
            entry.status = 429
            await _send_simple(send, 429, b'{"error":"Too Many Requests"}',
                               [(b"retry-after", str(fault.retry_after_s).encode())])
            return
        if fault and fault.kind == "5xx":
            entry.status = fault.status
            await _send_simple(send, fault.status, b"<html><body>Service Unavailable</body></html>",
                               [(b"content-type", b"text/html")])
            return
        if fault and fault.kind == "drop_before":
            entry.status = -1
            await _abort(send)
            return

        captured: list[dict] = []

        async def capture_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            if fault and fault.kind == "drop_after":
                captured.append(message)
                return
            await send(message)

        await self.app(scope, replay_receive, capture_send)
        if fault and fault.kind == "drop_after":
            entry.fault = f"drop_after(status={entry.status})"
            await _abort(send)


async def _send_simple(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    names = {h[0] for h in headers}
    merged = [h for h in base if h[0] not in names] + headers
    await send({"type": "http.response.start", "status": status, "headers": merged})
    await send({"type": "http.response.body", "body": body})


async def _abort(send: Any) -> None:
    """Start a response that promises a body, then fail: the server closes the socket mid-message."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")]})
    await send({"type": "http.response.body", "body": b'{"partial":', "more_body": True})
    raise _ClientDisconnect("sandbox fault injection: connection dropped")
