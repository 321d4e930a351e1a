"""Dagster resources: thin config + lifecycle shells around the plain-Python clients and the store.

One configuration path: each resource lays its explicit config over the environment *at run start*
(:func:`settings.env_with`), validates it with the CLI's own ``load_*_settings`` and builds its client
with the CLI's ``coupa_client`` / ``d365_client``; so both paths accept, default and reject the same
values with the same one-line messages. Credentials the environment leaves unset come from the
encrypted credential store through the same loaders. Nothing is read from the environment at import time.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from ..common.redact import install_log_redaction, redacting
from ..coupa.client import CoupaClient
from ..d365.client import D365Client
from ..settings import (
    DEFAULT_COUPA_TIMEOUT_S,
    DEFAULT_D365_TIMEOUT_S,
    CoupaSettings,
    D365Settings,
    checked,
    coupa_client,
    d365_client,
    env_with,
    load_coupa_settings,
    load_d365_settings,
    mapping_file_path,
    sync_database_url,
    webhook_staging_dir,
)
from ..state.store import SyncStore
from ..webhooks.staging import WebhookStaging

# The Dagster concurrency pool of every step that writes to D365 (vendors, POs, invoices, webhook
# batches, replays): at most `concurrency.pools.default_limit` of them run at once across all runs (4
# in the root dagster.yaml); `dagster instance concurrency set d365_writes <n>` overrides it.
D365_WRITES_POOL = "d365_writes"


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
    """Coupa Core API (OAuth client credentials). Configure through COUPA_* variables; a field set
    here wins over its variable (None: the variable, else the credential store for the client id and
    secret, else the default in ``settings``)."""

    base_url: str
    client_id: str | None = None  # COUPA_CLIENT_ID, else the credential store
    client_secret: str | None = None  # COUPA_CLIENT_SECRET, else the credential store
    scopes: str | None = None  # COUPA_SCOPES
    api_version: str | None = None  # COUPA_API_VERSION
    timeout_s: float = DEFAULT_COUPA_TIMEOUT_S
    max_requests_per_second: float | None = None  # COUPA_MAX_REQUESTS_PER_SECOND
    token_warmup_s: float | None = None  # COUPA_TOKEN_WARMUP_SECONDS

    def client_settings(self) -> CoupaSettings:
        env = env_with(
            {
                "COUPA_BASE_URL": self.base_url,
                "COUPA_CLIENT_ID": self.client_id,
                "COUPA_CLIENT_SECRET": self.client_secret,
                "COUPA_SCOPES": self.scopes,
                "COUPA_API_VERSION": self.api_version,
                "COUPA_MAX_REQUESTS_PER_SECOND": self.max_requests_per_second,
                "COUPA_TOKEN_WARMUP_SECONDS": self.token_warmup_s,
            }
        )
        return checked(load_coupa_settings, env).model_copy(update={"timeout_s": self.timeout_s})

    def make_client(self, logger: Any = None) -> CoupaClient:
        return coupa_client(self.client_settings(), logger=logger)

    @property
    def client(self) -> CoupaClient:
        return self._live_client()


class D365Resource(_ClientResource):
    """Dynamics 365 F&O OData with Entra client credentials. Configure through D365_* variables; a
    field set here wins over its variable (None: the variable, else the credential store)."""

    base_url: str
    tenant_id: str | None = None  # D365_TENANT_ID, else the credential store
    client_id: str | None = None  # D365_CLIENT_ID, else the credential store
    client_secret: str | None = None  # D365_CLIENT_SECRET, else the credential store
    authority_url: str | None = None  # D365_AUTHORITY_URL
    default_legal_entity: str
    timeout_s: float = DEFAULT_D365_TIMEOUT_S

    def client_settings(self) -> D365Settings:
        env = env_with(
            {
                "D365_BASE_URL": self.base_url,
                "D365_TENANT_ID": self.tenant_id,
                "D365_CLIENT_ID": self.client_id,
                "D365_CLIENT_SECRET": self.client_secret,
                "D365_AUTHORITY_URL": self.authority_url,
                "D365_DEFAULT_LEGAL_ENTITY": self.default_legal_entity,
            }
        )
        return checked(load_d365_settings, env).model_copy(update={"timeout_s": self.timeout_s})

    def make_client(self, logger: Any = None) -> D365Client:
        return d365_client(self.client_settings(), logger=logger)

    @property
    def client(self) -> D365Client:
        return self._live_client()


class SyncStateResource(dg.ConfigurableResource):
    """The connector's own database (SYNC_DATABASE_URL): staged documents, watermarks, snapshots, ledger."""

    database_url: str | None = None  # SYNC_DATABASE_URL

    _store: SyncStore | None = PrivateAttr(default=None)

    @property
    def resolved_url(self) -> str:
        return sync_database_url(env_with({"SYNC_DATABASE_URL": self.database_url}))

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

    mapping_file: str | None = None  # COUPA_D365_MAPPING_FILE

    @property
    def resolved_path(self) -> str | None:
        return mapping_file_path(env_with({"COUPA_D365_MAPPING_FILE": self.mapping_file}))

    def load(self):
        from ..mapping.config import load_mapping

        return load_mapping(self.resolved_path)


class WebhookStagingResource(dg.ConfigurableResource):
    """The directory the webhook receiver stages events in (WEBHOOK_STAGING_DIR; the receiver, the
    code location running the sensor and the runs must all see the same directory)."""

    directory: str | None = None  # WEBHOOK_STAGING_DIR

    @property
    def resolved_path(self) -> str:
        return str(webhook_staging_dir(env_with({"WEBHOOK_STAGING_DIR": self.directory})).resolve())

    @property
    def staging(self) -> WebhookStaging:
        return WebhookStaging(self.resolved_path)


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """The base URLs and the legal entity come from EnvVar (resolved at run start, shown by name in the
    UI). The credentials (client ids, secrets, tenant) are left out of the config: the resources read
    them when a run starts from their variables, else from the encrypted credential store, so neither
    their values nor a required EnvVar is in the run config. Optional settings (scopes, API version,
    authority, rate, database, mapping file) are read from the environment at run start too — nothing
    is read at import time."""
    return {
        "coupa": CoupaResource(base_url=dg.EnvVar("COUPA_BASE_URL")),
        "d365": D365Resource(
            base_url=dg.EnvVar("D365_BASE_URL"),
            default_legal_entity=dg.EnvVar("D365_DEFAULT_LEGAL_ENTITY"),
        ),
        "sync_state": SyncStateResource(),
        "mapping": MappingResource(),
        "webhook_staging": WebhookStagingResource(),
    }


defs = dg.Definitions(resources=build_resources())
