"""POST /webhooks/coupa: every rejection path stages nothing; accepted events are staged once."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest

from coupa_d365_pipeline.webhooks.receiver import HEALTH_PATH, MAX_BODY_BYTES, WEBHOOK_PATH
from coupa_d365_pipeline.webhooks.staging import EventType, Place, StagedEvent

from ..conftest import TEST_NOW
from .conftest import OLD_SECRET, ROTATED, SECRET, Receiver, event_body, staged_files


def assert_rejected(response, status: int, reason: str, receiver: Receiver) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert reason in error and "\n" not in error
    assert staged_files(receiver.staging) == []


def test_signed_event_is_staged_durably_and_loads_back(receiver: Receiver):
    body = event_body("invoice.approved", coupa_id=4711)
    response = receiver.post(body, receiver.headers(body, webhook_id="msg_a"))
    assert response.status_code == 200 and response.json() == {"status": "staged"}
    (ready,) = receiver.staging.ready(10)
    event = StagedEvent.model_validate_json(ready.path.read_bytes())
    assert (event.webhook_id, event.event_type, event.coupa_id) == ("msg_a", EventType.INVOICE_APPROVED, 4711)
    assert event.updated_at.isoformat() == "2026-11-03T10:15:00-08:00"
    assert event.received_at.timestamp() == receiver.now
    assert os.listdir(receiver.staging.dir(Place.TMP)) == []


@pytest.mark.parametrize("event_type", [t.value for t in EventType])
def test_every_known_event_type_is_staged(receiver: Receiver, event_type: str):
    body = event_body(event_type)
    assert receiver.post(body).json() == {"status": "staged"}
    assert len(receiver.staging.ready(10)) == 1


def test_charset_parameter_is_accepted(receiver: Receiver):
    body = event_body()
    headers = {**receiver.headers(body), "content-type": "Application/JSON; charset=utf-8"}
    assert receiver.post(body, headers).json() == {"status": "staged"}


def test_replayed_webhook_id_is_a_duplicate_with_exactly_one_file(receiver: Receiver):
    body = event_body()
    assert receiver.post(body).json() == {"status": "staged"}
    again = receiver.post(body)
    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    # Same id, different content (a relay re-signing at a later timestamp): still the same event.
    receiver.now += 60
    later = event_body(updated_at="2026-11-03T11:00:00-08:00")
    assert receiver.post(later).json() == {"status": "duplicate"}
    assert len(staged_files(receiver.staging)) == 1
    # ...also once the sensor has claimed it into a batch.
    receiver.staging.claim([e.key for e in receiver.staging.ready(10)])
    assert receiver.post(later).json() == {"status": "duplicate"}
    assert len([p for p in staged_files(receiver.staging) if p.name != "batch.json"]) == 1


def test_rotation_second_of_two_secrets_is_accepted(make_receiver):
    receiver = make_receiver(ROTATED)
    body = event_body()
    assert receiver.post(body, receiver.headers(body, "msg_new", secret=SECRET)).json() == {"status": "staged"}
    assert receiver.post(body, receiver.headers(body, "msg_old", secret=OLD_SECRET)).json() == {"status": "staged"}
    assert len(receiver.staging.ready(10)) == 2


def test_unknown_event_type_is_ignored_with_200_and_logged(receiver: Receiver, caplog):
    body = event_body("invoice.commented")
    with caplog.at_level(logging.INFO, logger="coupa_d365_pipeline.webhooks.receiver"):
        response = receiver.post(body)
    assert response.status_code == 200 and response.json() == {"status": "ignored"}
    assert staged_files(receiver.staging) == []
    assert "'invoice.commented' is not one the connector syncs" in caplog.text


def test_bad_signature(receiver: Receiver):
    body = event_body()
    headers = receiver.headers(body, secret=OLD_SECRET)
    assert_rejected(receiver.post(body, headers), 401, "signature does not match", receiver)


def test_body_changed_after_signing(receiver: Receiver):
    body = event_body()
    headers = receiver.headers(body)
    tampered = event_body(coupa_id=4712)
    assert_rejected(receiver.post(tampered, headers), 401, "signature does not match", receiver)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header(receiver: Receiver, missing: str):
    body = event_body()
    headers = {k: v for k, v in receiver.headers(body).items() if k != missing}
    assert_rejected(receiver.post(body, headers), 401, f"missing {missing} header", receiver)


def test_stale_timestamp(receiver: Receiver):
    body = event_body()
    assert receiver.post(body, receiver.headers(body, skew=-300)).status_code == 200  # the edge is inside
    body = event_body(coupa_id=2)
    response = receiver.post(body, receiver.headers(body, "msg_2", skew=-301))
    assert response.status_code == 401 and "301 s older" in response.json()["error"]
    assert len(staged_files(receiver.staging)) == 1


def test_future_timestamp(receiver: Receiver):
    body = event_body()
    assert_rejected(receiver.post(body, receiver.headers(body, skew=301)), 401, "301 s ahead", receiver)


@pytest.mark.parametrize(
    "signature",
    ["v1", "v1,", "v1,not base64!", "v1g0hM9SsE", "v1,AAA", " ", "v1,AAAA,BBBB", "\u00e9,\u00e9"],
)
def test_malformed_signature_header(receiver: Receiver, signature: str):
    body = event_body()
    headers = {**receiver.headers(body), "webhook-signature": signature}
    if not signature.isascii():
        headers["webhook-signature"] = signature.encode("latin-1")  # type: ignore[assignment]
    response = receiver.post(body, headers)
    assert response.status_code == 401
    assert staged_files(receiver.staging) == []


@pytest.mark.parametrize("bad_timestamp", ["soon", "1.5e9", "", "-5", "99999999999999999999"])
def test_malformed_timestamp_header(receiver: Receiver, bad_timestamp: str):
    body = event_body()
    headers = {**receiver.headers(body), "webhook-timestamp": bad_timestamp}
    assert receiver.post(body, headers).status_code == 401
    assert staged_files(receiver.staging) == []


def test_oversize_by_content_length_is_refused_before_reading(receiver: Receiver):
    body = b" " * (MAX_BODY_BYTES + 1)
    assert_rejected(receiver.post(body), 413, "the limit is 1048576 bytes", receiver)


def test_exactly_the_limit_is_read_then_judged_on_its_merits(receiver: Receiver):
    body = event_body()
    body = body + b" " * (MAX_BODY_BYTES - len(body))
    assert receiver.post(body).json() == {"status": "staged"}


def test_oversize_chunked_without_content_length(receiver: Receiver):
    body = event_body() + b" " * MAX_BODY_BYTES
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    response = receiver.post(chunks, receiver.headers(body))
    assert response.request.headers.get("content-length") is None
    assert_rejected(response, 413, "exceeds the limit", receiver)


def test_oversize_stream_stops_reading_at_the_limit(receiver: Receiver):
    """Raw ASGI: an endless body; the app must stop asking for chunks right after the limit."""
    chunk = b" " * 65536
    asked = 0
    sent: list[dict] = []

    async def receive():
        nonlocal asked
        asked += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    body = event_body()
    headers = [(k.encode(), v.encode()) for k, v in receiver.headers(body).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": WEBHOOK_PATH,
        "raw_path": WEBHOOK_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(asyncio.wait_for(receiver.app(scope, receive, send), 10))
    assert sent[0]["status"] == 413
    assert asked == MAX_BODY_BYTES // len(chunk) + 1
    assert staged_files(receiver.staging) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "body is not valid JSON"),
        (b"", "body is not valid JSON"),
        (b"[1, 2]", "body does not match the event schema"),
        (b'"invoice.approved"', "body does not match the event schema"),
        (
            json.dumps({"type": "invoice.approved", "timestamp": "2026-11-03T18:15:02Z"}).encode(),
            "data: Field required",
        ),
    ],
)
def test_malformed_json(receiver: Receiver, body: bytes, reason: str):
    assert_rejected(receiver.post(body), 400, reason, receiver)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (json.dumps({"type": "invoice.approved", "timestamp": "2026-11-03T18:15:02Z", "data": {}}).encode(), "data.id"),
        (event_body(coupa_id="4711"), "data.id: Input should be a valid integer"),
        (event_body(coupa_id=47.5), "data.id"),
        (event_body(coupa_id=True), "data.id"),
        (event_body(coupa_id=-3), "data.id: Input should be greater than 0"),
        (event_body(coupa_id=0), "data.id: Input should be greater than 0"),
        (event_body(coupa_id=2**63), "data.id: Input should be less than"),
        (event_body(coupa_id=None), "data.id"),
        (event_body(updated_at="yesterday"), "data.updated_at"),
        (event_body(updated_at="2026-11-03T10:15:00"), "data.updated_at: Input should have timezone info"),
        (event_body(updated_at="2026-02-30T10:15:00Z"), "data.updated_at"),
        (event_body(updated_at=1762193700), "data.updated_at"),
        (event_body(timestamp="not a date"), "timestamp"),
        (event_body(event_type=""), "type"),
        (event_body(event_type=7), "type"),
    ],
)
def test_schema_violation(receiver: Receiver, body: bytes, reason: str):
    response = receiver.post(body)
    assert_rejected(response, 400, reason, receiver)
    assert response.json()["error"].startswith("body does not match the event schema")


def test_schema_reason_does_not_echo_the_value(receiver: Receiver):
    body = event_body(coupa_id="secret-looking-value-123")
    response = receiver.post(body)
    assert response.status_code == 400 and "secret-looking-value-123" not in response.text


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonp"])
def test_wrong_content_type(receiver: Receiver, content_type: str | None):
    body = event_body()
    headers = {k: v for k, v in receiver.headers(body).items() if k != "content-type"}
    if content_type is not None:
        headers["content-type"] = content_type
    assert_rejected(receiver.post(body, headers), 415, "Content-Type must be application/json", receiver)


def test_checks_run_cheapest_first(receiver: Receiver):
    """Oversize beats content type beats signature beats schema."""
    unsigned = {"content-type": "text/plain"}
    assert receiver.post(b" " * (MAX_BODY_BYTES + 1), unsigned).status_code == 413
    assert receiver.post(b"{not json", unsigned).status_code == 415
    assert receiver.post(b"{not json", {"content-type": "application/json"}).status_code == 401


def test_staging_failure_is_503_never_2xx(receiver: Receiver, monkeypatch):
    def disk_full(event):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(receiver.staging, "stage", disk_full)
    response = receiver.post(event_body())
    assert response.status_code == 503
    assert response.json() == {"error": "could not stage the event durably (No space left on device); retry later"}


def test_missing_staging_directory_is_503_and_unhealthy(receiver: Receiver, tmp_path: Path):
    for place in Place:
        receiver.staging.dir(place).rmdir()
    assert receiver.post(event_body()).status_code == 503
    health = receiver.client.get(HEALTH_PATH)
    assert health.status_code == 503 and "missing or not writable" in health.json()["error"]


def test_healthz_reports_the_receivers_clock(receiver: Receiver):
    health = receiver.client.get(HEALTH_PATH)
    assert health.status_code == 200 and health.json() == {"status": "ok", "time": int(receiver.now)}


def test_other_methods_and_paths(receiver: Receiver):
    assert receiver.client.get(WEBHOOK_PATH).status_code == 405
    assert receiver.client.post("/webhooks/other", content=b"{}").status_code == 404


def test_access_log_one_json_line_per_request_without_secrets(receiver: Receiver, caplog):
    # the receiver's injected clock, not the calendar: the line's "ts" once held "4711" (the body's id)
    receiver.now = TEST_NOW.timestamp()
    body = event_body()
    headers = receiver.headers(body, webhook_id="msg_logged")
    with caplog.at_level(logging.INFO, logger=receiver.logger.name):
        receiver.post(body, headers)
        receiver.post(body, headers)
        receiver.post(body, {**headers, "webhook-signature": "v1,AAAA"})
        receiver.client.get(HEALTH_PATH)
    lines = [r.getMessage() for r in caplog.records if r.name == receiver.logger.name]
    records = [json.loads(line) for line in lines]
    assert [(r["status"], r["outcome"]) for r in records] == [
        (200, "staged"),
        (200, "duplicate"),
        (401, "rejected"),
        (200, None),
    ]
    first = records[0]
    assert (first["method"], first["path"], first["webhook_id"], first["event_type"]) == (
        "POST",
        WEBHOOK_PATH,
        "msg_logged",
        "invoice.approved",
    )
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert {r["ts"] for r in records} == {receiver.now}  # stamped by the receiver's clock
    assert "signature does not match" in records[2]["reason"]
    signature_value = headers["webhook-signature"].split(",", 1)[1]
    for line in lines:
        assert "\n" not in line
        assert SECRET not in line and SECRET.removeprefix("whsec_") not in line
        assert signature_value not in line and "AAAA" not in line
        assert "4711" not in line  # no body content either
