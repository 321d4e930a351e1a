"""Dagster resources: thin config + lifecycle shells around the plain-Python clients."""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from .coupa.client import CoupaClient
from .d365.client import D365Client
from .settings import (
    DEFAULT_COUPA_API_VERSION, DEFAULT_COUPA_SCOPES, DEFAULT_D365_AUTHORITY_URL, DEFAULT_SYNC_DATABASE_URL,
    ConfigError, normalize_base_url, normalize_d365_base_url,
)
from .state.store import SyncStore


class _ClientResource(dg.ConfigurableResource):
    """Lifecycle shared by the API resources: one client per run (per step process), closed after."""

    _client: Any = PrivateAttr(default=None)

    def make_client(self, logger: Any = None) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._client = self.make_client(logger=context.log)

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
    scopes: str = DEFAULT_COUPA_SCOPES
    api_version: str = DEFAULT_COUPA_API_VERSION
    timeout_s: float = 30.0
    max_requests_per_second: float = 20.0
    token_warmup_s: float = 5.0

    def make_client(self, logger=None) -> CoupaClient:
        problems: list[str] = []
        base_url = normalize_base_url(self.base_url, "COUPA_BASE_URL", problems)
        if not self.client_id or not self.client_secret:
            problems.append("COUPA_CLIENT_ID and COUPA_CLIENT_SECRET must both be set")
        if problems:
            raise ConfigError(problems)
        return CoupaClient(base_url, self.client_id, self.client_secret, scopes=self.scopes,
                           api_version=self.api_version, timeout_s=self.timeout_s,
                           max_requests_per_second=self.max_requests_per_second,
                           token_warmup_s=self.token_warmup_s, logger=logger)

    @property
    def client(self) -> CoupaClient:
        return self._live_client()


class D365Resource(_ClientResource):
    """Dynamics 365 F&O OData with Entra client credentials. Configure through D365_* variables."""

    base_url: str
    tenant_id: str
    client_id: str
    client_secret: str
    authority_url: str = DEFAULT_D365_AUTHORITY_URL
    default_legal_entity: str
    timeout_s: float = 60.0

    def make_client(self, logger=None) -> D365Client:
        problems: list[str] = []
        base_url = normalize_d365_base_url(self.base_url, problems)
        authority = normalize_base_url(self.authority_url, "D365_AUTHORITY_URL", problems)
        if problems:
            raise ConfigError(problems)
        return D365Client(base_url, self.tenant_id, self.client_id, self.client_secret,
                          authority_url=authority, timeout_s=self.timeout_s, logger=logger)

    @property
    def client(self) -> D365Client:
        return self._live_client()


class SyncStateResource(dg.ConfigurableResource):
    """The connector's own database (SYNC_DATABASE_URL): staged documents, watermarks, later the ledger."""

    database_url: str = DEFAULT_SYNC_DATABASE_URL

    _store: SyncStore | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._store = SyncStore(self.database_url)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.dispose()

    @property
    def store(self) -> SyncStore:
        if self._store is None:
            self._store = SyncStore(self.database_url)
        return self._store
