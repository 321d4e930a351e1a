"""Keep secrets out of logs and exception text.

Clients register every secret they hold (client secrets, access tokens) here; a logging filter
installed on the root handlers replaces any registered value with ``***``. This is defence in
depth: the clients never format secrets into messages in the first place.
"""

from __future__ import annotations

import logging
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
MASK = "***"


def register_secret(value: str | None) -> None:
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is not ours to fix here
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


_installed = False


def install_log_redaction() -> None:
    """Attach the filter to the root logger and its handlers (idempotent)."""
    global _installed
    root = logging.getLogger()
    flt = RedactingFilter()
    if not _installed:
        root.addFilter(flt)
        _installed = True
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
