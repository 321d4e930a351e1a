"""The configuration contract: environment variable names, every default, and validation.

One configuration path: the CLI (``load_settings``) and the Dagster resources (``defs/resources.py``,
which lay their explicit config over the environment and call the same ``load_*_settings``) build
their clients with :func:`coupa_client` / :func:`d365_client` from the same validated settings.
Every default the connector uses (URLs, scopes, API version, timeouts, rates, overlaps, retry limit)
is a ``DEFAULT_*`` constant here; nothing else spells one.

Names are stable (outside tests and later issues rely on them). ``load_settings`` collects every
problem at once and raises :class:`ConfigError` whose message names each variable and the fix.
Secret values are held as ``SecretStr`` and never appear in messages. Credentials the environment
leaves unset come from the encrypted credential store (:func:`with_stored_credentials`, called by every
loader that reads one). Plain Python: no Dagster.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from .common import credentials

if TYPE_CHECKING:  # the clients import their defaults from here: import them only when building one
    from .coupa.client import CoupaClient
    from .d365.client import D365Client

DEFAULT_COUPA_SCOPES = (
    "core.invoice.read core.invoice.write core.purchase_order.read core.purchase_order.write "
    "core.supplier.read core.common.read core.accounting.read core.integration.read core.integration.write"
)
DEFAULT_COUPA_API_VERSION = "R39"
DEFAULT_D365_AUTHORITY_URL = "https://login.microsoftonline.com"
DEFAULT_SYNC_DATABASE_URL = "sqlite:///.sync_state/sync.db"
DEFAULT_SYNC_START_DATE = "2026-11-01"
DEFAULT_WEBHOOK_STAGING_DIR = ".sync_state/webhooks"
DEFAULT_COUPA_MAX_REQUESTS_PER_SECOND = 20.0
DEFAULT_COUPA_TOKEN_WARMUP_SECONDS = 5.0
DEFAULT_COUPA_TIMEOUT_S = 30.0  # seconds per Coupa HTTP call (resource config timeout_s)
DEFAULT_D365_TIMEOUT_S = 60.0  # seconds per D365 HTTP call (resource config timeout_s)
DEFAULT_PING_TIMEOUT_S = 30.0  # `coupa-d365 ping --timeout`, both systems
DEFAULT_COUPA_SUPPLIER_OVERLAP_MINUTES = 60
DEFAULT_STATUS_READ_OVERLAP_MINUTES = 240
DEFAULT_RETRY_LIMIT = 500  # unfinished documents of earlier runs re-tried per documents run
DEFAULT_WEBHOOK_SENSOR_INTERVAL_S = 5  # coupa_webhook_sensor: minimum seconds between ticks
DEFAULT_WEBHOOK_BATCH_SIZE = 100  # events per event-driven run
DEFAULT_WEBHOOK_MAX_BATCHES_IN_FLIGHT = 2  # event-driven runs queued or running at once (the rest wait and
# join the next batch: a busy pipeline makes bigger batches instead of a queue of small runs)
DEFAULT_WEBHOOK_MAX_ATTEMPTS = 3  # runs per batch before its events are moved to failed/
DEFAULT_WEBHOOK_PROCESSED_RETENTION_DAYS = 7  # processed events kept (redelivery dedupe), then pruned
DEFAULT_D365_DMF_THRESHOLD = 500  # a documents run writing more new documents than this goes through DMF
DEFAULT_D365_DMF_DATA_PROJECT = "Coupa documents"  # the DMF data project (definition group) packages import into
DEFAULT_D365_BATCH_DOCUMENTS = 20  # new invoices/POs per OData $batch request (one changeset each)
DEFAULT_D365_MAX_CONCURRENCY = 4  # $batch requests in flight at once per documents run
DEFAULT_COUPA_MAX_CONCURRENCY = 4  # Coupa success notices in flight at once (still <= 20 requests/s)
DEFAULT_SYNC_DOCUMENTS_PER_CHUNK = 10_000  # documents a documents run reads and syncs at once (memory bound)

# name -> (required, description shown in errors and --help)
ENV_VARS: dict[str, tuple[bool, str]] = {
    "COUPA_BASE_URL": (True, "Coupa instance URL, e.g. https://acme.coupahost.com"),
    "COUPA_CLIENT_ID": (True, "Coupa OAuth2/OIDC client identifier (Setup > Oauth2/OpenID Connect Clients)"),
    "COUPA_CLIENT_SECRET": (True, "Coupa OAuth client secret"),
    "COUPA_SCOPES": (False, "space-separated Coupa scopes (default: the scopes this connector needs)"),
    "COUPA_API_VERSION": (
        False,
        f"value pinned in the X-COUPA-API-VERSION header (default {DEFAULT_COUPA_API_VERSION})",
    ),
    "COUPA_WEBHOOK_SECRET": (
        False,
        "the webhook relay's Standard Webhooks secret, whsec_<base64>, comma-separated while rotating "
        "(needed by 'coupa-d365 webhooks serve')",
    ),
    "D365_BASE_URL": (True, "F&O environment URL without /data, e.g. https://contoso.operations.dynamics.com"),
    "D365_TENANT_ID": (True, "Microsoft Entra tenant id (GUID or domain)"),
    "D365_CLIENT_ID": (True, "Entra application (client) id registered in F&O"),
    "D365_CLIENT_SECRET": (True, "Entra application client secret"),
    "D365_AUTHORITY_URL": (False, f"Entra authority (default {DEFAULT_D365_AUTHORITY_URL}; sovereign clouds differ)"),
    "D365_DEFAULT_LEGAL_ENTITY": (True, "dataAreaId used when the mapping names none, e.g. usmf"),
    "SYNC_DATABASE_URL": (False, f"SQLAlchemy URL of the connector's own state (default {DEFAULT_SYNC_DATABASE_URL})"),
    "SYNC_START_DATE": (False, f"first daily partition, YYYY-MM-DD (default {DEFAULT_SYNC_START_DATE})"),
    "WEBHOOK_STAGING_DIR": (
        False,
        f"directory where signed webhooks are staged (default {DEFAULT_WEBHOOK_STAGING_DIR})",
    ),
    "COUPA_D365_MAPPING_FILE": (
        False,
        "YAML mapping Coupa charts/suppliers/items to D365 (default: the bundled example)",
    ),
    "COUPA_MAX_REQUESTS_PER_SECOND": (
        False,
        f"client-side Coupa rate limit (default {DEFAULT_COUPA_MAX_REQUESTS_PER_SECOND:g}; Coupa allows 25/s)",
    ),
    "COUPA_SUPPLIER_OVERLAP_MINUTES": (
        False,
        "incremental supplier reads start this many minutes before the "
        f"watermark (default {DEFAULT_COUPA_SUPPLIER_OVERLAP_MINUTES})",
    ),
    "STATUS_READ_OVERLAP_MINUTES": (
        False,
        "D365 status reads start this many minutes before each watermark, "
        "for postings committed late by long transactions "
        f"(default {DEFAULT_STATUS_READ_OVERLAP_MINUTES})",
    ),
    "COUPA_TOKEN_WARMUP_SECONDS": (
        False,
        "wait between minting a Coupa token and first use "
        f"(default {DEFAULT_COUPA_TOKEN_WARMUP_SECONDS:g}, as Coupa asks)",
    ),
    "D365_DMF_THRESHOLD": (
        False,
        "a documents run with more new invoices/POs to write than this imports them through the DMF "
        f"package API instead of OData (default {DEFAULT_D365_DMF_THRESHOLD}; 0 = always DMF)",
    ),
    "D365_DMF_DATA_PROJECT": (
        False,
        f"the D365 DMF data project packages are imported into (default {DEFAULT_D365_DMF_DATA_PROJECT!r})",
    ),
    "D365_BATCH_DOCUMENTS": (
        False,
        "new invoices/POs written per OData $batch request, one atomic changeset each "
        f"(default {DEFAULT_D365_BATCH_DOCUMENTS}; 1 = one request per document)",
    ),
    "D365_MAX_CONCURRENCY": (
        False,
        f"OData $batch requests a documents run keeps in flight at once (default {DEFAULT_D365_MAX_CONCURRENCY})",
    ),
    "COUPA_MAX_CONCURRENCY": (
        False,
        "Coupa success notices (export flag + history record) sent at once, under the 20 requests/s "
        f"limiter (default {DEFAULT_COUPA_MAX_CONCURRENCY})",
    ),
    "SYNC_DOCUMENTS_PER_CHUNK": (
        False,
        "a documents run reads and syncs its window this many documents at a time, so its memory does "
        f"not grow with the window (default {DEFAULT_SYNC_DOCUMENTS_PER_CHUNK}: a 10,000-document backfill "
        "is one chunk; each chunk is its own round of DMF packages or OData batches)",
    ),
    credentials.FILE_ENV_VAR: (
        False,
        "encrypted credential store, read for COUPA_CLIENT_ID/_SECRET, COUPA_WEBHOOK_SECRET and D365_TENANT_ID/"
        f"_CLIENT_ID/_CLIENT_SECRET when unset (default {credentials.DEFAULT_CREDENTIALS_FILE})",
    ),
    credentials.KEY_ENV_VAR: (False, "the store's Fernet key(s), comma-separated: the first encrypts, any decrypts"),
    credentials.KEY_FILE_ENV_VAR: (
        False,
        f"the store's key file, one key per line (default {credentials.DEFAULT_KEY_FILE})",
    ),
}


class ConfigError(ValueError):
    """Raised with one line per missing or invalid variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        if len(problems) == 1:  # one problem: one line (logs, Dagster run failures, CLI)
            super().__init__(f"invalid configuration: {problems[0]}")
        else:
            super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))


