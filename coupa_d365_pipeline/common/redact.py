"""Keep secrets out of logs and exception text.

Clients register every secret they hold (client secrets, access tokens) here; a logging filter
installed on the root handlers replaces any registered value with ``***``. This is defence in
depth: the clients never format secrets into messages in the first place.
"""

from __future__ import annotations

import logging
import sys
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


def _with_filter(target: logging.Filterer) -> None:
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())


def install_log_redaction(*loggers: logging.Logger) -> None:
    """Attach the filter to the root logger, the given loggers, the connector's and the HTTP
    libraries' loggers, and all their handlers (idempotent). A filter on a logger only sees records
    created on that logger, so handlers get one too: records propagated from any child are cleaned
    on their way out."""
    targets = [
        logging.getLogger(),
        logging.getLogger("coupa_d365_pipeline"),
        logging.getLogger("httpx"),
        logging.getLogger("httpcore"),
        logging.getLogger("uvicorn"),
        *loggers,
    ]
    for logger in targets:
        _with_filter(logger)
        for handler in logger.handlers:
            _with_filter(handler)


class RedactingLogger(logging.LoggerAdapter):
    """Wraps the logger a client or sync run writes to (a Dagster ``context.log`` in runs): message,
    arguments and exception text are redacted before the record exists, so no handler, event log
    or log capture downstream can see a registered secret."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter) -> None:
        super().__init__(logger, {})  # type: ignore[arg-type]

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = " ".join(str(part) for part in (msg, *args))
        exc_info = kwargs.pop("exc_info", None)
        if exc_info:
            import traceback

            error = (
                exc_info
                if isinstance(exc_info, BaseException)
                else (exc_info[1] if isinstance(exc_info, tuple) else sys.exc_info()[1])
            )
            if isinstance(error, BaseException):
                text += "\n" + "".join(traceback.format_exception(error))
        kwargs.pop("stack_info", None)
        self.logger.log(level, redact(text), **kwargs)  # type: ignore[arg-type]


def redacting(logger: logging.Logger | logging.LoggerAdapter | None) -> logging.Logger | logging.LoggerAdapter | None:
    """``logger`` wrapped in :class:`RedactingLogger` (once); None stays None."""
    if logger is None or isinstance(logger, RedactingLogger):
        return logger
    return RedactingLogger(logger)
