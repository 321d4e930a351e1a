"""The webhook receiver: an ASGI app (Starlette) that verifies Standard Webhooks signatures and stages
each accepted Coupa event durably for the sensor.

``POST /webhooks/coupa`` checks, cheapest first, and answers with a one-line reason at the first
failure (nothing is staged unless every check passed):

====  =====================================================================================
413   body over 1 MiB: refused on ``Content-Length`` before reading, else while streaming
415   ``Content-Type`` is not ``application/json`` (parameters such as ``charset`` allowed)
401   missing or malformed headers, timestamp more than 300 s from now, signature mismatch
400   not JSON, or not ``{"type", "timestamp", "data": {"id", "updated_at"}}``
200   ``{"status": "staged"}`` once the event is on disk (fsynced); ``"duplicate"`` for a webhook-id
      seen before; ``"ignored"`` for an event type the connector does not sync (so relays stop)
503   the event could not be staged (disk full, permissions): the relay should retry
====  =====================================================================================

``GET /healthz`` answers 200 with this receiver's clock (to compare with the relay's) while the
staging directory is writable, else 503. One JSON access-log line per request (logger
``coupa_d365_pipeline.webhooks.access``) — never a secret, a signature or the body. Plain Python:
no Dagster.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .signing import HEADER_ID, SignatureError, WebhookSecret, verify
from .staging import CoupaId, EventType, Place, StagedEvent, WebhookStaging

WEBHOOK_PATH = "/webhooks/coupa"
HEALTH_PATH = "/healthz"
MAX_BODY_BYTES = 1024 * 1024
ACCESS_LOGGER = "coupa_d365_pipeline.webhooks.access"
_LOG_KEY = "coupa_d365_pipeline.access"  # per-request access-log fields in the ASGI scope
_MAX_LOGGED_ID = 100


class EventData(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    id: CoupaId
    updated_at: AwareDatetime


class EventEnvelope(BaseModel):
    """The body a relay sends. ``type`` is checked against :class:`EventType` after validation, so
    an unknown type in an otherwise valid envelope is ignored rather than rejected."""

    model_config = ConfigDict(strict=True, extra="ignore")
    type: str = Field(min_length=1, max_length=200)
    timestamp: AwareDatetime
    data: EventData


class Rejection(Exception):
    def __init__(self, status: int, reason: str, outcome: str = "rejected") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.outcome = outcome


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _schema_reason(exc: ValidationError) -> str:
    """Where and what, never the offending value (it is attacker-controlled and may be large)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:3]:
        if error["type"] == "json_invalid":
            return _one_line(f"body is not valid JSON: {error['msg']}")
        location = ".".join(str(part) for part in error["loc"]) or "body"
        parts.append(f"{location}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return _one_line("body does not match the event schema: " + "; ".join(parts) + (f" (+{more} more)" if more else ""))


def _check_content_type(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise Rejection(415, "Content-Type must be application/json")


def _check_declared_length(request: Request) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.strip().isdigit():
        raise Rejection(400, "Content-Length is not a number")
    if int(declared) > MAX_BODY_BYTES:
        raise Rejection(413, f"body is {int(declared)} bytes; the limit is {MAX_BODY_BYTES} bytes (1 MiB)")


async def _read_body(request: Request) -> bytes:
    """The raw body, refusing (413) as soon as it passes the limit, whatever Content-Length said."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise Rejection(413, f"body exceeds the limit of {MAX_BODY_BYTES} bytes (1 MiB)")
            chunks.append(chunk)
    except ClientDisconnect:
        raise Rejection(400, "client disconnected before sending the whole body", outcome="disconnected") from None
    return b"".join(chunks)


def _parse_event(body: bytes) -> EventEnvelope:
    try:
        return EventEnvelope.model_validate_json(body)
    except ValidationError as exc:
        raise Rejection(400, _schema_reason(exc)) from None


class AccessLog:
    """Pure ASGI middleware: one JSON line per request, whatever route answered (404/405 too)."""

    def __init__(self, app: ASGIApp, logger: logging.Logger, now: Callable[[], float] = time.time) -> None:
        self.app = app
        self.logger = logger
        self.now = now  # the receiver's clock, the one its timestamp tolerance uses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        scope[_LOG_KEY] = fields
        status = {"code": 500}

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            webhook_id = next((v for k, v in scope.get("headers", []) if k == HEADER_ID.encode()), None)
            record = {
                "ts": round(self.now(), 3),
                "method": scope.get("method"),
                "path": scope.get("path"),
                "status": status["code"],
                "webhook_id": webhook_id.decode("latin-1")[:_MAX_LOGGED_ID] if webhook_id is not None else None,
                "event_type": fields.get("event_type"),
                "outcome": fields.get("outcome"),
                "reason": fields.get("reason"),
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "client": scope["client"][0] if scope.get("client") else None,
            }
            self.logger.info(json.dumps(record, ensure_ascii=True))


def create_app(
    staging: WebhookStaging,
    secrets: Sequence[WebhookSecret],
    now: Callable[[], float] = time.time,
    logger: logging.Logger | None = None,
) -> ASGIApp:
    """The receiver. ``secrets`` come from :func:`signing.parse_secrets`; ``now`` is the clock for
    the timestamp tolerance and the access log (tests inject one)."""
    if not secrets:
        raise ValueError("the webhook receiver needs at least one secret")
    secrets = list(secrets)
    access_logger = logger or logging.getLogger(ACCESS_LOGGER)
    problem_logger = logging.getLogger(__name__)

    async def receive_event(request: Request) -> JSONResponse:
        fields: dict[str, Any] = request.scope.setdefault(_LOG_KEY, {})
        try:
            _check_declared_length(request)
            _check_content_type(request)
            body = await _read_body(request)
            try:
                verified = verify(secrets, request.headers, body, now=now)
            except SignatureError as exc:
                raise Rejection(401, str(exc)) from None
            envelope = _parse_event(body)
            fields["event_type"] = envelope.type[:100]
            try:
                event_type = EventType(envelope.type)
            except ValueError:
                problem_logger.info(
                    "webhook %s: event type %r is not one the connector syncs; ignored",
                    verified.webhook_id,
                    envelope.type[:100],
                )
                fields["outcome"] = "ignored"
                return JSONResponse({"status": "ignored"}, status_code=200)
            event = StagedEvent(
                webhook_id=verified.webhook_id,
                event_type=event_type,
                coupa_id=envelope.data.id,
                updated_at=envelope.data.updated_at,
                event_timestamp=envelope.timestamp,
                received_at=datetime.fromtimestamp(now(), UTC),
            )
            try:
                outcome = await run_in_threadpool(staging.stage, event)
            except OSError as exc:
                problem_logger.error("webhook %s could not be staged: %s", verified.webhook_id, exc)
                raise Rejection(
                    503,
                    f"could not stage the event durably ({exc.strerror or type(exc).__name__}); retry later",
                    outcome="staging_failed",
                ) from None
            fields["outcome"] = outcome.value
            return JSONResponse({"status": outcome.value}, status_code=200)
        except Rejection as rejection:
            fields["outcome"] = rejection.outcome
            fields["reason"] = rejection.reason
            return JSONResponse({"error": rejection.reason}, status_code=rejection.status)

    async def health(request: Request) -> JSONResponse:
        incoming = staging.dir(Place.INCOMING)
        if not (incoming.is_dir() and os.access(incoming, os.W_OK | os.X_OK)):
            return JSONResponse(
                {"status": "unavailable", "error": f"staging directory {incoming} is missing or not writable"},
                status_code=503,
            )
        return JSONResponse({"status": "ok", "time": int(now())})

    app = Starlette(
        routes=[
            Route(WEBHOOK_PATH, receive_event, methods=["POST"]),
            Route(HEALTH_PATH, health, methods=["GET"]),
        ]
    )
    return AccessLog(app, access_logger, now)