class CoupaSettings(BaseModel):
    base_url: str
    client_id: str
    client_secret: SecretStr
    scopes: str = DEFAULT_COUPA_SCOPES
    api_version: str = DEFAULT_COUPA_API_VERSION
    max_requests_per_second: float = DEFAULT_COUPA_MAX_REQUESTS_PER_SECOND
    token_warmup_s: float = DEFAULT_COUPA_TOKEN_WARMUP_SECONDS
    timeout_s: float = DEFAULT_COUPA_TIMEOUT_S  # not an environment variable: resource config / ping flag


class D365Settings(BaseModel):
    base_url: str
    tenant_id: str
    client_id: str
    client_secret: SecretStr
    authority_url: str = DEFAULT_D365_AUTHORITY_URL
    default_legal_entity: str
    timeout_s: float = DEFAULT_D365_TIMEOUT_S  # not an environment variable: resource config / ping flag


class SyncSettings(BaseModel):
    database_url: str = DEFAULT_SYNC_DATABASE_URL
    start_date: date = date.fromisoformat(DEFAULT_SYNC_START_DATE)
    webhook_staging_dir: Path = Path(DEFAULT_WEBHOOK_STAGING_DIR)
    mapping_file: Path | None = None
    webhook_secret: SecretStr | None = None


