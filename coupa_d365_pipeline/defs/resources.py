"""Dagster resources: thin config + lifecycle shells around the plain-Python clients."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from ..common.redact import install_log_redaction, redacting
from ..coupa.client import CoupaClient
from ..d365.client import D365Client
from ..settings import (
    DEFAULT_COUPA_API_VERSION, DEFAULT_COUPA_MAX_REQUESTS_PER_SECOND, DEFAULT_COUPA_SCOPES,
    DEFAULT_COUPA_TOKEN_WARMUP_SECONDS, DEFAULT_D365_AUTHORITY_URL, DEFAULT_SYNC_DATABASE_URL, ConfigError,
    normalize_base_url, normalize_d365_base_url, number_setting,
)
from ..state.store import SyncStore


def optional_setting(configured: Any, env_name: str, default: Any) -> Any:
    """Optional settings: explicit resource config wins, else the environment *at run start*, else the
    default (read when the run starts, never when the code location is imported)."""
    if configured not in (None, ""):
        return configured
    value = os.environ.get(env_name)
    return value if value not in (None, "") else default


class _ClientResource(dg.ConfigurableResource):
    """Lifecycle shared by the API resources: one client per run (per step process), closed after."""

    _client: Any = PrivateAttr(default=None)

    def make_client(self, logger: Any = None) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        install_log_redaction()
        self._client = self.make_client(logger=redacting(context.log))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()

    def _live_client(self) -> Any:
        if self._client is None:
            raise RuntimeError(f"{type(self).__name__} is used outside a Dagster run; call make_client() instead")
        return self._client


class CoupaResource(_ClientResource):
    """Coupa Core API (OAuth client credentials). Configure through COUPA_* variables."""

    base_url: str
    client_id: str
    client_secret: str
    scopes: str | None = None                      # default: COUPA_SCOPES, else the connector's scope list
    api_version: str | None = None                 # default: COUPA_API_VERSION, else R39
    timeout_s: float = 30.0
    max_requests_per_second: float | None = None   # default: COUPA_MAX_REQUESTS_PER_SECOND, else 20
    token_warmup_s: float | None = None            # default: COUPA_TOKEN_WARMUP_SECONDS, else 5

    def make_client(self, logger=None) -> CoupaClient:
        problems: list[str] = []
        base_url = normalize_base_url(self.base_url, "COUPA_BASE_URL", problems)
        if not self.client_id or not self.client_secret:
            problems.append("COUPA_CLIENT_ID and COUPA_CLIENT_SECRET must both be set")
        rate = number_setting("COUPA_MAX_REQUESTS_PER_SECOND", optional_setting(
            self.max_requests_per_second, "COUPA_MAX_REQUESTS_PER_SECOND", None),
            DEFAULT_COUPA_MAX_REQUESTS_PER_SECOND, problems)
        warmup = number_setting("COUPA_TOKEN_WARMUP_SECONDS", optional_setting(
            self.token_warmup_s, "COUPA_TOKEN_WARMUP_SECONDS", None), DEFAULT_COUPA_TOKEN_WARMUP_SECONDS, problems)
        if problems:
            raise ConfigError(problems)
        return CoupaClient(
            base_url, self.client_id, self.client_secret,
            scopes=optional_setting(self.scopes, "COUPA_SCOPES", DEFAULT_COUPA_SCOPES),
            api_version=optional_setting(self.api_version, "COUPA_API_VERSION", DEFAULT_COUPA_API_VERSION),
            timeout_s=self.timeout_s,
            max_requests_per_second=rate, token_warmup_s=warmup,
            logger=logger)

    @property
    def client(self) -> CoupaClient:
        return self._live_client()


class D365Resource(_ClientResource):
    """Dynamics 365 F&O OData with Entra client credentials. Configure through D365_* variables."""

    base_url: str
    tenant_id: str
    client_id: str
    client_secret: str
    authority_url: str | None = None               # default: D365_AUTHORITY_URL, else login.microsoftonline.com
    default_legal_entity: str
    timeout_s: float = 60.0

    def make_client(self, logger=None) -> D365Client:
        problems: list[str] = []
        base_url = normalize_d365_base_url(self.base_url, problems)
        authority = normalize_base_url(optional_setting(self.authority_url, "D365_AUTHORITY_URL",
                                                        DEFAULT_D365_AUTHORITY_URL), "D365_AUTHORITY_URL", problems)
        if problems:
            raise ConfigError(problems)
        return D365Client(base_url, self.tenant_id, self.client_id, self.client_secret,
                          authority_url=authority, timeout_s=self.timeout_s, logger=logger)

    @property
    def client(self) -> D365Client:
        return self._live_client()


class SyncStateResource(dg.ConfigurableResource):
    """The connector's own database (SYNC_DATABASE_URL): staged documents, watermarks, later the ledger."""

    database_url: str | None = None                # default: SYNC_DATABASE_URL, else a local SQLite file

    _store: SyncStore | None = PrivateAttr(default=None)

    @property
    def resolved_url(self) -> str:
        return optional_setting(self.database_url, "SYNC_DATABASE_URL", DEFAULT_SYNC_DATABASE_URL)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._store = SyncStore(self.resolved_url)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.dispose()

    @property
    def store(self) -> SyncStore:
        if self._store is None:
            self._store = SyncStore(self.resolved_url)
        return self._store


class MappingResource(dg.ConfigurableResource):
    """The Coupa -> D365 mapping file (COUPA_D365_MAPPING_FILE; default: the bundled example)."""

    mapping_file: str | None = None                # default: COUPA_D365_MAPPING_FILE, else the bundled example

    @property
    def resolved_path(self) -> str | None:
        return optional_setting(self.mapping_file, "COUPA_D365_MAPPING_FILE", None)

    def load(self):
        from ..mapping.config import load_mapping

        return load_mapping(self.resolved_path)
