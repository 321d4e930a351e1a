"""Standard Webhooks v1 signatures: the secret format, verification and signing.

Contract (standardwebhooks.com, v1): headers ``webhook-id``, ``webhook-timestamp`` (integer Unix
seconds) and ``webhook-signature`` (space-separated ``v1,<base64>`` entries); the signature is
base64(HMAC-SHA256(key, "<id>.<timestamp>.<raw body>")) where ``key`` is the base64 part of the
secret ``whsec_<base64>``. ``COUPA_WEBHOOK_SECRET`` holds one or more secrets, comma-separated, so a
secret can be rotated without downtime: any one of them verifies.

The signature itself is computed by the ``standardwebhooks`` package (``Webhook.sign``). Its
``Webhook.verify`` is not used, for three reasons (standardwebhooks 1.1.0):

- it checks the timestamp against ``datetime.now()``: the tolerance cannot be tested with an injected
  clock (the published test vector is always "too old"), and "too old" / "too new" are best told
  apart with how far off the clock is, which is what a relay operator needs to fix it;
- malformed input escapes as ``ValueError`` (a signature entry without a comma), ``binascii.Error``
  (bad base64) or ``UnicodeDecodeError`` (a non-UTF-8 body) instead of its verification error;
- it decodes the secret leniently (``b64decode`` without validation drops invalid characters), so a
  mistyped secret would silently become a different key.

Here every malformed input is a :class:`SignatureError` with a one-line reason (the receiver answers
401), comparisons are constant-time (``hmac.compare_digest``) against every ``v1`` entry and every
secret, and no message ever contains a secret or a signature value. Plain Python: no Dagster.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from ..settings import ConfigError

SECRET_PREFIX = "whsec_"
SECRET_ENV_VAR = "COUPA_WEBHOOK_SECRET"
MIN_SECRET_BYTES = 16
TIMESTAMP_TOLERANCE_S = 300
MAX_WEBHOOK_ID_LENGTH = 256
MAX_SIGNATURE_ENTRIES = 32

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"

# Printable ASCII without spaces: what relays send (msg_..., UUIDs) and safe in logs and file names.
_WEBHOOK_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_WEBHOOK_ID_LENGTH}}}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class SignatureError(Exception):
    """The request is not authentically signed; the message is one line, safe to answer and log."""


@dataclass(frozen=True)
class WebhookSecret:
    """One decoded ``whsec_`` secret. ``repr`` never shows the key."""

    key: bytes
    position: int  # 1-based place in COUPA_WEBHOOK_SECRET (which one verified, for logs)

    def __repr__(self) -> str:
        return f"WebhookSecret(#{self.position}, {len(self.key)} bytes)"

    def webhook(self) -> Webhook:
        return Webhook(self.key)


def parse_secrets(value: str | None, variable: str = SECRET_ENV_VAR) -> list[WebhookSecret]:
    """Parse ``whsec_<base64>[,whsec_<base64>...]``. Raises :class:`ConfigError` with one line naming
    the variable and the position of the bad entry, never its value."""
    if value is None or not value.strip():
        raise ConfigError(
            [
                f"{variable} is not set; set it to the relay's signing secret, whsec_<base64> "
                "(several comma-separated while rotating)"
            ]
        )
    secrets: list[WebhookSecret] = []
    entries = value.split(",")
    for position, raw in enumerate(entries, start=1):
        entry = raw.strip()
        where = f"{variable} entry {position} of {len(entries)}"
        if not entry:
            raise ConfigError([f"{where} is empty; remove the stray comma"])
        if not entry.startswith(SECRET_PREFIX):
            raise ConfigError([f"{where} does not start with {SECRET_PREFIX!r}; expected whsec_<base64>"])
        encoded = entry[len(SECRET_PREFIX) :]
        if not encoded:
            raise ConfigError([f"{where} has nothing after {SECRET_PREFIX!r}; expected whsec_<base64>"])
        padded = encoded + "=" * (-len(encoded) % 4)
        if not _BASE64.fullmatch(padded):
            raise ConfigError([f"{where} is not valid base64 after {SECRET_PREFIX!r}"])
        try:
            key = base64.b64decode(padded, validate=True)
        except binascii.Error:
            raise ConfigError([f"{where} is not valid base64 after {SECRET_PREFIX!r}"]) from None
        if len(key) < MIN_SECRET_BYTES:
            raise ConfigError(
                [
                    f"{where} decodes to {len(key)} bytes; use at least {MIN_SECRET_BYTES} random bytes "
                    "(Standard Webhooks secrets are 24 to 64 bytes)"
                ]
            )
        secrets.append(WebhookSecret(key=key, position=position))
    return secrets


def _signature(secret: WebhookSecret, webhook_id: str, timestamp: int, body_text: str) -> bytes:
    signed = secret.webhook().sign(msg_id=webhook_id, timestamp=datetime.fromtimestamp(timestamp, UTC), data=body_text)
    return base64.b64decode(signed.split(",", 1)[1])


def sign(secret: str | WebhookSecret, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` (tests, the README example, the CLI).
    ``secret`` is one ``whsec_`` secret (or a parsed one)."""
    if not _WEBHOOK_ID.fullmatch(webhook_id):
        raise ValueError(f"webhook id must be 1 to {MAX_WEBHOOK_ID_LENGTH} printable ASCII characters without spaces")
    parsed = secret if isinstance(secret, WebhookSecret) else parse_secrets(secret)[0]
    value = base64.b64encode(_signature(parsed, webhook_id, timestamp, body.decode("utf-8"))).decode("ascii")
    return {HEADER_ID: webhook_id, HEADER_TIMESTAMP: str(timestamp), HEADER_SIGNATURE: f"v1,{value}"}


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise SignatureError(f"missing {name} header (Standard Webhooks v1)")
    return value.strip()