class Settings(BaseModel):
    coupa: CoupaSettings
    d365: D365Settings
    sync: SyncSettings


def normalize_base_url(value: str, name: str, problems: list[str], *, forbid_path: bool = False) -> str:
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.append(f"{name}={value!r} is not an http(s) URL; expected e.g. {ENV_VARS[name][1].split('e.g. ')[-1]}")
        return value
    if forbid_path and parts.path not in ("", "/"):
        problems.append(
            f"{name} must be the environment root without a path (got path {parts.path!r}); "
            "drop '/data' or anything after the host"
        )
    return value


def normalize_d365_base_url(value: str, problems: list[str] | None = None) -> str:
    """F&O token audience rule: lowercase host, no trailing slash."""
    problems = problems if problems is not None else []
    value = normalize_base_url(value, "D365_BASE_URL", problems, forbid_path=True)
    parts = urlsplit(value)
    return f"{parts.scheme}://{parts.netloc.lower()}" if parts.netloc else value


def parse_start_date(raw: str | None, problems: list[str] | None = None) -> date:
    problems = problems if problems is not None else []
    text = (raw or DEFAULT_SYNC_START_DATE).strip()
    try:
        return date.fromisoformat(text)
    except ValueError:
        problems.append(f"SYNC_START_DATE={text!r} is not a date; use YYYY-MM-DD, e.g. 2026-01-01")
        return date.fromisoformat(DEFAULT_SYNC_START_DATE)


