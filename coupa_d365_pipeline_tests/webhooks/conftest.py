"""Fixtures for the webhook receiver: secrets, a staging directory, an app on an injected clock."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coupa_d365_pipeline.webhooks.receiver import WEBHOOK_PATH, create_app
from coupa_d365_pipeline.webhooks.signing import parse_secrets, sign
from coupa_d365_pipeline.webhooks.staging import WebhookStaging

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks documentation's test secret
OLD_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"  # "ABCDEFGHIJKLMNOPQRSTUVWX"
ROTATED = f"{OLD_SECRET},{SECRET}"


def staged_files(staging: WebhookStaging) -> list[Path]:
    """Every file anywhere under the staging root (tmp, incoming, batches, processed, failed)."""
    return sorted(p for p in staging.root.rglob("*") if p.is_file())


def event_body(
    event_type: str = "invoice.approved",
    coupa_id: Any = 4711,
    updated_at: Any = "2026-11-03T10:15:00-08:00",
    timestamp: Any = "2026-11-03T18:15:02Z",
    **extra: Any,
) -> bytes:
    return json.dumps(
        {"type": event_type, "timestamp": timestamp, "data": {"id": coupa_id, "updated_at": updated_at}, **extra}
    ).encode()


class AsgiClient:
    """A synchronous client calling the ASGI app in-process (httpx's ASGI transport, one event loop).
    Request bodies given as an iterable are streamed chunk by chunk, without Content-Length."""

    def __init__(self, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://receiver.test")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        content = kwargs.get("content")
        if content is not None and not isinstance(content, bytes | str):
            chunks = list(content)

            async def stream() -> Any:
                for chunk in chunks:
                    yield chunk

            kwargs["content"] = stream()
        return self.loop.run_until_complete(self.client.request(method, path, **kwargs))

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


class Receiver:
    """An app on a fixed injected clock (taken from the real one once, so nothing depends on a date)."""

    def __init__(self, root: Path, secrets: str = SECRET) -> None:
        self.now = float(int(time.time()))
        self.staging = WebhookStaging(root).ensure()
        self.logger = logging.getLogger(f"test.webhooks.access.{id(self)}")
        self.app = create_app(self.staging, parse_secrets(secrets), now=lambda: self.now, logger=self.logger)
        self.client = AsgiClient(self.app)

    def headers(self, body: bytes, webhook_id: str = "msg_1", secret: str = SECRET, skew: int = 0) -> dict[str, str]:
        return {"content-type": "application/json", **sign(secret, webhook_id, int(self.now) + skew, body)}

    def post(self, body: bytes, headers: dict[str, str] | None = None, **kwargs: Any):
        return self.client.post(
            WEBHOOK_PATH, content=body, headers=self.headers(body) if headers is None else headers, **kwargs
        )


@pytest.fixture
def make_receiver(tmp_path: Path) -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(secrets: str = SECRET) -> Receiver:
        made.append(Receiver(tmp_path / f"staging{len(made)}", secrets))
        return made[-1]

    yield make
    for receiver in made:
        receiver.client.close()


@pytest.fixture
def receiver(make_receiver: Callable[..., Receiver]) -> Receiver:
    return make_receiver()
