"""Signed Coupa webhooks to the real receiver (served on loopback), as a relay would send them: a
share delivered twice with the same ``webhook-id`` (a redelivery), all in shuffled order. The
receiver stages them; ``coupa_webhook_sensor`` in ``dagster-daemon`` turns the staged batches into runs."""

from __future__ import annotations

import base64
import json
import random
import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ..sandbox.server import SandboxServer
from ..webhooks.receiver import WEBHOOK_PATH, create_app
from ..webhooks.signing import parse_secrets, sign
from ..webhooks.staging import Place, WebhookStaging


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass
class Delivery:
    webhook_id: str
    body: bytes
    coupa_id: int


class WebhookRelay:
    """The receiver app on a loopback server plus the relay that posts signed events to it."""

    def __init__(self, staging_dir: Path, secret: str) -> None:
        self.staging = WebhookStaging(staging_dir).ensure()
        self._secret = secret
        self.server = SandboxServer(create_app(self.staging, parse_secrets(secret))).start()
        self.answers: Counter[str] = Counter()  # receiver answers: "staged", "duplicate", "http <status>"

    def plan(self, invoices: list[dict[str, Any]], share_twice: float, rng: random.Random) -> list[Delivery]:
        """``invoice.approved`` for each invoice; ``share_twice`` of them twice; shuffled."""
        deliveries: list[Delivery] = []
        for invoice in invoices:
            body = json.dumps(
                {
                    "type": "invoice.approved",
                    "timestamp": datetime.now(UTC).isoformat(),
                    "data": {"id": invoice["id"], "updated_at": str(invoice["updated-at"])},
                }
            ).encode()
            delivery = Delivery(f"msg_{uuid.UUID(int=rng.getrandbits(128)).hex}", body, int(invoice["id"]))
            deliveries.append(delivery)
            if rng.random() < share_twice:
                deliveries.append(delivery)
        rng.shuffle(deliveries)
        return deliveries

    def deliver(self, deliveries: list[Delivery]) -> None:
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            for delivery in deliveries:
                headers = {"content-type": "application/json"}
                headers |= sign(self._secret, delivery.webhook_id, int(time.time()), delivery.body)
                answer = client.post(WEBHOOK_PATH, content=delivery.body, headers=headers)
                if answer.status_code == 200:
                    self.answers[str(answer.json().get("status"))] += 1
                else:
                    self.answers[f"http {answer.status_code}"] += 1

    def backlog(self) -> int:
        """Events the sensor has not finished: waiting in incoming/ or in a batch."""
        return self.staging.count(Place.INCOMING) + self.staging.count(Place.BATCHES)

    def counts(self) -> dict[str, int]:
        return {place.value: self.staging.count(place) for place in (Place.PROCESSED, Place.FAILED)}

    def stop(self) -> None:
        self.server.stop()
