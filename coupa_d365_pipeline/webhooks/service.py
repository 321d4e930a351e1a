"""Running the receiver as a service (``coupa-d365 webhooks serve``) and signing from the command line
(``coupa-d365 webhooks sign``). Plain Python: no Dagster."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..common.redact import install_log_redaction, register_secret
from ..settings import WEBHOOK_CREDENTIALS, webhook_staging_dir, with_stored_credentials
from .receiver import ACCESS_LOGGER, HEALTH_PATH, WEBHOOK_PATH, create_app
from .signing import SECRET_ENV_VAR, WebhookSecret, parse_secrets, sign
from .staging import WebhookStaging


@dataclass(frozen=True)
class ReceiverConfig:
    secrets: list[WebhookSecret]
    staging_dir: Path


def load_receiver_config(env: Mapping[str, str]) -> ReceiverConfig:
    """``COUPA_WEBHOOK_SECRET`` (required, validated; from the credential store when the variable is
    unset) and ``WEBHOOK_STAGING_DIR``; raises ConfigError with one line when the secret is missing or
    malformed, or the store cannot be opened."""
    raw = with_stored_credentials(env, WEBHOOK_CREDENTIALS).get(SECRET_ENV_VAR)
    for entry in (raw or "").split(","):
        register_secret(entry.strip())  # defence in depth: masked if anything ever logs it
    secrets = parse_secrets(raw)
    return ReceiverConfig(secrets=secrets, staging_dir=webhook_staging_dir(env))


def _configure_logging() -> None:
    access = logging.getLogger(ACCESS_LOGGER)
    if not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))  # the line is JSON already
        access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    package = logging.getLogger("coupa_d365_pipeline")
    if not package.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        package.addHandler(handler)
    package.setLevel(logging.INFO)
    install_log_redaction(access, package)


def serve(host: str, port: int, env: Mapping[str, str]) -> int:
    import uvicorn

    config = load_receiver_config(env)
    staging = WebhookStaging(config.staging_dir).ensure()
    _configure_logging()
    app = create_app(staging, config.secrets)
    print(
        f"webhook receiver: POST http://{host}:{port}{WEBHOOK_PATH}, GET {HEALTH_PATH}; "
        f"{len(config.secrets)} secret(s); staging in {staging.root.resolve()}",
        file=sys.stderr,
        flush=True,
    )
    # uvicorn's own access log is off: ours (one JSON line per request) replaces it.
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info", proxy_headers=False)
    return 0


def sign_command(webhook_id: str, timestamp: int | None, body: bytes, env: Mapping[str, str]) -> str:
    """The three headers, one ``name: value`` per line, signed with the first configured secret."""
    secrets = parse_secrets(with_stored_credentials(env, WEBHOOK_CREDENTIALS).get(SECRET_ENV_VAR))
    headers = sign(secrets[0], webhook_id, int(time.time()) if timestamp is None else timestamp, body)
    return "\n".join(f"{name}: {value}" for name, value in headers.items())