def minutes_setting(name: str, default: timedelta, hint: str, env: Mapping[str, str] | None = None) -> timedelta:
    """An optional whole number of minutes >= 0 from ``env`` (default: the process environment, read
    when called); unset -> ``default``; anything else -> ConfigError naming the variable and ``hint``."""
    raw = ((os.environ if env is None else env).get(name) or "").strip()
    if not raw:
        return default
    try:
        minutes = int(raw)
    except ValueError:
        minutes = -1
    if minutes < 0:
        raise ConfigError(
            [
                f"{name}={raw!r} is not a whole number of minutes >= 0: {hint} (default "
                f"{int(default.total_seconds() // 60)}), or unset it"
            ]
        )
    return timedelta(minutes=minutes)


# name -> (unit, whether 0 is allowed, example/fix hint); shared by the CLI settings and the Dagster resources
NUMBER_SETTINGS: dict[str, tuple[str, bool, str]] = {
    "COUPA_MAX_REQUESTS_PER_SECOND": ("requests per second", False, "e.g. 20 (Coupa allows 25/s)"),
    "COUPA_TOKEN_WARMUP_SECONDS": ("seconds", True, "e.g. 5 (Coupa asks to wait 5 s before using a new token)"),
}


def number_setting(name: str, raw: object, default: float, problems: list[str]) -> float:
    """An optional number from the environment (``raw``: its text, None/empty: ``default``). Anything
    that is not a finite number in range adds one line to ``problems`` naming the variable and the fix."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    unit, zero_ok, hint = NUMBER_SETTINGS[name]
    try:
        value = float(raw.strip() if isinstance(raw, str) else raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        shown = raw.strip() if isinstance(raw, str) else raw
        problems.append(
            f"{name}={shown!r} is not a number of {unit} {bound}: set it to a number, {hint}, "
            f"or unset it for the default {default:g}"
        )
        return default
    return value


def _required(env: Mapping[str, str], name: str, problems: list[str]) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        stored = f" (or store it: coupa-d365 credentials set {name})" if name in credentials.STORED_NAMES else ""
        problems.append(f"{name} is not set: {ENV_VARS[name][1]}{stored}")
    return value


COUPA_CREDENTIALS = ["COUPA_CLIENT_ID", "COUPA_CLIENT_SECRET"]
D365_CREDENTIALS = ["D365_TENANT_ID", "D365_CLIENT_ID", "D365_CLIENT_SECRET"]
WEBHOOK_CREDENTIALS = ["COUPA_WEBHOOK_SECRET"]


def with_stored_credentials(env: Mapping[str, str], names: list[str]) -> Mapping[str, str]:
    """``env`` with the credential store's values for those of ``names`` it leaves unset or empty (a
    variable that is set wins). The one place the store is read for configuration: every loader that
    reads a credential (Coupa, D365, the webhook secret) starts here, so the CLI, the Dagster resources
    and the receiver see the same values. A store that cannot be opened (no key, wrong key, altered
    file) raises ConfigError with one line naming the file and the fix; nothing of it is used."""
    try:
        stored = credentials.stored_values(env, names)
    except credentials.CredentialStoreError as exc:
        raise ConfigError([str(exc)]) from None
    return {**env, **stored} if stored else env


def load_coupa_settings(env: Mapping[str, str], problems: list[str]) -> CoupaSettings:
    env = with_stored_credentials(env, COUPA_CREDENTIALS)
    base = _required(env, "COUPA_BASE_URL", problems)
    return CoupaSettings(
        base_url=normalize_base_url(base, "COUPA_BASE_URL", problems) if base else "",
        client_id=_required(env, "COUPA_CLIENT_ID", problems),
        client_secret=SecretStr(_required(env, "COUPA_CLIENT_SECRET", problems)),
        scopes=" ".join((env.get("COUPA_SCOPES") or DEFAULT_COUPA_SCOPES).replace(",", " ").split()),
        api_version=(env.get("COUPA_API_VERSION") or DEFAULT_COUPA_API_VERSION).strip(),
        max_requests_per_second=number_setting(
            "COUPA_MAX_REQUESTS_PER_SECOND",
            env.get("COUPA_MAX_REQUESTS_PER_SECOND"),
            DEFAULT_COUPA_MAX_REQUESTS_PER_SECOND,
            problems,
        ),
        token_warmup_s=number_setting(
            "COUPA_TOKEN_WARMUP_SECONDS",
            env.get("COUPA_TOKEN_WARMUP_SECONDS"),
            DEFAULT_COUPA_TOKEN_WARMUP_SECONDS,
            problems,
        ),
    )


def load_d365_settings(env: Mapping[str, str], problems: list[str]) -> D365Settings:
    env = with_stored_credentials(env, D365_CREDENTIALS)
    base = _required(env, "D365_BASE_URL", problems)
    legal_entity = _required(env, "D365_DEFAULT_LEGAL_ENTITY", problems).lower()
    if legal_entity and not re.fullmatch(r"[a-z0-9]{1,4}", legal_entity):
        problems.append(
            f"D365_DEFAULT_LEGAL_ENTITY={legal_entity!r} is not a dataAreaId (1-4 letters/digits, e.g. usmf)"
        )
    authority = env.get("D365_AUTHORITY_URL") or DEFAULT_D365_AUTHORITY_URL
    return D365Settings(
        base_url=normalize_d365_base_url(base, problems) if base else "",
        tenant_id=_required(env, "D365_TENANT_ID", problems),
        client_id=_required(env, "D365_CLIENT_ID", problems),
        client_secret=SecretStr(_required(env, "D365_CLIENT_SECRET", problems)),
        authority_url=normalize_base_url(authority, "D365_AUTHORITY_URL", problems),
        default_legal_entity=legal_entity,
    )


def dmf_threshold(env: Mapping[str, str] | None = None) -> int:
    """D365_DMF_THRESHOLD (read when called, i.e. at run start): a whole number >= 0; unset -> the default."""
    raw = ((os.environ if env is None else env).get("D365_DMF_THRESHOLD") or "").strip()
    if not raw:
        return DEFAULT_D365_DMF_THRESHOLD
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(
            [
                f"D365_DMF_THRESHOLD={raw!r} is not a whole number >= 0: set the number of new documents "
                "above which a run imports through DMF (0 = always), or unset it for the default "
                f"{DEFAULT_D365_DMF_THRESHOLD}"
            ]
        )
    return value


def _bounded_int(env: Mapping[str, str] | None, name: str, default: int, low: int, high: int, what: str) -> int:
    raw = ((os.environ if env is None else env).get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(
            [
                f"{name}={raw!r} is not a whole number from {low} to {high}: set {what}, "
                f"or unset it for the default {default}"
            ]
        )
    return value


@dataclass(frozen=True)
class ThroughputSettings:
    """How the OData route of a documents run spreads its work (read at run start)."""

    batch_documents: int = DEFAULT_D365_BATCH_DOCUMENTS
    d365_concurrency: int = DEFAULT_D365_MAX_CONCURRENCY
    coupa_concurrency: int = DEFAULT_COUPA_MAX_CONCURRENCY
    documents_per_chunk: int = DEFAULT_SYNC_DOCUMENTS_PER_CHUNK


def throughput_settings(env: Mapping[str, str] | None = None) -> ThroughputSettings:
    """D365_BATCH_DOCUMENTS, D365_MAX_CONCURRENCY and COUPA_MAX_CONCURRENCY, checked."""
    return ThroughputSettings(
        batch_documents=_bounded_int(
            env, "D365_BATCH_DOCUMENTS", DEFAULT_D365_BATCH_DOCUMENTS, 1, 200, "the documents per $batch request"
        ),
        d365_concurrency=_bounded_int(
            env, "D365_MAX_CONCURRENCY", DEFAULT_D365_MAX_CONCURRENCY, 1, 16, "the $batch requests in flight"
        ),
        coupa_concurrency=_bounded_int(
            env, "COUPA_MAX_CONCURRENCY", DEFAULT_COUPA_MAX_CONCURRENCY, 1, 16, "the Coupa notices in flight"
        ),
        documents_per_chunk=_bounded_int(
            env,
            "SYNC_DOCUMENTS_PER_CHUNK",
            DEFAULT_SYNC_DOCUMENTS_PER_CHUNK,
            1,
            100_000,
            "the documents a documents run reads and syncs at once",
        ),
    )


def dmf_data_project(env: Mapping[str, str] | None = None) -> str:
    """D365_DMF_DATA_PROJECT, else the default data project name."""
    return ((os.environ if env is None else env).get("D365_DMF_DATA_PROJECT") or "").strip() or (
        DEFAULT_D365_DMF_DATA_PROJECT
    )


def webhook_staging_dir(env: Mapping[str, str]) -> Path:
    """WEBHOOK_STAGING_DIR: where the receiver stages events and the sensor picks them up."""
    return Path(env.get("WEBHOOK_STAGING_DIR") or DEFAULT_WEBHOOK_STAGING_DIR)


def sync_database_url(env: Mapping[str, str]) -> str:
    """SYNC_DATABASE_URL, else the local SQLite default (the store validates it when it opens)."""
    return env.get("SYNC_DATABASE_URL") or DEFAULT_SYNC_DATABASE_URL


def mapping_file_path(env: Mapping[str, str]) -> str | None:
    """COUPA_D365_MAPPING_FILE, else None (the bundled example)."""
    return env.get("COUPA_D365_MAPPING_FILE") or None


def load_sync_settings(env: Mapping[str, str], problems: list[str]) -> SyncSettings:
    mapping = mapping_file_path(env)
    if mapping and not Path(mapping).is_file():
        problems.append(f"COUPA_D365_MAPPING_FILE={mapping!r} does not exist; point it at your mapping YAML")
    secret = with_stored_credentials(env, WEBHOOK_CREDENTIALS).get("COUPA_WEBHOOK_SECRET")
    return SyncSettings(
        database_url=sync_database_url(env),
        start_date=parse_start_date(env.get("SYNC_START_DATE"), problems),
        webhook_staging_dir=webhook_staging_dir(env),
        mapping_file=Path(mapping) if mapping else None,
        webhook_secret=SecretStr(secret) if secret else None,
    )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every variable; raise ConfigError listing all problems."""
    env = os.environ if env is None else env
    problems: list[str] = []
    settings = Settings(
        coupa=load_coupa_settings(env, problems),
        d365=load_d365_settings(env, problems),
        sync=load_sync_settings(env, problems),
    )
    if problems:
        raise ConfigError(problems)
    return settings