def _v1_signatures(header: str) -> list[bytes]:
    """The decodable ``v1,<base64>`` entries; other versions and malformed entries cannot match and
    are skipped (a relay may send signatures of several schemes side by side)."""
    found: list[bytes] = []
    for entry in header.split()[:MAX_SIGNATURE_ENTRIES]:
        version, comma, value = entry.partition(",")
        if version != "v1" or not comma or not _BASE64.fullmatch(value):
            continue
        try:
            found.append(base64.b64decode(value, validate=True))
        except binascii.Error:
            continue
    return found


@dataclass(frozen=True)
class Verified:
    webhook_id: str
    timestamp: int
    secret_position: int


def verify(
    secrets: Sequence[WebhookSecret],
    headers: Mapping[str, str],
    body: bytes,
    now: Callable[[], float] = time.time,
    tolerance_s: int = TIMESTAMP_TOLERANCE_S,
) -> Verified:
    """Check the Standard Webhooks headers against the raw ``body``. ``headers`` must be looked up
    case-insensitively (Starlette's are; so is a dict with lower-case keys). Raises
    :class:`SignatureError` with a one-line reason; never anything else."""
    if not secrets:
        raise SignatureError("no webhook secret configured")
    webhook_id = _header(headers, HEADER_ID)
    if not _WEBHOOK_ID.fullmatch(webhook_id):
        raise SignatureError(
            f"{HEADER_ID} must be 1 to {MAX_WEBHOOK_ID_LENGTH} printable ASCII characters without spaces"
        )
    timestamp_text = _header(headers, HEADER_TIMESTAMP)
    if not _TIMESTAMP.fullmatch(timestamp_text):
        raise SignatureError(f"{HEADER_TIMESTAMP} must be integer Unix seconds")
    timestamp = int(timestamp_text)
    skew = now() - timestamp
    if skew > tolerance_s:
        raise SignatureError(
            f"{HEADER_TIMESTAMP} is {skew:.0f} s older than this receiver's clock (tolerance {tolerance_s} s): "
            "a stale or replayed delivery, or the relay's clock is behind"
        )
    if skew < -tolerance_s:
        raise SignatureError(
            f"{HEADER_TIMESTAMP} is {-skew:.0f} s ahead of this receiver's clock (tolerance {tolerance_s} s): "
            "the relay's clock is ahead"
        )
    provided = _v1_signatures(_header(headers, HEADER_SIGNATURE))
    if not provided:
        raise SignatureError(f"{HEADER_SIGNATURE} has no well-formed v1,<base64> entry")
    try:
        body_text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("body is not UTF-8, so it cannot be a signed JSON event") from None
    for secret in secrets:
        expected = _signature(secret, webhook_id, timestamp, body_text)
        matched = False
        for candidate in provided:  # no early exit per secret: the work does not depend on which matches
            matched |= hmac.compare_digest(expected, candidate)
        if matched:
            return Verified(webhook_id=webhook_id, timestamp=timestamp, secret_position=secret.position)
    raise SignatureError(
        "signature does not match (wrong secret, or the body was changed after signing: sign the raw bytes)"
    )
