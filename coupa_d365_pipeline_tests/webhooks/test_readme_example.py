"""The README's worked signing example is correct: a relay configurator can check against it."""

from __future__ import annotations

import re
from pathlib import Path

from coupa_d365_pipeline.webhooks.receiver import EventEnvelope
from coupa_d365_pipeline.webhooks.signing import parse_secrets, sign, verify

README = Path(__file__).resolve().parents[2] / "README.md"


def webhooks_section() -> str:
    text = README.read_text()
    return text[text.index("\n## Webhooks\n") :].split("\n## ", 2)[1]


def test_readme_worked_example_signature_is_correct():
    section = webhooks_section()
    (secret,) = re.findall(r"^COUPA_WEBHOOK_SECRET=(whsec_\S+)$", section, flags=re.M)
    (request,) = re.findall(r"```http\n(.*?)\n```", section, flags=re.S)
    head, body_text = request.split("\n\n", 1)
    request_line, *header_lines = head.splitlines()
    assert request_line == "POST /webhooks/coupa HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in header_lines)
    body = body_text.encode()
    assert f"{len(body)} bytes" in section

    expected = sign(secret, headers["webhook-id"], int(headers["webhook-timestamp"]), body)
    assert headers["webhook-signature"] == expected["webhook-signature"]
    verify(parse_secrets(secret), headers, body, now=lambda: int(headers["webhook-timestamp"]))
    assert f"`{headers['webhook-id']}.{headers['webhook-timestamp']}.`" in section
    assert headers["content-type"] == "application/json"
    EventEnvelope.model_validate_json(body)  # the example body is a valid event
    assert body.decode() in section.split("```bash")[2]  # the curl example sends the same body