def env_with(overrides: Mapping[str, object]) -> dict[str, str]:
    """The process environment now, with every override that is set (not None/empty) laid on top as
    text: how the Dagster resources give their explicit config to the ``load_*_settings`` above."""
    env = dict(os.environ)
    env.update({name: str(value) for name, value in overrides.items() if value is not None and value != ""})
    return env


def checked(load: Any, env: Mapping[str, str]) -> Any:
    """``load(env, problems)``, raising ConfigError when it found any problem."""
    problems: list[str] = []
    settings = load(env, problems)
    if problems:
        raise ConfigError(problems)
    return settings


def coupa_client(settings: CoupaSettings, logger: Any = None) -> CoupaClient:
    """The Coupa client for validated settings (the CLI and the Dagster resource both build it here)."""
    from .coupa.client import CoupaClient

    return CoupaClient(
        settings.base_url,
        settings.client_id,
        settings.client_secret.get_secret_value(),
        scopes=settings.scopes,
        api_version=settings.api_version,
        timeout_s=settings.timeout_s,
        max_requests_per_second=settings.max_requests_per_second,
        token_warmup_s=settings.token_warmup_s,
        logger=logger,
    )


def d365_client(settings: D365Settings, logger: Any = None) -> D365Client:
    """The D365 client for validated settings (the CLI and the Dagster resource both build it here)."""
    from .d365.client import D365Client

    return D365Client(
        settings.base_url,
        settings.tenant_id,
        settings.client_id,
        settings.client_secret.get_secret_value(),
        authority_url=settings.authority_url,
        timeout_s=settings.timeout_s,
        logger=logger,
    )
