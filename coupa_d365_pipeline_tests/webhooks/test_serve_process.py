"""``coupa-d365 webhooks serve`` as a real process: an event answered 2xx survives SIGKILL right
after the answer; the process refuses to start without a valid secret (one line, exit 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from coupa_d365_pipeline.sandbox.server import free_port
from coupa_d365_pipeline.webhooks.receiver import HEALTH_PATH, WEBHOOK_PATH
from coupa_d365_pipeline.webhooks.signing import sign
from coupa_d365_pipeline.webhooks.staging import EventType, WebhookStaging

from .conftest import SECRET, event_body

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "coupa_d365_pipeline.cli", "webhooks"]


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> int:
    """The receiver's clock (from /healthz) once it answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the receiver exited before it was ready"
        try:
            response = httpx.get(url + HEALTH_PATH, timeout=2)
            if response.status_code == 200:
                return int(response.json()["time"])
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the receiver did not answer on {url} within {timeout_s} s")


def wait_for_line(path: Path, needle: str, timeout_s: float = 10) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if needle in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no line with {needle!r} in {path}: {path.read_text()[-2000:]}")


def test_event_answered_2xx_survives_sigkill(tmp_path: Path):
    staging_dir = tmp_path / "webhooks"  # does not exist yet: serve creates it
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "receiver.log"
    env = {**os.environ, "COUPA_WEBHOOK_SECRET": SECRET, "WEBHOOK_STAGING_DIR": str(staging_dir)}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(CLI + ["serve", "--port", str(port)], env=env, stdout=log, stderr=log)
    try:
        now = wait_healthy(url, proc)  # sign with the receiver's clock, whatever this process's says
        with httpx.Client(base_url=url, timeout=10) as client:
            # A rejected request first: its access-log line must carry no secret or signature value.
            body = event_body(coupa_id=1)
            bad = {"content-type": "application/json", **sign(SECRET, "msg_bad", now, body)}
            bad_signature = bad["webhook-signature"]
            bad["webhook-signature"] = bad_signature[:-6] + "AAAAA="
            assert client.post(WEBHOOK_PATH, content=event_body(coupa_id=2), headers=bad).status_code == 401
            line = wait_for_line(log_path, '"webhook_id": "msg_bad"')
            record = json.loads(line)
            assert (record["status"], record["outcome"]) == (401, "rejected")
            log_text = log_path.read_text()
            assert SECRET.removeprefix("whsec_") not in log_text
            assert bad_signature.split(",")[1][:20] not in log_text

            body = event_body("purchase_order.issued", coupa_id=31337)
            headers = {"content-type": "application/json", **sign(SECRET, "msg_survivor", now, body)}
            response = client.post(WEBHOOK_PATH, content=body, headers=headers)
            os.kill(proc.pid, signal.SIGKILL)  # right after the 2xx: nothing gets a chance to flush
        assert response.status_code == 200 and response.json() == {"status": "staged"}
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    staging = WebhookStaging(staging_dir)
    (ready,) = staging.ready(10)
    batch = staging.claim([ready.key])
    (event,) = staging.events(batch.batch_id)
    assert (event.webhook_id, event.event_type, event.coupa_id) == (
        "msg_survivor",
        EventType.PURCHASE_ORDER_ISSUED,
        31337,
    )


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "error: invalid configuration: COUPA_WEBHOOK_SECRET is not set"),
        ("supersecretvalue-no-prefix", "does not start with 'whsec_'"),
    ],
)
def test_serve_refuses_to_start_without_a_valid_secret(tmp_path: Path, secret: str, message: str):
    env = {**os.environ, "COUPA_WEBHOOK_SECRET": secret, "WEBHOOK_STAGING_DIR": str(tmp_path / "w")}
    out = subprocess.run(
        CLI + ["serve", "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    if secret:
        assert secret.removeprefix("whsec_") not in out.stderr
    assert not (tmp_path / "w").exists()
