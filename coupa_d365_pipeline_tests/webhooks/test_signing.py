"""Standard Webhooks v1 signing and verification, and the secret format."""

from __future__ import annotations

import pytest

from coupa_d365_pipeline.settings import ConfigError
from coupa_d365_pipeline.webhooks.signing import SignatureError, parse_secrets, sign, verify

from .conftest import OLD_SECRET, SECRET

# The test vector published with Standard Webhooks (see shared/reference/standard-webhooks.md).
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def vector_headers(**overrides: str) -> dict[str, str]:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    return {**headers, **overrides}


def test_the_published_test_vector_verifies_on_its_own_clock():
    verified = verify(parse_secrets(SECRET), vector_headers(), VECTOR_BODY, now=lambda: VECTOR_TIMESTAMP)
    assert verified.webhook_id == VECTOR_ID and verified.timestamp == VECTOR_TIMESTAMP
    assert sign(SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)["webhook-signature"] == VECTOR_SIGNATURE


def test_tolerance_is_300_seconds_either_way_with_distinct_reasons():
    secrets = parse_secrets(SECRET)
    for offset in (-300, 0, 300):
        verify(secrets, vector_headers(), VECTOR_BODY, now=lambda o=offset: VECTOR_TIMESTAMP + o)
    with pytest.raises(SignatureError, match=r"301 s older than this receiver's clock"):
        verify(secrets, vector_headers(), VECTOR_BODY, now=lambda: VECTOR_TIMESTAMP + 301)
    with pytest.raises(SignatureError, match=r"301 s ahead of this receiver's clock"):
        verify(secrets, vector_headers(), VECTOR_BODY, now=lambda: VECTOR_TIMESTAMP - 301)


@pytest.mark.parametrize(
    ("overrides", "body", "reason"),
    [
        ({"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE"}, VECTOR_BODY, "no well-formed"),
        ({"webhook-signature": "v1g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}, VECTOR_BODY, "no well-formed"),
        ({"webhook-signature": "v1,!!!!"}, VECTOR_BODY, "no well-formed"),
        ({"webhook-signature": "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}, VECTOR_BODY, "no well-formed"),
        ({"webhook-signature": "v1,AAAA"}, VECTOR_BODY, "does not match"),
        ({"webhook-signature": ""}, VECTOR_BODY, "missing webhook-signature"),
        ({"webhook-id": " "}, VECTOR_BODY, "missing webhook-id"),
        ({"webhook-id": "msg with spaces"}, VECTOR_BODY, "printable ASCII"),
        ({"webhook-timestamp": "1614265330.5"}, VECTOR_BODY, "integer Unix seconds"),
        ({"webhook-timestamp": "-1"}, VECTOR_BODY, "integer Unix seconds"),
        ({}, b'{"test": 2432232315}', "does not match"),
        ({}, b"\xff\xfe", "not UTF-8"),
    ],
)
def test_every_malformed_input_is_a_signature_error_never_anything_else(overrides, body, reason):
    with pytest.raises(SignatureError, match=reason) as caught:
        verify(parse_secrets(SECRET), vector_headers(**overrides), body, now=lambda: VECTOR_TIMESTAMP)
    message = str(caught.value)
    assert "\n" not in message and "g0hM9SsE" not in message and "MfKQ9r8G" not in message


def test_several_signature_entries_any_v1_one_matches():
    header = f"v1a,c29tZXRoaW5n v1,AAAA garbage {VECTOR_SIGNATURE}"
    verify(
        parse_secrets(SECRET),
        vector_headers(**{"webhook-signature": header}),
        VECTOR_BODY,
        now=lambda: VECTOR_TIMESTAMP,
    )


def test_rotation_any_configured_secret_verifies():
    secrets = parse_secrets(f"{OLD_SECRET}, {SECRET}")
    verified = verify(secrets, vector_headers(), VECTOR_BODY, now=lambda: VECTOR_TIMESTAMP)
    assert verified.secret_position == 2
    with pytest.raises(SignatureError, match="does not match"):
        verify(parse_secrets(OLD_SECRET), vector_headers(), VECTOR_BODY, now=lambda: VECTOR_TIMESTAMP)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "COUPA_WEBHOOK_SECRET is not set"),
        ("  ", "COUPA_WEBHOOK_SECRET is not set"),
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "entry 1 of 1 does not start with 'whsec_'"),
        ("whsec_", "entry 1 of 1 has nothing after 'whsec_'"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa!w", "entry 1 of 1 is not valid base64"),
        ("whsec_c2hvcnQ=", "decodes to 5 bytes; use at least 16"),
        (f"{SECRET},", "entry 2 of 2 is empty"),
        (f"{SECRET},whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa%w", "entry 2 of 2 is not valid base64"),
    ],
)
def test_malformed_secret_one_line_naming_the_entry_never_its_value(value, reason):
    with pytest.raises(ConfigError, match=reason) as caught:
        parse_secrets(value)
    message = str(caught.value)
    assert "\n" not in message and "MfKQ9r8G" not in message and "c2hvcnQ" not in message


def test_secret_repr_hides_the_key():
    (secret,) = parse_secrets(SECRET)
    assert repr(secret) == "WebhookSecret(#1, 24 bytes)"
